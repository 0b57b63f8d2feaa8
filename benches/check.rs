//! How long `cnnc check` takes on a ResNet-50-sized program: parse, expand, infer shapes.
//! A benchmark, not a test: run with `cargo bench --bench check`.

use cnnc::driver::{self, Select};
use std::path::Path;
use std::time::{Duration, Instant};

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn bench(file: &str, net: &str, runs: usize) {
    let mut samples = Vec::with_capacity(runs);
    let mut layers = 0;
    for _ in 0..runs {
        let start = Instant::now();
        let program = match driver::load(Path::new(file)) {
            Ok(program) => program,
            Err(error) => {
                eprintln!("cannot read {file}: {error}");
                return;
            }
        };
        let compilation = driver::compile(program, &Select::Named(net.to_string()));
        samples.push(start.elapsed());
        if compilation.has_errors() {
            eprint!("{}", compilation.render_diagnostics());
            return;
        }
        layers = compilation.graphs().map(|g| g.nodes.len()).sum();
    }
    let min = samples.iter().min().copied().unwrap_or_default();
    println!(
        "check {file} --net {net}: {layers} layers, median {:.3} ms, min {:.3} ms over {runs} runs",
        median(&mut samples).as_secs_f64() * 1e3,
        min.as_secs_f64() * 1e3
    );
}

fn main() {
    bench("std/lenet.cnn", "lenet5", 200);
    bench("std/resnet.cnn", "resnet50", 100);
    bench("std/resnet.cnn", "resnet152", 50);
    bench("std/efficientnet.cnn", "efficientnet_b7", 50);
}
