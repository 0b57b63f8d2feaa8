//! 1×1 stride-1 convolutions, which the lowering tiles as one row of `h·w` pixels (so that no
//! tile is cut short at the end of an image row): odd pixel counts (runs of 4 and of 16 pixels
//! with pixels left over), channel tails, weight panels outermost, groups, a fused residual
//! and ReLU, a concat's slice; checked and unchecked, batch 1 and 3, one and two threads.

use super::{check_with, graph_of, weights_for};
use cnnc::codegen::CodegenOptions;

fn options() -> Vec<CodegenOptions> {
    [(true, 1), (false, 1), (true, 2), (false, 2)]
        .into_iter()
        .map(|(checked, threads)| CodegenOptions {
            checked,
            threads,
            ..Default::default()
        })
        .collect()
}

/// Each case: the source and a line its lowering must show (how the pixels are split).
const CASES: [(&str, &str); 6] = [
    // 63 pixels: runs of one tile (15 parts), 3 pixels left; 21 channels: a partial panel.
    (
        "network t(x: 7x9x13) { x -> conv(21, 1) -> relu }",
        "parallel i0 in 0..15 {",
    ),
    // 143 pixels: runs of four tiles (8 parts), 15 pixels left.
    (
        "network t(x: 13x11x24) { x -> conv(40, 1) -> relu6 }",
        "parallel i0 in 0..8 {",
    ),
    // Weights larger than the input: panels are the parts, 35 pixels as one row in each.
    (
        "network t(x: 5x7x40) { x -> conv(48, 1) }",
        "parallel i0 in 0..6 {",
    ),
    // Groups.
    (
        "network t(x: 6x5x9) { x -> conv(12, 1, groups: 3) }",
        "parallel i0 in 0..7 {",
    ),
    // Into a concat's slice: the pixel stride is the concat's channels.
    (
        "network t(x: 5x5x3) { concat(x -> conv(6, 1), x) }",
        "parallel i0 in 0..6 {",
    ),
    // A residual and ReLU fused by the optimizer.
    (
        "network t(x: 9x7x16) {\n let y = x -> conv(16, 1) -> batchnorm\n return (y + x) -> relu\n }",
        "parallel i0 in 0..15 {",
    ),
];

#[test]
fn one_by_one_convolutions_as_one_row_of_pixels() {
    for (source, split) in CASES {
        let mut graph = graph_of(source);
        let mut weights = weights_for(&graph);
        cnnc::opt::optimize_weights(&mut graph, &mut weights, &Default::default()).expect("passes");
        let loops = cnnc::lower::emit_loops(&graph).expect("lowers");
        assert!(loops.contains(split), "{source}: no `{split}`\n{loops}");
        for batch in [1, 3] {
            check_with(&graph, batch, &options(), source);
        }
    }
}
