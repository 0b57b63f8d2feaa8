//! A measurement, not a test: the 3×3 stride-1 convolutions of the standard networks, each
//! alone at batch 1, lowered directly, as F(2×2, 3×3) and as F(4×4, 3×3), timed alternately,
//! with what `Winograd::Auto` chooses: the data behind `lower/winograd.rs`'s rule. Run in
//! release: `cargo test --release --test jit_differential measure_winograd -- --ignored
//! --nocapture`; `CNNC_THREADS` sets the threads, `CNNC_NETS` the networks, `CNNC_SHAPE` a shape
//! (`7x7 512->512`), and `CNNC_PROFILE` adds each variant's per-kernel times (the least of several runs).

use super::{graph_of, inputs_for, weights_for};
use cnnc::codegen::{self, CodegenOptions};
use cnnc::driver::{self, Select};
use cnnc::graph::{Graph, Op};
use cnnc::lower::{LowerOptions, Winograd};
use std::time::Instant;

/// `(height, width, in, out)` of every distinct 3×3 stride-1 ungrouped convolution of `graph`.
fn winograd_shapes(graph: &Graph) -> Vec<(usize, usize, usize, usize)> {
    let mut shapes = Vec::new();
    for (id, node) in &graph.nodes {
        let Op::Conv(a) = &node.op else { continue };
        if a.kernel == [3, 3] && a.stride == [1, 1] && a.dilation == [1, 1] && a.groups <= 1 {
            let (input, out) = (graph.input_shape(id), graph.shape(id));
            let shape = (out.h, out.w, input.c, out.c);
            if !shapes.contains(&shape) {
                shapes.push(shape);
            }
        }
    }
    shapes
}

/// The tile size `Auto` lowers `graph`'s one convolution with, as `emit loops` shows it.
fn auto_choice(graph: &Graph) -> &'static str {
    let options = LowerOptions {
        winograd: Winograd::Auto,
    };
    let loops = cnnc::lower::emit_loops_with(graph, &options).expect("lowers");
    if loops.contains("winograd F(2×2, 3×3) products") {
        "F2"
    } else if loops.contains("winograd F(4×4, 3×3) products") {
        "F4"
    } else {
        "direct"
    }
}

/// The processor time of this process so far, every thread's, in seconds.
fn process_seconds() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to write.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

#[test]
#[ignore = "a measurement: run in release with --ignored --nocapture"]
fn measure_winograd_choices() {
    let threads: usize = std::env::var("CNNC_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    let nets = std::env::var("CNNC_NETS")
        .unwrap_or_else(|_| "resnet18,resnet34,resnet50,vgg16,googlenet".into());
    let mut shapes = Vec::new();
    for network in nets.split(',') {
        let file = match network {
            n if n.starts_with("resnet") => "resnet",
            n if n.starts_with("vgg") => "vgg",
            n => n,
        };
        let program = driver::load_source(
            "bench.cnn",
            &format!(
                "import \"std/{file}.cnn\"\nnetwork bench(image: 224x224x3) {{ image -> {network} }}\n"
            ),
        );
        let compilation = driver::compile(program, &Select::All);
        let graph = compilation.graphs().next().expect("one network");
        for shape in winograd_shapes(graph) {
            if !shapes.contains(&shape) {
                shapes.push(shape);
            }
        }
    }
    println!("{threads} thread(s); ms per conv (medians of alternated rounds: wall, processor), ratio to direct");
    let only = std::env::var("CNNC_SHAPE").unwrap_or_default();
    for (h, w, cin, cout) in shapes {
        if !format!("{h}x{w} {cin}->{cout}").contains(&only) {
            continue;
        }
        let source =
            format!("network t(x: {h}x{w}x{cin}) {{ x -> conv({cout}, 3, pad: 1, bias: false) }}");
        let graph = graph_of(&source);
        let weights = weights_for(&graph);
        let inputs = inputs_for(&graph, 1);
        let variants = [Winograd::Off, Winograd::AlwaysF2, Winograd::Always];
        let compiled: Vec<_> = variants
            .iter()
            .map(|&winograd| {
                let options = CodegenOptions {
                    checked: false,
                    threads,
                    winograd,
                };
                codegen::compile(&graph, &weights, &options).expect("compiles")
            })
            .collect();
        // Runs per round: about 30 ms of the direct conv.
        let start = Instant::now();
        compiled[0].run(&inputs).expect("runs");
        let once = start.elapsed().as_secs_f64();
        let runs = ((0.03 / once) as usize).clamp(3, 200);
        // Medians of rounds, of wall time and of the process's processor time per run (on a
        // shared machine, the wall time counts the other processes' turns too).
        let mut samples = vec![Vec::new(); variants.len()];
        let mut cpu = vec![Vec::new(); variants.len()];
        for _ in 0..7 {
            for v in 0..variants.len() {
                let mut round = Vec::new();
                let cpu_start = process_seconds();
                for _ in 0..runs {
                    let start = Instant::now();
                    compiled[v].run(&inputs).expect("runs");
                    round.push(start.elapsed().as_secs_f64());
                }
                cpu[v].push((process_seconds() - cpu_start) / runs as f64);
                samples[v].push(median(round));
            }
        }
        if std::env::var("CNNC_PROFILE").is_ok() {
            for (network, winograd) in compiled.iter().zip(variants) {
                let mut best: Vec<(String, f64)> = Vec::new();
                for _ in 0..runs.max(5) {
                    let (_, times) = network.run_profiled(&inputs).expect("runs");
                    if best.is_empty() {
                        best = times.clone();
                    }
                    for (b, (_, t)) in best.iter_mut().zip(times) {
                        b.1 = b.1.min(t);
                    }
                }
                let kernels: Vec<String> = best
                    .iter()
                    .map(|(name, t)| format!("{name} {:.3}", t * 1e3))
                    .collect();
                println!("  {winograd:?}: {}", kernels.join(", "));
            }
        }
        let [direct, f2, f4] = [0, 1, 2].map(|v| median(samples[v].clone()) * 1e3);
        let [cpu_direct, cpu_f2, cpu_f4] = [0, 1, 2].map(|v| median(cpu[v].clone()) * 1e3);
        println!(
            "{h}x{w} {cin}->{cout}: wall direct {direct:.3}, F2 {f2:.3} ({:.2}), F4 {f4:.3} ({:.2}); cpu direct {cpu_direct:.3}, F2 {cpu_f2:.3} ({:.2}), F4 {cpu_f4:.3} ({:.2}); auto {}",
            f2 / direct,
            f4 / direct,
            cpu_f2 / cpu_direct,
            cpu_f4 / cpu_direct,
            auto_choice(&graph)
        );
    }
}
