//! The trainer's step against hand-computed values: batch-norm running statistics after one
//! step (PyTorch's rule), frozen batch norms untouched, and sharded gradients equal to the
//! whole batch's.

use super::*;
use crate::driver::{self, Select};
use crate::train::optim::{OptimizerConfig, SgdConfig};

fn graph_of(source: &str) -> Graph {
    let compilation = driver::compile(driver::load_source("t.cnn", source), &Select::All);
    assert!(
        !compilation.has_errors(),
        "{}",
        compilation.render_diagnostics()
    );
    let graph = compilation.graphs().next().cloned();
    graph.expect("a network")
}

const TRAIN: TrainingMode = TrainingMode {
    training: true,
    seed: 0,
};

fn sgd(lr: f64) -> Optimizer {
    Optimizer::new(OptimizerConfig::Sgd(SgdConfig {
        lr,
        ..SgdConfig::default()
    }))
    .unwrap()
}

/// Two images of 1×2 pixels, one channel: the batch norm sees 1, 3, 5, 7 — mean 4, biased
/// variance (9 + 1 + 1 + 9)/4 = 5, unbiased 20/3. From the fresh statistics (0, 1), one step
/// with momentum 0.1 gives mean 0.1·4 = 0.4 and variance 0.9·1 + 0.1·20/3 = 1.5666…
#[test]
fn batch_norm_running_statistics_after_one_step_are_pytorchs() {
    let graph = graph_of("network n(x: 1x2x1) { x -> bn: batchnorm -> flatten -> fc: dense(2) }");
    let mut weights = Weights::seeded(&graph, 1).unwrap();
    let images = ArrayD::from_shape_vec(IxDyn(&[2, 1, 2, 1]), vec![1.0, 3.0, 5.0, 7.0]).unwrap();
    let result = step_gradients(&graph, &weights, &images, &[0, 1], TRAIN, 1).unwrap();
    let mut optimizer = sgd(0.0);
    apply_step(
        &mut weights,
        &mut optimizer,
        &result.grads,
        &result.batch_norm_stats,
        1,
    )
    .unwrap();
    let mean = weights.get("bn.running_mean").unwrap()[[0]];
    let var = weights.get("bn.running_var").unwrap()[[0]];
    assert!((mean - 0.4).abs() < 1e-7, "running mean {mean}");
    assert!(
        (var - (0.9 + 0.1 * 20.0 / 3.0)).abs() < 1e-6,
        "running var {var}"
    );
    // A second step from there: 0.9·0.4 + 0.1·4 = 0.76; 0.9·1.5666… + 0.1·20/3 = 2.0766…
    let result = step_gradients(&graph, &weights, &images, &[0, 1], TRAIN, 1).unwrap();
    apply_step(
        &mut weights,
        &mut optimizer,
        &result.grads,
        &result.batch_norm_stats,
        1,
    )
    .unwrap();
    let mean = weights.get("bn.running_mean").unwrap()[[0]];
    let var = weights.get("bn.running_var").unwrap()[[0]];
    assert!((mean - 0.76).abs() < 1e-6, "running mean {mean}");
    let expected = 0.9 * (0.9 + 0.1 * 20.0 / 3.0) + 0.1 * 20.0 / 3.0;
    assert!((var - expected).abs() < 1e-6, "running var {var}");
}

#[test]
fn a_frozen_batch_norm_keeps_its_statistics_and_parameters() {
    let graph =
        graph_of("network n(x: 1x2x1) { x -> bn: frozen batchnorm -> flatten -> fc: dense(2) }");
    let mut weights = Weights::seeded(&graph, 1).unwrap();
    let before = weights.clone();
    let images = ArrayD::from_shape_vec(IxDyn(&[2, 1, 2, 1]), vec![1.0, 3.0, 5.0, 7.0]).unwrap();
    let result = step_gradients(&graph, &weights, &images, &[0, 1], TRAIN, 1).unwrap();
    assert!(result.batch_norm_stats.is_empty());
    let names: Vec<&str> = result.grads.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["fc.weight", "fc.bias"]);
    apply_step(
        &mut weights,
        &mut sgd(0.5),
        &result.grads,
        &result.batch_norm_stats,
        1,
    )
    .unwrap();
    for name in ["bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"] {
        assert_eq!(weights.get(name), before.get(name), "{name}");
    }
    assert_ne!(weights.get("fc.weight"), before.get("fc.weight"));
}

/// Shards of a batch, weighted by their sizes, give the batch's mean gradient.
#[test]
fn sharded_gradients_equal_the_whole_batchs() {
    let graph = graph_of(
        "network n(x: 4x4x1) { x -> c: conv(3, 3) -> relu -> flatten -> fc: dense(3) -> softmax }",
    );
    let weights = Weights::seeded(&graph, 3).unwrap();
    let mut rng = SplitMix64::new(9);
    let values: Vec<f32> = (0..5 * 16).map(|_| rng.uniform(-1.0, 1.0)).collect();
    let images = ArrayD::from_shape_vec(IxDyn(&[5, 4, 4, 1]), values).unwrap();
    let labels = [0, 2, 1, 1, 0];
    let whole = step_gradients(&graph, &weights, &images, &labels, TRAIN, 1).unwrap();
    let sharded = step_gradients(&graph, &weights, &images, &labels, TRAIN, 2).unwrap();
    assert!((whole.loss - sharded.loss).abs() < 1e-6);
    assert_eq!(whole.logits.len(), sharded.logits.len());
    for ((name, a), (_, b)) in whole.grads.iter().zip(&sharded.grads) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-6, "{name}: {x} vs {y}");
        }
    }
    let again = step_gradients(&graph, &weights, &images, &labels, TRAIN, 2).unwrap();
    assert_eq!(again.grads, sharded.grads, "two threads are deterministic");
}

#[test]
fn a_non_finite_gradient_is_found_wherever_it_is() {
    let mut values = vec![1.5f32; 19];
    values[0] = f32::MAX;
    values[1] = -f32::MAX;
    assert!(super::all_finite(&values));
    assert!(super::all_finite(&[]));
    // In the vectorized part (index 3) and in the remainder (index 17, past 16).
    for bad in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
        for at in [3, 17] {
            let mut v = values.clone();
            v[at] = bad;
            assert!(!super::all_finite(&v), "{bad} at {at}");
        }
    }
}
