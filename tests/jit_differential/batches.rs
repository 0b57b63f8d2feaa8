//! Batches of several images on several threads: the images are shared out whole, one thread
//! each on an arena of its own, and the images left over (fewer than the threads) are split
//! kernel by kernel (`codegen/pool.rs`). Every kernel kind runs in the network below; every
//! batch must equal the one-thread run bit for bit (a part of a kernel computes the same
//! values whichever thread runs it) and match the reference interpreter.

use super::{graph_of, inputs_for, max_error, weights_for, TOLERANCE};
use cnnc::codegen::{self, CodegenOptions};
use cnnc::graph::Graph;
use cnnc::lower::{LowerOptions, Winograd};
use cnnc::reference;

/// Odd sizes, and every kind of kernel the lowering makes: a direct conv (3 input channels),
/// a Winograd conv with a fused residual, a conv written into the padded input of a pool
/// (border kernel), max and average pooling, a depthwise conv with swish, squeeze and
/// excitation (global pool, sigmoid, broadcast product), a 1×1 conv with tanh into a
/// concat's slice, a grouped strided conv with relu6, weights larger than the input (panels
/// outermost), adaptive pooling, flatten, dense and softmax.
fn every_kernel_kind() -> Graph {
    graph_of(
        "network t(x: 23x21x3) {
            let a = x -> conv(16, 3, pad: 1) -> relu
            let r = a + (a -> conv(16, 3, pad: 1) -> batchnorm)
            let p = r -> relu -> conv(20, 1) -> maxpool(3, stride: 2, pad: 1)
            let d = p -> dwconv(3, pad: 1) -> swish
            let g = d -> global_avgpool -> sigmoid
            let q = concat(d * g -> conv(12, 1) -> tanh, p -> avgpool(3, stride: 1, pad: 1))
            let h = q -> conv(14, 3, stride: 2, groups: 2) -> relu6 -> conv(64, 3, pad: 1)
            return h -> adaptive_avgpool([2, 3]) -> flatten -> dense(11) -> softmax
        }",
    )
}

/// The graph as written with every 3×3 stride-1 conv as Winograd, and optimized (batch
/// norm folded, activations and the residual fused) with the default choice, which keeps the
/// small ones direct; both must lower to every kernel kind between them.
#[test]
fn batches_on_several_threads_match_one_thread_and_the_reference() {
    let graph = every_kernel_kind();
    let mut optimized = graph.clone();
    let mut optimized_weights = weights_for(&optimized);
    cnnc::opt::optimize_weights(&mut optimized, &mut optimized_weights, &Default::default())
        .expect("passes");
    let variants = [
        (graph, weights_for(&every_kernel_kind()), Winograd::Always),
        (optimized, optimized_weights, Winograd::Auto),
    ];
    let loops: String = variants
        .iter()
        .map(|(graph, _, winograd)| {
            let options = LowerOptions {
                winograd: *winograd,
            };
            cnnc::lower::emit_loops_with(graph, &options).expect("lowers")
        })
        .collect();
    for kind in [
        "_conv_",
        "_winomul_",
        "_border_",
        "_pad_",
        "_dwconv_",
        "_pool_",
        "_gpool_",
        "_apool_",
        "_mul_",
        "_add_",
        "_swish_",
        "_tanh_",
        "_dense_",
        "_softmax_",
        "in place: channels",
        "parallel i0 in 0..8 {",
    ] {
        assert!(loops.contains(kind), "no `{kind}` kernel:\n{loops}");
    }
    for (graph, weights, winograd) in &variants {
        for batch in [2, 3, 5, 8] {
            let inputs = inputs_for(graph, batch);
            let expected = reference::run(graph, weights, &inputs).expect("the reference runs");
            let base = CodegenOptions {
                winograd: *winograd,
                ..Default::default()
            };
            let one = codegen::compile(graph, weights, &base).expect("compiles");
            let one_thread = one.run(&inputs).expect("runs");
            let error = max_error(&one_thread, &expected);
            assert!(error <= TOLERANCE, "batch {batch}: error {error}");
            for threads in [2, 3] {
                for checked in [true, false] {
                    let options = CodegenOptions {
                        checked,
                        threads,
                        ..base.clone()
                    };
                    let network = codegen::compile(graph, weights, &options).expect("compiles");
                    // Twice: the second run reuses the threads' arenas.
                    for run in 0..2 {
                        let found = network.run(&inputs).expect("runs");
                        assert_eq!(found, one_thread, "batch {batch}, {options:?}, run {run}");
                    }
                }
            }
        }
    }
}

/// A network of under 20 MFLOP per image is not split over threads kernel by kernel, but a
/// batch of two or more is shared out image by image (`codegen/image_pool.rs`), each image
/// whole on one thread's arena: the results must be the one-thread run's, bit for bit, run
/// after run, for batches smaller and larger than the threads.
#[test]
fn small_networks_share_out_their_batches() {
    let graph = graph_of(
        "network t(x: 28x28x1) {
            x -> conv(6, 5, pad: 2) -> relu -> maxpool(2) -> conv(16, 5) -> relu -> maxpool(2)
              -> flatten -> dense(120) -> relu -> dense(10) -> softmax
        }",
    );
    let flops = 2 * graph.total_macs();
    assert!(flops < 20_000_000, "{flops}");
    let weights = weights_for(&graph);
    let one = codegen::compile(&graph, &weights, &CodegenOptions::default()).expect("compiles");
    let networks: Vec<_> = [2, 3]
        .into_iter()
        .map(|threads| {
            let options = CodegenOptions {
                threads,
                ..Default::default()
            };
            codegen::compile(&graph, &weights, &options).expect("compiles")
        })
        .collect();
    for batch in [2, 3, 8, 31] {
        let inputs = inputs_for(&graph, batch);
        let expected = reference::run(&graph, &weights, &inputs).expect("the reference runs");
        let one_thread = one.run(&inputs).expect("runs");
        assert!(max_error(&one_thread, &expected) <= TOLERANCE);
        for network in &networks {
            assert_eq!(network.images_shared_out(batch), batch, "batch {batch}");
            for _ in 0..3 {
                assert_eq!(
                    network.run(&inputs).expect("runs"),
                    one_thread,
                    "batch {batch}"
                );
            }
        }
    }
    assert_eq!(networks[0].images_shared_out(1), 0);
    assert_eq!(one.images_shared_out(8), 0);
}
