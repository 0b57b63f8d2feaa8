//! The compiled training step (`train::jit::JitStep`) against the reference engine's
//! (`trainer::step_gradients`), the oracle: the same loss, logits and gradient of every
//! trainable tensor, on networks with odd sizes, strides, asymmetric padding, dilation,
//! pooling with and without padding counted, residual adds, a free flatten, a frozen base,
//! on 1 and 2 threads. And what the JIT declines (batch norm in training, dropout) is
//! declined with a reason, so the trainer falls back to the reference.
//!
//! Tolerance: `|jit − reference| ≤ 2e-4 · max|reference| + 1e-6` per tensor. The two engines
//! sum in different orders (f32), which moves the last bits; a ReLU mask flipping on a value
//! within rounding of 0 would show as a larger difference, and with continuous random inputs
//! does not happen at these sizes.

use cnnc::driver::{self, Select};
use cnnc::graph::ops::gradient::TrainingMode;
use cnnc::graph::Graph;
use cnnc::lower::Winograd;
use cnnc::runtime::Weights;
use cnnc::train::jit::JitStep;
use cnnc::train::trainer::step_gradients;
use ndarray::{ArrayD, IxDyn};

#[path = "train_jit/layers.rs"]
mod layers;
#[path = "train_jit/ops.rs"]
mod ops;

fn graph_of(source: &str) -> Graph {
    let program = driver::load_source("test.cnn", source);
    let compilation = driver::compile(program, &Select::All);
    assert!(
        !compilation.has_errors(),
        "{}",
        compilation.render_diagnostics()
    );
    let graph = compilation.graphs().next().cloned();
    graph.expect("a network")
}

/// Uniform numbers in [−1, 1) from a SplitMix64 stream.
fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Seeded weights with every bias made non-zero, so bias gradients flow into real sums.
fn weights(graph: &Graph) -> Weights {
    let mut weights = Weights::seeded(graph, 7).expect("weights");
    for (i, (name, _, _)) in graph.named_params().into_iter().enumerate() {
        if name.ends_with("bias") {
            let tensor = weights.get_mut(&name).expect("the bias");
            let values = random(tensor.len(), 100 + i as u64);
            tensor
                .iter_mut()
                .zip(values)
                .for_each(|(t, v)| *t = 0.1 * v);
        }
    }
    weights
}

fn batch(graph: &Graph, n: usize) -> ArrayD<f32> {
    let s = graph.shape(graph.inputs[0]);
    let values = random(n * s.numel(), 42);
    ArrayD::from_shape_vec(IxDyn(&[n, s.h, s.w, s.c]), values).expect("a batch")
}

const TRAIN: TrainingMode = TrainingMode {
    training: true,
    seed: 3,
};

/// Compares one step's loss, logits and gradients; returns how many tensors were compared.
fn compare(source: &str, n: usize, threads: usize) -> usize {
    let graph = graph_of(source);
    let images = batch(&graph, n);
    compare_on(&graph, images, threads)
}

fn compare_on(graph: &Graph, images: ArrayD<f32>, threads: usize) -> usize {
    compare_with(graph, images, threads, Winograd::Auto)
}

fn compare_with(graph: &Graph, images: ArrayD<f32>, threads: usize, winograd: Winograd) -> usize {
    let graph = graph.clone();
    let weights = weights(&graph);
    let mut jit = JitStep::with_winograd(&graph, &weights, threads, winograd)
        .expect("compiles")
        .unwrap_or_else(|reason| panic!("the JIT declined: {reason}"));
    check_step(&mut jit, &graph, &weights, &images)
}

/// Runs one step of `jit` with `weights` and compares it with the reference's; returns how
/// many gradients were compared.
fn check_step(jit: &mut JitStep, graph: &Graph, weights: &Weights, images: &ArrayD<f32>) -> usize {
    let n = images.shape()[0];
    let classes = graph.shape(graph.output()).c as u32;
    let labels: Vec<u32> = (0..n as u32).map(|i| (i * 7 + 3) % classes).collect();
    let reference =
        step_gradients(graph, weights, images, &labels, TRAIN, 1).expect("the reference");
    let got = jit
        .step(weights, images, &labels, TRAIN.seed)
        .expect("a step");
    assert!(
        (got.loss - reference.loss).abs() <= 1e-5 * reference.loss.abs().max(1.0),
        "loss {} vs {}",
        got.loss,
        reference.loss
    );
    close("logits", &got.logits, &reference.logits);
    let names: Vec<&str> = got.grads.iter().map(|(n, _)| n.as_str()).collect();
    let expected: Vec<&str> = reference.grads.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, expected);
    for ((name, g), (_, r)) in got.grads.iter().zip(&reference.grads) {
        close(name, g, r);
    }
    assert_eq!(got.batch_norm_stats.len(), reference.batch_norm_stats.len());
    for (g, r) in got.batch_norm_stats.iter().zip(&reference.batch_norm_stats) {
        assert_eq!(
            (&g.running_mean, &g.running_var, g.count),
            (&r.running_mean, &r.running_var, r.count)
        );
        let f = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        close(&g.running_mean, &f(&g.mean), &f(&r.mean));
        close(&g.running_var, &f(&g.var), &f(&r.var));
    }
    got.grads.len()
}

fn close(what: &str, got: &[f32], expected: &[f32]) {
    assert_eq!(got.len(), expected.len(), "{what}: length");
    let scale = expected.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "{what}: the reference gradient is all zero");
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        assert!(
            (g - e).abs() <= 2e-4 * scale + 1e-6,
            "{what}[{i}]: jit {g} vs reference {e} (largest {scale})"
        );
    }
}

const LENET: &str = "
network lenet(image: 16x16x1) {
    image
      -> conv1: conv(6, 5) -> relu -> avgpool(2)
      -> conv2: conv(16, 3) -> relu -> avgpool(2)
      -> flatten
      -> fc1: dense(30) -> relu
      -> fc2: dense(21) -> relu
      -> fc3: dense(10)
      -> softmax
}
";

#[test]
fn lenet_matches_the_reference_on_one_and_two_threads() {
    assert_eq!(compare(LENET, 5, 1), 10);
    assert_eq!(compare(LENET, 5, 2), 10);
}

#[test]
fn two_threads_give_the_same_step_every_time() {
    let graph = graph_of(LENET);
    let weights = weights(&graph);
    let images = batch(&graph, 9);
    let labels: Vec<u32> = (0..9).map(|i| i % 10).collect();
    let mut jit = JitStep::new(&graph, &weights, 2).unwrap().unwrap();
    let first = jit.step(&weights, &images, &labels, TRAIN.seed).unwrap();
    let second = jit.step(&weights, &images, &labels, TRAIN.seed).unwrap();
    assert_eq!(first.loss.to_bits(), second.loss.to_bits());
    assert_eq!(first.grads, second.grads);
}

#[test]
fn strides_asymmetric_padding_dilation_and_odd_channels() {
    let source = "
network odd(x: 11x9x3) {
    x -> a: conv(5, 3, stride: 2, pad: [1, 0, 2, 1]) -> relu6
      -> b: conv(7, [2, 3], stride: [1, 2], pad: [0, 1, 1, 2]) -> relu
      -> c: conv(9, 3, dilation: 2, pad: 2)
      -> d: conv(6, 1, bias: false) -> relu
      -> flatten -> fc: dense(4)
}
";
    assert_eq!(compare(source, 3, 1), 9);
    assert_eq!(compare(source, 4, 2), 9);
}

#[test]
fn strided_input_gradients_phase_by_phase() {
    // Every strided conv here has ≥ 8 input channels, so its input gradient is computed phase
    // by phase: `b` has phases of 2×2, 2×1, 1×2 and 1×1 taps; `c` has strides 2×3 and
    // asymmetric padding (a phase with a padded ∂z on each side); `d`, 1×1 at stride 2, leaves
    // three phases without taps, whose pixels must be zeros.
    let source = "
network phases(x: 13x11x3) {
    x -> a: conv(9, 3, pad: 1) -> relu
      -> b: conv(10, 3, stride: 2, pad: 1) -> relu
      -> c: conv(12, [2, 3], stride: [2, 3], pad: [1, 0, 2, 1]) -> relu
      -> d: conv(8, 1, stride: 2) -> relu
      -> flatten -> fc: dense(4)
}
";
    assert_eq!(compare(source, 3, 1), 10);
    assert_eq!(compare(source, 2, 2), 10);
    // A value read by two strided convs, as at a ResNet downsampling block: the second
    // contribution is added, phase by phase, to the first (once with a 1×1 first, whose
    // empty phases must not clear what the other conv wrote; once the other way round); and
    // `e`, whose stride 3 exceeds its kernel.
    let source = "
network downsample(x: 12x10x3) {
    let y = x -> stem: conv(8, 3, pad: 1) -> relu
    let z = (y -> main: conv(16, 3, stride: 2, pad: 1)) + (y -> skip: conv(16, 1, stride: 2))
    let w = (y -> skip2: conv(16, 1, stride: 2)) + (y -> main2: conv(16, 5, stride: 2, pad: 2))
    return (z + w) -> relu -> e: conv(8, 2, stride: 3) -> relu -> flatten -> fc: dense(3)
}
";
    assert_eq!(compare(source, 3, 1), 14);
    assert_eq!(compare(source, 3, 2), 14);
}

#[test]
fn weight_gradients_of_small_maps_sum_over_the_images_in_each_tile() {
    // Convolutions of at most 256 output pixels and 16 Ki weights or more reduce their
    // weight gradients over every image of a call inside each register tile
    // (`lower/train/weight_grad_images.rs`); `a`'s 29×30 reduces image by image. `b`, stride 2
    // on 15×15, has 40 input channels (blocks of 4) and 47 outputs: a block of 32 channels
    // (8192 floats of ∂z over 15 × 16 pixels), then 8 + 7; `c` and `d` are stride 1 (one
    // phase, the frame), `c` with 47 input channels (not whole vectors) and an odd 3×2
    // window; `e`, 1×1 at stride 2, reads one phase of four and `f` has strides 2×3 and
    // asymmetric padding. Five images on two threads split 3 + 2.
    let source = "
network small(x: 29x30x3) {
    x -> a: conv(40, 3, pad: 1) -> relu
      -> b: conv(47, 3, stride: 2, pad: 1) -> relu
      -> c: conv(61, [3, 2], pad: [1, 0, 1, 1]) -> relu
      -> d: conv(269, 1) -> relu
      -> e: conv(62, 1, stride: 2) -> relu
      -> f: conv(45, [2, 3], stride: [2, 3], pad: [1, 0, 2, 1]) -> relu
      -> flatten -> fc: dense(3)
}
";
    let graph = graph_of(source);
    for (n, threads) in [(3, 1), (5, 2), (1, 1)] {
        let images = batch(&graph, n);
        assert_eq!(compare_with(&graph, images, threads, Winograd::Off), 14);
    }
}

#[test]
fn many_input_channels_use_the_blocked_weight_gradient() {
    // 40 input channels × 3 taps per row: the weight gradient loops over blocks of 4 inputs.
    let source = "
network wide(x: 7x7x3) {
    x -> a: conv(40, 3, pad: 1) -> relu
      -> b: conv(12, 3, stride: 2, pad: 1) -> relu
      -> global_avgpool -> flatten -> fc: dense(5)
}
";
    assert_eq!(compare(source, 3, 1), 6);
}

#[test]
fn pooling_with_padding_ceil_mode_and_uncounted_padding() {
    let source = "
network pools(x: 9x10x6) {
    x -> a: conv(8, 3, pad: 1) -> relu
      -> avgpool(3, stride: 2, pad: 1, count_include_pad: false)
      -> b: conv(8, 1)
      -> avgpool(2, stride: 2, ceil_mode: true)
      -> relu -> flatten -> fc: dense(3)
}
";
    assert_eq!(compare(source, 3, 1), 6);
}

#[test]
fn max_pooling_routes_to_the_first_maximum() {
    // Overlapping windows (3 stride 2), padding (−∞ border), ceil mode; and a ReLU before a
    // pool makes ties (zeros) in a window, which must send the gradient once, to the first.
    let source = "
network pools(x: 10x9x5) {
    x -> a: conv(6, 3, pad: 1) -> relu
      -> maxpool(3, stride: 2, pad: 1)
      -> b: conv(8, 3, pad: 1)
      -> maxpool(2, stride: 2, ceil_mode: true)
      -> flatten -> fc: dense(3)
}
";
    assert_eq!(compare(source, 3, 1), 6);
    assert_eq!(compare(source, 2, 2), 6);
    // Uniform images: away from the border every conv output of a channel is the same, so
    // every window is a tie.
    let graph = graph_of(source);
    let uniform = ArrayD::from_elem(IxDyn(&[2, 10, 9, 5]), 0.5f32);
    assert_eq!(compare_on(&graph, uniform, 1), 6);
}

#[test]
fn max_pools_3x3_of_stride_2_by_rows_beside_the_general_scatter() {
    // The 3×3 stride-2 pools take their own path (`max_pool_rows.rs`), the stride-1 one the
    // general scatter, all three reading the same value (the first backward stores the
    // gradient, the others add to it): windows into the bottom padding (ceil mode, without
    // and with padding), 5 channels (a partial vector), odd sizes.
    let shared = "
network stems(x: 10x9x3) {
    let y = x -> a: conv(5, 3, pad: 1) -> relu
    let p = y -> maxpool(3, stride: 2, ceil_mode: true) -> b: conv(4, 1) -> global_avgpool
    let q = y -> maxpool(3, stride: 2, pad: 1, ceil_mode: true) -> c: conv(4, 1) -> global_avgpool
    let r = y -> maxpool(3, stride: 1, pad: 1) -> d: conv(4, 1) -> global_avgpool
    return (p + q + r) -> flatten -> fc: dense(3)
}
";
    // An even size without padding: no window covers the last row and column, whose
    // gradient is zero; windows of a row long enough to run as a loop.
    let alone = "
network stem(x: 14x12x2) {
    x -> a: conv(5, 3, pad: 1) -> relu -> maxpool(3, stride: 2) -> b: conv(4, 3, pad: 1)
      -> flatten -> fc: dense(3)
}
";
    for (source, grads) in [(shared, 10), (alone, 6)] {
        assert_eq!(compare(source, 3, 1), grads);
        assert_eq!(compare(source, 2, 2), grads);
        // Uniform images: away from the border every conv output of a channel is the same,
        // so every window is a tie.
        let graph = graph_of(source);
        let s = graph.shape(graph.inputs[0]);
        let uniform = ArrayD::from_elem(IxDyn(&[2, s.h, s.w, s.c]), 0.5f32);
        assert_eq!(compare_on(&graph, uniform, 1), grads);
    }
    // ResNet's stem in small: the pool reads the frame its batch norm and ReLU wrote, and its
    // output (which the backward reads the maxima from) feeds a block and its residual add.
    let stem = "
network stem(x: 13x11x3) {
    let y = x -> c0: conv(8, 3, pad: 1, bias: false) -> n0: batchnorm -> relu
      -> maxpool(3, stride: 2, pad: 1)
    let z = y -> c1: conv(8, 3, pad: 1, bias: false) -> n1: batchnorm -> relu
      -> c2: conv(8, 3, pad: 1, bias: false) -> n2: batchnorm
    return relu(z + y) -> global_avgpool -> flatten -> fc: dense(3)
}
";
    assert_eq!(compare(stem, 4, 1), 11);
    assert_eq!(compare(stem, 4, 2), 11);
}

#[test]
fn depthwise_convolutions_with_stride_and_dilation() {
    let source = "
network mobile(x: 9x9x3) {
    x -> a: conv(12, 3, pad: 1) -> relu6
      -> dw1: dwconv(3, stride: 2, pad: 1) -> relu6
      -> dw2: dwconv(3, dilation: 2, pad: 2, bias: false)
      -> p: conv(7, 1) -> relu
      -> global_avgpool -> flatten -> fc: dense(4)
}
";
    assert_eq!(compare(source, 3, 1), 9);
}

#[test]
fn residual_adds_and_a_value_read_twice() {
    let source = "
network residual(x: 8x8x4) {
    let y = x -> stem: conv(8, 3, pad: 1) -> relu
    let branch = y -> c1: conv(8, 3, pad: 1) -> relu -> c2: conv(8, 3, pad: 1)
    let z = relu(branch + y)
    let w = z -> down: conv(8, 1, stride: 2)
    return (w + (z -> avgpool(2))) -> global_avgpool -> flatten -> fc: dense(3)
}
";
    assert_eq!(compare(source, 3, 1), 10);
}

#[test]
fn batch_norm_on_batch_statistics_forward_and_backward() {
    let source = "
network bn(x: 7x6x3) {
    x -> c1: conv(6, 3, pad: 1, bias: false) -> n1: batchnorm -> relu
      -> c2: conv(5, 3, stride: 2, pad: 1) -> n2: batchnorm(eps: 0.001)
      -> flatten -> fc: dense(4)
}
";
    // γ, β of two batch norms + c1, c2 (weight, bias), fc.
    assert_eq!(compare(source, 4, 1), 9);
    assert_eq!(compare(source, 5, 2), 9);
}

#[test]
fn a_resnet_block_and_a_mobilenet_bottleneck_with_batch_norm() {
    let source = "
network bottleneck(x: 8x8x4) {
    let y = x -> stem: conv(8, 3, pad: 1, bias: false) -> bn0: batchnorm -> relu -> maxpool(3, stride: 1, pad: 1)
    let branch = y
        -> conv1: conv(8, 3, pad: 1, bias: false) -> bn1: batchnorm -> relu
        -> conv2: conv(8, 3, pad: 1, bias: false) -> bn2: batchnorm
    let z = relu(branch + y)
    let expanded = z -> e: conv(16, 1, bias: false) -> bn3: batchnorm -> relu6
        -> dw: dwconv(3, stride: 2, pad: 1, bias: false) -> bn4: batchnorm -> relu6
        -> p: conv(8, 1, bias: false) -> bn5: batchnorm
    return expanded -> global_avgpool -> flatten -> fc: dense(5)
}
";
    assert_eq!(compare(source, 3, 1), 6 * 3 + 2);
    assert_eq!(compare(source, 4, 2), 6 * 3 + 2);
}

#[test]
fn a_batch_norms_activation_read_by_a_conv_and_a_residual_add() {
    // bn0's ReLU is read twice, so it lands in a plain tensor; bn1's ReLU6 lands in c2's
    // padded frame, whose Winograd tiles reach past it.
    let source = "
network r(x: 9x7x4) {
    let y = x -> stem: conv(8, 3, pad: 1, bias: false) -> bn0: batchnorm -> relu
    let b = y -> c1: conv(8, 3, pad: 1, bias: false) -> bn1: batchnorm -> relu6
        -> c2: conv(8, 3, pad: 1, bias: false) -> bn2: batchnorm
    return relu(b + y) -> maxpool(2) -> global_avgpool -> flatten -> fc: dense(3)
}
";
    // stem, c1, c2, fc (weight, bias) and three γ, β.
    assert_eq!(compare(source, 3, 1), 11);
    assert_eq!(compare(source, 4, 2), 11);
}

#[test]
fn batch_norm_over_more_channels_than_one_register_group() {
    // Past 16 channels the statistics kernels sum every channel of a pixel at once into
    // memory; 18 and 36 channels end in a partial vector.
    let source = "
network wide(x: 6x5x3) {
    let y = x -> c1: conv(18, 3, pad: 1, bias: false) -> n1: batchnorm -> relu
    let z = y -> c2: conv(18, 3, pad: 1, bias: false) -> n2: batchnorm
    return relu(z + y) -> c3: conv(36, 1, bias: false) -> n3: batchnorm -> swish
        -> global_avgpool -> flatten -> fc: dense(3)
}
";
    // c1, c2, c3, fc (weight, bias) and three γ, β.
    assert_eq!(compare(source, 3, 1), 11);
    assert_eq!(compare(source, 4, 2), 11);
}

#[test]
fn dropout_masks_are_the_references() {
    // After a free flatten (H×W×C in memory, C×H×W in PyTorch's order), and on a flat vector.
    let source = "
network dr(x: 6x5x3) {
    x -> c: conv(4, 3, pad: 1) -> relu -> flatten -> dropout(0.5)
      -> fc1: dense(9) -> relu -> dropout(0.3) -> fc2: dense(3)
}
";
    assert_eq!(compare(source, 4, 1), 6);
    assert_eq!(compare(source, 3, 2), 6);
}

#[test]
fn winograd_forward_convolutions_keep_the_backward_right() {
    // 7×7 and 5×6 outputs: Winograd's 4×4 tiles reach past them, into the padded frame the
    // backward reads.
    let source = "
network wino(x: 7x7x5) {
    let y = x -> stem: conv(8, 3, pad: 1) -> bn0: batchnorm -> relu
    let branch = y -> c1: conv(8, 3, pad: 1) -> relu -> c2: conv(8, 3, pad: 1, bias: false)
    return relu(branch + y) -> c3: conv(6, 3, pad: [0, 1, 1, 0]) -> relu
        -> global_avgpool -> flatten -> fc: dense(3)
}
";
    let graph = graph_of(source);
    for threads in [1, 2] {
        let images = batch(&graph, 3);
        assert_eq!(compare_with(&graph, images, threads, Winograd::Always), 11);
    }
}

#[test]
fn winograd_backward_on_maps_of_many_tiles() {
    // b's 34×34 output is 81 tiles: its products run image by image, `V` and `P` laid out
    // tile-major; c's 17×17 is 25 tiles, over the images of a call, laid out along the tiles
    // (`lower/train/winograd.rs`), with more tiles than one unrolled step.
    let source = "
network tiles(x: 34x34x3) {
    x -> a: conv(8, 3, pad: 1) -> relu -> b: conv(8, 3, pad: 1) -> relu -> maxpool(2)
      -> c: conv(12, 3, pad: 1) -> relu -> global_avgpool -> flatten -> fc: dense(3)
}
";
    let graph = graph_of(source);
    for threads in [1, 2] {
        let images = batch(&graph, 3);
        assert_eq!(compare_with(&graph, images, threads, Winograd::Always), 8);
    }
}

#[test]
fn winograd_weight_gradients_over_chunks_of_input_channels() {
    // 128 output channels: the weight gradient's products take 12 input channels at a time,
    // so c1's 19 are a chunk and a rest of 7; c2's 128 are one chunk of an odd 10 filters.
    let source = "
network wide(x: 6x5x19) {
    x -> c1: conv(128, 3, pad: 1) -> relu -> c2: conv(10, 3, pad: 1) -> relu
      -> global_avgpool -> flatten -> fc: dense(3)
}
";
    let graph = graph_of(source);
    for threads in [1, 2] {
        let images = batch(&graph, 3);
        assert_eq!(compare_with(&graph, images, threads, Winograd::Always), 6);
    }
}

#[test]
fn a_frozen_base_with_batch_norm_trains_only_the_head() {
    let source = "
block base(x) {
    x -> conv1: conv(6, 3, pad: 1, bias: false) -> bn1: batchnorm -> relu -> avgpool(2)
}
network transfer(x: 8x8x3) {
    x -> frozen base -> flatten -> head: dense(4) -> softmax
}
";
    assert_eq!(compare(source, 4, 2), 2);
}

#[test]
fn a_frozen_layer_is_packed_again_only_when_its_numbers_change() {
    // The step skips packing a frozen layer whose numbers are those it last packed: the same
    // step twice, then with the frozen conv's weights changed, must each be the reference's.
    let source = "
network transfer(x: 8x8x3) {
    x -> base: frozen conv(6, 3, pad: 1) -> relu -> avgpool(2) -> flatten -> head: dense(4)
}
";
    let graph = graph_of(source);
    let images = batch(&graph, 3);
    let mut w = weights(&graph);
    let mut jit = JitStep::new(&graph, &w, 1)
        .expect("compiles")
        .unwrap_or_else(|reason| panic!("the JIT declined: {reason}"));
    assert_eq!(check_step(&mut jit, &graph, &w, &images), 2);
    assert_eq!(check_step(&mut jit, &graph, &w, &images), 2);
    let base = w.get_mut("base.weight").expect("the frozen weight");
    base.iter_mut().for_each(|v| *v = -1.5 * *v + 0.01);
    assert_eq!(check_step(&mut jit, &graph, &w, &images), 2);
}

#[test]
fn each_step_packs_the_weights_it_is_given() {
    // The step reads the weights where they are rather than binding them to its graph: a
    // second step on changed weights (every tensor, a Winograd conv's among them) must be the
    // reference's for those weights, not for the first step's.
    let source = "
network changing(x: 9x9x3) {
    x -> a: conv(8, 3, pad: 1) -> relu -> b: conv(8, 3, pad: 1) -> relu
      -> avgpool(3) -> flatten -> fc: dense(5)
}
";
    let graph = graph_of(source);
    let images = batch(&graph, 3);
    let mut w = weights(&graph);
    let mut jit = JitStep::with_winograd(&graph, &w, 1, Winograd::Always)
        .expect("compiles")
        .unwrap_or_else(|reason| panic!("the JIT declined: {reason}"));
    assert_eq!(check_step(&mut jit, &graph, &w, &images), 6);
    let names: Vec<String> = w.iter().map(|(name, _)| name.to_string()).collect();
    for name in names {
        let tensor = w.get_mut(&name).expect("a tensor of the weights");
        tensor.iter_mut().for_each(|v| *v = -0.7 * *v + 0.01);
    }
    assert_eq!(check_step(&mut jit, &graph, &w, &images), 6);
}

#[test]
fn what_has_no_compiled_backward_is_declined_with_a_reason() {
    // Grouped (not depthwise) convolutions have no backward kernel yet.
    let source =
        "network gr(x: 6x6x4) { x -> c: conv(4, 3, groups: 2) -> flatten -> fc: dense(3) }";
    let graph = graph_of(source);
    let weights = Weights::seeded(&graph, 1).unwrap();
    match JitStep::new(&graph, &weights, 1).expect("no error") {
        Ok(_) => panic!("the JIT accepted {source}"),
        Err(reason) => assert!(
            reason.contains("conv c") && reason.contains("no compiled backward"),
            "{reason}"
        ),
    }
}

#[test]
fn dilated_max_pooling_is_declined_by_name() {
    // The backward kernels read undilated windows; the trainer falls back to the reference,
    // whose gradient rule handles the dilation (`tests/gradients.rs`).
    let source = "network dp(x: 9x9x2) {
        x -> c: conv(4, 3) -> p: maxpool(2, dilation: 2) -> flatten -> fc: dense(3)
    }";
    let graph = graph_of(source);
    let weights = Weights::seeded(&graph, 1).unwrap();
    match JitStep::new(&graph, &weights, 1).expect("no error") {
        Ok(_) => panic!("the JIT accepted {source}"),
        Err(reason) => assert!(
            reason.contains("maxpool p") && reason.contains("no compiled backward"),
            "{reason}"
        ),
    }
}
