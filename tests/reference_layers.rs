//! The reference interpreter against hand-computed cases (the course's worked examples among
//! them) and properties of each layer kind; the runtime's weights and inputs are tested in
//! `reference_layers/runtime_files.rs`.
//!
//! Graphs are built with the graph API directly, so these tests do not depend on the parser.

#[path = "reference_layers/conv_transpose.rs"]
mod conv_transpose;
#[path = "reference_layers/convnext_layers.rs"]
mod convnext_layers;
#[path = "reference_layers/mapped_weights.rs"]
mod mapped_weights;
#[path = "reference_layers/padding_modes.rs"]
mod padding_modes;
#[path = "reference_layers/runtime_files.rs"]
mod runtime_files;

use cnnc::graph::{
    Activation, ConvAttrs, DenseAttrs, Graph, Literal, NodeId, Op, Origin, Padding, PoolAttrs,
    PoolKind, Preprocess, Shape,
};
use cnnc::reference::{run, RunError};
use cnnc::runtime::{
    load_input, npy_bytes, parse_npy, synthetic_input, write_npy, InputError, LoadOptions,
    NpyArray, NpyError, Weights, WeightsError,
};
use cnnc::source::Span;
use ndarray::{ArrayD, IxDyn};
use std::path::PathBuf;

// ---------------------------------------------------------------------------------------------
// Helpers

fn conv(filters: usize, kernel: usize) -> ConvAttrs {
    ConvAttrs {
        filters,
        kernel: [kernel, kernel],
        stride: [1, 1],
        dilation: [1, 1],
        pad: Padding::default(),
        groups: 1,
        depthwise: false,
        bias: false,
        weights: None,
        bias_values: None,
        activation: None,
        residual: false,
    }
}

fn literal(shape: &[usize], values: &[f32]) -> Option<Literal> {
    Some(Literal {
        shape: shape.to_vec(),
        values: values.to_vec(),
    })
}

fn pool(kind: PoolKind, kernel: usize, stride: usize, pad: usize) -> PoolAttrs {
    PoolAttrs {
        kind,
        kernel: [kernel, kernel],
        stride: [stride, stride],
        pad: Padding::uniform(pad),
        ceil_mode: false,
        count_include_pad: true,
        dilation: [1, 1],
    }
}

/// A network of one layer, labelled `layer`, on an input `x` of shape `input`.
fn single(input: Shape, op: Op) -> Graph {
    let mut graph = Graph::new("test");
    let x = graph.add_input("x", input, Span::default());
    let y = graph
        .add(op, vec![x], "layer".into(), Origin::default())
        .expect("the test's layer has a valid shape");
    graph.set_output(y);
    graph
}

/// A 1×H×W×1 tensor from rows of numbers.
fn image(rows: &[&[f32]]) -> ArrayD<f32> {
    let (h, w) = (rows.len(), rows[0].len());
    let values: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    ArrayD::from_shape_vec(IxDyn(&[1, h, w, 1]), values).unwrap()
}

fn tensor(shape: &[usize], values: Vec<f32>) -> ArrayD<f32> {
    ArrayD::from_shape_vec(IxDyn(shape), values).unwrap()
}

/// The output of a single-channel network as rows.
fn rows(output: &ArrayD<f32>) -> Vec<Vec<f32>> {
    let (h, w) = (output.shape()[1], output.shape()[2]);
    (0..h)
        .map(|y| (0..w).map(|x| output[[0, y, x, 0]]).collect())
        .collect()
}

fn run1(graph: &Graph, weights: &Weights, input: ArrayD<f32>) -> ArrayD<f32> {
    run(graph, weights, &[input]).expect("the reference run succeeds")
}

fn assert_close(found: &ArrayD<f32>, expected: &[f32]) {
    let found: Vec<f32> = found.iter().copied().collect();
    assert_eq!(found.len(), expected.len(), "{found:?} vs {expected:?}");
    for (a, b) in found.iter().zip(expected) {
        assert!(
            (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
            "{found:?} vs {expected:?}"
        );
    }
}

fn temp_path(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("reference_layers");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

// ---------------------------------------------------------------------------------------------
// Convolution: the course's worked examples

const EDGE_IMAGE: [[f32; 6]; 6] = [
    [3., 0., 1., 2., 7., 4.],
    [1., 5., 8., 9., 3., 1.],
    [2., 7., 2., 5., 1., 3.],
    [0., 1., 3., 1., 7., 8.],
    [4., 2., 1., 6., 2., 8.],
    [2., 4., 5., 2., 3., 9.],
];

fn vertical_edge_network(h: usize, w: usize) -> Graph {
    let attrs = ConvAttrs {
        weights: literal(&[3, 3], &[1., 0., -1., 1., 0., -1., 1., 0., -1.]),
        ..conv(1, 3)
    };
    single(Shape::spatial(h, w, 1), Op::Conv(attrs))
}

#[test]
fn vertical_edge_detector_gives_the_course_numbers() {
    let graph = vertical_edge_network(6, 6);
    let input: Vec<&[f32]> = EDGE_IMAGE.iter().map(|r| &r[..]).collect();
    let output = run1(&graph, &Weights::new(), image(&input));
    assert_eq!(output.shape(), &[1, 4, 4, 1]);
    assert_eq!(
        rows(&output),
        vec![
            vec![-5., -4., 0., 8.],
            vec![-10., -2., 2., 3.],
            vec![0., -2., -4., -7.],
            vec![-3., -2., -3., -16.],
        ]
    );
}

#[test]
fn vertical_edge_detector_finds_the_bright_dark_boundary() {
    let graph = vertical_edge_network(6, 6);
    let row: &[f32] = &[10., 10., 10., 0., 0., 0.];
    let output = run1(&graph, &Weights::new(), image(&[row; 6]));
    assert_eq!(rows(&output), vec![vec![0., 30., 30., 0.]; 4]);
}

#[test]
fn strided_convolution_gives_the_course_numbers() {
    let attrs = ConvAttrs {
        stride: [2, 2],
        weights: literal(&[1, 1, 3, 3], &[3., 4., 4., 1., 0., 2., -1., 0., 3.]),
        ..conv(1, 3)
    };
    let graph = single(Shape::spatial(7, 7, 1), Op::Conv(attrs));
    let input = image(&[
        &[2., 3., 7., 4., 6., 2., 9.],
        &[6., 6., 9., 8., 7., 4., 3.],
        &[3., 4., 8., 3., 8., 9., 7.],
        &[7., 8., 3., 6., 6., 3., 4.],
        &[4., 2., 1., 8., 3., 4., 6.],
        &[3., 2., 4., 1., 9., 8., 3.],
        &[0., 1., 3., 9., 2., 1., 4.],
    ]);
    let output = run1(&graph, &Weights::new(), input);
    assert_eq!(
        rows(&output),
        vec![
            vec![91., 100., 88.],
            vec![69., 91., 117.],
            vec![44., 72., 74.]
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Convolution: properties and the less common attributes

#[test]
fn one_hot_kernel_shifts_the_image() {
    // A 3×3 kernel whose only 1 is at the top-left, with padding 1, moves every pixel one step
    // down and right: out[y][x] = in[y−1][x−1], zero where that is outside.
    let mut kernel = [0.0f32; 9];
    kernel[0] = 1.0;
    let attrs = ConvAttrs {
        pad: Padding::uniform(1),
        weights: literal(&[3, 3], &kernel),
        ..conv(1, 3)
    };
    let graph = single(Shape::spatial(4, 5, 1), Op::Conv(attrs));
    let input = tensor(&[1, 4, 5, 1], (1..=20).map(|v| v as f32).collect());
    let output = run1(&graph, &Weights::new(), input.clone());
    for y in 0..4 {
        for x in 0..5 {
            let expected = if y == 0 || x == 0 {
                0.0
            } else {
                input[[0, y - 1, x - 1, 0]]
            };
            assert_eq!(output[[0, y, x, 0]], expected, "at ({y}, {x})");
        }
    }
}

#[test]
fn conv_mixes_channels_adds_bias_and_applies_activation() {
    // A 1×1 conv with 2 input channels and 2 filters is a per-pixel matrix product.
    let attrs = ConvAttrs {
        bias: true,
        activation: Some(Activation::Relu),
        ..conv(2, 1)
    };
    let graph = single(Shape::spatial(1, 2, 2), Op::Conv(attrs));
    let mut weights = Weights::new();
    weights.insert("layer.weight", tensor(&[2, 2, 1, 1], vec![1., 2., -3., 1.]));
    weights.insert("layer.bias", tensor(&[2], vec![0.5, -1.]));
    // Pixels (1, 1) and (2, −1).
    let output = run1(
        &graph,
        &weights,
        tensor(&[1, 1, 2, 2], vec![1., 1., 2., -1.]),
    );
    // Filter 0: x0 + 2·x1 + 0.5; filter 1: relu(−3·x0 + x1 − 1).
    assert_close(&output, &[3.5, 0.0, 0.5, 0.0]);
}

#[test]
fn grouped_and_depthwise_convs_keep_channels_apart() {
    // Depthwise: each of 2 channels gets its own 1×1 filter (×2 and ×10).
    let attrs = ConvAttrs {
        groups: 2,
        weights: literal(&[2, 1, 1, 1], &[2., 10.]),
        ..conv(2, 1)
    };
    let graph = single(Shape::spatial(1, 1, 2), Op::Conv(attrs));
    let output = run1(&graph, &Weights::new(), tensor(&[1, 1, 1, 2], vec![3., 4.]));
    assert_close(&output, &[6., 40.]);

    // Two groups of two channels, one filter each: filter 0 sees channels 0–1, filter 1 sees 2–3.
    let attrs = ConvAttrs {
        groups: 2,
        weights: literal(&[2, 2, 1, 1], &[1., 1., 1., -1.]),
        ..conv(2, 1)
    };
    let graph = single(Shape::spatial(1, 1, 4), Op::Conv(attrs));
    let output = run1(
        &graph,
        &Weights::new(),
        tensor(&[1, 1, 1, 4], vec![1., 2., 5., 3.]),
    );
    assert_close(&output, &[3., 2.]);
}

#[test]
fn dilated_conv_reads_spread_taps() {
    // A 3×3 kernel of ones with dilation 2 on a 5×5 image sums the 9 pixels at even positions.
    let attrs = ConvAttrs {
        dilation: [2, 2],
        weights: literal(&[3, 3], &[1.0; 9]),
        ..conv(1, 3)
    };
    let graph = single(Shape::spatial(5, 5, 1), Op::Conv(attrs));
    let input = tensor(&[1, 5, 5, 1], (0..25).map(|v| v as f32).collect());
    let output = run1(&graph, &Weights::new(), input);
    let expected: f32 = [0, 2, 4, 10, 12, 14, 20, 22, 24]
        .iter()
        .map(|&v| v as f32)
        .sum();
    assert_close(&output, &[expected]);
}

#[test]
fn asymmetric_padding_pads_only_the_named_sides() {
    // `same` for a 2×2 kernel pads one pixel after (bottom, right): out is 2×2 with zeros there.
    let attrs = ConvAttrs {
        pad: Padding {
            top: 0,
            bottom: 1,
            left: 0,
            right: 1,
        },
        weights: literal(&[2, 2], &[1.0; 4]),
        ..conv(1, 2)
    };
    let graph = single(Shape::spatial(2, 2, 1), Op::Conv(attrs));
    let output = run1(&graph, &Weights::new(), image(&[&[1., 2.], &[3., 4.]]));
    assert_eq!(rows(&output), vec![vec![10., 6.], vec![7., 4.]]);
}

#[test]
fn batch_items_are_computed_independently() {
    let graph = single(
        Shape::spatial(5, 5, 3),
        Op::Conv(ConvAttrs {
            bias: true,
            pad: Padding::uniform(1),
            ..conv(4, 3)
        }),
    );
    let weights = Weights::seeded(&graph, 7).unwrap();
    let batch = synthetic_input(Shape::spatial(5, 5, 3), 2, 1).unwrap();
    let both = run1(&graph, &weights, batch.clone());
    for n in 0..2 {
        let one = batch
            .slice(ndarray::s![n..n + 1, .., .., ..])
            .to_owned()
            .into_dyn();
        let alone = run1(&graph, &weights, one);
        let part = both
            .slice(ndarray::s![n..n + 1, .., .., ..])
            .to_owned()
            .into_dyn();
        assert_eq!(alone, part);
    }
}

// ---------------------------------------------------------------------------------------------
// Dense

#[test]
fn dense_is_a_matrix_product_with_bias_and_activation() {
    let attrs = DenseAttrs {
        units: 2,
        bias: true,
        weights: literal(&[2, 3], &[1., 2., 3., -1., 0., 1.]),
        bias_values: literal(&[2], &[0.5, 0.0]),
        activation: Some(Activation::Sigmoid),
    };
    let graph = single(Shape::flat(3), Op::Dense(attrs));
    // Two batch items; flat inputs are N×C and so are flat outputs.
    let output = run1(
        &graph,
        &Weights::new(),
        tensor(&[2, 3], vec![1., 1., 1., 0., 0., 0.]),
    );
    assert_eq!(output.shape(), &[2, 2]);
    let sigmoid = |x: f32| 1.0 / (1.0 + (-x).exp());
    assert_close(
        &output,
        &[sigmoid(6.5), sigmoid(0.0), sigmoid(0.5), sigmoid(0.0)],
    );
}

// ---------------------------------------------------------------------------------------------
// Pooling

#[test]
fn max_pool_takes_window_maxima_and_ignores_padding() {
    let graph = single(
        Shape::spatial(4, 4, 1),
        Op::Pool(pool(PoolKind::Max, 2, 2, 0)),
    );
    let input = tensor(&[1, 4, 4, 1], (0..16).map(|v| v as f32).collect());
    assert_eq!(
        rows(&run1(&graph, &Weights::new(), input)),
        vec![vec![5., 7.], vec![13., 15.]]
    );

    // With negative values, a padding cell (PyTorch pads with −∞) never wins.
    let graph = single(
        Shape::spatial(2, 2, 1),
        Op::Pool(pool(PoolKind::Max, 3, 1, 1)),
    );
    let output = run1(&graph, &Weights::new(), image(&[&[-1., -2.], &[-3., -4.]]));
    assert_eq!(rows(&output), vec![vec![-1., -1.], vec![-1., -1.]]);
}

#[test]
fn dilated_max_pool_reads_cells_dilation_apart() {
    // F.max_pool2d(x, 2, stride=1, dilation=2) of x = arange(25).view(5, 5): each window is
    // {x[i][j], x[i][j+2], x[i+2][j], x[i+2][j+2]}, whose maximum is x[i+2][j+2] = 5i + j + 12.
    let mut attrs = pool(PoolKind::Max, 2, 1, 0);
    attrs.dilation = [2, 2];
    let graph = single(Shape::spatial(5, 5, 1), Op::Pool(attrs));
    let input = tensor(&[1, 5, 5, 1], (0..25).map(|v| v as f32).collect());
    assert_eq!(
        rows(&run1(&graph, &Weights::new(), input)),
        vec![
            vec![12., 13., 14.],
            vec![17., 18., 19.],
            vec![22., 23., 24.]
        ]
    );

    // x[r][c] = 24 − 5r − c, descending, so a window's maximum is its real cell of smallest
    // row and column. With padding 1 and stride 2, window (i, j) has rows {2i − 1, 2i + 1} and
    // columns {2j − 1, 2j + 1}, of which those in [0, 5) are real: the smallest real row (or
    // column) is 1, 1, 3 for i (or j) = 0, 1, 2. Output 3×3: floor((5 + 2 − 3) / 2) + 1.
    let mut attrs = pool(PoolKind::Max, 2, 2, 1);
    attrs.dilation = [2, 2];
    let graph = single(Shape::spatial(5, 5, 1), Op::Pool(attrs));
    let input = tensor(&[1, 5, 5, 1], (0..25).rev().map(|v| v as f32).collect());
    assert_eq!(
        rows(&run1(&graph, &Weights::new(), input)),
        vec![vec![18., 18., 16.], vec![18., 18., 16.], vec![8., 8., 6.]]
    );
}

#[test]
fn avg_pool_of_a_constant_is_the_constant() {
    let mut attrs = pool(PoolKind::Avg, 3, 2, 1);
    attrs.count_include_pad = false;
    attrs.ceil_mode = true;
    let graph = single(Shape::spatial(7, 6, 2), Op::Pool(attrs));
    let output = run1(
        &graph,
        &Weights::new(),
        ArrayD::from_elem(IxDyn(&[2, 7, 6, 2]), 2.5),
    );
    assert!(output.iter().all(|&v| v == 2.5), "{output:?}");
}

#[test]
fn avg_pool_counts_padding_like_pytorch() {
    // F.avg_pool2d(torch.ones(1, 1, 4, 4), 3, 2, 1, ceil_mode=True) in PyTorch.
    let mut attrs = pool(PoolKind::Avg, 3, 2, 1);
    attrs.ceil_mode = true;
    let graph = single(Shape::spatial(4, 4, 1), Op::Pool(attrs));
    let output = run1(&graph, &Weights::new(), ArrayD::ones(IxDyn(&[1, 4, 4, 1])));
    let third = 1.0 / 3.0;
    assert_close(
        &output,
        &[4. / 9., 6. / 9., third, 6. / 9., 1., 0.5, third, 0.5, 0.25],
    );
}

#[test]
fn max_pool_with_ceil_mode_has_pytorch_output_sizes() {
    // GoogLeNet's pools: 112 → 56 with k3 s2 ceil_mode, 56 → 28 and 28 → 14 likewise.
    for (n, expected) in [(112, 56), (56, 28), (28, 14), (14, 7)] {
        let mut attrs = pool(PoolKind::Max, 3, 2, 0);
        attrs.ceil_mode = true;
        let graph = single(Shape::spatial(n, n, 1), Op::Pool(attrs));
        let input = synthetic_input(Shape::spatial(n, n, 1), 1, 0).unwrap();
        let output = run1(&graph, &Weights::new(), input);
        assert_eq!(output.shape(), &[1, expected, expected, 1], "from {n}");
    }
}

#[test]
fn global_pools_reduce_each_channel() {
    let input = tensor(&[1, 2, 2, 2], vec![1., -1., 2., -2., 3., -3., 6., -6.]);
    let graph = single(Shape::spatial(2, 2, 2), Op::GlobalPool(PoolKind::Avg));
    assert_close(&run1(&graph, &Weights::new(), input.clone()), &[3., -3.]);
    let graph = single(Shape::spatial(2, 2, 2), Op::GlobalPool(PoolKind::Max));
    assert_close(&run1(&graph, &Weights::new(), input), &[6., -1.]);
}

#[test]
fn adaptive_avg_pool_uses_pytorch_bins() {
    // 5 → 3 bins: [0, 2), [1, 4), [3, 5).
    let graph = single(Shape::spatial(1, 5, 1), Op::AdaptiveAvgPool { out: [1, 3] });
    let output = run1(&graph, &Weights::new(), image(&[&[1., 2., 3., 4., 5.]]));
    assert_close(&output, &[1.5, 3., 4.5]);
    // To the same size it is the identity.
    let graph = single(Shape::spatial(3, 3, 2), Op::AdaptiveAvgPool { out: [3, 3] });
    let input = synthetic_input(Shape::spatial(3, 3, 2), 1, 4).unwrap();
    assert_eq!(run1(&graph, &Weights::new(), input.clone()), input);
}

// ---------------------------------------------------------------------------------------------
// Elementwise ops

#[test]
fn flatten_is_channel_major() {
    let graph = single(Shape::spatial(2, 2, 2), Op::Flatten);
    // Element (h, w, c) holds 100·c + 10·h + w.
    let mut input = ArrayD::zeros(IxDyn(&[1, 2, 2, 2]));
    for ((_, h, w, c), v) in input
        .view_mut()
        .into_dimensionality::<ndarray::Ix4>()
        .unwrap()
        .indexed_iter_mut()
    {
        *v = (100 * c + 10 * h + w) as f32;
    }
    let output = run1(&graph, &Weights::new(), input);
    assert_eq!(output.shape(), &[1, 8]);
    assert_close(&output, &[0., 1., 10., 11., 100., 101., 110., 111.]);
}

#[test]
fn batch_norm_uses_running_statistics() {
    let graph = single(Shape::spatial(1, 2, 2), Op::BatchNorm { eps: 0.0 });
    let input = tensor(&[1, 1, 2, 2], vec![1., 2., 3., 4.]);
    // Identity statistics (the seeded ones) leave the input unchanged, up to eps.
    let identity = Weights::seeded(&graph, 0).unwrap();
    assert_eq!(run1(&graph, &identity, input.clone()), input);

    let mut weights = Weights::new();
    weights.insert("layer.weight", tensor(&[2], vec![2., 1.]));
    weights.insert("layer.bias", tensor(&[2], vec![1., 0.]));
    weights.insert("layer.running_mean", tensor(&[2], vec![1., 4.]));
    weights.insert("layer.running_var", tensor(&[2], vec![4., 1.]));
    // Channel 0: (x − 1)/2·2 + 1; channel 1: (x − 4)/1.
    assert_close(&run1(&graph, &weights, input), &[1., -2., 3., 0.]);
}

#[test]
fn softmax_sums_to_one_and_survives_large_logits() {
    let graph = single(Shape::flat(3), Op::Softmax);
    let output = run1(
        &graph,
        &Weights::new(),
        tensor(&[2, 3], vec![1000., 1001., 1002., 0., 0., 0.]),
    );
    let e = [1.0f32, 1f32.exp(), 2f32.exp()];
    let total: f32 = e.iter().sum();
    let third = 1.0 / 3.0;
    assert_close(
        &output,
        &[
            e[0] / total,
            e[1] / total,
            e[2] / total,
            third,
            third,
            third,
        ],
    );

    let graph = single(Shape::spatial(3, 3, 5), Op::Softmax);
    let output = run1(
        &graph,
        &Weights::new(),
        synthetic_input(Shape::spatial(3, 3, 5), 2, 9).unwrap(),
    );
    for lane in output.lanes(ndarray::Axis(3)) {
        assert!((lane.sum() - 1.0).abs() < 1e-6);
    }
}

#[test]
fn activations_dropout_and_identity_map_each_value() {
    let input = tensor(&[1, 5], vec![-7., -0.5, 0., 0.5, 7.]);
    for (op, expected) in [
        (Op::Activation(Activation::Relu), [0., 0., 0., 0.5, 7.]),
        (Op::Activation(Activation::Relu6), [0., 0., 0., 0.5, 6.]),
        (Op::Dropout { p: 0.5 }, [-7., -0.5, 0., 0.5, 7.]),
        (Op::Identity, [-7., -0.5, 0., 0.5, 7.]),
    ] {
        let graph = single(Shape::flat(5), op);
        assert_close(&run1(&graph, &Weights::new(), input.clone()), &expected);
    }
    let graph = single(Shape::flat(5), Op::Activation(Activation::Swish));
    let expected: Vec<f32> = input.iter().map(|&x| x / (1.0 + (-x).exp())).collect();
    assert_close(&run1(&graph, &Weights::new(), input), &expected);
}

#[test]
fn hardswish_matches_hand_computed_values() {
    // x · relu6(x + 3) / 6: zero up to −3, x itself from 3 on, a parabola in between.
    let input = tensor(&[1, 8], vec![-4., -3., -1., -0.5, 0., 1.5, 3., 4.]);
    let expected = [0., 0., -2. / 6., -1.25 / 6., 0., 6.75 / 6., 3., 4.];
    let graph = single(Shape::flat(8), Op::Activation(Activation::Hardswish));
    assert_close(&run1(&graph, &Weights::new(), input), &expected);
}

#[test]
fn hardsigmoid_leaky_relu_and_elu_match_hand_computed_values() {
    use cnnc::graph::Coefficient;
    let input = tensor(&[1, 7], vec![-4., -3., -1.5, 0., 1.5, 3., 4.]);
    let cases: [(Activation, [f32; 7]); 4] = [
        // relu6(x + 3) / 6: 0 up to −3, 1 from 3 on, a line through (0, 1/2) between.
        (Activation::Hardsigmoid, [0., 0., 0.25, 0.5, 0.75, 1., 1.]),
        // slope · x below 0.
        (
            Activation::LeakyRelu(Coefficient::new(0.1)),
            [-0.4, -0.3, -0.15, 0., 1.5, 3., 4.],
        ),
        // α · (e^x − 1) below 0: e^−4 = 0.0183156389, e^−3 = 0.0497870684, e^−1.5 = 0.2231301601.
        (
            Activation::Elu(Coefficient::new(1.0)),
            [-0.981_684_4, -0.950_212_9, -0.776_869_8, 0., 1.5, 3., 4.],
        ),
        (
            Activation::Elu(Coefficient::new(2.0)),
            [-1.963_368_7, -1.900_425_9, -1.553_739_7, 0., 1.5, 3., 4.],
        ),
    ];
    for (activation, expected) in cases {
        let graph = single(Shape::flat(7), Op::Activation(activation));
        assert_close(&run1(&graph, &Weights::new(), input.clone()), &expected);
    }
}

/// GELU is `x · Φ(x)`; Φ(−x) = 1 − Φ(x) from a table of the normal distribution's lower tail.
/// Checked relatively, so the tiny values at −3 and −5 must be right to 1e-5 of themselves.
#[test]
fn gelu_matches_the_normal_distribution_table() {
    let lower_tail = [
        (0.5, 0.308_537_538_725_986_9),
        (1.0, 0.158_655_253_931_457_05),
        (2.0, 0.022_750_131_948_179_21),
        (3.0, 1.349_898_031_630_095e-3),
        (5.0, 2.866_515_718_791_939e-7),
    ];
    let mut xs = Vec::new();
    let mut expected = Vec::new();
    for (x, tail) in lower_tail {
        xs.extend([x as f32, -x as f32]);
        expected.extend([x * (1.0 - tail), -x * tail]);
    }
    xs.push(0.0);
    expected.push(0.0);
    let graph = single(Shape::flat(xs.len()), Op::Activation(Activation::Gelu));
    let found = run1(&graph, &Weights::new(), tensor(&[1, xs.len()], xs.clone()));
    for ((x, found), expected) in xs.iter().zip(found.iter()).zip(&expected) {
        let error = (f64::from(*found) - expected).abs();
        assert!(
            error <= 1e-5 * expected.abs() + 1e-30,
            "gelu({x}) = {found}, not {expected}"
        );
    }
}

/// `gelu(approximate: "tanh")`: `x/2 · (1 + tanh(√(2/π) · (x + 0.044715 x³)))`, the values
/// computed from that definition in f64 (PyTorch's `gelu(1, approximate='tanh')` is 0.8412).
#[test]
fn gelu_tanh_matches_its_definition() {
    let xs = vec![-3., -1., -0.5, 0.5, 1., 2., 3.];
    let expected = [
        -0.003_637_392,
        -0.158_808_01,
        -0.154_286,
        0.345_714,
        0.841_192,
        1.954_597_7,
        2.996_362_6,
    ];
    let graph = single(Shape::flat(7), Op::Activation(Activation::GeluTanh));
    assert_close(
        &run1(&graph, &Weights::new(), tensor(&[1, 7], xs)),
        &expected,
    );
}

/// Arithmetic with a number, on each side of the tensor.
#[test]
fn tensor_number_arithmetic() {
    use cnnc::graph::{ScalarAttrs, ScalarOp};
    let input = tensor(&[1, 4], vec![-2., 0.5, 1., 4.]);
    for (op, value, expected) in [
        (ScalarOp::Add, 3.0, [1., 3.5, 4., 7.]),
        (ScalarOp::Sub, 3.0, [-5., -2.5, -2., 1.]),
        (ScalarOp::SubFrom, 3.0, [5., 2.5, 2., -1.]),
        (ScalarOp::Mul, -2.0, [4., -1., -2., -8.]),
        (ScalarOp::Div, 4.0, [-0.5, 0.125, 0.25, 1.]),
        (ScalarOp::DivInto, 2.0, [-1., 4., 2., 0.5]),
    ] {
        let graph = single(Shape::flat(4), Op::Scalar(ScalarAttrs { op, value }));
        assert_close(&run1(&graph, &Weights::new(), input.clone()), &expected);
    }
}

/// PyTorch's `channel_shuffle`: the channels as a `groups × C/groups` matrix, transposed
/// (`x.view(N, g, C/g, H, W).transpose(1, 2)`); and `split` as `torch.chunk(x, parts)[index]`.
#[test]
fn channel_shuffle_and_split_move_channels_as_pytorch() {
    use cnnc::graph::{ChannelShuffleAttrs, SplitAttrs};
    let channels: Vec<f32> = (0..6).map(|c| c as f32).collect();
    let shuffle = |groups| Op::ChannelShuffle(ChannelShuffleAttrs { groups });
    let split = |parts, index| Op::Split(SplitAttrs { parts, index });
    for (op, expected) in [
        (shuffle(2), vec![0., 3., 1., 4., 2., 5.]),
        (shuffle(3), vec![0., 2., 4., 1., 3., 5.]),
        (shuffle(1), vec![0., 1., 2., 3., 4., 5.]),
        (shuffle(6), vec![0., 1., 2., 3., 4., 5.]),
        (split(2, 1), vec![3., 4., 5.]),
        (split(3, 0), vec![0., 1.]),
        (split(3, 2), vec![4., 5.]),
    ] {
        let flat = single(Shape::flat(6), op.clone());
        let found = run1(&flat, &Weights::new(), tensor(&[1, 6], channels.clone()));
        assert_close(&found, &expected);
        // The same on every pixel of an image: pixel p holds channels 10·p + c.
        let spatial = single(Shape::spatial(1, 2, 6), op);
        let input: Vec<f32> = (0..2)
            .flat_map(|p| channels.iter().map(move |c| 10.0 * p as f32 + c))
            .collect();
        let found = run1(&spatial, &Weights::new(), tensor(&[1, 1, 2, 6], input));
        let wanted: Vec<f32> = (0..2)
            .flat_map(|p| expected.iter().map(move |c| 10.0 * p as f32 + c))
            .collect();
        assert_close(&found, &wanted);
    }
}

/// `upsample` as `torch.nn.Upsample(scale_factor, mode, align_corners=False)`: nearest
/// repeats pixels; bilinear samples at `(o + 0.5)/s − 0.5`, clamped to the input (PyTorch
/// gives `[0, 1, 3, 4]` for `[0, 4]` doubled, and `[0, 0, 1, 2, 3, 3]` for `[0, 3]` tripled).
#[test]
fn upsample_nearest_and_bilinear_match_pytorch() {
    use cnnc::graph::{UpsampleAttrs, UpsampleMode};
    let up = |scale, mode| {
        Op::Upsample(UpsampleAttrs {
            scale,
            mode,
            size: None,
        })
    };
    let cases = [
        (
            up([2, 2], UpsampleMode::Nearest),
            vec![1., 2.],
            [2, 4],
            vec![1., 1., 2., 2., 1., 1., 2., 2.],
        ),
        (
            up([1, 3], UpsampleMode::Nearest),
            vec![1., 2.],
            [1, 6],
            vec![1., 1., 1., 2., 2., 2.],
        ),
        (
            up([2, 2], UpsampleMode::Bilinear),
            vec![0., 4.],
            [2, 4],
            vec![0., 1., 3., 4., 0., 1., 3., 4.],
        ),
        (
            up([1, 3], UpsampleMode::Bilinear),
            vec![0., 3.],
            [1, 6],
            vec![0., 0., 1., 2., 3., 3.],
        ),
    ];
    for (op, input, [h, w], expected) in cases {
        let graph = single(Shape::spatial(1, 2, 1), op);
        let found = run1(&graph, &Weights::new(), tensor(&[1, 1, 2, 1], input));
        assert_eq!(found.shape(), &[1, h, w, 1]);
        assert_close(&found, &expected);
    }
    // A size that is not a whole multiple, PyTorch's rule with the scale in/out: 2 → 3
    // nearest reads floor(o·2/3) = [0, 0, 1]; bilinear samples at (o + 0.5)·2/3 − 0.5 =
    // [−1/6 → 0, 0.5, 7/6 → the last]; 4 → 3 samples at [1/6, 1.5, 17/6].
    let sized = |size, mode| {
        Op::Upsample(UpsampleAttrs {
            scale: [0, 0],
            mode,
            size: Some(size),
        })
    };
    for (mode, input, size, expected) in [
        (
            UpsampleMode::Nearest,
            vec![1., 2.],
            [1, 3],
            vec![1., 1., 2.],
        ),
        (
            UpsampleMode::Bilinear,
            vec![1., 2.],
            [1, 3],
            vec![1., 1.5, 2.],
        ),
        (
            UpsampleMode::Nearest,
            vec![0., 3., 6., 9.],
            [1, 3],
            vec![0., 3., 6.],
        ),
        (
            UpsampleMode::Bilinear,
            vec![0., 3., 6., 9.],
            [1, 3],
            vec![0.5, 4.5, 8.5],
        ),
    ] {
        let w = input.len();
        let graph = single(Shape::spatial(1, w, 1), sized(size, mode));
        let found = run1(&graph, &Weights::new(), tensor(&[1, 1, w, 1], input));
        assert_eq!(found.shape(), &[1, 1, 3, 1]);
        assert_close(&found, &expected);
    }
    // Along the height as along the width: a column [0, 4] doubled is [0, 1, 3, 4] down.
    let graph = single(Shape::spatial(2, 1, 1), up([2, 1], UpsampleMode::Bilinear));
    let found = run1(&graph, &Weights::new(), tensor(&[1, 2, 1, 1], vec![0., 4.]));
    assert_close(&found, &[0., 1., 3., 4.]);
}

/// `x -> a: conv1x1(2 → 2) ; x -> b: global pool` and a two-input op on the results.
fn two_branch(op: Op) -> (Graph, Weights) {
    let mut graph = Graph::new("branches");
    let x = graph.add_input("x", Shape::spatial(2, 2, 2), Span::default());
    let a = graph
        .add(Op::Identity, vec![x], "a".into(), Origin::default())
        .unwrap();
    let pooled = graph.add(
        Op::GlobalPool(PoolKind::Max),
        vec![x],
        "b".into(),
        Origin::default(),
    );
    let inputs = match op {
        Op::Mul => vec![pooled.unwrap(), a],
        _ => vec![a, x],
    };
    let y = graph
        .add(op, inputs, "join".into(), Origin::default())
        .unwrap();
    graph.set_output(y);
    (graph, Weights::new())
}

#[test]
fn add_mul_and_concat_combine_branches() {
    let input = tensor(&[1, 2, 2, 2], vec![1., 10., 2., 20., 3., 30., 4., 40.]);
    let (graph, weights) = two_branch(Op::Add);
    assert_close(
        &run1(&graph, &weights, input.clone()),
        &[2., 20., 4., 40., 6., 60., 8., 80.],
    );
    // The 1×1×2 gate (4, 40) broadcasts over the 2×2 image, whichever side it is on.
    let (graph, weights) = two_branch(Op::Mul);
    assert_close(
        &run1(&graph, &weights, input.clone()),
        &[4., 400., 8., 800., 12., 1200., 16., 1600.],
    );
    let (graph, weights) = two_branch(Op::Concat);
    let output = run1(&graph, &weights, input);
    assert_eq!(output.shape(), &[1, 2, 2, 4]);
    assert_close(
        &output.slice(ndarray::s![0, 0, 0, ..]).to_owned().into_dyn(),
        &[1., 10., 1., 10.],
    );
}

// ---------------------------------------------------------------------------------------------
// Run errors

#[test]
fn run_reports_missing_and_misshapen_weights_by_layer() {
    let graph = single(Shape::spatial(8, 8, 3), Op::Conv(conv(64, 7)));
    let err = run(
        &graph,
        &Weights::new(),
        &[ArrayD::zeros(IxDyn(&[1, 8, 8, 3]))],
    )
    .unwrap_err();
    assert!(
        matches!(err, RunError::Weights(WeightsError::Missing { .. })),
        "{err}"
    );
    let mut weights = Weights::new();
    weights.insert("layer.weight", ArrayD::zeros(IxDyn(&[64, 3, 5, 5])));
    let err = run(&graph, &weights, &[ArrayD::zeros(IxDyn(&[1, 8, 8, 3]))]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tensor `layer.weight` has shape 64×3×5×5 but conv `layer` needs 64×3×7×7"
    );
    assert_eq!(err.node(), Some(NodeId::from_u32(1)));
}

#[test]
fn run_rejects_wrong_inputs() {
    let graph = single(Shape::spatial(4, 4, 3), Op::Identity);
    let weights = Weights::new();
    let err = run(&graph, &weights, &[]).unwrap_err();
    assert!(
        matches!(
            err,
            RunError::InputCount {
                expected: 1,
                found: 0,
                ..
            }
        ),
        "{err}"
    );
    let err = run(&graph, &weights, &[ArrayD::zeros(IxDyn(&[1, 4, 3, 4]))]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "input `x` must be N×4×4×3 (batch × height × width × channels), but the tensor given is 1×4×3×4"
    );
    let err = run(&graph, &weights, &[ArrayD::zeros(IxDyn(&[0, 4, 4, 3]))]).unwrap_err();
    assert!(matches!(err, RunError::EmptyBatch), "{err}");
}

#[test]
fn absurd_batch_sizes_are_an_error_not_an_allocation() {
    // 64×64×524288 is exactly 2^31 elements: allowed per image, too large for two.
    let graph = single(Shape::spatial(64, 64, 1), Op::Conv(conv(1 << 19, 1)));
    let err = run(
        &graph,
        &Weights::new(),
        &[ArrayD::zeros(IxDyn(&[2, 64, 64, 1]))],
    )
    .unwrap_err();
    assert!(matches!(err, RunError::TooLarge { batch: 2, .. }), "{err}");
    let err = synthetic_input(Shape::spatial(1024, 1024, 3), 1 << 20, 0).unwrap_err();
    assert!(matches!(err, InputError::TooLarge { .. }), "{err}");
}
