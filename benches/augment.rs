//! How long the loader's affine warp (rotation, shear, zoom; `train/augment.rs`) takes per
//! image, at MNIST's and ImageNet's sizes: a loader thread must distort a batch in less time
//! than a training step takes. A benchmark, not a test: `cargo bench --bench augment`.

use cnnc::train::augment::affine;
use std::hint::black_box;
use std::time::Instant;

fn bench(h: usize, w: usize, c: usize, images: usize) {
    let image: Vec<f32> = (0..h * w * c).map(|i| (i % 251) as f32 / 251.0).collect();
    let mut samples = Vec::new();
    for _ in 0..7 {
        let start = Instant::now();
        for i in 0..images {
            let angle = (i % 21) as f64 - 10.0;
            let shear = (i % 11) as f64 - 5.0;
            let zoom = 0.9 + (i % 5) as f64 * 0.05;
            black_box(affine(black_box(&image), h, w, c, angle, shear, zoom));
        }
        samples.push(start.elapsed().as_secs_f64() / images as f64);
    }
    samples.sort_by(f64::total_cmp);
    println!(
        "affine {h}×{w}×{c}: median {:.2} µs per image ({:.1} ns per pixel), min {:.2} µs",
        samples[3] * 1e6,
        samples[3] * 1e9 / (h * w) as f64,
        samples[0] * 1e6
    );
}

fn main() {
    bench(32, 32, 1, 20_000);
    bench(224, 224, 3, 200);
}
