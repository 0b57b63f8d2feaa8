//! `cnnc bench --train`: whole training steps timed — forward, backward and an SGD update
//! (momentum 0.9, lr 0.01) on a synthetic batch with seeded weights and labels `i mod
//! classes` — with the inference bench's fields plus the arena a step uses.
//!
//! The JIT's compiled step (`train::jit`) is timed when it covers the network; otherwise,
//! or with `--backend reference`, the reference engine's. The report says which.

use super::bench::{BenchArgs, KernelTime};
use super::engine::{default_threads, Backend};
use super::EXIT_OK;
use crate::diag::{Code, Diagnostic};
use crate::graph::ops::gradient::TrainingMode;
use crate::graph::Graph;
use crate::runtime::{self, Weights};
use crate::train::jit::JitStep;
use crate::train::optim::{Optimizer, OptimizerConfig, SgdConfig};
use crate::train::trainer::{apply_step, step_gradients, StepGradients, TrainError};
use serde::Serialize;
use std::time::Instant;

#[derive(Serialize)]
struct TrainReport {
    network: String,
    mode: &'static str,
    backend: String,
    threads: usize,
    batch: u64,
    runs: u64,
    macs_per_image: u64,
    compile_ms: f64,
    median_ms: f64,
    min_ms: f64,
    images_per_s: f64,
    /// Bytes of the arenas a step uses: one per image with training batch norms, else one
    /// per thread.
    arena_bytes: Option<usize>,
    peak_rss_bytes: Option<u64>,
    /// With `--profile`: each kernel's and each other part's mean time per step (CPU time,
    /// summed over the threads), largest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    profile: Vec<KernelTime>,
}

fn diagnostic(error: &TrainError) -> Box<Diagnostic> {
    Box::new(Diagnostic::global(Code::Run, error.to_string()))
}

fn global(code: Code, message: String) -> Box<Diagnostic> {
    Box::new(Diagnostic::global(code, message))
}

/// Times `args.runs` training steps of `graph` (after `args.warmup`); prints or returns the
/// diagnostic of a failure.
pub fn run(args: &BenchArgs, graph: &Graph) -> Result<u8, Box<Diagnostic>> {
    super::train::one_output(graph, "bench --train")?;
    let weights =
        Weights::seeded(graph, 0).map_err(|e| Diagnostic::global(Code::Weights, e.to_string()))?;
    let Some(&input) = graph.inputs.first() else {
        return Err(global(Code::Input, "the network has no input".into()));
    };
    let batch = args.batch as usize;
    let images = runtime::synthetic_input(graph.shape(input), batch, 0)
        .map_err(|e| global(Code::Input, e.to_string()))?;
    let classes = graph.shape(graph.output()).c.max(1);
    let labels: Vec<u32> = (0..batch).map(|i| (i % classes) as u32).collect();
    let threads = args.threads.unwrap_or_else(default_threads).max(1);
    let started = Instant::now();
    let (mut jit, backend) = match args.backend {
        Backend::Reference => (None, "reference interpreter".to_string()),
        Backend::Jit => match JitStep::new(graph, &weights, threads).map_err(|e| diagnostic(&e))? {
            Ok(step) => (Some(step), "Cranelift JIT".to_string()),
            Err(reason) => (
                None,
                format!("reference interpreter (the JIT cannot train it yet: {reason})"),
            ),
        },
    };
    let compile_ms = started.elapsed().as_secs_f64() * 1e3;
    let config = OptimizerConfig::Sgd(SgdConfig {
        lr: 0.01,
        momentum: 0.9,
        nesterov: false,
        weight_decay: 0.0,
    });
    let mut optimizer = Optimizer::new(config).map_err(|e| global(Code::Recipe, e.to_string()))?;
    let mut weights = weights;
    let update_seconds = std::cell::Cell::new(0.0);
    let mut step =
        |jit: &mut Option<JitStep>, weights: &mut Weights, seed: u64| -> Result<(), TrainError> {
            let result: StepGradients = match jit.as_mut() {
                Some(jit) => jit.step(weights, &images, &labels, seed)?,
                None => {
                    let mode = TrainingMode {
                        training: true,
                        seed,
                    };
                    step_gradients(graph, weights, &images, &labels, mode, threads)?
                }
            };
            let started = Instant::now();
            apply_step(
                weights,
                &mut optimizer,
                &result.grads,
                &result.batch_norm_stats,
                threads,
            )?;
            update_seconds.set(update_seconds.get() + started.elapsed().as_secs_f64());
            if let Some(jit) = jit.as_mut() {
                jit.recycle(result.grads);
            }
            Ok(())
        };
    for seed in 0..args.warmup {
        step(&mut jit, &mut weights, seed).map_err(|e| diagnostic(&e))?;
    }
    if args.profile {
        if let Some(jit) = jit.as_mut() {
            jit.start_profile();
        }
    }
    update_seconds.set(0.0);
    let mut samples = Vec::with_capacity(args.runs as usize);
    for seed in 0..args.runs {
        let start = Instant::now();
        step(&mut jit, &mut weights, args.warmup + seed).map_err(|e| diagnostic(&e))?;
        samples.push(start.elapsed().as_secs_f64() * 1e3);
    }
    samples.sort_by(f64::total_cmp);
    let median_ms = samples[samples.len() / 2];
    let profile = match jit.as_ref().filter(|_| args.profile) {
        Some(jit) => {
            let mut parts = jit.profile();
            parts.push(("(optimizer update)".into(), update_seconds.get()));
            super::bench::profile_rows(parts, args.runs)
        }
        None => Vec::new(),
    };
    let arena_bytes = jit.as_ref().map(|j| {
        let arenas = if j.arena_per_image() {
            batch
        } else {
            threads.min(batch)
        };
        j.arena_bytes() * arenas
    });
    let report = TrainReport {
        network: graph.name.clone(),
        mode: "train",
        backend,
        threads,
        batch: args.batch,
        runs: args.runs,
        macs_per_image: graph.total_macs(),
        compile_ms,
        median_ms,
        min_ms: samples[0],
        images_per_s: args.batch as f64 / (median_ms * 1e-3),
        arena_bytes,
        peak_rss_bytes: super::bench::peak_rss_bytes(),
        profile,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        println!(
            "network: {} (training steps on the {}, {} thread{}, batch {})",
            report.network,
            report.backend,
            threads,
            if threads == 1 { "" } else { "s" },
            report.batch
        );
        println!("compile: {:.1} ms", report.compile_ms);
        println!(
            "step: median {:.3} ms, min {:.3} ms over {} steps (forward, backward, SGD update)",
            report.median_ms, report.min_ms, report.runs
        );
        println!("throughput: {:.1} images/s", report.images_per_s);
        if let Some(bytes) = arena_bytes {
            println!("memory: arenas {}", super::bench::human_bytes(bytes));
        }
        if !report.profile.is_empty() {
            println!(
                "profile (mean per step; kernels' CPU time summed over the threads; largest first):"
            );
            super::bench::print_profile(&report.profile);
        } else if args.profile {
            println!("profile: only the JIT's compiled steps are profiled");
        }
    }
    Ok(EXIT_OK)
}
