//! The compiled training step's backward for the ops beyond conv, dense, pooling, ReLU and
//! batch norm (`src/lower/train/{activation,arithmetic,channels}.rs`) against the reference
//! engine's (`trainer::step_gradients`), the oracle: every activation standalone and fused
//! into a conv or dense epilogue, squeeze-and-excitation's broadcast `*`, tensor `-` and `/`,
//! scalar ops, concat of branches of different widths (written in place or copied), split
//! and channel shuffle, adaptive average pooling; on odd sizes, batch 3, 1 and 2 threads.
//! And the standard networks these ops made trainable are accepted by the JIT (compiled
//! only: a 224² step is too slow for the test suite).
//!
//! Compared as the parent module (`tests/train_jit.rs`) compares, with its tolerance: `|jit − reference| ≤ 2e-4 · max|reference| + 1e-6`
//! per tensor. Images are spread over [−4, 4) where an activation has kinks at ±3, so every
//! piece of its derivative is exercised.

use super::{compare_with, graph_of, random};
use cnnc::driver::{self, Select};
use cnnc::graph::Graph;
use cnnc::lower::Winograd;
use cnnc::train::jit::step_memory;
use ndarray::{ArrayD, IxDyn};
use std::path::Path;

/// `n` images of uniform numbers in [−scale, scale).
fn batch(graph: &Graph, n: usize, scale: f32) -> ArrayD<f32> {
    let s = graph.shape(graph.inputs[0]);
    let values = random(n * s.numel(), 42)
        .into_iter()
        .map(|v| v * scale)
        .collect();
    ArrayD::from_shape_vec(IxDyn(&[n, s.h, s.w, s.c]), values).expect("a batch")
}

/// Compares one step's loss, logits and gradients on `n` images scaled by `scale`, on
/// `threads` threads; returns how many tensors were compared.
fn compare(source: &str, n: usize, threads: usize, scale: f32) -> usize {
    let graph = graph_of(source);
    let images = batch(&graph, n, scale);
    compare_with(&graph, images, threads, Winograd::Auto)
}

/// Every activation this file covers, as the language writes it.
const ACTIVATIONS: [&str; 9] = [
    "sigmoid",
    "swish",
    "tanh",
    "hardswish",
    "hardsigmoid",
    "leaky_relu(slope: 0.1)",
    "elu(alpha: 0.7)",
    "gelu",
    "gelu(approximate: \"tanh\")",
];

/// Compares each of `sources` (one per activation of [`ACTIVATIONS`]) at 1 and 2 threads,
/// expecting `tensors` gradients; fails naming every activation whose gradients differ.
fn check_each_activation(sources: &[String], tensors: usize) {
    let failed: Vec<&str> = ACTIVATIONS
        .iter()
        .zip(sources)
        .filter(|(_, source)| {
            std::panic::catch_unwind(|| {
                for threads in [1, 2] {
                    assert_eq!(compare(source, 3, threads, 4.0), tensors);
                }
            })
            .is_err()
        })
        .map(|(activation, _)| *activation)
        .collect();
    assert!(failed.is_empty(), "wrong gradients through {failed:?}");
}

#[test]
fn every_activation_on_its_own() {
    // After a pool, nothing fuses the activation: its backward reads its input tensor.
    let mut sources = Vec::new();
    for activation in ACTIVATIONS {
        let source = format!(
            "network t(x: 5x7x3) {{
                x -> c1: conv(6, 3, pad: 1) -> avgpool(2, stride: 1) -> {activation}
                  -> c2: conv(5, 3, stride: 2, pad: 1) -> flatten -> fc: dense(4)
            }}"
        );
        sources.push(source);
    }
    check_each_activation(&sources, 6);
}

#[test]
fn every_activation_fused_into_a_conv_and_a_dense_layer() {
    // c1 writes into c2's padded frame, c2 into a plain tensor, fc1 is dense; tanh and the
    // tanh GELU do not fuse and stay standalone.
    let mut sources = Vec::new();
    for activation in ACTIVATIONS {
        let source = format!(
            "network t(x: 5x7x3) {{
                x -> c1: conv(6, 3, pad: 1) -> {activation}
                  -> c2: conv(5, 3, stride: 2, pad: 1) -> {activation} -> flatten
                  -> fc1: dense(7) -> {activation} -> fc2: dense(4)
            }}"
        );
        sources.push(source);
    }
    check_each_activation(&sources, 8);
}

#[test]
fn every_activation_applied_by_its_batch_norm() {
    // Each batch norm's kernel applies the activation, the first one writing into c2's
    // padded frame, the second into a plain tensor a free flatten reads; the backward
    // recomputes the normalized values from the batch norm's input for the derivative.
    let mut sources = Vec::new();
    for activation in ACTIVATIONS {
        let source = format!(
            "network t(x: 5x7x3) {{
                x -> c1: conv(6, 3, pad: 1, bias: false) -> n1: batchnorm -> {activation}
                  -> c2: conv(5, 3, stride: 2, pad: 1) -> n2: batchnorm -> {activation}
                  -> flatten -> fc: dense(4)
            }}"
        );
        sources.push(source);
    }
    check_each_activation(&sources, 9);
}

#[test]
fn every_activation_applied_by_a_residual_add() {
    // The add's kernel applies the activation into c3's padded frame; `y` is read by c2 and
    // the add, so its gradient is the sum of both.
    let mut sources = Vec::new();
    for activation in ACTIVATIONS {
        let source = format!(
            "network t(x: 5x7x3) {{
                let y = x -> c1: conv(6, 3, pad: 1)
                let b = y -> c2: conv(6, 3, pad: 1)
                return (b + y) -> {activation} -> c3: conv(5, 3, stride: 2, pad: 1)
                  -> flatten -> fc: dense(4)
            }}"
        );
        sources.push(source);
    }
    check_each_activation(&sources, 8);
}

#[test]
fn fused_activations_after_winograd_convolutions() {
    // Winograd's output tiles reach past the output into the next conv's padded frame; the
    // kept pre-activation and the in-place activation cover only the output.
    let source = "
network w(x: 7x6x5) {
    x -> c1: conv(8, 3, pad: 1) -> swish -> c2: conv(6, 3, pad: 1) -> gelu
      -> global_avgpool -> flatten -> fc: dense(3)
}
";
    let graph = graph_of(source);
    for threads in [1, 2] {
        let images = batch(&graph, 3, 4.0);
        assert_eq!(compare_with(&graph, images, threads, Winograd::Always), 6);
    }
}

#[test]
fn squeeze_and_excitation_as_in_efficientnet_and_mobilenet_v3() {
    // EfficientNet: swish after batch norm (standalone) and fused into the squeeze conv, a
    // sigmoid gate, the gate on the right of `*`; MobileNet v3: hardswish, a hardsigmoid
    // gate on the left, a residual add.
    let efficientnet = "
network se(x: 5x7x4) {
    let y = x -> e: conv(8, 1, bias: false) -> bn: batchnorm -> swish
        -> dw: dwconv(3, pad: 1) -> swish
    let g = y -> adaptive_avgpool(1) -> fc1: conv(3, 1) -> swish -> fc2: conv(8, 1) -> sigmoid
    return (y * g) -> p: conv(4, 1) -> global_avgpool -> flatten -> fc: dense(3)
}
";
    let mobilenet = "
network se(x: 5x7x4) {
    let y = x -> e: conv(8, 3, pad: 1) -> hardswish -> dw: dwconv(3, pad: 1) -> relu
    let g = y -> adaptive_avgpool(1) -> fc1: conv(4, 1) -> relu -> fc2: conv(8, 1) -> hardsigmoid
    let z = (g * y) -> p: conv(8, 1)
    return (z + y) -> hardswish -> global_avgpool -> flatten -> fc: dense(3)
}
";
    for threads in [1, 2] {
        // γ, β; e, dw, fc1, fc2 (weight, bias but e), p, fc.
        assert_eq!(compare(efficientnet, 3, threads, 1.0), 13);
        assert_eq!(compare(mobilenet, 3, threads, 4.0), 12);
    }
}

#[test]
fn tensor_and_scalar_arithmetic() {
    // Tensor `-` and `/` of equal shapes and with a 1×1×C gate on either side; every scalar
    // op: `+ 0.5`, `* 2`, `- 3`, `2 - s`, `/ 4`, `1 / (…)`. Divisors are kept away from 0.
    let source = "
network ar(x: 5x7x3) {
    let a = x -> c1: conv(6, 3, pad: 1)
    let b = x -> c2: conv(6, 3, pad: 1) -> sigmoid
    let g = a -> global_avgpool -> f: conv(6, 1) -> sigmoid
    let q = (a - b) / (b + 0.5)
    let r = q / (g + 1) - g * 2
    let s = (g - 3) / (1 / (b + 0.5))
    return (r + (2 - s) / 4 - 1 + (g - q)) -> c3: conv(4, 3, stride: 2) -> flatten -> fc: dense(3)
}
";
    for threads in [1, 2] {
        assert_eq!(compare(source, 3, threads, 1.0), 10);
    }
}

#[test]
fn concat_of_branches_of_different_widths() {
    // Written in place into the concat's slices: a conv with a fused ReLU (derivative from
    // the slice), a conv with a fused swish (pre-activation kept, activation applied in the
    // slice), a standalone sigmoid after batch norm, a pool; copied: `y`, which has other
    // readers. And a concat nested in another.
    let source = "
network inc(x: 5x7x4) {
    let y = x -> stem: conv(8, 3, pad: 1) -> relu
    let b1 = y -> b1: conv(3, 1) -> relu
    let b2 = y -> b2a: conv(4, 1) -> relu -> b2b: conv(5, 3, pad: 1) -> swish
    let b3 = y -> maxpool(3, stride: 1, pad: 1) -> b3: conv(6, 1) -> bn: batchnorm -> sigmoid
    let b4 = y -> avgpool(3, stride: 1, pad: 1)
    return concat(concat(b1, b2), b3, b4, y) -> c: conv(5, 3, stride: 2) -> flatten -> fc: dense(3)
}
";
    for threads in [1, 2] {
        // stem, b1, b2a, b2b, b3, c, fc (weight, bias) and γ, β.
        assert_eq!(compare(source, 3, threads, 1.0), 16);
    }
}

#[test]
fn split_and_channel_shuffle_as_in_shufflenet() {
    let source = "
network sh(x: 5x7x4) {
    let y = x -> stem: conv(8, 3, pad: 1) -> relu
    let left = y -> split(2, 0)
    let right = y -> split(2, 1) -> r1: conv(4, 1) -> relu -> dw: dwconv(3, pad: 1)
        -> r2: conv(4, 1) -> relu
    return concat(left, right) -> channel_shuffle(2) -> channel_shuffle(4) -> split(4, 3)
        -> c: conv(5, 3, stride: 2) -> flatten -> fc: dense(3)
}
";
    for threads in [1, 2] {
        assert_eq!(compare(source, 3, threads, 1.0), 12);
    }
}

#[test]
fn adaptive_average_pooling_with_overlapping_tiling_and_repeating_regions() {
    // 5×7 → 2×3 (regions overlap), 2×3 → 4×3 (each row read twice), 6×8 → 3×4 (tiling).
    let uneven = "
network ap(x: 5x7x3) {
    x -> c1: conv(6, 3, pad: 1) -> relu -> adaptive_avgpool([2, 3]) -> c2: conv(4, 1) -> relu
      -> adaptive_avgpool([4, 3]) -> flatten -> fc: dense(3)
}
";
    let tiling = "
network ap(x: 6x8x3) {
    x -> c1: conv(6, 3, pad: 1) -> relu -> adaptive_avgpool([3, 4]) -> flatten -> fc: dense(3)
}
";
    for threads in [1, 2] {
        assert_eq!(compare(uneven, 3, threads, 1.0), 6);
        assert_eq!(compare(tiling, 3, threads, 1.0), 4);
    }
}

#[test]
fn upsampling_nearest_and_bilinear_and_global_max_pooling() {
    // Bilinear by 2×3 reads clamped borders; a ReLU before the global max pool makes ties
    // (zeros), which must send the gradient once, to the first; uniform images make every
    // pixel of a channel a tie away from the border.
    let source = "
network up(x: 5x7x3) {
    let y = x -> c1: conv(6, 3, pad: 1) -> relu
    let a = y -> upsample(scale: [2, 3], mode: \"bilinear\") -> c2: conv(4, 3, stride: 2)
    let b = y -> upsample(scale: 2) -> c3: conv(4, 3, stride: 2, pad: [0, 1, 1, 0])
    return concat(a -> relu -> global_maxpool, b -> global_avgpool) -> flatten -> fc: dense(3)
}
";
    for threads in [1, 2] {
        assert_eq!(compare(source, 3, threads, 1.0), 8);
    }
    let graph = graph_of(source);
    let uniform = ArrayD::from_elem(IxDyn(&[2, 5, 7, 3]), 0.5f32);
    assert_eq!(compare_with(&graph, uniform, 1, Winograd::Auto), 8);
}

#[test]
fn softmax_inside_the_network() {
    // Over each pixel's channels (6, not a multiple of 4), and over a flat vector.
    let source = "
network sm(x: 5x7x3) {
    x -> c1: conv(6, 3, pad: 1) -> softmax -> c2: conv(4, 3, stride: 2) -> flatten
      -> fc1: dense(7) -> softmax -> fc2: dense(3)
}
";
    for threads in [1, 2] {
        assert_eq!(compare(source, 3, threads, 2.0), 8);
    }
}

#[test]
fn the_standard_networks_that_need_these_ops_lower_for_training() {
    for (file, network) in [
        ("std/googlenet.cnn", "googlenet"),
        ("std/efficientnet.cnn", "efficientnet_b0"),
        ("std/mobilenet.cnn", "mobilenet_v3_small"),
        ("std/mobilenet.cnn", "mobilenet_v3_large"),
        ("std/shufflenet.cnn", "shufflenet_v2_x1_0"),
        ("std/alexnet.cnn", "alexnet"),
        ("std/vgg.cnn", "vgg11"),
    ] {
        let program = driver::load(Path::new(file)).expect("the std file is readable");
        let compilation = driver::compile(program, &Select::Named(network.to_string()));
        assert!(!compilation.has_errors(), "{network}");
        let graph = compilation.graphs().next().cloned().expect("the network");
        // The whole step is lowered and verified (every access in bounds), not run.
        if let Err(reason) = step_memory(&graph) {
            panic!("{network}: {reason}");
        }
    }
}
