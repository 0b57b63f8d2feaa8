//! The kernel shapes chosen for small networks such as LeNet-5 (issue 9): pooling windows of
//! up to 3×3 written out tap by tap rather than as two loops, and small convolutions whose
//! weights outweigh their input tiled as one run of pixels across rows (up to 100 pixels).
//! Each shape against the reference, at the sizes on both sides of its threshold.

use super::{check_source, graph_of};

/// The loop headers (`loop iN in ...`) of `graph`'s kernel `prefix`, as `emit loops` shows them.
fn loop_lines(source: &str, kernel: &str) -> Vec<String> {
    let loops = cnnc::lower::emit_loops(&graph_of(source)).expect("lowers");
    let mut lines = Vec::new();
    let mut inside = false;
    for line in loops.lines() {
        if line.starts_with("kernel ") {
            inside = line.contains(kernel);
        } else if inside && line.trim_start().starts_with("loop ") {
            lines.push(line.trim().to_string());
        }
    }
    lines
}

#[test]
fn pooling_windows_up_to_three_by_three_have_no_window_loops() {
    // LeNet's first pool: one loop over the row's pixels, the 2×2 window written out.
    let lenet_pool = "network t(x: 28x28x6) { x -> avgpool(2) }";
    assert_eq!(loop_lines(lenet_pool, "pool"), ["loop i1 in 0..14 {"]);
    let three = "network t(x: 9x9x5) { x -> maxpool(3, stride: 2) }";
    assert_eq!(loop_lines(three, "pool"), ["loop i1 in 0..4 {"]);
    // A 4×4 window keeps its loops.
    let four = "network t(x: 9x9x5) { x -> avgpool(4, stride: 2) }";
    assert_eq!(loop_lines(four, "pool").len(), 3);
}

#[test]
fn pooling_on_both_sides_of_the_unrolled_window() {
    for (kernel, channels) in [(2, 6), (3, 7), (3, 16), (4, 6), (2, 21)] {
        for layer in [
            format!("avgpool({kernel}, stride: 2, pad: 1, count_include_pad: false)"),
            format!("avgpool({kernel})"),
            format!("maxpool({kernel}, stride: 1, pad: 1, ceil_mode: true)"),
            format!("maxpool([{kernel}, 1], stride: [1, 2])"),
        ] {
            check_source(
                &format!("network t(x: 11x9x{channels}) {{ x -> {layer} }}"),
                3,
            );
        }
    }
}

#[test]
fn small_convolutions_tiled_across_rows() {
    // Weights larger than the input and rows not a multiple of the 4-pixel tile: 100 pixels
    // (LeNet's second conv), 81, and 64 are one run of pixels; 121 are tiled row by row.
    for source in [
        "network t(x: 14x14x6) { x -> conv(16, 5) -> relu }",
        "network t(x: 12x12x4) { x -> conv(24, 3) }",
        "network t(x: 11x11x8) { x -> conv(16, 3) -> relu6 }",
        "network t(x: 10x10x8) { x -> conv(16, 3, stride: 1) -> relu }",
        "network t(x: 13x13x8) { x -> conv(16, 3) -> relu }",
        "network t(x: 9x9x16) {\n let y = x -> conv(16, 3, pad: 1)\n return y + x\n }",
    ] {
        check_source(source, 3);
    }
}
