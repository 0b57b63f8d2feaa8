//! `pad(p, mode: …)` and `conv(…, pad_mode: …)` in the reference interpreter, against values
//! worked out by hand from PyTorch's definitions: `nn.ReflectionPad2d` mirrors without
//! repeating the edge (`[1, 2, 3]` padded by 2 is `[3, 2, 1, 2, 3, 2, 1]`),
//! `nn.ReplicationPad2d` repeats it (`[1, 1, 1, 2, 3, 3, 3]`), `nn.ZeroPad2d` adds zeros; a
//! `Conv2d(padding_mode="reflect")` convolves the reflected input without further padding.

use super::{assert_close, rows, run1, tensor};
use cnnc::driver::{self, Select};
use cnnc::graph::Graph;
use cnnc::runtime::Weights;

fn graph_of(source: &str) -> Graph {
    let compilation = driver::compile(driver::load_source("t.cnn", source), &Select::All);
    assert!(
        !compilation.has_errors(),
        "{}",
        compilation.render_diagnostics()
    );
    let graph = compilation.graphs().next().expect("one network").clone();
    graph
}

#[test]
fn pad_modes_along_a_row() {
    let cases = [
        ("reflect", vec![3., 2., 1., 2., 3., 2., 1.]),
        ("replicate", vec![1., 1., 1., 2., 3., 3., 3.]),
        ("zeros", vec![0., 0., 1., 2., 3., 0., 0.]),
    ];
    for (mode, expected) in cases {
        let graph = graph_of(&format!(
            "network t(x: 1x3x1) {{ x -> pad([0, 2], mode: \"{mode}\") }}"
        ));
        let found = run1(
            &graph,
            &Weights::new(),
            tensor(&[1, 1, 3, 1], vec![1., 2., 3.]),
        );
        assert_eq!(found.shape(), &[1, 1, 7, 1], "{mode}");
        assert_close(&found, &expected);
    }
}

/// A 3×3 image `1..9` padded by [top 2, bottom 1, left 1, right 2].
#[test]
fn pad_modes_on_an_image_with_unequal_sides() {
    let input = tensor(&[1, 3, 3, 1], (1..=9).map(|v| v as f32).collect());
    let reflect = [
        [8., 7., 8., 9., 8., 7.],
        [5., 4., 5., 6., 5., 4.],
        [2., 1., 2., 3., 2., 1.],
        [5., 4., 5., 6., 5., 4.],
        [8., 7., 8., 9., 8., 7.],
        [5., 4., 5., 6., 5., 4.],
    ];
    let replicate = [
        [1., 1., 2., 3., 3., 3.],
        [1., 1., 2., 3., 3., 3.],
        [1., 1., 2., 3., 3., 3.],
        [4., 4., 5., 6., 6., 6.],
        [7., 7., 8., 9., 9., 9.],
        [7., 7., 8., 9., 9., 9.],
    ];
    for (mode, expected) in [("reflect", reflect), ("replicate", replicate)] {
        let graph = graph_of(&format!(
            "network t(x: 3x3x1) {{ x -> pad([2, 1, 1, 2], mode: \"{mode}\") }}"
        ));
        let found = run1(&graph, &Weights::new(), input.clone());
        let expected: Vec<Vec<f32>> = expected.iter().map(|r| r.to_vec()).collect();
        assert_eq!(rows(&found), expected, "{mode}");
    }
}

/// A 3×3 box filter of ones on `[[1, 2], [3, 4]]`: with reflection each window holds every
/// pixel twice or more (the top-left window covers rows 1,0,1 and columns 1,0,1 of the input:
/// 4·4 + 2·(3 + 2) + 1 = 27); with replication the top-left window is
/// rows 0,0,1 × columns 0,0,1: 4·1 + 2·2 + 2·3 + 4 = 18.
#[test]
fn conv_pad_mode_pads_before_convolving() {
    let ones = "[[[[1, 1, 1], [1, 1, 1], [1, 1, 1]]]]";
    let input = tensor(&[1, 2, 2, 1], vec![1., 2., 3., 4.]);
    for (mode, expected) in [
        ("reflect", [27., 24., 21., 18.]),
        ("replicate", [18., 21., 24., 27.]),
        ("zeros", [10., 10., 10., 10.]),
    ] {
        let graph = graph_of(&format!(
            "network t(x: 2x2x1) {{ x -> c: conv(1, 3, pad: 1, pad_mode: \"{mode}\", weights: {ones}, bias: false) }}"
        ));
        let found = run1(&graph, &Weights::new(), input.clone());
        assert_close(&found, &expected);
        // The weights keep the conv's name, as PyTorch's Conv2d has no submodule for it.
        let names: Vec<String> = graph.named_params().into_iter().map(|p| p.0).collect();
        assert!(names.is_empty(), "literal weights: {names:?}");
    }
    let graph =
        graph_of("network t(x: 5x5x3) { x -> c: conv(4, 3, pad: 1, pad_mode: \"reflect\") }");
    let names: Vec<String> = graph.named_params().into_iter().map(|p| p.0).collect();
    assert_eq!(names, ["c.weight", "c.bias"]);
}
