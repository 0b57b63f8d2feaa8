//! The compiled training step's backward of transposed convolutions, layer, group and
//! instance norm, PReLU, position-wise dense and learned `parameter` tensors
//! (`src/lower/train/`: `conv_transpose.rs`, `layernorm.rs`, `groupnorm.rs`, `prelu.rs`,
//! `pointwise_dense.rs`, `parameter.rs`) against the reference engine's
//! (`trainer::step_gradients`), the oracle: the same loss, logits and gradient of every
//! trainable tensor, on odd sizes, strides, dilation and asymmetric padding, batch 3, on 1
//! and 2 threads.
//!
//! Compared by the parent module's `check_step` (`tests/train_jit.rs`), with its tolerance:
//! `|jit − reference| ≤ 2e-4 · max|reference| + 1e-6` per tensor (the engines sum in
//! different orders).

use super::{batch, check_step, graph_of, random};
use cnnc::driver::{self, Select};
use cnnc::graph::Graph;
use cnnc::runtime::Weights;
use cnnc::train::jit::JitStep;

/// Seeded weights with every tensor moved by up to ±0.3, so that biases, norm scales and
/// shifts, PReLU slopes and learned parameters leave their initial constants (zeros, ones):
/// each gradient is taken at a general point, and a scale left out or a transposed index
/// shows.
fn weights(graph: &Graph) -> Weights {
    let mut weights = Weights::seeded(graph, 7).expect("weights");
    for (i, (name, _, _)) in graph.named_params().into_iter().enumerate() {
        if name.contains("running") {
            continue;
        }
        let tensor = weights.get_mut(&name).expect("the tensor");
        let values = random(tensor.len(), 100 + i as u64);
        tensor
            .iter_mut()
            .zip(values)
            .for_each(|(t, v)| *t += 0.3 * v);
    }
    weights
}

/// Compares one step of `source` on `n` images and `threads` threads with the reference's,
/// with the weights above; returns how many gradients were compared.
fn compare(source: &str, n: usize, threads: usize) -> usize {
    let graph = graph_of(source);
    let weights = weights(&graph);
    let images = batch(&graph, n);
    let mut jit = JitStep::new(&graph, &weights, threads)
        .expect("compiles")
        .unwrap_or_else(|reason| panic!("the JIT declined: {reason}"));
    check_step(&mut jit, &graph, &weights, &images)
}

/// Compares `source` at batch 3 on 1 and 2 threads, expecting `tensors` gradients.
fn check(source: &str, tensors: usize) {
    for threads in [1, 2] {
        assert_eq!(compare(source, 3, threads), tensors, "{threads} threads");
    }
}

#[test]
fn conv_transpose_strided_with_output_padding() {
    // c1 makes the transposed conv's input gradient wanted; its stride-2 phases, the
    // output padding's extra row and column, and a conv reading its output.
    check(
        "network t(x: 5x7x3) {
            x -> c1: conv(5, 3, pad: 1) -> relu
              -> t1: conv_transpose(6, 3, stride: 2, pad: 1, output_padding: 1) -> relu
              -> c2: conv(4, 3, stride: 2) -> flatten -> fc: dense(3)
        }",
        8,
    );
}

#[test]
fn conv_transpose_asymmetric_padding_dilation_and_odd_strides() {
    check(
        "network t(x: 4x5x6) {
            x -> c1: conv(7, 1) -> relu
              -> t1: conv_transpose(5, [3, 2], stride: [2, 3], pad: [1, 0, 2, 1], output_padding: [1, 0], dilation: [1, 2])
              -> t2: conv_transpose(3, 4, stride: 2, pad: 1, bias: false) -> relu
              -> flatten -> fc: dense(4)
        }",
        7,
    );
}

#[test]
fn conv_transpose_input_gradient_added_to_a_residual() {
    // y is read by the add and by t1: t1's input gradient is added to the add's.
    check(
        "network t(x: 6x5x4) {
            let y = x -> c1: conv(9, 3, pad: 1) -> relu
            let z = y -> t1: conv_transpose(9, 3, pad: 1)
            return (y + z) -> t2: conv_transpose(2, 2, stride: 2) -> flatten -> fc: dense(3)
        }",
        8,
    );
}

#[test]
fn a_grouped_conv_transpose_is_declined_by_name() {
    let graph = graph_of(
        "network g(x: 5x5x4) { x -> up: conv_transpose(4, 3, stride: 2, groups: 2) -> flatten -> fc: dense(3) }",
    );
    let weights = weights(&graph);
    let declined = JitStep::new(&graph, &weights, 1)
        .expect("compiles")
        .err()
        .expect("declined");
    assert!(declined.contains("up"), "{declined}");
}

#[test]
fn layer_norm_over_odd_channel_counts() {
    // 7 channels (a vector and a tail of 3), 9 (two and 1), 3 (a tail alone); ln1's input
    // is read by the add too, so its input gradient is added to the add's.
    check(
        "network t(x: 5x6x3) {
            let y = x -> c1: conv(9, 3, pad: 1)
            let z = y -> ln1: layernorm -> relu
            return (y + z) -> c2: conv(7, 3, stride: 2) -> ln2: layernorm(eps: 0.001) -> relu
              -> global_avgpool -> ln3: layernorm -> flatten -> fc: dense(4)
        }",
        12,
    );
}

#[test]
fn pointwise_dense_with_and_without_bias() {
    // 13 units (three vectors and a tail of 1) on 6 features, back to 6 without a bias;
    // the first reads the network's input, whose gradient is not wanted.
    check(
        "network t(x: 4x5x3) {
            let y = x -> p0: pointwise_dense(6) -> c1: conv(6, 3, pad: 1)
            let z = y -> p1: pointwise_dense(13) -> gelu -> p2: pointwise_dense(6, bias: false)
            return (y + z) -> c2: conv(4, 3, stride: 2) -> flatten -> fc: dense(3)
        }",
        11,
    );
}

/// ConvNeXt's block (`std/convnext.cnn`) at a small width: depthwise conv, layer norm,
/// position-wise dense bottleneck with GELU, the learned `layer_scale`, the residual.
const CONVNEXT_BLOCKS: &str = "
block cnblock(x) {
    let c = channels(x)
    let gamma = x -> layer_scale: parameter(init: 0.5)
    let y = x -> block: [
        dwconv(7, pad: 3),
        layernorm(eps: 1e-6),
        pointwise_dense(4 * c),
        gelu,
        pointwise_dense(c),
    ]
    return x + y * gamma
}

network t(image: 9x11x3) {
    image
      -> features: [
             [conv(6, 2, stride: 2), layernorm(eps: 1e-6)],
             repeat 2 cnblock,
             [layernorm(eps: 1e-6), conv(10, 2, stride: 2)],
             cnblock,
         ]
      -> avgpool: global_avgpool
      -> classifier: [layernorm(eps: 1e-6), flatten, dense(5)]
}
";

#[test]
fn convnext_blocks_with_their_layer_scale() {
    // Stem conv 2 + ln 2; 3 blocks × (parameter 1, dwconv 2, ln 2, two dense 4) = 27;
    // downsample ln 2 + conv 2; classifier ln 2 + dense 2.
    check(CONVNEXT_BLOCKS, 39);
}

#[test]
fn convnext_tiny_is_accepted_by_the_jit() {
    let program = driver::load(std::path::Path::new("std/convnext.cnn")).expect("readable");
    let compilation = driver::compile(program, &Select::Named("convnext_tiny".into()));
    assert!(!compilation.has_errors());
    let graph = compilation.graphs().next().cloned().expect("the network");
    // The whole step is lowered and verified (every access in bounds), not run.
    if let Err(reason) = cnnc::train::jit::step_memory(&graph) {
        panic!("convnext_tiny: {reason}");
    }
}

#[test]
fn prelu_per_channel_and_shared() {
    // 7 slopes (a vector and a tail of 3); one slope shared by 6 channels (a vector and a
    // tail of 2).
    check(
        "network t(x: 5x4x3) {
            x -> c1: conv(7, 3, pad: 1) -> prelu1: prelu
              -> c2: conv(6, 3, stride: 2, pad: 1) -> prelu2: prelu(shared: true, init: 0.1)
              -> flatten -> fc: dense(3)
        }",
        8,
    );
}

#[test]
fn group_norm_and_instance_norm() {
    // 3 groups of 3 channels (a partial vector each, read from any offset), 2 groups of 6
    // (a vector and a tail), then instance norm with and without its affine part (one
    // channel per group); gn1's input is read by the add too.
    check(
        "network t(x: 5x6x3) {
            let y = x -> c1: conv(9, 3, pad: 1)
            let z = y -> gn1: groupnorm(3) -> relu
            return (y + z) -> c2: conv(12, 3, stride: 2) -> gn2: groupnorm(2, eps: 0.001)
              -> in1: instancenorm(affine: true) -> c3: conv(5, 1) -> in2: instancenorm
              -> flatten -> fc: dense(4)
        }",
        14,
    );
}
