//! Measurements, not tests: kernel GFLOP/s, LeNet-5 latency against the interpreter, and the
//! standard networks at full size with a per-kernel profile. Run them in release:
//! `cargo test --release --test jit_differential -- --ignored --nocapture`; environment
//! variables pick what to measure (`CNNC_CONV`, `CNNC_NETS`, `CNNC_THREADS`, `CNNC_TOP`).

use super::{graph_of, inputs_for, weights_for};
use cnnc::codegen::{self, CodegenOptions};
use cnnc::driver::{self, Select};
use cnnc::lower::Winograd;
use cnnc::reference;
use cnnc::runtime::Weights;
use std::path::Path;

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Median seconds of `f` over `runs` runs, after one warm-up run.
fn time(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..runs)
            .map(|_| {
                let start = std::time::Instant::now();
                f();
                start.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

#[test]
#[ignore = "a measurement: run in release with --ignored --nocapture"]
fn measure_conv_gflops_and_lenet_latency() {
    // Winograd (where the rule picks it) and direct, alternated.
    let variants = [
        (1, Winograd::Auto),
        (1, Winograd::Off),
        (2, Winograd::Auto),
        (2, Winograd::Off),
    ];
    for (threads, winograd) in variants {
        let source = std::env::var("CNNC_CONV").unwrap_or_else(|_| {
            "network b(x: 56x56x64) { x -> c: conv(64, 3, pad: 1, bias: false) }".into()
        });
        let graph = graph_of(&source);
        let weights = weights_for(&graph);
        let inputs = inputs_for(&graph, 1);
        let options = CodegenOptions {
            checked: false,
            threads,
            winograd,
        };
        let start = std::time::Instant::now();
        let network = codegen::compile(&graph, &weights, &options).expect("compiles");
        let compile_ms = start.elapsed().as_secs_f64() * 1e3;
        let seconds = time(20, || {
            network.run(&inputs).expect("runs");
        });
        let flops = 2.0 * graph.total_macs() as f64;
        println!(
            "{source}\n  {threads} thread(s), winograd {winograd:?}: {:.3} ms, {:.1} GFLOP/s (pad copy included), compiled in {compile_ms:.1} ms",
            seconds * 1e3,
            flops / seconds / 1e9
        );
        if threads == 1 {
            let mut per_kernel: Vec<(String, f64)> = Vec::new();
            for _ in 0..10 {
                let (_, times) = network.run_profiled(&inputs).expect("runs");
                if per_kernel.is_empty() {
                    per_kernel = times;
                } else {
                    for (best, (_, t)) in per_kernel.iter_mut().zip(times) {
                        best.1 = best.1.min(t);
                    }
                }
            }
            for (name, t) in &per_kernel {
                // Winograd's kernels as the direct conv's GFLOP/s-equivalent.
                let rate = if name.contains("conv") || name.contains("wino") {
                    format!(", {:.1} GFLOP/s", flops / t / 1e9)
                } else {
                    String::new()
                };
                println!("  {name}: {:.3} ms{rate}", t * 1e3);
            }
        }
    }

    let program = driver::load(Path::new("examples/lenet5.cnn")).expect("readable");
    let compilation = driver::compile(program, &Select::All);
    let graph = compilation.graphs().next().expect("lenet5");
    let weights = weights_for(graph);
    let inputs = inputs_for(graph, 1);
    let network = codegen::compile(graph, &weights, &CodegenOptions::default()).expect("compiles");
    let jit = time(2000, || {
        network.run(&inputs).expect("runs");
    });
    let interpreted = time(50, || {
        reference::run(graph, &weights, &inputs).expect("runs");
    });
    println!(
        "lenet5: JIT {:.4} ms, reference {:.3} ms ({:.0}× faster)",
        jit * 1e3,
        interpreted * 1e3,
        interpreted / jit
    );
}

/// Full-size standard networks, optimized, at batch 1: compile time, latency, GFLOP/s, and
/// the kernels where the time goes. Pick networks with `CNNC_NETS=resnet18,vgg16`.
#[test]
#[ignore = "a measurement: run in release with --ignored --nocapture"]
fn measure_standard_networks() {
    let all = "lenet5,resnet18,resnet50,mobilenet_v2,vgg16";
    let chosen = std::env::var("CNNC_NETS").unwrap_or_else(|_| all.to_string());
    let threads: usize = std::env::var("CNNC_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    for network in chosen.split(',') {
        let file = match network {
            "lenet5" => "lenet",
            n if n.starts_with("resnet") => "resnet",
            n if n.starts_with("vgg") => "vgg",
            n if n.starts_with("mobilenet") => "mobilenet",
            n if n.starts_with("efficientnet") => "efficientnet",
            n => n,
        };
        let program = driver::load_source(
            "bench.cnn",
            &format!(
                "import \"std/{file}.cnn\"\nnetwork bench(image: {}) {{ image -> {network} }}\n",
                if network == "lenet5" {
                    "32x32x1"
                } else {
                    "224x224x3"
                }
            ),
        );
        let compilation = driver::compile(program, &Select::All);
        let mut graph = compilation.graphs().next().expect("one network").clone();
        let mut weights = Weights::seeded(&graph, 1).expect("weights");
        cnnc::opt::optimize_weights(&mut graph, &mut weights, &Default::default()).expect("passes");
        let inputs = inputs_for(&graph, 1);
        let options = CodegenOptions {
            checked: false,
            threads,
            ..Default::default()
        };
        let start = std::time::Instant::now();
        let compiled = codegen::compile(&graph, &weights, &options).expect("compiles");
        let compile_ms = start.elapsed().as_secs_f64() * 1e3;
        let runs = if network == "lenet5" { 2000 } else { 10 };
        let seconds = time(runs, || {
            compiled.run(&inputs).expect("runs");
        });
        let flops = 2.0 * graph.total_macs() as f64;
        println!(
            "{network}: {threads} thread(s), compile {compile_ms:.0} ms, median {:.3} ms, {:.1} GFLOP/s, arena {:.1} MB, weights {:.1} MB, {} kernels",
            seconds * 1e3,
            flops / seconds / 1e9,
            compiled.arena_bytes() as f64 / 1e6,
            compiled.weight_bytes() as f64 / 1e6,
            compiled.n_kernels()
        );
        let (_, mut times) = compiled.run_profiled(&inputs).expect("runs");
        let mut by_kind: Vec<(String, f64)> = Vec::new();
        for (name, t) in &times {
            let kind = name.split('_').nth(1).unwrap_or("?").to_string();
            match by_kind.iter_mut().find(|(k, _)| *k == kind) {
                Some(entry) => entry.1 += t,
                None => by_kind.push((kind, *t)),
            }
        }
        by_kind.sort_by(|a, b| b.1.total_cmp(&a.1));
        let kinds: Vec<String> = by_kind
            .iter()
            .map(|(k, t)| format!("{k} {:.2} ms", t * 1e3))
            .collect();
        println!("  by kind: {}", kinds.join(", "));
        times.sort_by(|a, b| b.1.total_cmp(&a.1));
        for (name, t) in times.iter().take(
            std::env::var("CNNC_TOP")
                .ok()
                .and_then(|t| t.parse().ok())
                .unwrap_or(6),
        ) {
            println!("  {name}: {:.3} ms", t * 1e3);
        }
    }
}
