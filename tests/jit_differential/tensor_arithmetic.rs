//! Tensor–tensor `-` and `/` (`Op::Arithmetic`) against the reference: equal shapes at odd
//! sizes, a 1×1×C operand broadcast on either side (channel counts not multiples of 4), flat
//! vectors, and results written into a concat's slices; batch 3, on one and two threads; and
//! the reference itself against values computed here from the definition.

use super::{check_with, graph_of, graphs_of, inputs_for};
use cnnc::codegen::CodegenOptions;
use cnnc::reference;
use cnnc::runtime::Weights;

/// Checked on one thread, unchecked on one and on two threads, at batch 3.
fn check_source(source: &str) {
    let options = [(true, 1), (false, 1), (false, 2)].map(|(checked, threads)| CodegenOptions {
        checked,
        threads,
        ..Default::default()
    });
    for graph in graphs_of(source) {
        check_with(&graph, 3, &options, source);
    }
}

#[test]
fn sub_and_div_of_equal_shapes() {
    // Divisors stay at 1 or more, so the conv's rounding differences are not amplified.
    check_source(
        "network t(x: 33x31x12) {
            let a = x -> conv(12, 3, pad: 1)
            return (x - a) / (a * a + 1) - (a / (x * x + 1))
        }",
    );
    check_source(
        "network t(x: 5x3x7) {
            let f = x -> flatten
            let d = f -> dense(9)
            return (f -> dense(9)) - d / (d * d + 1)
        }",
    );
}

#[test]
fn sub_and_div_broadcast_a_gate_on_either_side() {
    check_source(
        "network t(x: 7x5x6) {
            let g = x -> global_avgpool -> sigmoid
            let h = g + 0.5
            return concat(x - g, g - x, x / h, h / (x * x + 1), x * (h / g - g))
        }",
    );
    check_source(
        "network t(x: 9x1x13) {
            let g = x -> global_maxpool
            return ((x - g) / (g * g + 1)) -> conv(5, 1)
        }",
    );
}

/// `x − mean(x)` and `x / (max(x) + 1)` per channel, from the reference and from the
/// definition computed here on the same input.
#[test]
fn reference_subtracts_and_divides_by_the_definition() {
    let graph = graph_of(
        "network t(x: 3x4x5) {
            return concat(x - (x -> global_avgpool), x / ((x -> global_maxpool -> relu) + 1))
        }",
    );
    let inputs = inputs_for(&graph, 2);
    let x = &inputs[0];
    let found = reference::run(&graph, &Weights::new(), &inputs).expect("the reference runs");
    let (h, w, c) = (3, 4, 5);
    for n in 0..2 {
        for ch in 0..c {
            let values: Vec<f64> = (0..h)
                .flat_map(|i| (0..w).map(move |j| (i, j)))
                .map(|(i, j)| f64::from(x[[n, i, j, ch]]))
                .collect();
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            for i in 0..h {
                for j in 0..w {
                    let v = f64::from(x[[n, i, j, ch]]);
                    let centred = f64::from(found[[n, i, j, ch]]);
                    let scaled = f64::from(found[[n, i, j, c + ch]]);
                    assert!(
                        (centred - (v - mean)).abs() < 1e-6,
                        "x − mean at {n},{i},{j},{ch}"
                    );
                    let expected = v / (max.max(0.0) + 1.0);
                    assert!(
                        (scaled - expected).abs() < 1e-6,
                        "x / (max + 1) at {n},{i},{j},{ch}"
                    );
                }
            }
        }
    }
}
