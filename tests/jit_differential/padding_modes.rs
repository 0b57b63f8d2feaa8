//! `pad(p, mode: …)` and `conv(…, pad_mode: …)` (reflect, replicate, zeros) against the
//! reference, at odd sizes, asymmetric paddings, reflections as wide as the input allows and
//! replications wider than the input, as the network's output, into a concat and into a
//! window op; batch 3, checked on one thread and unchecked on one and two.

use super::{check_with, graphs_of};
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
fn pad_layer_every_mode() {
    for mode in ["zeros", "reflect", "replicate"] {
        for (shape, pad) in [
            ("7x5x3", "1"),
            ("7x5x3", "[2, 3]"),
            ("5x9x6", "[0, 3, 4, 1]"),
            // As wide as a reflection may be: one less than the size.
            ("4x3x5", "[3, 3, 2, 2]"),
            ("1x6x2", "[0, 0, 5, 1]"),
        ] {
            check_source(
                &format!("network t(x: {shape}) {{ x -> pad({pad}, mode: \"{mode}\") }}"),
                3,
            );
        }
    }
    // A replication wider than the input.
    check_source(
        "network t(x: 2x3x5) { x -> pad([5, 4, 7, 6], mode: \"replicate\") }",
        3,
    );
}

#[test]
fn conv_pad_modes() {
    for mode in ["reflect", "replicate", "zeros"] {
        for layer in [
            "conv(4, 3, pad: 1)",
            "conv(5, 3, stride: 2, pad: [2, 1])",
            "conv(3, [3, 5], pad: same)",
            "dwconv(3, pad: 2, dilation: 2)",
            "conv(6, 5, pad: 2, groups: 3) -> relu",
        ] {
            let (name, args) = layer.split_once('(').unwrap_or_default();
            let args = args.replacen(')', &format!(", pad_mode: \"{mode}\")"), 1);
            let source = format!(
                "network t(x: 9x7x6) {{ let y = x -> {name}({args}\n return concat(y, y -> maxpool(3, stride: 1, pad: 1)) }}"
            );
            check_source(&source, 3);
        }
    }
}

/// Large enough that the row loops are shared out over two threads.
#[test]
fn pad_modes_on_a_larger_image() {
    check_source(
        "network t(x: 61x47x16) { x -> conv(16, 3, pad: 1, pad_mode: \"reflect\") -> relu -> pad([1, 2, 3, 4], mode: \"replicate\") -> conv(8, 3) }",
        3,
    );
}
