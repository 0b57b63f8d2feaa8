//! The layers ConvNeXt brought against the reference: `layernorm` over each pixel's channels,
//! `pointwise_dense` (PyTorch's `Linear` at every pixel), and `parameter` (a learned 1×1×C
//! tensor), alone and in a small ConvNeXt block, at odd sizes, channel counts that are not
//! multiples of 4, batch 3, checked and on 2 threads; `gelu` at points whose exact
//! values (`x·Φ(x)`, torch's default erf form) are known; `prelu`; `groupnorm` and
//! `instancenorm`.

use super::{graphs_of, inputs_for, max_error, weights_for, Rng, TOLERANCE};
use cnnc::codegen::{self, CodegenOptions};
use cnnc::graph::{Graph, Op};
use cnnc::reference;
use cnnc::runtime::Weights;
use ndarray::{ArrayD, IxDyn};

/// Seeded weights with the layer and group norms' affine maps, the `parameter` tensors and the PReLU
/// slopes made random (fresh, they are the identity map and constants), so that a mixed-up
/// channel would show.
fn random_weights(graph: &Graph) -> Weights {
    let mut weights = weights_for(graph);
    let mut rng = Rng(17);
    for (name, node, _) in graph.named_params() {
        let range = match graph.nodes[node].op {
            Op::LayerNorm(_) if name.ends_with("weight") => (0.5, 2.0),
            Op::LayerNorm(_) => (-0.5, 0.5),
            Op::GroupNorm(_) if name.ends_with("weight") => (0.5, 2.0),
            Op::GroupNorm(_) => (-0.5, 0.5),
            Op::Parameter(_) | Op::PRelu(_) => (-2.0, 2.0),
            _ => continue,
        };
        if let Some(tensor) = weights.get_mut(&name) {
            tensor.mapv_inplace(|_| rng.uniform(range.0, range.1));
        }
    }
    weights
}

/// The JIT (checked on one thread, unchecked on one and two) against the reference.
fn check_source(source: &str, batch: usize) {
    for graph in graphs_of(source) {
        let weights = random_weights(&graph);
        let inputs = inputs_for(&graph, batch);
        let expected = reference::run(&graph, &weights, &inputs).expect("the reference runs");
        let mut optimized = graph.clone();
        let mut optimized_weights = weights.clone();
        cnnc::opt::optimize_weights(&mut optimized, &mut optimized_weights, &Default::default())
            .expect("the passes run");
        for (checked, threads) in [(true, 1), (false, 1), (false, 2)] {
            let options = CodegenOptions {
                checked,
                threads,
                ..Default::default()
            };
            for (graph, weights) in [(&graph, &weights), (&optimized, &optimized_weights)] {
                let compiled = codegen::compile(graph, weights, &options)
                    .unwrap_or_else(|e| panic!("{source}: compiling failed: {e}"));
                let found = compiled.run(&inputs).expect("the JIT runs");
                let error = max_error(&found, &expected);
                assert!(
                    error <= TOLERANCE,
                    "{source} (checked {checked}, {threads} threads, batch {batch}): error {error}"
                );
            }
        }
    }
}

/// Layer norm over 1 to 16 channels (full vectors, a tail, both), on images at odd sizes, on
/// a flat vector, after a conv that spreads the values, on values far from zero (mean 20
/// against a spread of about 1), written into a concat's slice, and with
/// PyTorch's default eps and a large one.
#[test]
fn layernorm_over_channels() {
    for source in [
        "network t(x: 5x7x13) { x -> layernorm(eps: 1e-6) }",
        "network t(x: 5x7x13) { x -> conv(16, 3, pad: 1) -> layernorm }",
        "network t(x: 3x5x1) { x -> layernorm }",
        "network t(x: 4x3x3) { x -> conv(4, 1) -> layernorm(eps: 0.5) }",
        "network t(x: 2x3x7) { x -> flatten -> layernorm -> dense(5) }",
        "network t(x: 5x3x6) { x + 20 -> layernorm }",
        "network t(x: 5x7x5) { concat(x -> layernorm, x -> conv(3, 1) -> layernorm) }",
    ] {
        check_source(source, 3);
    }
}

/// `pointwise_dense` at pixel counts that are and are not multiples of its 4-pixel tiles, unit
/// counts that fill its 8-unit panels or leave 1 to 7, with and without bias, on a 1×1 image,
/// and between other layers.
#[test]
fn pointwise_dense_at_every_pixel() {
    for source in [
        "network t(x: 5x7x13) { x -> pointwise_dense(9) }",
        "network t(x: 4x4x3) { x -> pointwise_dense(16, bias: false) }",
        "network t(x: 3x1x8) { x -> pointwise_dense(5) }",
        "network t(x: 1x1x7) { x -> pointwise_dense(21) }",
        "network t(x: 6x5x4) { x -> conv(6, 3) -> pointwise_dense(11) -> relu -> pointwise_dense(3) }",
    ] {
        check_source(source, 3);
    }
}

/// A `parameter` alone (the network's output), scaling a tensor on either side, and beside
/// other layers.
#[test]
fn parameter_tensors() {
    for source in [
        "network t(x: 3x3x6) { x -> parameter }",
        "network t(x: 5x7x13) { x * (x -> g: parameter) }",
        "network t(x: 5x3x5) { (x -> g: parameter(init: 0.5)) * (x -> conv(5, 1)) + x }",
    ] {
        check_source(source, 3);
    }
}

/// A ConvNeXt stage at a small size: stem, two blocks (written as `std/convnext.cnn` writes
/// them), downsampling, a block, and the head.
#[test]
fn small_convnext() {
    let source = "
        block cnblock(x) {
            let c = channels(x)
            let gamma = x -> layer_scale: parameter(init: 1e-6)
            let y = x -> block: [
                dwconv(7, pad: 3), identity, layernorm(eps: 1e-6),
                pointwise_dense(4 * c), gelu, pointwise_dense(c), identity,
            ]
            return x + y * gamma
        }
        network t(image: 23x19x3) {
            image
              -> features: [
                     [conv(6, 4, stride: 4), layernorm(eps: 1e-6)],
                     repeat 2 cnblock,
                     [layernorm(eps: 1e-6), conv(10, 2, stride: 2)],
                     cnblock,
                 ]
              -> global_avgpool
              -> classifier: [layernorm(eps: 1e-6), flatten, dense(7)]
        }";
    check_source(source, 3);
}

/// `gelu` is torch's default GELU, `x·Φ(x) = x·(1 + erf(x/√2))/2`, in the reference and in the
/// JIT (alone and fused into a dense layer's epilogue), to 1e-6 relative: the values are
/// Python's `0.5*x*(1+math.erf(x/math.sqrt(2)))`.
#[test]
fn gelu_is_the_exact_erf_form() {
    let points: [(f32, f64); 8] = [
        (-3.0, -0.00404969409489031),
        (-1.0, -0.15865525393145707),
        (-0.5, -0.15426876936299344),
        (0.0, 0.0),
        (0.5, 0.34573123063700656),
        (1.0, 0.8413447460685429),
        (2.0, 1.9544997361036416),
        (4.0, 3.9998733150326675),
    ];
    let xs: Vec<f32> = points.iter().map(|&(x, _)| x).collect();
    let input = ArrayD::from_shape_vec(IxDyn(&[1, 1, 1, 8]), xs).expect("an input");
    let identity: Vec<String> = (0..8)
        .map(|i| {
            let row: Vec<&str> = (0..8).map(|j| if i == j { "1" } else { "0" }).collect();
            format!("[{}]", row.join(", "))
        })
        .collect();
    let sources = [
        "network t(x: 1x1x8) { x -> gelu }".to_string(),
        format!(
            "network t(x: 1x1x8) {{ x -> flatten -> dense(8, weights: [{}], bias: false) -> gelu }}",
            identity.join(", ")
        ),
    ];
    for source in sources {
        let graph = graphs_of(&source).remove(0);
        let weights = Weights::new();
        let inputs = vec![input.clone()];
        let reference = reference::run(&graph, &weights, &inputs).expect("the reference runs");
        let mut optimized = graph.clone();
        let mut optimized_weights = weights.clone();
        cnnc::opt::optimize_weights(&mut optimized, &mut optimized_weights, &Default::default())
            .expect("the passes run");
        let compiled = codegen::compile(&optimized, &optimized_weights, &Default::default())
            .expect("compiles");
        let jit = compiled.run(&inputs).expect("the JIT runs");
        for (what, found) in [("reference", &reference), ("JIT", &jit)] {
            for (&value, &(x, exact)) in found.iter().zip(&points) {
                let error = (f64::from(value) - exact).abs() / exact.abs().max(1e-3);
                assert!(
                    error <= 1e-6,
                    "{source}: {what} gelu({x}) = {value}, exact {exact}"
                );
            }
        }
    }
}

/// PReLU with a slope per channel and one shared slope, at odd sizes, on a flat vector, after
/// a conv (values of both signs), into a concat's slice, with slopes above 1 and below 0
/// (random in ±2).
#[test]
fn prelu_per_channel_and_shared() {
    for source in [
        "network t(x: 5x7x13) { x - 0.5 -> prelu }",
        "network t(x: 5x7x13) { x - 0.5 -> prelu(shared: true) }",
        "network t(x: 4x3x6) { x -> conv(7, 3, pad: 1) -> prelu(init: 0.1) }",
        "network t(x: 2x3x5) { x - 0.5 -> flatten -> prelu -> dense(4) }",
        "network t(x: 5x3x5) { concat(x - 0.5 -> prelu, x -> conv(3, 1) -> prelu(shared: true)) }",
    ] {
        check_source(source, 3);
    }
}

/// Group norm with groups of 4 channels (whole vectors), 3 and 5 (partial ones), one group of
/// 13, not affine, on a flat vector, into a concat's slice; instance norm (groups of one
/// channel), plain and affine; at odd sizes and batch 3.
#[test]
fn groupnorm_and_instancenorm() {
    for source in [
        "network t(x: 5x7x12) { x -> conv(12, 3, pad: 1) -> groupnorm(3) }",
        "network t(x: 5x7x12) { x -> conv(12, 1) -> groupnorm(4) }",
        "network t(x: 3x5x15) { x + 20 -> groupnorm(3, eps: 1e-6) }",
        "network t(x: 5x7x13) { x -> groupnorm(1) }",
        "network t(x: 4x3x6) { x -> groupnorm(2, affine: false) }",
        "network t(x: 2x3x4) { x -> flatten -> groupnorm(2) -> dense(3) }",
        "network t(x: 5x7x6) { x -> conv(6, 3) -> instancenorm }",
        "network t(x: 5x3x7) { x -> instancenorm(affine: true) }",
        "network t(x: 5x7x5) { concat(x -> groupnorm(5), x -> conv(4, 1) -> groupnorm(2)) }",
    ] {
        check_source(source, 3);
    }
}
