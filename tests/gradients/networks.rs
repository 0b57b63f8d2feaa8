//! Whole networks on the mean softmax cross-entropy: every parameter's gradient against
//! central differences, the frozen prefix, and one SGD step on LeNet-5.

use super::*;

const NETWORK: Tolerance = Tolerance {
    step: 1e-3,
    rtol: 1e-2,
    atol: 2e-3,
};

pub(super) fn graph_of(source: &str) -> Graph {
    let program = driver::load_source("test.cnn", source);
    let compilation = driver::compile(program, &Select::All);
    assert!(
        !compilation.has_errors(),
        "{}",
        compilation.render_diagnostics()
    );
    let graph = compilation.graphs().next().cloned();
    graph.expect("a network")
}

/// Checks the cross-entropy gradient of every trainable parameter of `source`'s network on
/// a random batch of 3; returns how many elements were compared.
fn check_network(source: &str, input: &[usize], n_classes: u32) -> usize {
    let mut rng = Rng(2024);
    let graph = graph_of(source);
    let weights = random_weights(&graph, &mut rng);
    let x = rng.tensor(input, |r| r.uniform(-1.0, 1.0));
    let labels: Vec<u32> = (0..input[0] as u32).map(|i| i % n_classes).collect();
    let inputs = [x];
    let analytic = loss_gradients(&graph, &weights, &inputs, &labels, TRAIN).expect("gradients");
    let loss = |w: &Weights| {
        f64::from(
            loss_gradients(&graph, w, &inputs, &labels, TRAIN)
                .expect("loss")
                .loss,
        )
    };
    check_params(&graph, &weights, &analytic.backward.params, &NETWORK, loss)
}

const LENET: &str = "
network lenet(image: 12x12x1) {
    image
      -> conv1: conv(4, 3) -> relu -> avgpool(2)
      -> conv2: conv(6, 3) -> relu -> avgpool(2)
      -> flatten
      -> fc1: dense(8) -> relu
      -> fc2: dense(5)
      -> softmax
}
";

#[test]
fn lenet_like_network_every_parameter() {
    let n = check_network(LENET, &[3, 12, 12, 1], 5);
    assert_eq!(n, 4 * 9 + 4 + 6 * 4 * 9 + 6 + 6 * 8 + 8 + 8 * 5 + 5);
}

const RESIDUAL: &str = "
network residual(x: 5x5x3) {
    let y = x -> stem: conv(4, 3, pad: 1) -> relu
    let branch = y
        -> conv1: conv(4, 3, stride: 1, pad: 1, bias: false) -> bn1: batchnorm -> relu
        -> conv2: conv(4, 3, pad: 1, bias: false) -> bn2: batchnorm
    return relu(branch + y) -> avgpool(2, pad: 1) -> flatten -> fc: dense(3) -> softmax
}
";

#[test]
fn residual_block_with_batch_norm_every_parameter() {
    let n = check_network(RESIDUAL, &[3, 5, 5, 3], 3);
    assert!(n > 300, "{n}");
}

#[test]
fn a_frozen_base_gets_no_gradient_and_is_not_differentiated() {
    let source = "
block base(x) {
    return x -> conv1: conv(3, 3) -> relu -> conv2: conv(4, 3) -> relu
}
network transfer(image: 7x7x2) {
    image -> frozen base -> flatten -> head: dense(3) -> softmax
}
";
    let graph = graph_of(source);
    let live = live_nodes(&graph, false);
    // Only the head and the softmax after it: nothing upstream of the earliest trainable
    // layer (the flatten, the frozen base, the input) is differentiated.
    let live_paths: Vec<(&str, bool)> = graph
        .nodes
        .iter()
        .filter(|(id, _)| live[*id])
        .map(|(id, node)| (node.path.as_str(), id == graph.output()))
        .collect();
    assert_eq!(live_paths.len(), 2, "{live_paths:?}");
    assert_eq!(live_paths[0], ("head", false));
    assert!(live_paths[1].1);
    assert!(graph.nodes.values().filter(|n| n.frozen).count() >= 4);
    let mut rng = Rng(5);
    let weights = random_weights(&graph, &mut rng);
    let x = rng.tensor(&[2, 7, 7, 2], |r| r.uniform(-1.0, 1.0));
    let grads = loss_gradients(&graph, &weights, &[x], &[0, 2], TRAIN).unwrap();
    let names: Vec<&str> = grads
        .backward
        .params
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(names, ["head.weight", "head.bias"]);
}

#[test]
fn one_sgd_step_decreases_the_loss_of_lenet5() {
    let source =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/lenet5.cnn"))
            .unwrap();
    let graph = graph_of(&source);
    let weights = Weights::seeded(&graph, 1).unwrap();
    let mut rng = Rng(8);
    let x = rng.tensor(&[4, 32, 32, 1], |r| r.uniform(0.0, 1.0));
    let labels = [3, 1, 4, 1];
    let before =
        loss_gradients(&graph, &weights, std::slice::from_ref(&x), &labels, TRAIN).unwrap();
    let mut stepped = weights.clone();
    for (name, grad) in &before.backward.params {
        let tensor = stepped.get_mut(name).unwrap();
        tensor.zip_mut_with(grad, |w, &g| *w -= 0.05 * g);
    }
    let after = loss_gradients(&graph, &stepped, &[x], &labels, TRAIN).unwrap();
    assert_eq!(before.backward.params.len(), 10);
    assert!(after.loss < before.loss, "{} → {}", before.loss, after.loss);
}

/// A frozen base is one "not differentiated" run.
#[test]
fn backward_plan_of_a_frozen_base() {
    let source = "
block base(x) {
    return x -> conv1: conv(3, 3) -> relu -> conv2: conv(4, 3) -> relu
}
network transfer(image: 7x7x2) {
    let y = image -> frozen base
    return (y -> flatten -> head: dense(3)) -> softmax
}
";
    let plan = dump_backward_plan(&graph_of(source));
    assert!(plan.contains("not differentiated: n0–n5\n"), "{plan}");
}

/// The stem's relu feeds both the branch and the shortcut, so its gradient is a sum.
#[test]
fn backward_plan_sums_a_gradient_read_twice() {
    let plan = dump_backward_plan(&graph_of(RESIDUAL));
    assert!(
        plan.contains("@relu (∂n2 sums 2 readers) → ∂n1\n"),
        "{plan}"
    );
}
