//! Runs split over worker threads: many chunks of odd sizes, a network run over and over on
//! the same workers, from several threads at once, and compiled and dropped repeatedly.
//!
//! A part of a kernel computes the same values whichever thread runs it and however the parts
//! are grouped into chunks, so every threaded run must equal the one-thread run bit for bit,
//! and both must match the reference interpreter.

use super::{graph_of, inputs_for, max_error, weights_for, TOLERANCE};
use cnnc::codegen::{self, CodegenOptions};
use cnnc::graph::Graph;
use cnnc::reference;
use ndarray::ArrayD;

/// Odd sizes everywhere (rows, channels, units), so that chunks of a kernel's parts are
/// uneven and the remainder tiles of the serial part fall in the last chunk; over 20 MFLOP,
/// so that unchecked runs are split too.
fn odd_network() -> Graph {
    let graph = graph_of(
        "network t(x: 45x43x17) {
            let a = x -> conv(37, 3, pad: 1) -> relu -> maxpool(3, stride: 2)
            let b = a -> dwconv(5, pad: 2) -> batchnorm -> relu6
            let c = concat(a, b -> conv(21, 1)) -> conv(29, 3, stride: 2)
            return c -> global_avgpool -> flatten -> dense(13) -> softmax
        }",
    );
    assert!(2 * graph.total_macs() > 20_000_000);
    graph
}

/// Three, five and seven threads (more than this machine's cores, so workers also park and
/// wait for a core) give up to 12, 20 and 28 chunks per kernel, most of uneven sizes, and
/// batches of three images run the schedule three times.
#[test]
fn many_uneven_chunks_match_one_thread_and_the_reference() {
    let graph = odd_network();
    let weights = weights_for(&graph);
    let inputs = inputs_for(&graph, 3);
    let expected = reference::run(&graph, &weights, &inputs).expect("the reference runs");
    let one = codegen::compile(&graph, &weights, &CodegenOptions::default()).expect("compiles");
    let one_thread = one.run(&inputs).expect("runs");
    assert!(max_error(&one_thread, &expected) <= TOLERANCE);
    for threads in [3, 5, 7] {
        for checked in [true, false] {
            let options = CodegenOptions {
                checked,
                threads,
                ..Default::default()
            };
            let network = codegen::compile(&graph, &weights, &options).expect("compiles");
            let found = network.run(&inputs).expect("runs");
            assert_eq!(found, one_thread, "{options:?}");
            let (profiled, times) = network.run_profiled(&inputs).expect("runs");
            assert_eq!(profiled, one_thread, "{options:?}, profiled");
            assert_eq!(times.len(), network.n_kernels());
        }
    }
}

/// The same workers, run after run: no lost wake-up, no stale chunk counter, no run that
/// starts before the last one ended. Alternates plain and profiled runs, and batches of one
/// and two images.
#[test]
fn a_network_runs_many_times_on_two_threads() {
    let graph = odd_network();
    let weights = weights_for(&graph);
    let options = CodegenOptions {
        checked: false,
        threads: 2,
        ..Default::default()
    };
    let network = codegen::compile(&graph, &weights, &options).expect("compiles");
    let inputs = [inputs_for(&graph, 1), inputs_for(&graph, 2)];
    let one = codegen::compile(&graph, &weights, &CodegenOptions::default()).expect("compiles");
    let expected: Vec<ArrayD<f32>> = inputs
        .iter()
        .map(|input| one.run(input).expect("runs"))
        .collect();
    let reference = reference::run(&graph, &weights, &inputs[1]).expect("the reference runs");
    assert!(max_error(&expected[1], &reference) <= TOLERANCE);
    for run in 0..300 {
        let which = run % 2;
        let found = if run % 7 == 0 {
            network.run_profiled(&inputs[which]).expect("runs").0
        } else {
            network.run(&inputs[which]).expect("runs")
        };
        assert_eq!(found, expected[which], "run {run}");
    }
}

/// Runs from several threads at once share one network: one of them gets the workers, the
/// others run on their own threads, and all give the one-thread result. Networks are
/// compiled and dropped repeatedly, so workers are started and stopped many times.
#[test]
fn concurrent_runs_and_dropped_networks_on_two_threads() {
    let graph = odd_network();
    let weights = weights_for(&graph);
    let inputs = inputs_for(&graph, 1);
    let one = codegen::compile(&graph, &weights, &CodegenOptions::default()).expect("compiles");
    let expected = one.run(&inputs).expect("runs");
    let options = CodegenOptions {
        checked: false,
        threads: 2,
        ..Default::default()
    };
    for _ in 0..4 {
        let network = codegen::compile(&graph, &weights, &options).expect("compiles");
        std::thread::scope(|scope| {
            for _ in 0..3 {
                scope.spawn(|| {
                    for _ in 0..10 {
                        assert_eq!(network.run(&inputs).expect("runs"), expected);
                    }
                });
            }
        });
    }
    // A network dropped without ever running, and one dropped right after its first run.
    drop(codegen::compile(&graph, &weights, &options).expect("compiles"));
    let network = codegen::compile(&graph, &weights, &options).expect("compiles");
    assert_eq!(network.run(&inputs).expect("runs"), expected);
}
