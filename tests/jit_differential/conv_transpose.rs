//! `conv_transpose` (PyTorch's `ConvTranspose2d`) against the reference: the gather kernel's
//! phases at strides 1–3 with padding, output padding and dilation, grouped and depthwise,
//! channel counts that are not multiples of 4 or 8, odd sizes, batch 3, checked on one
//! thread and unchecked on one and two.

use super::{check_with, graph_of, graphs_of};
use cnnc::codegen::CodegenOptions;

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

#[test]
fn strides_padding_and_output_padding() {
    for (input, layer) in [
        ("5x7x3", "conv_transpose(5, 3)"),
        ("5x7x3", "conv_transpose(9, 3, stride: 2)"),
        ("5x7x3", "conv_transpose(9, 3, stride: 2, pad: 1)"),
        (
            "5x7x3",
            "conv_transpose(9, 3, stride: 2, pad: 1, output_padding: 1)",
        ),
        ("5x7x3", "conv_transpose(6, 4, stride: 2, pad: 1)"),
        ("3x5x6", "conv_transpose(7, 3, stride: 3)"),
        (
            "3x5x6",
            "conv_transpose(7, 5, stride: 3, pad: 2, output_padding: 2)",
        ),
        (
            "4x3x2",
            "conv_transpose(3, [2, 3], stride: [3, 2], pad: [1, 0, 0, 1])",
        ),
        ("4x3x2", "conv_transpose(16, 1, stride: 2)"),
        ("2x2x4", "conv_transpose(4, 2, stride: 5)"),
        (
            "3x3x5",
            "conv_transpose(11, 3, stride: 2, bias: false) -> relu",
        ),
    ] {
        check_source(&format!("network t(x: {input}) {{ x -> {layer} }}"), 3);
    }
}

#[test]
fn dilation() {
    for (input, layer) in [
        ("5x4x3", "conv_transpose(4, 3, dilation: 2)"),
        (
            "5x4x3",
            "conv_transpose(4, 3, stride: 2, dilation: 2, pad: 1)",
        ),
        (
            "5x4x3",
            "conv_transpose(4, 3, stride: 2, dilation: 3, output_padding: 2)",
        ),
        (
            "3x4x2",
            "conv_transpose(5, [3, 2], stride: 3, dilation: [2, 3], pad: 2)",
        ),
    ] {
        check_source(&format!("network t(x: {input}) {{ x -> {layer} }}"), 3);
    }
}

#[test]
fn groups_and_depthwise() {
    for (input, layer) in [
        ("5x3x6", "conv_transpose(9, 3, stride: 2, groups: 3)"),
        (
            "5x3x6",
            "conv_transpose(10, 3, stride: 2, pad: 1, output_padding: 1, groups: 2)",
        ),
        (
            "5x3x6",
            "conv_transpose(6, 3, stride: 2, pad: 1, groups: 6)",
        ),
        (
            "4x5x7",
            "conv_transpose(7, 4, stride: 2, pad: 1, groups: 7)",
        ),
        ("4x5x7", "conv_transpose(14, 3, stride: 3, groups: 7)"),
        (
            "3x3x9",
            "conv_transpose(9, 3, dilation: 2, groups: 9, bias: false)",
        ),
    ] {
        check_source(&format!("network t(x: {input}) {{ x -> {layer} }}"), 3);
    }
}

/// Written into a concat's channel slice, beside an upsampling of the same input, and read
/// by a conv: the U-Net decoder's pattern.
#[test]
fn in_a_decoder_with_concat() {
    check_source(
        "network t(x: 5x5x6) { x -> conv(8, 3, stride: 2, pad: 1) -> relu -> conv_transpose(5, 3, stride: 2, pad: 1) -> relu -> conv(3, 3, pad: 1) }",
        3,
    );
    check_source(
        "network t(x: 5x5x6) { let y = x -> conv(8, 3, stride: 2, pad: 1); concat(y -> conv_transpose(5, 3, stride: 2, pad: 1), y -> upsample(2) -> conv(3, 2)) -> conv(4, 3) }",
        3,
    );
}

/// The compiled training step has no backward for a grouped one yet and says so by name,
/// so the trainer falls back to the reference (whose gradient `tests/gradients.rs` checks);
/// ungrouped ones train compiled (`tests/train_jit_ops.rs`).
#[test]
fn the_compiled_training_step_declines_a_grouped_one_by_name() {
    let graph = graph_of(
        "network g(x: 6x6x4) { x -> c: conv_transpose(4, 3, stride: 2, groups: 2) -> flatten -> fc: dense(3) }",
    );
    let ungrouped = graph_of(
        "network g(x: 6x6x4) { x -> c: conv_transpose(4, 3, stride: 2) -> flatten -> fc: dense(3) }",
    );
    assert_eq!(cnnc::lower::training_unsupported(&ungrouped), None);
    let reason = cnnc::lower::training_unsupported(&graph).expect("declined");
    assert!(reason.contains("(conv_transpose c)"), "{reason}");
}
