//! The layers ConvNeXt brought, in the reference interpreter, against hand-computed values:
//! layer norm over each pixel's channels, a dense layer at every pixel, and a `parameter`
//! tensor named by its layer's path alone; PReLU; group and instance norm.

use super::{assert_close, run1, single, tensor};
use cnnc::graph::{
    GroupNormAttrs, LayerNormAttrs, Op, PReluAttrs, ParameterAttrs, PointwiseDenseAttrs, Shape,
};
use cnnc::runtime::Weights;

/// Pixel `[1, 2, 3, 4]`: mean 2.5, biased variance 1.25, so `x̂ = (x − 2.5)/√1.25`; then
/// `x̂·γ + β` with γ = `[1, 2, 1, 1]`, β = `[0, 0, 1, 0]`. A constant pixel normalizes to 0 and
/// gives β. A fresh layer norm is the identity affine map.
#[test]
fn layer_norm_normalizes_each_pixel_over_its_channels() {
    let graph = single(
        Shape::spatial(1, 2, 4),
        Op::LayerNorm(LayerNormAttrs { eps: 1e-6 }),
    );
    let names: Vec<String> = graph.named_params().into_iter().map(|p| p.0).collect();
    assert_eq!(names, ["layer.weight", "layer.bias"]);
    let input = tensor(&[1, 1, 2, 4], vec![1., 2., 3., 4., 2., 2., 2., 2.]);
    let mut weights = Weights::new();
    weights.insert("layer.weight", tensor(&[4], vec![1., 2., 1., 1.]));
    weights.insert("layer.bias", tensor(&[4], vec![0., 0., 1., 0.]));
    let s = 1.25f32.sqrt();
    let expected = [
        -1.5 / s,
        -0.5 / s * 2.0,
        0.5 / s + 1.0,
        1.5 / s,
        0.,
        0.,
        1.,
        0.,
    ];
    assert_close(&run1(&graph, &weights, input.clone()), &expected);

    let fresh = Weights::seeded(&graph, 0).expect("seeded weights");
    let normalized = [-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s, 0., 0., 0., 0.];
    assert_close(&run1(&graph, &fresh, input), &normalized);
}

/// Each pixel gets `W·x + b` with PyTorch's `[units, in]` weight: pixels `[1, 2]` and
/// `[3, −1]`, W = `[[1, 0], [2, 1], [0, −1]]`, b = `[0.5, 0, 1]`.
#[test]
fn pointwise_dense_applies_the_linear_layer_at_every_pixel() {
    let attrs = PointwiseDenseAttrs {
        units: 3,
        bias: true,
    };
    let graph = single(Shape::spatial(1, 2, 2), Op::PointwiseDense(attrs));
    assert_eq!(graph.shape(graph.output()), Shape::spatial(1, 2, 3));
    let mut weights = Weights::new();
    weights.insert(
        "layer.weight",
        tensor(&[3, 2], vec![1., 0., 2., 1., 0., -1.]),
    );
    weights.insert("layer.bias", tensor(&[3], vec![0.5, 0., 1.]));
    let output = run1(
        &graph,
        &weights,
        tensor(&[1, 1, 2, 2], vec![1., 2., 3., -1.]),
    );
    assert_eq!(output.shape(), &[1, 1, 2, 3]);
    assert_close(&output, &[1.5, 4., -1., 3.5, 5., 2.]);
    // MACs: 2 pixels × 2 inputs × 3 units.
    assert_eq!(graph.total_macs(), 12);
}

/// The tensor is named by the layer's path alone (`layer`, not `layer.weight`), has
/// PyTorch's `[C, 1, 1]` shape, starts at `init`, and is the node's value for every image of a
/// batch, whatever the input holds.
#[test]
fn parameter_is_the_learned_tensor_named_by_its_path() {
    let graph = single(
        Shape::spatial(2, 2, 3),
        Op::Parameter(ParameterAttrs { init: 0.25 }),
    );
    let params = graph.named_params();
    assert_eq!(params.len(), 1);
    assert_eq!(params[0].0, "layer");
    assert_eq!(params[0].2.shape, [3, 1, 1]);
    assert_eq!(graph.shape(graph.output()), Shape::spatial(1, 1, 3));
    let input = tensor(&[2, 2, 2, 3], (0..24).map(|v| v as f32).collect());
    let fresh = Weights::seeded(&graph, 0).expect("seeded weights");
    assert_close(&run1(&graph, &fresh, input.clone()), &[0.25; 6]);
    let mut weights = Weights::new();
    weights.insert("layer", tensor(&[3, 1, 1], vec![1., -2., 3.]));
    let output = run1(&graph, &weights, input);
    assert_eq!(output.shape(), &[2, 1, 1, 3]);
    assert_close(&output, &[1., -2., 3., 1., -2., 3.]);
}

/// `max(0, x) + a · min(0, x)`: per channel with slopes `[0.5, −1]`, and one shared slope 2
/// (PyTorch's `nn.PReLU()` has one slope, `nn.PReLU(C)` one per channel); fresh slopes are
/// 0.25.
#[test]
fn prelu_scales_the_negative_values_by_learned_slopes() {
    let input = tensor(&[1, 1, 2, 2], vec![-2., -3., 4., 0.5]);
    let graph = single(
        Shape::spatial(1, 2, 2),
        Op::PRelu(PReluAttrs {
            shared: false,
            init: 0.25,
        }),
    );
    assert_eq!(graph.named_params()[0].2.shape, [2]);
    let fresh = Weights::seeded(&graph, 0).expect("seeded weights");
    assert_close(
        &run1(&graph, &fresh, input.clone()),
        &[-0.5, -0.75, 4., 0.5],
    );
    let mut weights = Weights::new();
    weights.insert("layer.weight", tensor(&[2], vec![0.5, -1.]));
    assert_close(&run1(&graph, &weights, input.clone()), &[-1., 3., 4., 0.5]);

    let shared = single(
        Shape::spatial(1, 2, 2),
        Op::PRelu(PReluAttrs {
            shared: true,
            init: 0.25,
        }),
    );
    assert_eq!(shared.named_params()[0].2.shape, [1]);
    let mut weights = Weights::new();
    weights.insert("layer.weight", tensor(&[1], vec![2.]));
    assert_close(&run1(&shared, &weights, input), &[-4., -6., 4., 0.5]);
}

/// Two pixels of 4 channels in 2 groups: group 0 holds 1, 3 (pixel 0) and 5, 7 (pixel 1),
/// mean 4 and biased variance 5; group 1 holds 0, 0 and 2, 2, mean 1 and variance 1. Instance
/// norm over pixels `[1, 4]` and `[3, 4]`: channel 0 has mean 2 and variance 1, channel 1 is
/// constant and normalizes to 0 (eps keeps 0/0 away).
#[test]
fn group_norm_normalizes_each_group_over_the_image() {
    let attrs = GroupNormAttrs {
        groups: 2,
        eps: 0.0,
        affine: true,
        instance: false,
    };
    let graph = single(Shape::spatial(1, 2, 4), Op::GroupNorm(attrs));
    let input = tensor(&[1, 1, 2, 4], vec![1., 3., 0., 0., 5., 7., 2., 2.]);
    let fresh = Weights::seeded(&graph, 0).expect("seeded weights");
    let s = 5f32.sqrt();
    let normalized = [-3. / s, -1. / s, -1., -1., 1. / s, 3. / s, 1., 1.];
    assert_close(&run1(&graph, &fresh, input.clone()), &normalized);
    let mut weights = Weights::new();
    weights.insert("layer.weight", tensor(&[4], vec![2., 1., 1., 1.]));
    weights.insert("layer.bias", tensor(&[4], vec![0., 0., 0., 1.]));
    let affine = [-6. / s, -1. / s, -1., 0., 2. / s, 3. / s, 1., 2.];
    assert_close(&run1(&graph, &weights, input), &affine);

    let instance = GroupNormAttrs {
        groups: 2,
        eps: 1e-5,
        affine: false,
        instance: true,
    };
    let graph = single(Shape::spatial(1, 2, 2), Op::GroupNorm(instance));
    assert!(graph.named_params().is_empty());
    let input = tensor(&[1, 1, 2, 2], vec![1., 4., 3., 4.]);
    assert_close(&run1(&graph, &Weights::new(), input), &[-1., 0., 1., 0.]);
}
