//! The kernel shapes chosen for small networks such as LeNet-5 (issue 9): pooling windows of
//! up to 3×3 written out tap by tap rather than as two loops, and small convolutions whose
//! weights outweigh their input tiled as one run of pixels across rows (up to 100 pixels),
//! and convolutions of one input channel to 2, 6 or 10 computed in pairs of pixels. Each
//! against the reference, with the cases on both sides of its conditions.

use super::{check_source, check_with, checked_and_on_two_threads, graph_of, graphs_of};

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

#[test]
fn lenets_first_conv_runs_in_pixel_pairs() {
    let loops = cnnc::lower::emit_loops(&graph_of(
        "network t(x: 32x32x1) { x -> conv(6, 5) -> relu -> avgpool(2) }",
    ))
    .expect("lowers");
    assert!(loops.contains("doubled"), "{loops}");
    assert!(loops.contains("1→6 in pixel pairs"), "{loops}");
    // An odd output width, two input channels or 8 outputs: the direct kernel.
    for source in [
        "network t(x: 9x9x1) { x -> conv(6, 3) }",
        "network t(x: 9x10x2) { x -> conv(6, 3) }",
        "network t(x: 9x10x1) { x -> conv(8, 3) }",
        "network t(x: 9x10x1) { x -> conv(6, 3, stride: [1, 2]) }",
    ] {
        let loops = cnnc::lower::emit_loops(&graph_of(source)).expect("lowers");
        assert!(!loops.contains("pixel pairs"), "{source}\n{loops}");
    }
}

#[test]
fn convolutions_in_pixel_pairs_match_the_reference() {
    let options = checked_and_on_two_threads();
    let mut paired = 0;
    for filters in [2, 6, 10] {
        for (input, layer) in [
            ("32x32x1", format!("conv({filters}, 5) -> relu")),
            ("9x12x1", format!("conv({filters}, 3, pad: 1)")),
            (
                "11x10x1",
                format!("conv({filters}, [3, 5], pad: [2, 1], bias: false) -> relu6"),
            ),
            (
                "13x14x1",
                format!("conv({filters}, 3, stride: [2, 1], dilation: 2)"),
            ),
            (
                "7x17x1",
                format!("conv({filters}, [1, 4], pad: [0, 1, 0, 2]) -> sigmoid"),
            ),
            ("9x9x1", format!("conv({filters}, 3)")),
        ] {
            let source = format!("network t(x: {input}) {{ x -> {layer} -> conv(3, 1) }}");
            let loops = cnnc::lower::emit_loops(&graph_of(&source)).expect("lowers");
            paired += usize::from(loops.contains("pixel pairs"));
            for graph in graphs_of(&source) {
                check_with(&graph, 3, &options, &source);
            }
        }
    }
    // All but the odd widths (9×9 → 7×7).
    assert_eq!(paired, 15);
}
