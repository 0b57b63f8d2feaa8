//! `cnnc eval`: the accuracy, loss and confusion matrix of trained weights on a labelled data
//! set. `cnnc train` validates each epoch through [`evaluate_weights`], so the last epoch's
//! validation and an `eval` of the written weights print the same numbers.

use super::engine::{default_threads, Backend, Engine, EngineOptions};
use super::{compile_network, EXIT_ERRORS, EXIT_OK};
use crate::diag::{self, Code, Diagnostic, Severity};
use crate::driver::Program;
use crate::graph::{Graph, Op};
use crate::runtime::{LoadOptions, Weights, WeightsError};
use crate::train::checkpoint::is_optimizer_tensor;
use crate::train::data::Dataset;
use crate::train::data::{class_count, InputSpec};
use crate::train::data_files::open_dataset;
use crate::train::trainer::{evaluate, EvalReport};
use serde_json::json;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct EvalArgs {
    /// The .cnn file.
    pub file: PathBuf,
    /// The network to evaluate (default: the file's first).
    #[arg(long)]
    pub net: Option<String>,
    /// The trained weights (a `cnnc train --out` checkpoint or any safetensors state_dict).
    #[arg(long, value_name = "W.safetensors")]
    pub weights: PathBuf,
    /// The images: a .npy array (N×H×W×C) or a folder with one subfolder per class.
    #[arg(long, value_name = "D")]
    pub data: PathBuf,
    /// The labels .npy (default: beside the images, `images` → `labels` in the name).
    #[arg(long, value_name = "L")]
    pub labels: Option<PathBuf>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: u64,
    /// Threads for the JIT's kernels (default: every core).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// The engine that runs the network.
    #[arg(long, value_enum, default_value_t = Backend::Jit)]
    pub backend: Backend,
    /// The figures as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &EvalArgs) -> u8 {
    let Some((compilation, graph)) = compile_network(&args.file, &args.net) else {
        return EXIT_ERRORS;
    };
    let program = &compilation.program;
    match execute(args, program, &graph) {
        Ok(()) => EXIT_OK,
        Err(diagnostics) => {
            diag::emit_stderr(&program.sources, &diagnostics);
            EXIT_ERRORS
        }
    }
}

fn execute(args: &EvalArgs, program: &Program, graph: &Graph) -> Result<(), Vec<Diagnostic>> {
    super::train::one_output(graph, "eval").map_err(|d| vec![*d])?;
    let data = open_data(graph, &args.data, args.labels.as_deref()).map_err(|d| vec![*d]);
    let weights = load_weights(program, graph, &args.weights, &LoadOptions::default());
    let (data, weights) = match (data, weights) {
        (Ok(data), Ok(weights)) => (data, weights),
        (data, weights) => {
            let mut all = data.err().unwrap_or_default();
            all.extend(weights.err().unwrap_or_default());
            return Err(all);
        }
    };
    let options = engine_options(args.backend, args.threads);
    let report = evaluate_weights(graph, &weights, &data, args.batch as usize, &options)
        .map_err(|d| vec![*d])?;
    if args.json {
        println!("{}", report_json(&graph.name, &report));
        return Ok(());
    }
    println!("network: {}", graph.name);
    println!("weights: {}", args.weights.display());
    println!(
        "data: {} ({} images, {} classes)",
        data.source().display(),
        report.n,
        data.n_classes()
    );
    print_report(&report, &class_names(graph, &data));
    Ok(())
}

/// How validation and `eval` run the network.
pub fn engine_options(backend: Backend, threads: Option<usize>) -> EngineOptions {
    EngineOptions {
        backend,
        threads: threads.unwrap_or_else(default_threads),
        checked: false,
        opt: crate::opt::Options::default(),
        winograd: true,
    }
}

/// The class names to print: the network's labels, else an image folder's.
pub fn class_names(graph: &Graph, data: &Dataset) -> Vec<String> {
    if !graph.meta.labels.is_empty() {
        graph.meta.labels.clone()
    } else {
        data.class_names().to_vec()
    }
}

/// Opens a labelled data set for the network's input, with its declared padding.
pub fn open_data(
    graph: &Graph,
    data: &Path,
    labels: Option<&Path>,
) -> Result<Dataset, Box<Diagnostic>> {
    let pad = graph.meta.preprocess.as_ref().map_or(0, |p| p.pad);
    let spec = InputSpec::from_graph(graph, pad).map_err(|e| Box::new(e.diagnostic()))?;
    let n_classes = class_count(graph).map_err(|e| Box::new(e.diagnostic()))?;
    open_dataset(data, labels, &spec, n_classes).map_err(|e| Box::new(e.diagnostic()))
}

/// Loads weights for `graph` from a safetensors file or a `cnnc train` checkpoint (whose
/// optimizer tensors are not reported as unused); warnings are printed, errors returned.
pub fn load_weights(
    program: &Program,
    graph: &Graph,
    path: &Path,
    options: &LoadOptions,
) -> Result<Weights, Vec<Diagnostic>> {
    let keep = |w: &&WeightsError| !matches!(w, WeightsError::Unexpected { name, .. } if is_optimizer_tensor(name));
    let warning = |w: &WeightsError| Diagnostic {
        severity: Severity::Warning,
        ..w.to_diagnostic(graph)
    };
    match Weights::load_safetensors(path, graph, options) {
        Ok(loaded) => {
            let warnings: Vec<Diagnostic> =
                loaded.warnings.iter().filter(keep).map(warning).collect();
            diag::emit_stderr(&program.sources, &warnings);
            Ok(loaded.weights)
        }
        Err(problems) => {
            let mut all: Vec<Diagnostic> = problems
                .errors
                .iter()
                .map(|e| e.to_diagnostic(graph))
                .collect();
            all.extend(problems.warnings.iter().filter(keep).map(warning));
            Err(all)
        }
    }
}

/// Runs the network over the data set with `weights` (see the module docs).
pub fn evaluate_weights(
    graph: &Graph,
    weights: &Weights,
    data: &Dataset,
    batch: usize,
    options: &EngineOptions,
) -> Result<EvalReport, Box<Diagnostic>> {
    let mut bound = graph.clone();
    crate::runtime::bind(&mut bound, weights).map_err(|e| Box::new(e.to_diagnostic(graph)))?;
    let built = Engine::build(bound, options)?;
    let softmax_output = matches!(graph.nodes[graph.output()].op, Op::Softmax);
    let mut forward = |images: &ndarray::ArrayD<f32>| {
        built
            .engine
            .run(std::slice::from_ref(images))
            .map_err(|d| d.message)
    };
    evaluate(data, batch, softmax_output, &mut forward)
        .map_err(|e| Box::new(Diagnostic::global(Code::Run, e.to_string())))
}

/// The report in text: accuracy, top-5, loss, the confusion matrix.
pub fn print_report(report: &EvalReport, class_names: &[String]) {
    let correct = (report.accuracy * report.n as f64).round() as u64;
    println!(
        "accuracy: {:.2}% ({correct}/{})",
        100.0 * report.accuracy,
        report.n
    );
    if let Some(top5) = report.top5 {
        println!("top-5 accuracy: {:.2}%", 100.0 * top5);
    }
    println!("loss: {:.4}", report.loss);
    if let Some(table) = report.confusion.render(class_names) {
        println!("confusion matrix (rows: true class, columns: predicted class):");
        print!("{table}");
        if !table.ends_with('\n') {
            println!();
        }
    }
}

/// The report as JSON: `accuracy` in 0–1, `loss`, `n`, `top5` (≥ 5 classes), `confusion`
/// (rows: true class; ≤ 20 classes).
pub fn report_json(network: &str, report: &EvalReport) -> serde_json::Value {
    let k = report.confusion.n_classes();
    let confusion = (k <= crate::train::loss::MAX_RENDERED_CLASSES).then(|| {
        (0..k)
            .map(|t| {
                (0..k)
                    .map(|p| report.confusion.count(t, p))
                    .collect::<Vec<u64>>()
            })
            .collect::<Vec<_>>()
    });
    json!({
        "network": network,
        "n": report.n,
        "accuracy": report.accuracy,
        "loss": report.loss,
        "top5": report.top5,
        "confusion": confusion,
    })
}
