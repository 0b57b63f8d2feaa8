//! Networks with several outputs (`return (a, b)`): every output of the JIT against the
//! reference interpreter's, as written and optimized, at batch 3, checked and unchecked, on one
//! and two threads. The outputs chosen are the tensors the lowering would otherwise store
//! somewhere other than a plain tensor of their own: the input of a padded convolution, an
//! operand written into a concat, a flatten its dense reader would make free, a network input,
//! a conv whose activation the optimizer would fuse, and two outputs the optimizer merges.

use super::{as_written_and_optimized, graph_of, inputs_for, max_error, TOLERANCE};
use cnnc::codegen::{self, CodegenOptions};
use cnnc::graph::Graph;
use cnnc::reference;

/// Every output of `graph` (as written and optimized) through the JIT against the reference.
fn check_outputs(graph: Graph, what: &str) {
    let n_outputs = graph.outputs().len();
    assert!(n_outputs >= 2, "{what}: {n_outputs} outputs");
    for (graph, weights) in as_written_and_optimized(graph) {
        let inputs = inputs_for(&graph, 3);
        let expected = reference::run_all(&graph, &weights, &inputs).expect("the reference runs");
        assert_eq!(expected.len(), n_outputs, "{what}: reference outputs");
        for (checked, threads) in [(true, 1), (false, 1), (true, 2), (false, 2)] {
            let options = CodegenOptions {
                checked,
                threads,
                ..Default::default()
            };
            let network = codegen::compile(&graph, &weights, &options)
                .unwrap_or_else(|e| panic!("{what}: compiling failed: {e}"));
            let found = network.run_all(&inputs).expect("the JIT runs");
            assert_eq!(found.len(), n_outputs, "{what}: JIT outputs");
            for (idx, (output, expected)) in found.iter().zip(&expected).enumerate() {
                assert_eq!(
                    output.shape(),
                    expected.shape(),
                    "{what}: output {idx} shape"
                );
                let error = max_error(output, expected);
                assert!(
                    error <= TOLERANCE,
                    "{what} ({options:?}): output {idx} error {error}"
                );
            }
            // The first output is also what `run` returns.
            let first = network.run(&inputs).expect("the JIT runs");
            assert_eq!(first, found[0], "{what}: run gives output 0");
        }
    }
}

#[test]
fn a_classifier_head_and_the_features_it_reads() {
    let graph = graph_of(
        "network t(x: 15x13x3) {
            let features = x -> conv(8, 3, pad: 1) -> relu -> maxpool(2) -> conv(11, 3, pad: 1)
            let scores = features -> relu -> conv(7, 3, pad: 1) -> global_avgpool -> flatten
                -> dense(5)
            return (scores, features)
        }",
    );
    check_outputs(graph, "head and features");
}

#[test]
fn outputs_the_lowering_would_store_in_place() {
    let graph = graph_of(
        "network t(x: 9x11x5) {
            let a = x -> conv(6, 3, pad: 1)
            let b = a -> relu
            let c = concat(b, x -> conv(3, 1)) -> conv(4, 3, pad: 1)
            let f = c -> flatten
            return (f -> dense(7), b, f, x, a)
        }",
    );
    check_outputs(
        graph,
        "padded, concat, flatten, input and pre-activation outputs",
    );
}

#[test]
fn outputs_the_optimizer_merges() {
    // `dropout` is removed, so the optimized graph returns the same node twice.
    let graph = graph_of(
        "network t(x: 7x5x3) {
            let a = x -> conv(5, 3, pad: 1) -> batchnorm
            return (a -> dropout(0.5), a, a -> relu)
        }",
    );
    check_outputs(graph, "merged outputs");
}
