//! Winograd's F(4×4, 3×3) and F(2×2, 3×3) (`lower/winograd.rs`) against the reference
//! interpreter: odd sizes, partial tiles, channel counts that are not multiples of 4 or 8,
//! padding 0, 1 and asymmetric, batch 3, two threads, checked mode, fused residual + ReLU
//! epilogues, and outputs written into a padded buffer or a concat's slice. Each case prints
//! its maximum error with each tile size and without Winograd (`--nocapture` shows them).

use super::{graph_of, inputs_for, max_error, weights_for, TOLERANCE};
use cnnc::codegen::{self, CodegenOptions};
use cnnc::graph::Graph;
use cnnc::lower::{LowerOptions, Winograd};
use cnnc::reference;

/// How many convolutions `graph` lowers with Winograd's algorithm under `winograd`.
fn winograd_convs(graph: &Graph, winograd: Winograd) -> usize {
    winograd_kernels(graph, winograd, "_winoin")
}

/// How many convolutions `graph` lowers with F(2×2, 3×3) under `winograd`, as the
/// descriptions of `emit loops` show it.
fn f2_convs(graph: &Graph, winograd: Winograd) -> usize {
    winograd_kernels(graph, winograd, "winograd F(2×2, 3×3) input transform")
}

fn winograd_kernels(graph: &Graph, winograd: Winograd, pattern: &str) -> usize {
    cnnc::lower::emit_loops_with(graph, &LowerOptions { winograd })
        .expect("lowers")
        .lines()
        .filter(|l| l.starts_with("kernel") && l.contains(pattern))
        .count()
}

/// Compiles `graph` with every 3×3 stride-1 conv as Winograd's F(4×4) and F(2×2), each
/// checked on two threads and unchecked on one, and directly; compares each with the
/// reference at `batch`; returns the worst error of the Winograd runs and of the direct one.
fn compare(graph: &Graph, batch: usize, what: &str) -> (f32, f32) {
    let weights = weights_for(graph);
    let inputs = inputs_for(graph, batch);
    let expected = reference::run(graph, &weights, &inputs).expect("the reference runs");
    let run = |checked: bool, threads: usize, winograd: Winograd| {
        let options = CodegenOptions {
            checked,
            threads,
            winograd,
        };
        let network = codegen::compile(graph, &weights, &options)
            .unwrap_or_else(|e| panic!("{what}: compiling failed: {e}"));
        let found = network.run(&inputs).expect("the JIT runs");
        max_error(&found, &expected)
    };
    let mut worst = 0.0f32;
    for size in [Winograd::Always, Winograd::AlwaysF2] {
        let winograd = run(true, 2, size).max(run(false, 1, size));
        println!("{what} (batch {batch}): max error winograd {size:?} {winograd:.2e}");
        assert!(
            winograd <= TOLERANCE,
            "{what}: winograd {size:?} error {winograd}\n{}",
            cnnc::lower::emit_loops_with(graph, &LowerOptions { winograd: size })
                .unwrap_or_default()
        );
        worst = worst.max(winograd);
    }
    let direct = run(false, 1, Winograd::Off);
    println!("{what} (batch {batch}): max error direct {direct:.2e}");
    assert!(direct <= TOLERANCE, "{what}: direct error {direct}");
    (worst, direct)
}

fn check_winograd(source: &str, batch: usize, n_winograd: usize) {
    let graph = graph_of(source);
    assert_eq!(
        winograd_convs(&graph, Winograd::Always),
        n_winograd,
        "{source}"
    );
    assert_eq!(f2_convs(&graph, Winograd::AlwaysF2), n_winograd, "{source}");
    assert_eq!(f2_convs(&graph, Winograd::Always), 0, "{source}");
    assert_eq!(winograd_convs(&graph, Winograd::Off), 0, "{source}");
    compare(&graph, batch, source);
}

/// Sizes whose tiles do not divide the output (5, 7, 9, 13, 14) and do (56), channels that
/// are not multiples of 4 or 8, padding 0, 1 and asymmetric, with and without bias, every
/// activation.
#[test]
fn winograd_convolutions_over_odd_shapes() {
    let cases = [
        ("5x5x3", "conv(6, 3, pad: 1)", 1),
        ("7x9x5", "conv(9, 3, pad: 1, bias: false) -> relu", 3),
        ("9x11x13", "conv(17, 3) -> relu6", 1),
        ("13x13x16", "conv(12, 3, pad: 1) -> sigmoid", 1),
        ("14x14x24", "conv(20, 3, pad: 1) -> swish", 3),
        ("16x16x8", "conv(8, 3, pad: 0) -> tanh", 1),
        ("6x8x7", "conv(5, 3, pad: [1, 0, 2, 1])", 1),
        ("56x56x6", "conv(10, 3, pad: 1) -> relu", 1),
        ("3x3x4", "conv(4, 3)", 3),
        ("4x6x33", "conv(35, 3, pad: 1)", 1),
    ];
    for (input, layer, batch) in cases {
        check_winograd(
            &format!("network t(x: {input}) {{ x -> {layer} }}"),
            batch,
            1,
        );
    }
}

/// A chain: the first conv writes into the second's padded (and tile-widened) input buffer,
/// and both are Winograd; a third conv at stride 2 is not.
#[test]
fn winograd_convolutions_in_a_chain() {
    check_winograd(
        "network t(x: 11x10x9) { x -> conv(18, 3, pad: 1) -> relu -> conv(20, 3, pad: 1) -> relu -> conv(8, 3, stride: 2) }",
        3,
        2,
    );
}

/// ResNet's basic block as the optimizer fuses it: the second conv's epilogue adds the skip
/// tensor, then applies the ReLU.
#[test]
fn winograd_with_a_fused_residual_and_relu() {
    let source = "block res(x) {
        let y = x -> a: conv(20, 3, pad: 1) -> relu -> b: conv(20, 3, pad: 1)
        return relu(y + x)
    }
    network t(x: 13x10x20) { x -> r: res() }";
    let mut graph = graph_of(source);
    let mut weights = weights_for(&graph);
    cnnc::opt::optimize_weights(&mut graph, &mut weights, &Default::default()).expect("passes");
    let residual = graph
        .nodes
        .values()
        .filter(|n| matches!(&n.op, cnnc::graph::Op::Conv(a) if a.residual))
        .count();
    assert_eq!(residual, 1, "the add is fused into the second conv");
    assert_eq!(winograd_convs(&graph, Winograd::Always), 2);
    assert_eq!(f2_convs(&graph, Winograd::AlwaysF2), 2);
    // The optimized graph's weights are folded already: compare on it directly.
    compare(&graph, 2, "residual block");
}

/// Convolutions writing into slices of a concat's buffer, at a channel offset that is not a
/// multiple of 4.
#[test]
fn winograd_into_a_concat() {
    check_winograd(
        "network t(x: 9x9x5) { return concat(x -> relu, x -> conv(7, 3, pad: 1), x -> conv(6, 3, pad: 1)) }",
        1,
        2,
    );
}

/// The automatic rule at inference: 3×3 stride 1, ungrouped, ≥ 8 channels in and out, and the
/// tile size of least estimated time, if under 0.75 of direct convolution's (small outputs
/// waste most of their tiles, and F(4×4)'s weights outweigh its products on them).
#[test]
fn winograd_is_chosen_where_it_pays() {
    // (source, Winograd convolutions, of which F(2×2))
    let cases = [
        ("network t(x: 8x8x16) { x -> conv(16, 3, pad: 1) }", 1, 1),
        ("network t(x: 56x56x8) { x -> conv(8, 3, pad: 1) }", 1, 0),
        ("network t(x: 56x56x64) { x -> conv(64, 3, pad: 1) }", 1, 0),
        (
            "network t(x: 14x14x256) { x -> conv(256, 3, pad: 1) }",
            1,
            0,
        ),
        ("network t(x: 7x7x512) { x -> conv(512, 3, pad: 1) }", 1, 1),
        ("network t(x: 7x7x192) { x -> conv(384, 3, pad: 1) }", 1, 1),
        ("network t(x: 5x5x64) { x -> conv(64, 3, pad: 1) }", 0, 0),
        ("network t(x: 8x8x7) { x -> conv(16, 3, pad: 1) }", 0, 0),
        ("network t(x: 8x8x16) { x -> conv(4, 3, pad: 1) }", 0, 0),
        ("network t(x: 224x224x3) { x -> conv(64, 3, pad: 1) }", 0, 0),
        ("network t(x: 2x2x64) { x -> conv(64, 3, pad: 1) }", 0, 0),
        ("network t(x: 5x5x8) { x -> conv(8, 3, pad: 1) }", 0, 0),
        ("network t(x: 8x8x16) { x -> conv(16, 3, stride: 2) }", 0, 0),
        (
            "network t(x: 8x8x16) { x -> conv(16, 3, dilation: 2) }",
            0,
            0,
        ),
        ("network t(x: 8x8x16) { x -> conv(16, 3, groups: 2) }", 0, 0),
        ("network t(x: 8x8x16) { x -> conv(16, 5, pad: 2) }", 0, 0),
    ];
    for (source, expected, f2) in cases {
        let graph = graph_of(source);
        assert_eq!(winograd_convs(&graph, Winograd::Auto), expected, "{source}");
        assert_eq!(f2_convs(&graph, Winograd::Auto), f2, "{source}");
    }
}

/// A training step lowers its forward as at inference but for F(2×2): its backward
/// differentiates F(4×4) convolutions alone, so `Auto` and `AlwaysF2` pick F(4×4) there.
#[test]
fn training_keeps_f4() {
    let graph =
        graph_of("network t(x: 7x7x64) { x -> conv(64, 3, pad: 1) -> global_avgpool -> flatten -> dense(3) }");
    for winograd in [Winograd::Auto, Winograd::Always, Winograd::AlwaysF2] {
        let step = cnnc::lower::lower_training(&graph, None, winograd).expect("lowers");
        let loops = step.lowered.program.dump();
        let kernels = |pattern: &str| {
            loops
                .lines()
                .filter(|l| l.starts_with("kernel") && l.contains(pattern))
                .count()
        };
        assert_eq!(kernels("winograd F(2×2, 3×3)"), 0, "{winograd:?}");
        assert!(
            kernels("winograd F(4×4, 3×3) products") >= 1,
            "{winograd:?}"
        );
    }
    // At inference, the same convolution is F(2×2) under both.
    assert_eq!(f2_convs(&graph, Winograd::Auto), 1);
    assert_eq!(f2_convs(&graph, Winograd::AlwaysF2), 1);
}
