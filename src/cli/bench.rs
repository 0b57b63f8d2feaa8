//! `cnnc bench`: compile once, run many times; compile time, latency, GFLOP/s, memory, and a
//! per-kernel profile with `--profile`.

use super::engine::{default_threads, Backend, Engine, EngineOptions};
use super::{compile_network, EXIT_ERRORS, EXIT_OK};
use crate::diag::{self, Code, Diagnostic};
use crate::graph::summary::human_macs;
use crate::runtime;
use serde::Serialize;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// The .cnn file.
    pub file: PathBuf,
    /// The network to measure (default: the file's first).
    #[arg(long)]
    pub net: Option<String>,
    /// Trained weights to compile with, as `cnnc run --weights` (default: a seeded
    /// initialization): the file is mapped and packed in place, so peak RSS is measured as
    /// `run` uses memory.
    #[arg(long, value_name = "W.safetensors", conflicts_with = "train")]
    pub weights: Option<PathBuf>,
    /// Timed runs (after the warm-up runs).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub runs: u64,
    /// Untimed runs first, to warm caches and page in the weights.
    #[arg(long, default_value_t = 3)]
    pub warmup: u64,
    /// Images per run.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub batch: u64,
    /// Threads for the JIT's kernels (default: every core).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    #[arg(long, value_enum, default_value_t = Backend::Jit)]
    pub backend: Backend,
    /// Leave activations and residual adds unfused, to measure what fusion gains.
    #[arg(long)]
    pub no_fuse: bool,
    /// Lower every convolution directly, without Winograd's algorithm, to measure what it
    /// gains.
    #[arg(long)]
    pub no_winograd: bool,
    /// Time each kernel and print where the time goes (JIT only). On several threads, a
    /// kernel split over them is timed from the threads' meeting before it to the one after.
    #[arg(long)]
    pub profile: bool,
    /// The results as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Time training steps (forward, backward, SGD update) instead of inference.
    #[arg(long)]
    pub train: bool,
}

#[derive(Serialize)]
pub(super) struct KernelTime {
    pub(super) kernel: String,
    pub(super) ms: f64,
    pub(super) share: f64,
}

#[derive(Serialize)]
struct Report {
    network: String,
    backend: String,
    threads: usize,
    batch: u64,
    runs: u64,
    macs_per_image: u64,
    compile_ms: f64,
    median_ms: f64,
    min_ms: f64,
    /// Images per second at the median: `batch` over the median run time.
    images_per_s: f64,
    gflops: f64,
    arena_bytes: Option<usize>,
    weight_bytes: usize,
    peak_rss_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    profile: Vec<KernelTime>,
}

/// The process's peak resident memory, from Linux's `/proc/self/status`.
pub(super) fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

pub(super) fn human_bytes(bytes: usize) -> String {
    let b = bytes as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", b / (1u64 << 30) as f64)
    } else if b >= (1u64 << 20) as f64 {
        format!("{:.1} MiB", b / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", b / 1024.0)
    }
}

/// A one-line progress bar on a terminal; nothing when stderr is a file or a pipe.
fn progress(done: u64, total: u64) {
    if !std::io::stderr().is_terminal() {
        return;
    }
    let width = 30;
    let filled = (done * width / total.max(1)) as usize;
    eprint!(
        "\r[{}{}] {done}/{total}",
        "#".repeat(filled),
        " ".repeat(width as usize - filled)
    );
    if done == total {
        eprint!("\r{}\r", " ".repeat(width as usize + 20));
    }
}

pub fn run(args: &BenchArgs) -> u8 {
    let Some((compilation, graph)) = compile_network(&args.file, &args.net) else {
        return EXIT_ERRORS;
    };
    let sources = &compilation.program.sources;
    let fail = |diagnostic: Diagnostic| {
        diag::emit_stderr(sources, &[diagnostic]);
        EXIT_ERRORS
    };
    if args.train {
        return super::bench_train::run(args, &graph).unwrap_or_else(|d| fail(*d));
    }
    let bound = match &args.weights {
        None => {
            let mut seeded = graph.clone();
            if let Err(error) = runtime::seed(&mut seeded, 0) {
                return fail(Diagnostic::global(Code::Weights, error.to_string()));
            }
            seeded
        }
        Some(path) => match super::run::bind_weights(
            &compilation.program,
            &graph,
            Some(path),
            &runtime::LoadOptions::default(),
        ) {
            Ok((bound, _)) => bound,
            Err(diagnostics) => {
                diag::emit_stderr(sources, &diagnostics);
                return EXIT_ERRORS;
            }
        },
    };
    let mut inputs = Vec::new();
    for (idx, &input) in graph.inputs.iter().enumerate() {
        match runtime::synthetic_input(graph.shape(input), args.batch as usize, idx as u64) {
            Ok(tensor) => inputs.push(tensor),
            Err(error) => return fail(Diagnostic::global(Code::Input, error.to_string())),
        }
    }
    let threads = args.threads.unwrap_or_else(default_threads).max(1);
    let options = EngineOptions {
        backend: args.backend,
        threads,
        checked: false,
        opt: crate::opt::Options {
            fuse: !args.no_fuse,
            ..crate::opt::Options::default()
        },
        winograd: !args.no_winograd,
    };
    let built = match Engine::build(bound, &options) {
        Ok(built) => built,
        Err(diagnostic) => return fail(*diagnostic),
    };
    let engine = &built.engine;
    for _ in 0..args.warmup {
        if let Err(diagnostic) = engine.run(&inputs) {
            return fail(*diagnostic);
        }
    }
    let mut samples = Vec::with_capacity(args.runs as usize);
    for done in 0..args.runs {
        let start = Instant::now();
        if let Err(diagnostic) = engine.run(&inputs) {
            return fail(*diagnostic);
        }
        samples.push(start.elapsed().as_secs_f64() * 1e3);
        progress(done + 1, args.runs);
    }
    samples.sort_by(f64::total_cmp);
    let median_ms = samples[samples.len() / 2];
    let min_ms = samples[0];
    let macs = graph.total_macs();
    let gflops = 2.0 * macs as f64 * args.batch as f64 / (median_ms * 1e-3) / 1e9;
    let profile = if args.profile {
        profile_kernels(engine, &inputs, args.runs)
    } else {
        Vec::new()
    };
    let report = Report {
        network: graph.name.clone(),
        backend: args.backend.describe().to_string(),
        threads,
        batch: args.batch,
        runs: args.runs,
        macs_per_image: macs,
        compile_ms: built.compile_ms,
        median_ms,
        min_ms,
        images_per_s: args.batch as f64 / (median_ms * 1e-3),
        gflops,
        arena_bytes: engine.arena_bytes(),
        weight_bytes: engine.weight_bytes(),
        peak_rss_bytes: peak_rss_bytes(),
        profile,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print_report(&report, args.profile && args.backend == Backend::Reference);
    }
    EXIT_OK
}

/// The mean time of each kernel over `runs` profiled runs, largest first.
fn profile_kernels(engine: &Engine, inputs: &[ndarray::ArrayD<f32>], runs: u64) -> Vec<KernelTime> {
    let mut totals: Vec<(String, f64)> = Vec::new();
    for _ in 0..runs {
        let Some(times) = engine.run_profiled(inputs) else {
            return Vec::new();
        };
        if totals.is_empty() {
            totals = times.iter().map(|(name, _)| (name.clone(), 0.0)).collect();
        }
        for ((_, total), (_, seconds)) in totals.iter_mut().zip(&times) {
            *total += seconds;
        }
    }
    profile_rows(totals, runs)
}

/// Profile rows from each part's total seconds over `runs` runs: the mean per run and the
/// share of the whole, largest first.
pub(super) fn profile_rows(parts: Vec<(String, f64)>, runs: u64) -> Vec<KernelTime> {
    let sum: f64 = parts.iter().map(|(_, t)| t).sum();
    let mut rows: Vec<KernelTime> = parts
        .into_iter()
        .map(|(kernel, total)| KernelTime {
            kernel,
            ms: total / runs.max(1) as f64 * 1e3,
            share: if sum > 0.0 { total / sum } else { 0.0 },
        })
        .collect();
    rows.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    rows
}

fn print_report(report: &Report, profile_unavailable: bool) {
    println!(
        "network: {} ({}, {} thread{}, batch {})",
        report.network,
        report.backend,
        report.threads,
        if report.threads == 1 { "" } else { "s" },
        report.batch
    );
    println!("compile: {:.1} ms", report.compile_ms);
    println!(
        "latency: median {:.3} ms, min {:.3} ms over {} runs",
        report.median_ms, report.min_ms, report.runs
    );
    println!(
        "throughput: {:.1} images/s, {:.1} GFLOP/s ({} per image, FLOPs = 2 × MACs)",
        report.images_per_s,
        report.gflops,
        human_macs(report.macs_per_image)
    );
    let arena = report
        .arena_bytes
        .map_or("allocated per layer".to_string(), human_bytes);
    let rss = report
        .peak_rss_bytes
        .map_or("unknown".to_string(), |b| human_bytes(b as usize));
    println!(
        "memory: arena {arena}, weights {}, peak RSS {rss}",
        human_bytes(report.weight_bytes)
    );
    if profile_unavailable {
        println!("profile: only the JIT backend is profiled");
    }
    if !report.profile.is_empty() {
        println!("profile (mean per run, largest first):");
        print_profile(&report.profile);
    }
}

/// Profile rows as `kernel  ms  share` lines, in the order given.
pub(super) fn print_profile(rows: &[KernelTime]) {
    let width = rows.iter().map(|k| k.kernel.len()).max().unwrap_or(6);
    for row in rows {
        println!(
            "  {:<width$}  {:>9.3} ms  {:>5.1} %",
            row.kernel,
            row.ms,
            row.share * 100.0
        );
    }
}
