//! `conv_transpose` in the reference interpreter against values worked out by hand, its
//! PyTorch weight layout `[in, out/groups, kh, kw]`, and its parameter and MAC counts.

use super::{assert_close, rows, run1, single, tensor};
use cnnc::graph::{ConvTransposeAttrs, Op, Padding, Shape};
use cnnc::runtime::Weights;

fn attrs(filters: usize, kernel: usize, stride: usize) -> ConvTransposeAttrs {
    ConvTransposeAttrs {
        filters,
        kernel: [kernel, kernel],
        stride: [stride, stride],
        dilation: [1, 1],
        pad: Padding::default(),
        output_padding: [0, 0],
        groups: 1,
        bias: true,
        same_pad: false,
    }
}

/// x = [[1, 2], [3, 4]], W = [[1, 2, 3], [4, 5, 6], [7, 8, 9]], stride 2: each input value
/// stamps `x·W` onto the 3×3 window at (2·iy, 2·ix) of a 5×5 output, and the stamps overlap
/// on row 2 and column 2:
///
/// ```text
///   row 0:  1W₀ | 2W₀ at col 2          → [ 1,  2,  3+2,       4,  6]
///   row 1:  1W₁ | 2W₁                   → [ 4,  5,  6+8,      10, 12]
///   row 2:  1W₂ + 3W₀ | 2W₂ + 4W₀       → [7+3, 8+6, 9+14+9+4, 16+8, 18+12]
///   row 3:  3W₁ | 4W₁                   → [12, 15, 18+16,     20, 24]
///   row 4:  3W₂ | 4W₂                   → [21, 24, 27+28,     32, 36]
/// ```
///
/// With `pad: 1` the border is cut off (3×3); with `output_padding: 1` too, one more row and
/// column come back at the bottom and right (4×4); a bias of 0.5 is added everywhere.
#[test]
fn stride_two_stamps_the_kernel_and_overlapping_stamps_add() {
    let x = tensor(&[1, 2, 2, 1], vec![1., 2., 3., 4.]);
    let w = tensor(&[1, 1, 3, 3], (1..=9).map(|v| v as f32).collect());
    let full: [[f32; 5]; 5] = [
        [1., 2., 5., 4., 6.],
        [4., 5., 14., 10., 12.],
        [10., 14., 36., 24., 30.],
        [12., 15., 34., 20., 24.],
        [21., 24., 55., 32., 36.],
    ];
    let cases = [
        (Padding::default(), [0, 0], 0..5),
        (Padding::uniform(1), [0, 0], 1..4),
        (Padding::uniform(1), [1, 1], 1..5),
    ];
    for (pad, output_padding, range) in cases {
        let op = Op::ConvTranspose(ConvTransposeAttrs {
            pad,
            output_padding,
            ..attrs(1, 3, 2)
        });
        let graph = single(Shape::spatial(2, 2, 1), op);
        let n = range.len();
        assert_eq!(graph.shape(graph.output()), Shape::spatial(n, n, 1));
        let mut weights = Weights::new();
        weights.insert("layer.weight", w.clone());
        weights.insert("layer.bias", tensor(&[1], vec![0.5]));
        let expected: Vec<Vec<f32>> = range
            .clone()
            .map(|y| range.clone().map(|x| full[y][x] + 0.5).collect())
            .collect();
        assert_eq!(rows(&run1(&graph, &weights, x.clone())), expected);
    }
}

/// PyTorch's layout is `[in, out, kh, kw]`: on a 1×1 input `[1, 10]` with W =
/// `[[1, 2, 3], [4, 5, 6]]` (2 inputs × 3 outputs), output `o` is `1·W[0][o] + 10·W[1][o]`.
/// Two groups keep their channels apart: inputs 0–1 feed outputs 0–2, inputs 2–3 outputs 3–5.
#[test]
fn weights_are_in_by_out_and_groups_keep_channels_apart() {
    let op = Op::ConvTranspose(ConvTransposeAttrs {
        bias: false,
        ..attrs(3, 1, 1)
    });
    let graph = single(Shape::spatial(1, 1, 2), op);
    let mut weights = Weights::new();
    weights.insert(
        "layer.weight",
        tensor(&[2, 3, 1, 1], vec![1., 2., 3., 4., 5., 6.]),
    );
    let output = run1(&graph, &weights, tensor(&[1, 1, 1, 2], vec![1., 10.]));
    assert_close(&output, &[41., 52., 63.]);

    let op = Op::ConvTranspose(ConvTransposeAttrs {
        bias: false,
        groups: 2,
        ..attrs(6, 1, 1)
    });
    let graph = single(Shape::spatial(1, 1, 4), op);
    let mut weights = Weights::new();
    let w: Vec<f32> = (1..=12).map(|v| v as f32).collect();
    weights.insert("layer.weight", tensor(&[4, 3, 1, 1], w));
    let output = run1(
        &graph,
        &weights,
        tensor(&[1, 1, 1, 4], vec![1., 10., 100., 1000.]),
    );
    // Group 0: 1·[1, 2, 3] + 10·[4, 5, 6]; group 1: 100·[7, 8, 9] + 1000·[10, 11, 12].
    assert_close(&output, &[41., 52., 63., 10_700., 11_800., 12_900.]);
}

/// Output size `(in − 1)·s − 2p + d·(k − 1) + op + 1`, per axis: 7×5 input, kernel 3×4,
/// stride 2×3, dilation 2×1, padding 1×2, output padding 1×0 → 6·2 − 2 + 4 + 1 + 1 = 16 by
/// 4·3 − 4 + 3 + 0 + 1 = 12. Weight `[6, 4/2, 3, 4]` plus bias 4: 148 parameters; MACs, every
/// input cell against its group's taps: 7·5·6 · 2·3·4 = 5,040.
#[test]
fn output_size_parameters_and_macs_follow_pytorch() {
    let op = Op::ConvTranspose(ConvTransposeAttrs {
        kernel: [3, 4],
        stride: [2, 3],
        dilation: [2, 1],
        pad: Padding {
            top: 1,
            bottom: 1,
            left: 2,
            right: 2,
        },
        output_padding: [1, 0],
        groups: 2,
        ..attrs(4, 3, 2)
    });
    let graph = single(Shape::spatial(7, 5, 6), op);
    assert_eq!(graph.shape(graph.output()), Shape::spatial(16, 12, 4));
    let params: Vec<(String, Vec<usize>)> = graph
        .named_params()
        .into_iter()
        .map(|(name, _, spec)| (name, spec.shape))
        .collect();
    assert_eq!(
        params,
        [
            ("layer.weight".to_string(), vec![6, 2, 3, 4]),
            ("layer.bias".to_string(), vec![4])
        ]
    );
    assert_eq!(graph.total_macs(), 5_040);
}

/// A dilation of 2^20 spreads a 3×3 kernel over a 2,097,153² output before its padding is
/// cropped; cropping it to 1×1 does not make that a small layer (the compiled kernel reads
/// an input bordered to that extent), so it is refused as too large.
#[test]
fn an_uncropped_output_beyond_the_limit_is_too_large() {
    let op = Op::ConvTranspose(ConvTransposeAttrs {
        dilation: [1 << 20, 1 << 20],
        pad: Padding::uniform(1 << 20),
        ..attrs(1, 3, 1)
    });
    let mut graph = cnnc::graph::Graph::new("test");
    let x = graph.add_input("x", Shape::spatial(1, 1, 1), cnnc::source::Span::default());
    let error = graph
        .add(op, vec![x], "layer".into(), cnnc::graph::Origin::default())
        .expect_err("too large");
    assert!(
        matches!(error, cnnc::graph::ShapeError::TooLarge { .. }),
        "{error}"
    );
}
