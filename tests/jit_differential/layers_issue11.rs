//! The layers added for issue 11 against the reference: the parameterless activations alone
//! and fused into conv and dense epilogues, `channel_shuffle` and `split`, and `upsample`.

use super::{
    as_written_and_optimized, check_weighted, check_with, graph_of, graphs_of, inputs_for,
};
use cnnc::codegen::CodegenOptions;
use cnnc::graph::Op;
use cnnc::reference;

/// Checked on one thread, unchecked on one and on two threads.
fn check_source(source: &str, batch: usize) {
    let options = [(true, 1), (false, 1), (false, 2)].map(|(checked, threads)| CodegenOptions {
        checked,
        threads,
        ..Default::default()
    });
    for graph in graphs_of(source) {
        check_with(&graph, batch, &options, source);
    }
}

/// The activations added for issue 11 (`hardsigmoid`, `leaky_relu`, `elu`, `gelu`), each as a
/// node of its own and fused into a conv's epilogue and a dense's, on values spread over
/// their pieces (a 1×1 conv with literal weights scales the input by 8, −8, 2.5, −2, 0.5 and
/// 0.001, so the values reach ±8 and the tiny ones around 0), at odd sizes and batch 3.
#[test]
fn new_activations_standalone_and_fused() {
    let spread = "conv(6, 1, weights: [[[[8]]], [[[-8]]], [[[2.5]]], [[[-2]]], [[[0.5]]], [[[0.001]]]], bias: false)";
    for activation in [
        "hardsigmoid",
        "leaky_relu",
        "leaky_relu(slope: 0.2)",
        "elu",
        "elu(alpha: 0.5)",
        "gelu",
        "gelu(approximate: \"tanh\")",
    ] {
        check_source(
            &format!("network t(x: 7x5x1) {{ x -> {spread} -> {activation} }}"),
            3,
        );
        check_source(&format!("network t(x: 3x3x9) {{ x -> {activation} }}"), 2);
        let graph = graph_of(&format!(
            "network t(x: 6x5x1) {{ x -> {spread} -> conv(5, 3, pad: 1) -> {activation} -> flatten -> dense(7) -> {activation} }}"
        ));
        let [(written, weights), (optimized, optimized_weights)] = as_written_and_optimized(graph);
        let fused = |op: &Op| match op {
            Op::Conv(a) => a.activation,
            Op::Dense(a) => a.activation,
            _ => None,
        };
        let fused_count = optimized
            .nodes
            .values()
            .filter(|node| {
                fused(&node.op)
                    .is_some_and(|a| a.name() == activation.split('(').next().unwrap_or_default())
            })
            .count();
        // The tanh approximation calls libm's tanh, which the epilogues do not.
        let expected_fused = if activation.contains("tanh") { 0 } else { 2 };
        assert_eq!(
            fused_count, expected_fused,
            "the optimizer fuses {activation} into the conv and the dense (or not)"
        );
        let expected = reference::run(&written, &weights, &inputs_for(&written, 3))
            .expect("the reference runs");
        check_weighted(&optimized, &optimized_weights, &expected, activation);
    }
}

/// `channel_shuffle` and `split` at odd sizes and channel counts that are not multiples of 4,
/// alone, on flat vectors, written into a concat's slice (the split of a ShuffleNet unit and
/// the branch beside it) and read from one, at batch 3.
#[test]
fn channel_shuffle_and_split() {
    for source in [
        "network t(x: 5x3x12) { x -> channel_shuffle(3) }",
        "network t(x: 5x3x12) { x -> channel_shuffle(4) -> split(3, 1) }",
        "network t(x: 7x1x10) { x -> split(5, 4) -> relu }",
        "network t(x: 4x4x3) { x -> flatten -> channel_shuffle(2) -> split(4, 1) -> dense(5) }",
        "network t(x: 7x5x10) {
            let a = x -> split(2, 0)
            let b = x -> split(2, 1) -> conv(5, 1) -> relu -> dwconv(3, pad: 1)
            return concat(a, b) -> channel_shuffle(2)
        }",
        "network t(x: 6x6x8) {
            let y = concat(x -> conv(6, 3, stride: 2, pad: 1), x -> maxpool(2)) -> channel_shuffle(2)
            return concat(y -> split(2, 0), y -> split(2, 1) -> conv(8, 1)) -> channel_shuffle(3)
        }",
    ] {
        check_source(source, 3);
    }
}

/// `upsample`, nearest and bilinear, at odd sizes (1 pixel wide or high too), scales 1 to 4
/// and unequal, channel counts that are not multiples of 4, into a concat's slice (a U-Net
/// skip), at batch 3.
#[test]
fn upsample_nearest_and_bilinear() {
    for mode in ["nearest", "bilinear"] {
        for (input, scale) in [
            ("5x3x6", "2"),
            ("1x7x5", "3"),
            ("4x1x9", "[4, 1]"),
            ("3x5x1", "[2, 3]"),
            ("2x2x4", "1"),
        ] {
            check_source(
                &format!(
                    "network t(x: {input}) {{ x -> upsample(scale: {scale}, mode: \"{mode}\") }}"
                ),
                3,
            );
        }
        check_source(
            &format!(
                "network t(x: 8x6x3) {{
                    let down = x -> conv(5, 3, stride: 2, pad: 1) -> relu
                    return concat(x, down -> upsample(mode: \"{mode}\")) -> conv(4, 1)
                }}"
            ),
            3,
        );
    }
}

/// Arithmetic between a tensor and a number, in every form, and MobileNet v3's hard swish
/// written out as PyTorch's documentation does (`x * relu6(x + 3) / 6`), which must equal the
/// `hardswish` layer.
#[test]
fn tensor_number_arithmetic() {
    check_source(
        "network t(x: 5x3x7) { return (1 - x / 2 + 2 * x - 0.5) * -3 + 4 / (x * x + 1) }",
        3,
    );
    check_source(
        "network t(x: 6x5x3) { return concat(x, (x -> conv(5, 1)) + 0.25, 2 - x) }",
        3,
    );
    let graph = graph_of(
        "network t(x: 7x5x6) { return x * 4 * (x * 4 + 3 -> relu6) / 6 + (x * 4 -> hardswish) * -1 }",
    );
    let inputs = inputs_for(&graph, 2);
    let expected = reference::run(&graph, &cnnc::runtime::Weights::new(), &inputs)
        .expect("the reference runs");
    assert!(
        expected.iter().all(|&v| v.abs() <= 1e-6),
        "x · relu6(x + 3) / 6 is hardswish"
    );
    check_source("network t(x: 7x5x6) { return x * (x + 3 -> relu6) / 6 }", 2);
}

/// `upsample(size: [h, w])` takes the whole factors `size / input` (PyTorch's
/// `nn.Upsample(size=…)`, which for whole multiples samples as `scale_factor` does), in both
/// modes, alone and beside an agreeing `scale`.
#[test]
fn upsample_to_a_size() {
    use cnnc::graph::UpsampleMode;
    for (mode, expected_mode) in [
        ("nearest", UpsampleMode::Nearest),
        ("bilinear", UpsampleMode::Bilinear),
    ] {
        for (args, scale) in [
            ("size: [10, 9]", [2, 3]),
            ("size: [5, 12]", [1, 4]),
            ("size: [15, 9], scale: [3, 3]", [3, 3]),
        ] {
            let source =
                format!("network t(x: 5x3x6) {{ x -> upsample({args}, mode: \"{mode}\") }}");
            let graph = graph_of(&source);
            let node = &graph.nodes[graph.output()];
            let size = [5 * scale[0], 3 * scale[1]];
            let Op::Upsample(attrs) = &node.op else {
                panic!("{source}: not an upsample");
            };
            let input = cnnc::graph::Shape::spatial(5, 3, 6);
            assert_eq!(attrs.mode, expected_mode, "{source}");
            assert_eq!(attrs.size, Some(size), "{source}");
            assert_eq!(attrs.factors(input), Some(scale), "{source}");
            check_source(&source, 3);
        }
    }
}

/// `upsample(size: …)` that is not a whole multiple of the input, larger and smaller, both
/// modes, alone, after a conv, and written into a concat's slice; batch 3.
#[test]
fn upsample_to_any_size() {
    for mode in ["nearest", "bilinear"] {
        for (shape, size) in [
            ("5x3x6", "[7, 8]"),
            ("5x3x6", "[3, 2]"),
            ("4x7x5", "[9, 7]"),
            ("1x1x3", "[3, 5]"),
            ("6x6x2", "[6, 13]"),
        ] {
            check_source(
                &format!(
                    "network t(x: {shape}) {{ x -> upsample(size: {size}, mode: \"{mode}\") }}"
                ),
                3,
            );
        }
        check_source(
            &format!("network t(x: 7x5x3) {{ let u = x -> conv(5, 3) -> upsample(size: [7, 5], mode: \"{mode}\")\n return concat(x, u) -> conv(4, 1) }}"),
            3,
        );
    }
}
