//! Winograd's F(4×4, 3×3) (`lower/winograd.rs`) against the reference interpreter: odd sizes,
//! partial tiles, channel counts that are not multiples of 4 or 8, padding 0, 1 and
//! asymmetric, batch 3, two threads, checked mode, fused residual + ReLU epilogues, and
//! outputs written into a padded buffer or a concat's slice. Each case prints its maximum
//! error with and without Winograd (`--nocapture` shows them).

use super::{graph_of, inputs_for, max_error, weights_for, TOLERANCE};
use cnnc::codegen::{self, CodegenOptions};
use cnnc::graph::Graph;
use cnnc::lower::{LowerOptions, Winograd};
use cnnc::reference;

/// How many convolutions `graph` lowers with Winograd's algorithm under `winograd`.
fn winograd_convs(graph: &Graph, winograd: Winograd) -> usize {
    cnnc::lower::emit_loops_with(graph, &LowerOptions { winograd })
        .expect("lowers")
        .lines()
        .filter(|l| l.starts_with("kernel") && l.contains("_winoin"))
        .count()
}

/// Compiles `graph` with every 3×3 stride-1 conv as Winograd, checked on two threads and
/// unchecked on one, and directly; compares each with the reference at `batch`; returns the
/// worst error of the Winograd runs and of the direct one.
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
    let winograd = run(true, 2, Winograd::Always).max(run(false, 1, Winograd::Always));
    let direct = run(false, 1, Winograd::Off);
    println!("{what} (batch {batch}): max error winograd {winograd:.2e}, direct {direct:.2e}");
    assert!(
        winograd <= TOLERANCE,
        "{what}: winograd error {winograd}\n{}",
        cnnc::lower::emit_loops_with(
            graph,
            &LowerOptions {
                winograd: Winograd::Always
            }
        )
        .unwrap_or_default()
    );
    assert!(direct <= TOLERANCE, "{what}: direct error {direct}");
    (winograd, direct)
}

fn check_winograd(source: &str, batch: usize, n_winograd: usize) {
    let graph = graph_of(source);
    assert_eq!(
        winograd_convs(&graph, Winograd::Always),
        n_winograd,
        "{source}"
    );
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

/// The automatic rule: 3×3 stride 1, ungrouped, ≥ 8 channels in and out, and an estimated
/// time under 0.75 of direct convolution's (small outputs waste most of their tiles).
#[test]
fn winograd_is_chosen_where_it_pays() {
    let cases = [
        ("network t(x: 8x8x16) { x -> conv(16, 3, pad: 1) }", 1),
        ("network t(x: 56x56x8) { x -> conv(8, 3, pad: 1) }", 1),
        ("network t(x: 7x7x512) { x -> conv(512, 3, pad: 1) }", 1),
        ("network t(x: 5x5x64) { x -> conv(64, 3, pad: 1) }", 1),
        ("network t(x: 8x8x7) { x -> conv(16, 3, pad: 1) }", 0),
        ("network t(x: 8x8x16) { x -> conv(4, 3, pad: 1) }", 0),
        ("network t(x: 224x224x3) { x -> conv(64, 3, pad: 1) }", 0),
        ("network t(x: 2x2x64) { x -> conv(64, 3, pad: 1) }", 0),
        ("network t(x: 5x5x8) { x -> conv(8, 3, pad: 1) }", 0),
        ("network t(x: 8x8x16) { x -> conv(16, 3, stride: 2) }", 0),
        ("network t(x: 8x8x16) { x -> conv(16, 3, dilation: 2) }", 0),
        ("network t(x: 8x8x16) { x -> conv(16, 3, groups: 2) }", 0),
        ("network t(x: 8x8x16) { x -> conv(16, 5, pad: 2) }", 0),
    ];
    for (source, expected) in cases {
        let graph = graph_of(source);
        assert_eq!(winograd_convs(&graph, Winograd::Auto), expected, "{source}");
    }
}
