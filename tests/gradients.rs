//! Finite-difference checks of the reference backward (`reference::backward`): for every op,
//! on random shapes with odd sizes, strides, padding and groups, the analytic gradient of a
//! loss with respect to every input element and every parameter element is compared with a
//! central difference of the forward; then whole small networks (LeNet-5-like, a residual
//! block with batch norm) on the softmax cross-entropy loss.
//!
//! Everything is f32, kept well conditioned: the loss is `L = Σ r ⊙ output` with a fixed
//! random `r` (or the mean cross-entropy), accumulated in f64; the step is `h = 1e-2` for
//! single ops and `1e-3` for networks; inputs of piecewise-linear ops (relu, relu6, hardswish,
//! max pooling) are drawn at least 0.05 away from their kinks and ties, so the central
//! difference never straddles one. The tolerance is `|fd − analytic| ≤ atol + rtol·|analytic|`
//! with rtol = 1e-2 and atol = 1e-3 (single ops), 2e-3 (networks): f32 rounding of `L` (~1e-6)
//! divided by `2h` bounds the difference's own error well below that.

#[path = "gradients/arithmetic.rs"]
mod arithmetic;
#[path = "gradients/conv_transpose.rs"]
mod conv_transpose;
#[path = "gradients/convnext_ops.rs"]
mod convnext_ops;
#[path = "gradients/networks.rs"]
mod networks;

use cnnc::driver::{self, Select};
use cnnc::graph::ops::gradient::TrainingMode;
use cnnc::graph::{
    Activation, Coefficient, ConvAttrs, DenseAttrs, Graph, NodeId, Op, Origin, Padding, PoolAttrs,
    PoolKind, Shape,
};
use cnnc::reference::backward::{backward, forward_training, live_nodes, loss_gradients};
use cnnc::reference::backward_plan::dump_backward_plan;
use cnnc::runtime::Weights;
use cnnc::source::Span;
use ndarray::{ArrayD, IxDyn};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uniform(&mut self, low: f32, high: f32) -> f32 {
        let unit = (self.next() >> 40) as f32 / (1u64 << 24) as f32;
        low + (high - low) * unit
    }

    /// Uniform in [low, high], at least `margin` away from every kink.
    fn away_from(&mut self, low: f32, high: f32, kinks: &[f32], margin: f32) -> f32 {
        loop {
            let v = self.uniform(low, high);
            if kinks.iter().all(|k| (v - k).abs() >= margin) {
                return v;
            }
        }
    }

    fn tensor(&mut self, shape: &[usize], mut draw: impl FnMut(&mut Rng) -> f32) -> ArrayD<f32> {
        let n = shape.iter().product();
        let values = (0..n).map(|_| draw(self)).collect();
        ArrayD::from_shape_vec(IxDyn(shape), values).unwrap()
    }

    /// Distinct values spaced 0.05 apart in random order, so no max-pool window has a tie or
    /// a near tie a step of 1e-2 could flip.
    fn distinct(&mut self, shape: &[usize]) -> ArrayD<f32> {
        let n: usize = shape.iter().product();
        let mut values: Vec<f32> = (0..n).map(|i| i as f32 * 0.05 - n as f32 * 0.025).collect();
        for i in (1..n).rev() {
            values.swap(i, (self.next() % (i as u64 + 1)) as usize);
        }
        ArrayD::from_shape_vec(IxDyn(shape), values).unwrap()
    }
}

const TRAIN: TrainingMode = TrainingMode {
    training: true,
    seed: 7,
};
const EVAL: TrainingMode = TrainingMode {
    training: false,
    seed: 7,
};

/// Seeded weights with every learned tensor redrawn from U(−1, 1) and running variances
/// from U(0.5, 2), so no gradient is trivially zero or one.
fn random_weights(graph: &Graph, rng: &mut Rng) -> Weights {
    let mut weights = Weights::seeded(graph, 3).expect("seeded weights");
    for (name, _, spec) in graph.named_params() {
        let (low, high) = match spec.name {
            "running_var" => (0.5, 2.0),
            _ => (-1.0, 1.0),
        };
        let tensor = rng.tensor(&spec.shape, |r| r.uniform(low, high));
        weights.insert(name, tensor);
    }
    weights
}

/// `L = Σ r ⊙ output`, in f64.
fn weighted_sum(
    graph: &Graph,
    weights: &Weights,
    inputs: &[ArrayD<f32>],
    mode: TrainingMode,
    r: &[f32],
) -> f64 {
    let activations = forward_training(graph, weights, inputs, mode).expect("forward");
    let output = activations.values[graph.output()].as_ref().unwrap();
    output
        .iter()
        .zip(r)
        .map(|(&y, &r)| f64::from(y) * f64::from(r))
        .sum()
}

struct Tolerance {
    step: f32,
    rtol: f64,
    atol: f64,
}

const SINGLE_OP: Tolerance = Tolerance {
    step: 1e-2,
    rtol: 1e-2,
    atol: 1e-3,
};

fn assert_close(what: &str, analytic: f32, numeric: f64, tol: &Tolerance) {
    let analytic = f64::from(analytic);
    assert!(
        (numeric - analytic).abs() <= tol.atol + tol.rtol * analytic.abs(),
        "{what}: analytic {analytic} vs finite difference {numeric}"
    );
}

/// Checks ∂L/∂(every input element) and ∂L/∂(every learned parameter element) of
/// `L = Σ r ⊙ output` against central differences; returns how many were compared.
fn check_op(
    graph: &Graph,
    weights: &Weights,
    inputs: Vec<ArrayD<f32>>,
    mode: TrainingMode,
    rng: &mut Rng,
) -> usize {
    let tol = SINGLE_OP;
    let out_shape = graph.shape(graph.output());
    let batch = inputs[0].shape()[0];
    let r: Vec<f32> = (0..batch * out_shape.numel())
        .map(|_| rng.uniform(-1.0, 1.0))
        .collect();
    let grads = backward(
        graph,
        weights,
        &inputs,
        mode,
        |out| Ok(ArrayD::from_shape_vec(out.raw_dim(), r.clone()).unwrap()),
        true,
    )
    .expect("backward");
    let loss =
        |weights: &Weights, inputs: &[ArrayD<f32>]| weighted_sum(graph, weights, inputs, mode, &r);
    let mut n_checked = 0;
    for (idx, given) in inputs.iter().enumerate() {
        let analytic = grads.inputs[idx].as_ref().expect("an input gradient");
        assert_eq!(analytic.shape(), given.shape());
        for (pos, &a) in analytic.iter().enumerate() {
            let mut shifted = inputs.clone();
            let cell = shifted[idx].iter_mut().nth(pos).unwrap();
            *cell += tol.step;
            let plus = loss(weights, &shifted);
            let cell = shifted[idx].iter_mut().nth(pos).unwrap();
            *cell -= 2.0 * tol.step;
            let minus = loss(weights, &shifted);
            let numeric = (plus - minus) / (2.0 * f64::from(tol.step));
            assert_close(&format!("input {idx}[{pos}]"), a, numeric, &tol);
            n_checked += 1;
        }
    }
    n_checked + check_params(graph, weights, &grads.params, &tol, |w| loss(w, &inputs))
}

/// Checks every trainable tensor's gradient against central differences of `loss`.
fn check_params(
    graph: &Graph,
    weights: &Weights,
    params: &[(String, ArrayD<f32>)],
    tol: &Tolerance,
    loss: impl Fn(&Weights) -> f64,
) -> usize {
    let trainable: Vec<String> = graph
        .named_params()
        .into_iter()
        .filter(|(_, node, spec)| !spec.is_buffer && !graph.nodes[*node].frozen)
        .map(|(name, _, _)| name)
        .collect();
    let names: Vec<&String> = params.iter().map(|(name, _)| name).collect();
    assert_eq!(names, trainable.iter().collect::<Vec<_>>());
    let mut n_checked = 0;
    for (name, analytic) in params {
        assert_eq!(
            analytic.shape(),
            weights.get(name).unwrap().shape(),
            "{name}"
        );
        for (pos, &a) in analytic.iter().enumerate() {
            let mut shifted = weights.clone();
            let tensor = shifted.get_mut(name).unwrap();
            *tensor.iter_mut().nth(pos).unwrap() += tol.step;
            let plus = loss(&shifted);
            let tensor = shifted.get_mut(name).unwrap();
            *tensor.iter_mut().nth(pos).unwrap() -= 2.0 * tol.step;
            let minus = loss(&shifted);
            let numeric = (plus - minus) / (2.0 * f64::from(tol.step));
            assert_close(&format!("{name}[{pos}]"), a, numeric, tol);
            n_checked += 1;
        }
    }
    n_checked
}

/// A network of one layer on inputs of the given shapes.
fn single(inputs: &[Shape], op: Op) -> Graph {
    let mut graph = Graph::new("test");
    let ids: Vec<NodeId> = inputs
        .iter()
        .enumerate()
        .map(|(i, &shape)| graph.add_input(format!("x{i}"), shape, Span::default()))
        .collect();
    let y = graph
        .add(op, ids, "layer".into(), Origin::default())
        .expect("the test's layer has a valid shape");
    graph.set_output(y);
    graph
}

/// Checks one op on random inputs drawn by `draw` (batch 2).
fn check_single(inputs: &[Shape], op: Op, mode: TrainingMode, draw: fn(&mut Rng) -> f32) {
    let mut rng = Rng(42);
    let graph = single(inputs, op);
    let weights = random_weights(&graph, &mut rng);
    let tensors = inputs
        .iter()
        .map(|s| rng.tensor(&dims(2, *s), draw))
        .collect();
    let n = check_op(&graph, &weights, tensors, mode, &mut rng);
    assert!(n > 0);
}

fn dims(batch: usize, s: Shape) -> Vec<usize> {
    if s.flat {
        vec![batch, s.c]
    } else {
        vec![batch, s.h, s.w, s.c]
    }
}

/// How a test draws one input value.
type Draw = fn(&mut Rng) -> f32;

fn smooth(rng: &mut Rng) -> f32 {
    rng.uniform(-1.0, 1.0)
}

fn conv(filters: usize, kernel: [usize; 2]) -> ConvAttrs {
    ConvAttrs {
        filters,
        kernel,
        stride: [1, 1],
        dilation: [1, 1],
        pad: Padding::default(),
        groups: 1,
        depthwise: false,
        bias: true,
        weights: None,
        bias_values: None,
        activation: None,
        residual: false,
    }
}

// ---------------------------------------------------------------------------------------------
// Convolution

#[test]
fn conv_with_stride_dilation_and_asymmetric_padding() {
    let attrs = ConvAttrs {
        stride: [2, 1],
        dilation: [1, 2],
        pad: Padding {
            top: 1,
            bottom: 0,
            left: 2,
            right: 1,
        },
        ..conv(4, [3, 2])
    };
    check_single(&[Shape::spatial(7, 5, 3)], Op::Conv(attrs), TRAIN, smooth);
}

#[test]
fn grouped_conv() {
    let attrs = ConvAttrs {
        stride: [2, 2],
        pad: Padding::uniform(1),
        groups: 2,
        ..conv(6, [3, 3])
    };
    check_single(&[Shape::spatial(5, 6, 4)], Op::Conv(attrs), TRAIN, smooth);
}

#[test]
fn depthwise_conv_with_multiplier_and_dilation() {
    let attrs = ConvAttrs {
        dilation: [2, 2],
        pad: Padding::uniform(2),
        groups: 3,
        bias: false,
        ..conv(6, [3, 3])
    };
    check_single(&[Shape::spatial(5, 5, 3)], Op::Conv(attrs), TRAIN, smooth);
}

#[test]
fn conv_with_fused_activation_and_residual() {
    let attrs = ConvAttrs {
        pad: Padding::uniform(1),
        activation: Some(Activation::Sigmoid),
        residual: true,
        ..conv(3, [3, 3])
    };
    let inputs = [Shape::spatial(4, 5, 2), Shape::spatial(4, 5, 3)];
    check_single(&inputs, Op::Conv(attrs), TRAIN, smooth);
}

// ---------------------------------------------------------------------------------------------
// Dense

#[test]
fn dense() {
    let attrs = DenseAttrs {
        units: 5,
        bias: true,
        weights: None,
        bias_values: None,
        activation: None,
    };
    check_single(&[Shape::flat(7)], Op::Dense(attrs), TRAIN, smooth);
}

#[test]
fn dense_with_fused_swish() {
    let attrs = DenseAttrs {
        units: 3,
        bias: true,
        weights: None,
        bias_values: None,
        activation: Some(Activation::Swish),
    };
    check_single(&[Shape::flat(4)], Op::Dense(attrs), TRAIN, smooth);
}

// ---------------------------------------------------------------------------------------------
// Pooling

fn pool(kind: PoolKind, kernel: usize, stride: usize, pad: Padding) -> PoolAttrs {
    PoolAttrs {
        kind,
        kernel: [kernel, kernel],
        stride: [stride, stride],
        pad,
        ceil_mode: false,
        count_include_pad: true,
        dilation: [1, 1],
    }
}

fn check_distinct(input: Shape, op: Op) {
    let mut rng = Rng(9);
    let graph = single(&[input], op);
    let weights = Weights::new();
    let x = rng.distinct(&dims(2, input));
    check_op(&graph, &weights, vec![x], TRAIN, &mut rng);
}

#[test]
fn max_pool_with_padding_stride_and_ceil_mode() {
    let asymmetric = Padding {
        top: 1,
        bottom: 0,
        left: 0,
        right: 1,
    };
    check_distinct(
        Shape::spatial(7, 6, 2),
        Op::Pool(pool(PoolKind::Max, 3, 2, asymmetric)),
    );
    let ceil = PoolAttrs {
        ceil_mode: true,
        ..pool(PoolKind::Max, 2, 2, Padding::default())
    };
    check_distinct(Shape::spatial(5, 7, 3), Op::Pool(ceil));
}

#[test]
fn dilated_max_pool() {
    let dilated = PoolAttrs {
        dilation: [2, 3],
        ..pool(PoolKind::Max, 3, 2, Padding::uniform(1))
    };
    check_distinct(Shape::spatial(9, 11, 2), Op::Pool(dilated));
    let ceil = PoolAttrs {
        dilation: [2, 2],
        ceil_mode: true,
        ..pool(PoolKind::Max, 2, 2, Padding::default())
    };
    check_distinct(Shape::spatial(8, 7, 3), Op::Pool(ceil));
}

#[test]
fn max_pool_routes_a_tie_to_the_first_maximum() {
    let graph = single(
        &[Shape::spatial(2, 2, 1)],
        Op::Pool(pool(PoolKind::Max, 2, 2, Padding::default())),
    );
    let x = ArrayD::from_shape_vec(IxDyn(&[1, 2, 2, 1]), vec![1.0, 3.0, 3.0, 3.0]).unwrap();
    let grads = backward(
        &graph,
        &Weights::new(),
        &[x],
        TRAIN,
        |out| Ok(ArrayD::ones(out.raw_dim())),
        true,
    )
    .unwrap();
    let dx: Vec<f32> = grads.inputs[0].as_ref().unwrap().iter().copied().collect();
    assert_eq!(dx, [0.0, 1.0, 0.0, 0.0]);
}

#[test]
fn avg_pool_with_and_without_padding_in_the_count() {
    for count_include_pad in [true, false] {
        for ceil_mode in [false, true] {
            let attrs = PoolAttrs {
                count_include_pad,
                ceil_mode,
                ..pool(PoolKind::Avg, 3, 2, Padding::uniform(1))
            };
            check_single(&[Shape::spatial(6, 5, 2)], Op::Pool(attrs), TRAIN, smooth);
        }
    }
}

#[test]
fn global_pools_and_adaptive_avg_pool() {
    check_single(
        &[Shape::spatial(3, 5, 2)],
        Op::GlobalPool(PoolKind::Avg),
        TRAIN,
        smooth,
    );
    check_distinct(Shape::spatial(3, 5, 2), Op::GlobalPool(PoolKind::Max));
    check_single(
        &[Shape::spatial(5, 7, 2)],
        Op::AdaptiveAvgPool { out: [2, 3] },
        TRAIN,
        smooth,
    );
    check_single(
        &[Shape::spatial(3, 2, 1)],
        Op::AdaptiveAvgPool { out: [4, 3] },
        TRAIN,
        smooth,
    );
}

// ---------------------------------------------------------------------------------------------
// Shape, normalization and elementwise ops

#[test]
fn flatten_is_channel_major() {
    check_single(&[Shape::spatial(3, 2, 4)], Op::Flatten, TRAIN, smooth);
}

#[test]
fn batch_norm_in_training_and_eval_mode() {
    // Inputs with a mean and scale of their own, so the batch statistics matter.
    let draw = |rng: &mut Rng| rng.uniform(-1.0, 3.0);
    for mode in [TRAIN, EVAL] {
        check_single(
            &[Shape::spatial(3, 3, 2)],
            Op::BatchNorm { eps: 1e-5 },
            mode,
            draw,
        );
    }
}

#[test]
fn batch_norm_training_forward_uses_batch_statistics() {
    // γ = 1, β = 0 (the seeded init): every channel comes out with mean 0 and biased
    // variance 1 − ε/(σ² + ε), whatever the running statistics.
    let mut rng = Rng(1);
    let graph = single(&[Shape::spatial(2, 3, 2)], Op::BatchNorm { eps: 1e-5 });
    let weights = Weights::seeded(&graph, 1).unwrap();
    let x = rng.tensor(&[2, 2, 3, 2], |r| r.uniform(2.0, 6.0));
    let acts = forward_training(&graph, &weights, &[x], TRAIN).unwrap();
    let y = acts.values[graph.output()].as_ref().unwrap();
    for c in 0..2 {
        let lane: Vec<f64> = y
            .slice(ndarray::s![.., .., .., c])
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        let mean = lane.iter().sum::<f64>() / lane.len() as f64;
        let var = lane.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / lane.len() as f64;
        assert!(mean.abs() < 1e-5, "{mean}");
        assert!((var - 1.0).abs() < 1e-3, "{var}");
    }
}

#[test]
fn activations() {
    let cases: [(Activation, Draw); 11] = [
        (Activation::Relu, |r| r.away_from(-1.0, 1.0, &[0.0], 0.05)),
        (Activation::Relu6, |r| {
            r.away_from(-1.0, 7.0, &[0.0, 6.0], 0.05)
        }),
        (Activation::Sigmoid, |r| r.uniform(-3.0, 3.0)),
        (Activation::Swish, |r| r.uniform(-3.0, 3.0)),
        (Activation::Tanh, |r| r.uniform(-2.0, 2.0)),
        (Activation::Hardswish, |r| {
            r.away_from(-5.0, 5.0, &[-3.0, 3.0], 0.05)
        }),
        (Activation::Hardsigmoid, |r| {
            r.away_from(-5.0, 5.0, &[-3.0, 3.0], 0.05)
        }),
        (Activation::LeakyRelu(Coefficient::new(0.1)), |r| {
            r.away_from(-2.0, 2.0, &[0.0], 0.05)
        }),
        (Activation::Elu(Coefficient::new(1.5)), |r| {
            r.away_from(-3.0, 2.0, &[0.0], 0.05)
        }),
        (Activation::Gelu, |r| r.uniform(-4.0, 4.0)),
        (Activation::GeluTanh, |r| r.uniform(-4.0, 4.0)),
    ];
    for (activation, draw) in cases {
        check_single(
            &[Shape::spatial(3, 2, 3)],
            Op::Activation(activation),
            TRAIN,
            draw,
        );
    }
}

#[test]
fn channel_shuffle_and_split() {
    use cnnc::graph::{ChannelShuffleAttrs, SplitAttrs};
    for input in [Shape::spatial(3, 2, 6), Shape::flat(6)] {
        for groups in [2, 3] {
            let op = Op::ChannelShuffle(ChannelShuffleAttrs { groups });
            check_single(&[input], op, TRAIN, smooth);
        }
        for (parts, index) in [(2, 0), (2, 1), (3, 2)] {
            check_single(
                &[input],
                Op::Split(SplitAttrs { parts, index }),
                TRAIN,
                smooth,
            );
        }
    }
}

#[test]
fn upsample_nearest_and_bilinear() {
    use cnnc::graph::{UpsampleAttrs, UpsampleMode};
    for mode in [UpsampleMode::Nearest, UpsampleMode::Bilinear] {
        for scale in [[2, 2], [3, 2], [1, 3]] {
            let op = Op::Upsample(UpsampleAttrs {
                scale,
                mode,
                size: None,
            });
            check_single(&[Shape::spatial(3, 2, 2)], op, TRAIN, smooth);
        }
        // Sizes that are not whole multiples, larger and smaller.
        for size in [[5, 3], [2, 1]] {
            let op = Op::Upsample(UpsampleAttrs {
                scale: [0, 0],
                mode,
                size: Some(size),
            });
            check_single(&[Shape::spatial(3, 2, 2)], op, TRAIN, smooth);
        }
    }
}

/// Reflection and replication send several outputs' gradients to one border pixel.
#[test]
fn pad_every_mode() {
    use cnnc::graph::{PadAttrs, PadMode, Padding};
    let pad = Padding {
        top: 2,
        bottom: 1,
        left: 0,
        right: 1,
    };
    for mode in [PadMode::Zeros, PadMode::Reflect, PadMode::Replicate] {
        let op = Op::Pad(PadAttrs { pad, mode });
        check_single(&[Shape::spatial(3, 2, 2)], op, TRAIN, smooth);
    }
}

#[test]
fn tensor_number_arithmetic() {
    use cnnc::graph::{ScalarAttrs, ScalarOp};
    for op in [
        ScalarOp::Add,
        ScalarOp::Sub,
        ScalarOp::SubFrom,
        ScalarOp::Mul,
        ScalarOp::Div,
        ScalarOp::DivInto,
    ] {
        let attrs = ScalarAttrs { op, value: -1.5 };
        // Away from 0, where `c / x` is steep.
        check_single(&[Shape::spatial(3, 2, 2)], Op::Scalar(attrs), TRAIN, |r| {
            r.uniform(0.5, 2.0)
        });
    }
}

#[test]
fn softmax_over_flat_and_spatial_channels() {
    check_single(&[Shape::flat(5)], Op::Softmax, TRAIN, smooth);
    check_single(&[Shape::spatial(2, 3, 4)], Op::Softmax, TRAIN, smooth);
}

#[test]
fn add_mul_and_concat() {
    let s = Shape::spatial(3, 5, 2);
    check_single(&[s, s], Op::Add, TRAIN, smooth);
    check_single(&[s, s], Op::Mul, TRAIN, smooth);
    let gate = Shape::spatial(1, 1, 2);
    check_single(&[s, gate], Op::Mul, TRAIN, smooth);
    check_single(&[gate, s], Op::Mul, TRAIN, smooth);
    let inputs = [
        Shape::spatial(3, 2, 1),
        Shape::spatial(3, 2, 3),
        Shape::spatial(3, 2, 2),
    ];
    check_single(&inputs, Op::Concat, TRAIN, smooth);
}

#[test]
fn dropout_and_identity() {
    let s = Shape::spatial(3, 3, 2);
    check_single(&[s], Op::Dropout { p: 0.0 }, TRAIN, smooth);
    check_single(&[s], Op::Dropout { p: 0.5 }, EVAL, smooth);
    // Inverted dropout is linear in x for a fixed mask, which the backward regenerates.
    check_single(&[s], Op::Dropout { p: 0.3 }, TRAIN, smooth);
    check_single(&[s], Op::Identity, TRAIN, smooth);
}

#[test]
fn dropout_in_training_zeroes_about_p_and_scales_the_rest() {
    let graph = single(&[Shape::flat(10_000)], Op::Dropout { p: 0.25 });
    let x = ArrayD::ones(IxDyn(&[1, 10_000]));
    let acts = forward_training(&graph, &Weights::new(), &[x], TRAIN).unwrap();
    let y = acts.values[graph.output()].as_ref().unwrap();
    let zeros = y.iter().filter(|&&v| v == 0.0).count();
    assert!((2_300..2_700).contains(&zeros), "{zeros} zeros of 10,000");
    assert!(y.iter().all(|&v| v == 0.0 || (v - 4.0 / 3.0).abs() < 1e-6));
}

// ---------------------------------------------------------------------------------------------
// The backward plan (`cnnc emit grad`)

/// `cnnc emit grad`'s plan for LeNet-5: every layer differentiated, the input not, the
/// softmax folded into the loss. Read against `emit graph`: node ids and names agree.
#[test]
fn backward_plan_of_lenet5() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/lenet5.cnn");
    let graph = networks::graph_of(&std::fs::read_to_string(path).unwrap());
    insta::assert_snapshot!(dump_backward_plan(&graph));
}

/// At the kinks the derivative is PyTorch's choice (`threshold_backward`, `hardtanh_backward`,
/// `hardswish_backward`), which finite differences cannot see.
#[test]
fn activation_derivatives_at_the_kinks_are_pytorchs() {
    let cases = [
        (Activation::Relu, 0.0, 0.0),
        (Activation::Relu6, 0.0, 0.0),
        (Activation::Relu6, 6.0, 0.0),
        (Activation::Relu6, 5.5, 1.0),
        (Activation::Hardswish, -3.5, 0.0),
        (Activation::Hardswish, -3.0, -0.5),
        (Activation::Hardswish, 3.0, 1.5),
        (Activation::Hardswish, 3.5, 1.0),
        (Activation::Sigmoid, 0.0, 0.25),
        (Activation::Swish, 0.0, 0.5),
        (Activation::Tanh, 0.0, 1.0),
        (Activation::Hardsigmoid, -3.0, 0.0),
        (Activation::Hardsigmoid, 3.0, 0.0),
        (Activation::Hardsigmoid, 2.9, 1.0 / 6.0),
        (Activation::LeakyRelu(Coefficient::new(0.25)), 0.0, 0.25),
        (Activation::Elu(Coefficient::new(2.0)), 0.0, 2.0),
    ];
    for (activation, x, expected) in cases {
        assert_eq!(activation.derivative(x), expected, "{activation:?} at {x}");
    }
    // GELU is smooth: Φ(x) + x·φ(x), 1/2 at 0 and Φ(1) + φ(1) = 0.8413447 + 0.2419707 at 1.
    for (x, expected) in [(0.0, 0.5), (1.0, 1.083_315_4), (-1.0, -0.083_315_4)] {
        let found = Activation::Gelu.derivative(x);
        assert!((found - expected).abs() < 1e-6, "gelu' at {x}: {found}");
    }
}
