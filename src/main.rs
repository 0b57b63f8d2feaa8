//! The `cnnc` command line.

use clap::{Parser, Subcommand};
use cnnc::cli;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "cnnc", version, about = "A compiler for convolutional networks", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Parse, expand and infer shapes; print one line per network or the diagnostics.
    Check(cli::check::CheckArgs),
    /// A per-layer table: path, layer, output shape, parameters, MACs; totals.
    Summary(cli::summary::SummaryArgs),
    /// Print an intermediate form of the compiler.
    Emit(cli::emit::EmitArgs),
    /// Compile a network and run it on an image, a .npy array or a synthetic input.
    Run(cli::run::RunArgs),
    /// Write a network's seeded initial weights to a safetensors file.
    Weights(cli::weights::WeightsArgs),
    /// Draw the network: Graphviz DOT, or SVG with --svg.
    Graph(cli::graph::GraphArgs),
    /// Compile once, run many times: compile time, latency, GFLOP/s, memory.
    Bench(cli::bench::BenchArgs),
    /// Write a network and its weights as an ONNX model.
    Export(cli::export::ExportArgs),
    /// Train a network on labelled images (reference engine), with its declared recipe.
    Train(Box<cli::train::TrainArgs>),
    /// Accuracy, loss and confusion matrix of trained weights on labelled images.
    Eval(cli::eval::EvalArgs),
    /// Write augmented training samples as PNG images, to see what `augment(...)` does.
    Augment(cli::augment::AugmentArgs),
}

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, so printing into a closed pipe (`cnnc emit clif F | head`) would
    // panic; a command-line tool should end quietly instead, as `cat` does.
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to the default before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Check(args) => cli::check::run(&args),
        Command::Summary(args) => cli::summary::run(&args),
        Command::Emit(args) => cli::emit::run(&args),
        Command::Run(args) => cli::run::run(&args),
        Command::Weights(args) => cli::weights::run(&args),
        Command::Graph(args) => cli::graph::run(&args),
        Command::Bench(args) => cli::bench::run(&args),
        Command::Export(args) => cli::export::run(&args),
        Command::Train(args) => cli::train::run(&args),
        Command::Eval(args) => cli::eval::run(&args),
        Command::Augment(args) => cli::augment::run(&args),
    };
    ExitCode::from(code)
}
