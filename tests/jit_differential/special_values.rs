//! NaN and ±∞ through both backends, which follow PyTorch (README, "NaN and infinity"): NaN
//! propagates through every activation, max pooling and softmax; `exp` overflows to +∞, so
//! `swish` of a huge negative number is −0 and softmax over a +∞ is NaN. Each case is checked
//! against hand-written values as well as between the backends (issue 11, bug 4).

use super::{as_written_and_optimized, graph_of, max_error};
use cnnc::codegen::{self, CodegenOptions};
use cnnc::graph::{Activation, Graph, Op};
use cnnc::reference;
use cnnc::runtime::Weights;
use ndarray::{ArrayD, IxDyn};

const NAN: f32 = f32::NAN;
const INF: f32 = f32::INFINITY;

/// The values the input cycles through; with 5 channels each lands in different vector lanes.
const SPECIAL: [f32; 12] = [
    NAN, INF, -INF, -3.4e38, 3.4e38, -1.0, 0.0, 2.5, 7.0, -0.5, 100.0, -100.0,
];

fn special_input(dims: [usize; 4]) -> ArrayD<f32> {
    let n: usize = dims.iter().product();
    let values = (0..n).map(|i| SPECIAL[i % SPECIAL.len()]).collect();
    ArrayD::from_shape_vec(IxDyn(&dims), values).expect("the input's shape")
}

/// Both backends' outputs agree (NaN equal to NaN) in checked and unchecked mode, on 1 and 2
/// threads; returns the reference's output.
fn run_both(graph: &Graph, weights: &Weights, input: &ArrayD<f32>, what: &str) -> ArrayD<f32> {
    let expected = reference::run(graph, weights, std::slice::from_ref(input))
        .unwrap_or_else(|e| panic!("{what}: the reference failed: {e}"));
    for (checked, threads) in [(true, 1), (false, 2)] {
        let options = CodegenOptions {
            checked,
            threads,
            ..Default::default()
        };
        let network = codegen::compile(graph, weights, &options)
            .unwrap_or_else(|e| panic!("{what}: compiling failed: {e}"));
        let found = network
            .run(std::slice::from_ref(input))
            .expect("the JIT runs");
        let error = max_error(&found, &expected);
        assert!(
            error <= super::TOLERANCE,
            "{what} ({options:?}): error {error}\nJIT {found}\nreference {expected}"
        );
    }
    expected
}

/// `found` is `expected`, NaN being NaN and the sign of a zero counting.
fn same(found: f32, expected: f32) -> bool {
    (found.is_nan() && expected.is_nan())
        || (found == expected && found.is_sign_negative() == expected.is_sign_negative())
}

#[test]
fn activations_of_nan_and_infinities() {
    // (activation, input, PyTorch's output); zeros are +0 unless written −0.
    let cases: [(&str, &[(f32, f32)]); 11] = [
        (
            "relu",
            &[(NAN, NAN), (INF, INF), (-INF, 0.0), (-3.4e38, 0.0)],
        ),
        ("relu6", &[(NAN, NAN), (INF, 6.0), (-INF, 0.0), (7.0, 6.0)]),
        (
            "sigmoid",
            &[(NAN, NAN), (INF, 1.0), (-INF, 0.0), (-3.4e38, 0.0)],
        ),
        (
            "swish",
            &[(NAN, NAN), (INF, INF), (-3.4e38, -0.0), (-100.0, -0.0)],
        ),
        ("tanh", &[(NAN, NAN), (INF, 1.0), (-INF, -1.0)]),
        ("hardswish", &[(NAN, NAN), (INF, INF), (-3.4e38, -0.0)]),
        (
            "hardsigmoid",
            &[(NAN, NAN), (INF, 1.0), (-INF, 0.0), (2.5, 5.5 / 6.0)],
        ),
        (
            "leaky_relu",
            &[(NAN, NAN), (INF, INF), (-INF, -INF), (-100.0, -1.0)],
        ),
        ("elu", &[(NAN, NAN), (INF, INF), (-INF, -1.0), (7.0, 7.0)]),
        (
            "gelu",
            &[(NAN, NAN), (INF, INF), (3.4e38, 3.4e38), (100.0, 100.0)],
        ),
        (
            "gelu(approximate: \"tanh\")",
            &[(NAN, NAN), (INF, INF), (100.0, 100.0)],
        ),
    ];
    for (activation, expectations) in cases {
        let graph = graph_of(&format!("network t(x: 3x4x5) {{ x -> {activation} }}"));
        let input = special_input([2, 3, 4, 5]);
        let output = run_both(&graph, &Weights::new(), &input, activation);
        for &(x, y) in expectations {
            let position = input
                .iter()
                .position(|v| v.to_bits() == x.to_bits())
                .expect("the input has the value");
            let found = output.as_slice().expect("contiguous")[position];
            assert!(same(found, y), "{activation}({x}) = {found}, not {y}");
        }
    }
}

/// A ReLU6 fused into a conv's epilogue keeps NaN too.
#[test]
fn fused_relu6_keeps_nan() {
    let graph =
        graph_of("network t(x: 4x3x1) { x -> conv(2, 1, weights: [[[[1]]], [[[-1]]]]) -> relu6 }");
    let [_, (optimized, weights)] = as_written_and_optimized(graph);
    let fused = optimized
        .nodes
        .values()
        .any(|node| matches!(&node.op, Op::Conv(a) if a.activation == Some(Activation::Relu6)));
    assert!(fused, "the optimizer fuses relu6 into the conv");
    let input = special_input([1, 4, 3, 1]);
    let output = run_both(&optimized, &weights, &input, "fused relu6");
    for (x, pair) in input
        .iter()
        .zip(output.as_slice().expect("contiguous").chunks(2))
    {
        if x.is_nan() {
            assert!(
                pair.iter().all(|y| y.is_nan()),
                "relu6(conv(NaN)) = {pair:?}"
            );
        }
    }
}

#[test]
fn max_pooling_propagates_nan() {
    let mut input = ArrayD::from_shape_fn(IxDyn(&[2, 4, 4, 5]), |i| {
        (i[1] * 7 + i[2] * 3 + i[3]) as f32 * 0.25 - 2.0
    });
    input[[0, 1, 1, 2]] = NAN;
    input[[0, 2, 3, 4]] = INF;
    input[[1, 3, 3, 0]] = NAN;
    // Each window of maxpool(2) holding a NaN is NaN, whether the NaN is read first or last.
    let graph = graph_of("network t(x: 4x4x5) { x -> maxpool(2) }");
    let output = run_both(&graph, &Weights::new(), &input, "maxpool(2)");
    assert!(output[[0, 0, 0, 2]].is_nan());
    assert!(output[[1, 1, 1, 0]].is_nan());
    assert_eq!(output[[0, 1, 1, 4]], INF);
    assert_eq!(output.iter().filter(|v| v.is_nan()).count(), 2);
    for layer in [
        "maxpool(3, stride: 1, pad: 1)",
        "maxpool(3, stride: 2, ceil_mode: true)",
        "global_maxpool",
    ] {
        let graph = graph_of(&format!("network t(x: 4x4x5) {{ x -> {layer} }}"));
        let output = run_both(&graph, &Weights::new(), &input, layer);
        assert!(output.iter().any(|v| v.is_nan()), "{layer}: {output}");
    }
}

#[test]
fn softmax_of_nan_and_infinity_is_nan() {
    for channels in [5, 8] {
        let mut input = ArrayD::from_elem(IxDyn(&[1, 1, 4, channels]), 1.0f32);
        input[[0, 0, 0, channels - 1]] = INF;
        input[[0, 0, 1, 2]] = NAN;
        input[[0, 0, 2, 0]] = -INF;
        let graph = graph_of(&format!("network t(x: 1x4x{channels}) {{ x -> softmax }}"));
        let output = run_both(&graph, &Weights::new(), &input, "softmax");
        for pixel in [0, 1] {
            for c in 0..channels {
                assert!(output[[0, 0, pixel, c]].is_nan(), "pixel {pixel}: {output}");
            }
        }
        let uniform = 1.0 / channels as f32;
        for c in 0..channels {
            assert!((output[[0, 0, 3, c]] - uniform).abs() < 1e-6);
            let expected = if c == 0 {
                0.0
            } else {
                1.0 / (channels - 1) as f32
            };
            assert!((output[[0, 0, 2, c]] - expected).abs() < 1e-6, "{output}");
        }
    }
}

/// `tanh`, computed inline by a rational function on f32 vectors, against f64's `tanh` over
/// [−12, 12] in steps of 1/512 (through the clamp at ±9), down to tiny and subnormal inputs
/// near 0, where relative accuracy is what `2·sigmoid(2x) − 1` would lose: within 4 ulp of
/// the correctly rounded result, relative, and never beyond ±1.
#[test]
fn tanh_is_accurate_to_a_few_ulp() {
    let mut xs: Vec<f32> = (-12 * 512..=12 * 512).map(|i| i as f32 / 512.0).collect();
    for k in 1..=140 {
        let tiny = 2f32.powi(-k);
        xs.extend([tiny, -tiny, 1.5 * tiny]);
    }
    let n = xs.len();
    let graph = graph_of(&format!("network t(x: 1x1x{n}) {{ x -> tanh }}"));
    let input = ArrayD::from_shape_vec(IxDyn(&[1, 1, 1, n]), xs.clone()).expect("shape");
    run_both(&graph, &Weights::new(), &input, "tanh");
    let network =
        codegen::compile(&graph, &Weights::new(), &CodegenOptions::default()).expect("compiles");
    let output = network.run(std::slice::from_ref(&input)).expect("runs");
    let mut worst = 0.0f64;
    for (&x, &found) in xs.iter().zip(output.iter()) {
        let exact = f64::from(x).tanh();
        let ulp = f64::from(f32::EPSILON) * exact.abs().max(f64::from(f32::MIN_POSITIVE));
        let error = (f64::from(found) - exact).abs() / ulp;
        worst = worst.max(error);
        assert!(
            error <= 4.0,
            "tanh({x:e}) = {found:e}, exact {exact:e}: {error:.1} ulp"
        );
        assert!(found.abs() <= 1.0, "tanh({x}) = {found}");
    }
    println!("tanh: worst error {worst:.2} ulp over {n} inputs");
}
