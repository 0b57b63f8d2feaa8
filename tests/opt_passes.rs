//! The optimizer's graph passes: what `cnnc emit opt` prints for the examples (snapshots),
//! that every optimized example computes what the unoptimized one does (the reference
//! interpreter on both), that the verifier accepts the graph after every pass, and that each
//! pass makes exactly the change it is for — and none where it must not.

mod common;

use cnnc::driver::{self, Select};
use cnnc::graph::infer::{self, ShapeError};
use cnnc::graph::verify::verify;
use cnnc::graph::{Activation, Graph, NodeId, Op, Shape};
use cnnc::opt::{self, Options, PASSES};
use cnnc::reference;
use cnnc::runtime::{synthetic_input, Weights};
use common::cnnc;
use ndarray::ArrayD;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The tolerance of every comparison. Folding rounds each rescaled weight to f32 once (a
/// relative change of ≤ 6e-8 per weight) and the fused epilogue skips the f32 roundings
/// between conv, batch norm, add and activation; over sums of a few thousand terms that is
/// ~1e-6, so 1e-4 leaves two orders of magnitude of room while still catching any real
/// mistake (a wrong channel, a missing bias or ε), which shows up at 1e-2 or more.
const TOLERANCE: f64 = 1e-4;

// ---------------------------------------------------------------------------------------------
// Helpers

/// Every graph of a file, which must compile without errors.
fn graphs_of_file(path: &Path) -> Vec<Graph> {
    let program = driver::load(path).expect("the file is readable");
    graphs_of(driver::compile(program, &Select::All))
}

/// Every graph of a program given as text.
fn graphs_of_source(text: &str) -> Vec<Graph> {
    graphs_of(driver::compile(
        driver::load_source("test.cnn", text),
        &Select::All,
    ))
}

fn graphs_of(compilation: driver::Compilation) -> Vec<Graph> {
    assert!(
        !compilation.has_errors(),
        "{}",
        compilation.render_diagnostics()
    );
    compilation.graphs().cloned().collect()
}

fn graph_of_source(text: &str) -> Graph {
    graphs_of_source(text).remove(0)
}

fn example(name: &str) -> PathBuf {
    Path::new("examples").join(name)
}

/// The `.cnn` files directly in `dir`, sorted, as paths relative to the package root.
fn cnn_files(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
        .expect("the folder exists")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "cnn"))
        .map(|path| Path::new(dir).join(path.file_name().expect("a file name")))
        .collect();
    files.sort();
    files
}

/// SplitMix64, to draw the batch-norm statistics deterministically. (The crate's own
/// generator is private to it.)
/// Seeded weights (seed 1) with non-trivial batch-norm statistics: see `common`.
fn test_weights(graph: &Graph) -> Weights {
    common::weights_with_batch_norm_statistics(graph, 1)
}

/// One synthetic batch of 2 for every input of the network.
fn test_inputs(graph: &Graph) -> Vec<ArrayD<f32>> {
    graph
        .inputs
        .iter()
        .enumerate()
        .map(|(idx, &id)| synthetic_input(graph.shape(id), 2, idx as u64 + 1).expect("small"))
        .collect()
}

/// The largest `|a − b| / max(1, |b|)` over the two tensors, `b` being the unoptimized
/// reference. A plain relative error `|a − b| / |b|` would be meaningless where `b` is near
/// zero — ReLU outputs, sums that cancel — since there both sides carry an absolute rounding
/// error proportional to the terms summed, not to the tiny result. Dividing by `max(1, |b|)`
/// makes it an absolute error for values below 1 and a relative one above.
fn max_relative_error(optimized: &ArrayD<f32>, reference: &ArrayD<f32>) -> f64 {
    assert_eq!(optimized.shape(), reference.shape());
    optimized
        .iter()
        .zip(reference.iter())
        .map(|(&a, &b)| {
            let (a, b) = (f64::from(a), f64::from(b));
            (a - b).abs() / b.abs().max(1.0)
        })
        .fold(0.0, f64::max)
}

/// Runs one pass on `graph` with `weights` bound to its constants, and gives back the
/// optimized graph's learned tensors as `weights` (empty weights stay empty).
fn run_on_weights(pass: opt::PassFn, graph: &mut Graph, weights: &mut Weights) -> bool {
    if weights.is_empty() {
        return pass(graph);
    }
    cnnc::runtime::bind_present(graph, weights);
    let changed = pass(graph);
    *weights = cnnc::runtime::learned_weights(graph);
    changed
}

/// Runs every pass of the table in order, verifying the graph after each; returns the names
/// of the passes that changed it.
fn optimize_verified(graph: &mut Graph, weights: &mut Weights) -> Vec<&'static str> {
    let mut changed = Vec::new();
    for (name, pass) in PASSES {
        if run_on_weights(*pass, graph, weights) {
            changed.push(*name);
        }
        if let Err(problems) = verify(graph) {
            panic!(
                "{}: the verifier rejects the graph after {name}:\n{problems}\n{}",
                graph.name,
                graph.dump()
            );
        }
    }
    changed
}

/// Runs `graph` before and after optimization on the same weights and inputs; returns the
/// optimized graph and the error between the two outputs.
fn optimize_and_compare(graph: &Graph) -> (Graph, f64) {
    let weights = test_weights(graph);
    let inputs = test_inputs(graph);
    let expected = reference::run(graph, &weights, &inputs).expect("the graph runs");
    let (mut optimized, mut optimized_weights) = (graph.clone(), weights.clone());
    optimize_verified(&mut optimized, &mut optimized_weights);
    let found = reference::run(&optimized, &optimized_weights, &inputs).unwrap_or_else(|e| {
        panic!(
            "{}: the optimized graph does not run: {e}\n{}",
            graph.name,
            optimized.dump()
        )
    });
    let error = max_relative_error(&found, &expected);
    (optimized, error)
}

/// A node's kind with its fused parts: `conv`, `conv+bias+residual+relu`, `batchnorm`, ...
fn kind(graph: &Graph, id: NodeId) -> String {
    let op = &graph.nodes[id].op;
    let mut kind = op.name().to_string();
    let (bias, residual, activation) = match op {
        Op::Conv(a) => (a.bias, a.residual, a.activation),
        Op::Dense(a) => (a.bias, false, a.activation),
        _ => (false, false, None),
    };
    if bias {
        kind.push_str("+bias");
    }
    if residual {
        kind.push_str("+residual");
    }
    if let Some(act) = activation {
        kind.push('+');
        kind.push_str(act.name());
    }
    kind
}

/// How many nodes of each kind the graph has.
fn census(graph: &Graph) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for id in graph.nodes.keys() {
        *counts.entry(kind(graph, id)).or_insert(0) += 1;
    }
    counts
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|&(k, n)| (k.to_string(), n)).collect()
}

fn run_pass(name: &str, graph: &mut Graph, weights: &mut Weights) -> bool {
    let (_, pass) = PASSES
        .iter()
        .find(|(n, _)| *n == name)
        .expect("a pass of the table");
    let changed = run_on_weights(*pass, graph, weights);
    if let Err(problems) = verify(graph) {
        panic!("the verifier rejects the graph after {name}:\n{problems}");
    }
    changed
}

// ---------------------------------------------------------------------------------------------
// `cnnc emit opt`

/// The optimized dumps, as a user sees them; the unoptimized `emit graph` dumps are the
/// `examples__examples_emit_graph@*` snapshots.
#[test]
fn emit_opt_snapshots() {
    for name in ["residual", "inception", "bottleneck", "se"] {
        let file = format!("examples/{name}.cnn");
        let out = cnnc(&["emit", "opt", &file]);
        assert_eq!(out.code, 0, "{file}: {}", out.stderr);
        assert!(out.stderr.is_empty(), "{file}: {}", out.stderr);
        insta::assert_snapshot!(format!("emit_opt_{name}"), out.stdout);
    }
}

#[test]
fn emit_opt_no_fuse_leaves_activations_unfused() {
    let out = cnnc(&["emit", "opt", "examples/residual.cnn", "--no-fuse"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stdout.contains("activation="), "{}", out.stdout);
    assert!(!out.stdout.contains("residual"), "{}", out.stdout);
    assert!(!out.stdout.contains("batchnorm"), "{}", out.stdout);
    assert_eq!(out.stdout.matches("= relu(").count(), 4, "{}", out.stdout);
    assert_eq!(out.stdout.matches("= add(").count(), 2, "{}", out.stdout);
}

#[test]
fn emit_opt_runs_only_the_named_passes() {
    let out = cnnc(&[
        "emit",
        "opt",
        "examples/se.cnn",
        "--net",
        "mbconv_block",
        "--passes",
        "remove_identities,fuse_conv_activation",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // Batch norms stay between the convs and their activations, so nothing can fuse there;
    // the SE convs, with no batch norm, do fuse.
    assert!(!out.stdout.contains("dropout"), "{}", out.stdout);
    assert_eq!(
        out.stdout.matches("= batchnorm(").count(),
        3,
        "{}",
        out.stdout
    );
    assert_eq!(out.stdout.matches("= swish(").count(), 2, "{}", out.stdout);
    assert!(out.stdout.contains("activation=sigmoid"), "{}", out.stdout);
    assert!(out.stdout.contains("= add("), "{}", out.stdout);
}

#[test]
fn emit_opt_rejects_an_unknown_pass() {
    let out = cnnc(&["emit", "opt", "examples/residual.cnn", "--passes", "fold"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("fold_batch_norm"), "{}", out.stderr);
}

// ---------------------------------------------------------------------------------------------
// Equivalence: every example, every network

#[test]
fn every_example_computes_the_same_after_optimization() {
    let mut report = Vec::new();
    let mut worst = 0.0f64;
    for file in cnn_files("examples") {
        for graph in graphs_of_file(&file) {
            let (optimized, error) = optimize_and_compare(&graph);
            report.push(format!(
                "{}/{}: {} → {} nodes, max relative error {error:.2e}",
                file.display(),
                graph.name,
                graph.nodes.len(),
                optimized.nodes.len()
            ));
            assert!(
                error <= TOLERANCE,
                "{}/{}: max relative error {error:e} > {TOLERANCE:e}\n{}",
                file.display(),
                graph.name,
                optimized.dump()
            );
            // Every batch norm of the examples follows a conv that nothing else reads.
            assert!(
                !census(&optimized).contains_key("batchnorm"),
                "{}",
                optimized.dump()
            );
            worst = worst.max(error);
        }
    }
    eprintln!("{}\nworst: {worst:.2e}", report.join("\n"));
}

/// The standard networks are too large for the interpreter in a test, but the passes must
/// leave every one of them a valid graph, with every batch norm folded and, in ResNets,
/// every residual add fused.
#[test]
fn every_standard_network_verifies_after_every_pass() {
    for file in cnn_files("std") {
        for graph in graphs_of_file(&file) {
            let mut optimized = graph.clone();
            let mut weights = Weights::seeded(&graph, 0).expect("the weights fit");
            optimize_verified(&mut optimized, &mut weights);
            let kinds = census(&optimized);
            assert!(!kinds.contains_key("batchnorm"), "{}", optimized.dump());
            if graph.name.starts_with("resnet") {
                assert!(!kinds.contains_key("add"), "{}", optimized.dump());
            }
            // The weights are exactly the optimized graph's parameters: the batch norms'
            // tensors are gone and every new bias is there.
            let names: Vec<String> = optimized
                .named_params()
                .into_iter()
                .map(|(name, _, _)| name)
                .collect();
            assert_eq!(names.len(), weights.len(), "{}", graph.name);
            for name in &names {
                assert!(weights.get(name).is_some(), "{}: no {name}", graph.name);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Each pass on its own

#[test]
fn each_pass_on_the_residual_blocks() {
    let graphs = graphs_of_file(&example("residual.cnn"));
    let mut graphs = graphs.into_iter();

    // Identity shortcut: two batch norms, relu after the first conv and after the add.
    let mut graph = graphs.next().expect("identity_shortcut");
    let mut weights = test_weights(&graph);
    assert_eq!(
        census(&graph),
        counts(&[
            ("input", 1),
            ("conv", 2),
            ("batchnorm", 2),
            ("relu", 2),
            ("add", 1)
        ])
    );
    assert!(!run_pass("remove_identities", &mut graph, &mut weights));
    assert!(run_pass("fold_batch_norm", &mut graph, &mut weights));
    assert_eq!(
        census(&graph),
        counts(&[("input", 1), ("conv+bias", 2), ("relu", 2), ("add", 1)])
    );
    assert!(run_pass("fuse_conv_activation", &mut graph, &mut weights));
    assert_eq!(
        census(&graph),
        counts(&[
            ("input", 1),
            ("conv+bias+relu", 1),
            ("conv+bias", 1),
            ("relu", 1),
            ("add", 1)
        ])
    );
    assert!(run_pass("fuse_residual_add", &mut graph, &mut weights));
    assert_eq!(
        census(&graph),
        counts(&[
            ("input", 1),
            ("conv+bias+relu", 1),
            ("conv+bias+residual+relu", 1)
        ])
    );
    // The second conv reads the first and, as its skip, the block's input.
    let last = graph.output();
    assert_eq!(graph.nodes[last].path, "block.conv2");
    assert_eq!(
        graph.nodes[last].inputs,
        vec![NodeId::from_u32(1), graph.inputs[0]]
    );

    // Projection shortcut: two batch norms on the main path, one on the downsampling path.
    let mut graph = graphs.next().expect("projection_shortcut");
    let mut weights = test_weights(&graph);
    assert_eq!(census(&graph)["batchnorm"], 3);
    assert!(run_pass("fold_batch_norm", &mut graph, &mut weights));
    assert_eq!(
        census(&graph),
        counts(&[("input", 1), ("conv+bias", 3), ("relu", 2), ("add", 1)])
    );
    for bn in ["block.bn1", "block.bn2", "block.downsample.1"] {
        for suffix in ["weight", "bias", "running_mean", "running_var"] {
            let name = format!("{bn}.{suffix}");
            assert!(weights.get(&name).is_none(), "{name} was not removed");
        }
    }
    for conv in ["block.conv1", "block.conv2", "block.downsample.0"] {
        let bias = weights.get(&format!("{conv}.bias")).expect("a new bias");
        assert_eq!(bias.shape(), [128]);
    }
    assert!(run_pass("fuse_conv_activation", &mut graph, &mut weights));
    assert_eq!(census(&graph)["relu"], 1);
    assert!(run_pass("fuse_residual_add", &mut graph, &mut weights));
    assert_eq!(
        census(&graph),
        counts(&[
            ("input", 1),
            ("conv+bias+relu", 1),
            ("conv+bias", 1),
            ("conv+bias+residual+relu", 1)
        ])
    );
    // Both operands of the add were bare convs; the first (the main path's conv2) is fused,
    // and moves after the downsampling conv it now reads.
    let last = graph.output();
    assert_eq!(graph.nodes[last].path, "block.conv2");
    let skip = graph.nodes[last].inputs[1];
    assert_eq!(graph.nodes[skip].path, "block.downsample.0");

    // A second round changes nothing.
    for (name, pass) in PASSES {
        assert!(
            !run_on_weights(*pass, &mut graph, &mut weights),
            "{name} changed the graph again"
        );
    }
}

#[test]
fn remove_identities_drops_dropout() {
    let mut graph = graphs_of_file(&example("se.cnn"))
        .into_iter()
        .find(|g| g.name == "mbconv_block")
        .expect("mbconv_block");
    let mut weights = test_weights(&graph);
    assert_eq!(census(&graph)["dropout"], 1);
    let n_nodes = graph.nodes.len();
    assert!(run_pass("remove_identities", &mut graph, &mut weights));
    assert!(!census(&graph).contains_key("dropout"));
    assert_eq!(graph.nodes.len(), n_nodes - 1);
}

#[test]
fn identities_at_the_output_are_removed() {
    let mut graph = graph_of_source("network n(x: 4x4x2) { x -> c: conv(3, 1) -> dropout(0.5) }");
    let mut weights = test_weights(&graph);
    assert!(run_pass("remove_identities", &mut graph, &mut weights));
    assert_eq!(graph.nodes[graph.output()].path, "c");
}

/// A 90,000-node chain of relus: nothing fuses into a relu, so every node stays. The passes
/// once scanned every node for each candidate, a minute on this graph; with the readers
/// table they are linear and this takes well under a second even in the dev profile. No time
/// is asserted: the suite's own running time is the guard.
#[test]
fn a_long_chain_optimizes_in_linear_time() {
    let mut graph = graph_of_source(
        "network n(x: 8x8x8) { x -> repeat 10000 \
         [relu, relu, relu, relu, relu, relu, relu, relu, relu] }",
    );
    let mut weights = test_weights(&graph);
    let n_nodes = graph.nodes.len();
    assert_eq!(n_nodes, 90_001);
    let changed =
        opt::optimize_weights(&mut graph, &mut weights, &Options::default()).expect("runs");
    assert!(changed.is_empty(), "{changed:?}");
    assert_eq!(graph.nodes.len(), n_nodes);
    assert_eq!(census(&graph), counts(&[("input", 1), ("relu", 90_000)]));
}

/// Thousands of residual blocks, each of which every pass rewrites: the readers table stays
/// in step with the graph through every kind of edit (debug builds check it against a fresh
/// scan at the end of each pass), and the result is what one block gives, times 3,000.
#[test]
fn many_residual_blocks_optimize_in_linear_time() {
    let mut graph = graph_of_source(
        "block res(x) {
             let y = x -> conv(4, 1, bias: false) -> batchnorm -> dropout(0.1) -> relu
                 -> conv(4, 1, bias: false) -> batchnorm
             return relu(y + x)
         }
         network n(x: 2x2x4) { x -> repeat 3000 res() }",
    );
    let mut weights = test_weights(&graph);
    let changed = optimize_verified(&mut graph, &mut weights);
    assert_eq!(
        changed,
        PASSES.iter().map(|(name, _)| *name).collect::<Vec<_>>()
    );
    assert_eq!(
        census(&graph),
        counts(&[
            ("input", 1),
            ("conv+bias+relu", 3000),
            ("conv+bias+residual+relu", 3000),
        ])
    );
}

/// The activation after a residual add is fused only when it is the add's only reader, and
/// an add whose sum another layer reads keeps its conv unfused.
#[test]
fn residual_fusion_needs_an_unshared_conv() {
    let graph = graph_of_source(
        "network n(x: 6x6x4) {
            let y = x -> a: conv(4, 3, pad: 1)
            let shared = x -> b: conv(4, 3, pad: 1)
            let s = y + shared
            let z = shared -> c: conv(4, 1)
            concat(relu(s), z, s)
        }",
    );
    let (optimized, error) = optimize_and_compare(&graph);
    assert!(error <= TOLERANCE, "{error:e}");
    // `a` is fused (the first operand, read only by the add); the relu is not, since the
    // concat reads the sum too.
    assert_eq!(
        census(&optimized),
        counts(&[
            ("input", 1),
            ("conv+bias", 2),
            ("conv+bias+residual", 1),
            ("relu", 1),
            ("concat", 1)
        ]),
        "{}",
        optimized.dump()
    );
}

/// A batch norm after a conv that something else also reads cannot be folded: the other
/// reader needs the conv's own output. Nor is `tanh` fused: the epilogues do not compute it.
#[test]
fn shared_conv_keeps_its_batch_norm() {
    let graph = graph_of_source(
        "network n(x: 8x8x4) {
            let y = x -> conv1: conv(4, 3, pad: 1)
            let a = y -> bn: batchnorm -> tanh
            a + y
        }",
    );
    let (optimized, error) = optimize_and_compare(&graph);
    assert!(error <= TOLERANCE, "{error:e}");
    assert_eq!(
        census(&optimized),
        counts(&[
            ("input", 1),
            ("conv+bias", 1),
            ("batchnorm", 1),
            ("tanh", 1),
            ("add", 1)
        ]),
        "{}",
        optimized.dump()
    );
}

#[test]
fn literal_weights_fold_into_the_literal_values() {
    let graph = graph_of_source(
        "network n(img: 6x6x1) {
            img -> edge: conv(1, 3, weights: [[1, 0, -1], [2, 0, -2], [1, 0, -1]], bias: false)
                -> bn: batchnorm -> relu
        }",
    );
    let (optimized, error) = optimize_and_compare(&graph);
    assert!(error <= TOLERANCE, "{error:e}");
    let conv = optimized.output();
    let Op::Conv(attrs) = &optimized.nodes[conv].op else {
        panic!("{}", optimized.dump());
    };
    assert!(attrs.weights.is_some() && attrs.bias_values.is_some());
    assert_eq!(attrs.activation, Some(Activation::Relu));
    // The numbers live in the graph, so the folded network needs no weights at all.
    assert!(optimized.named_params().is_empty());
    let inputs = test_inputs(&graph);
    let without_weights = reference::run(&optimized, &Weights::new(), &inputs);
    assert!(without_weights.is_ok());
}

#[test]
fn dense_layers_fold_and_fuse() {
    let graph = graph_of_source(
        "network n(x: 4x4x3) {
            x -> flatten -> fc1: dense(10) -> bn1: batchnorm -> relu6
              -> fc2: dense(5, bias: false) -> bn2: batchnorm -> swish
              -> fc3: dense(3) -> sigmoid
        }",
    );
    let (optimized, error) = optimize_and_compare(&graph);
    assert!(error <= TOLERANCE, "{error:e}");
    assert_eq!(
        census(&optimized),
        counts(&[
            ("input", 1),
            ("flatten", 1),
            ("dense+bias+relu6", 1),
            ("dense+bias+swish", 1),
            ("dense+bias+sigmoid", 1)
        ]),
        "{}",
        optimized.dump()
    );
}

#[test]
fn no_fuse_leaves_activations_unfused() {
    for graph in graphs_of_file(&example("residual.cnn")) {
        let mut optimized = graph.clone();
        let mut weights = test_weights(&graph);
        let options = Options {
            fuse: false,
            only: None,
        };
        let changed = opt::optimize_weights(&mut optimized, &mut weights, &options).expect("valid");
        assert_eq!(changed, vec!["fold_batch_norm"]);
        let kinds = census(&optimized);
        assert_eq!(kinds["relu"], 2);
        assert_eq!(kinds["add"], 1);
        assert!(!kinds.contains_key("batchnorm"));
        assert!(kinds
            .keys()
            .all(|k| !k.contains("+relu") && !k.contains("residual")));
    }
}

#[test]
fn options_select_passes_in_table_order() {
    let options = Options {
        fuse: true,
        only: Some(vec!["fuse_residual_add".into(), "fold_batch_norm".into()]),
    };
    let names: Vec<&str> = options
        .selected()
        .expect("known names")
        .iter()
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(names, ["fold_batch_norm", "fuse_residual_add"]);
    let unknown = Options {
        fuse: true,
        only: Some(vec!["fold_bn".into()]),
    };
    assert!(unknown.selected().is_err());
}

// ---------------------------------------------------------------------------------------------
// The residual conv's shape rule and the verifier

#[test]
fn a_residual_conv_takes_a_skip_of_its_output_shape() {
    let mut graph = graph_of_source("network n(x: 6x6x4) { x -> c: conv(8, 3, pad: 1) }");
    let conv = graph.output();
    let Op::Conv(mut attrs) = graph.nodes[conv].op.clone() else {
        panic!("a conv");
    };
    attrs.residual = true;
    let op = Op::Conv(attrs);
    let input = Shape::spatial(6, 6, 4);
    let out = Shape::spatial(6, 6, 8);
    assert_eq!(infer::output_shape(&op, &[input, out]), Ok(out));
    assert!(matches!(
        infer::output_shape(&op, &[input]),
        Err(ShapeError::Arity { found: 1, .. })
    ));
    assert!(matches!(
        infer::output_shape(&op, &[input, input]),
        Err(ShapeError::AddMismatch { .. })
    ));
    // In a graph, the verifier reports a residual conv given no skip.
    graph.nodes[conv].op = op;
    let problems = verify(&graph).expect_err("one input is too few");
    assert!(problems.contains("takes two input"), "{problems}");
}

#[test]
fn the_verifier_reports_each_broken_invariant() {
    let graph = graph_of_source(
        "network n(x: 6x6x4) { x -> a: conv(4, 3, pad: 1) -> relu -> b: conv(4, 1) }",
    );
    assert_eq!(verify(&graph), Ok(()));
    let [input, a, relu, b] = [0, 1, 2, 3].map(NodeId::from_u32);

    let mut later_input = graph.clone();
    later_input.nodes[a].inputs = vec![relu];
    let problems = verify(&later_input).expect_err("a reads a later node");
    assert!(problems.contains("does not come before"), "{problems}");

    let mut wrong_shape = graph.clone();
    wrong_shape.shapes[relu] = Shape::spatial(6, 6, 5);
    let problems = verify(&wrong_shape).expect_err("relu's shape is wrong");
    assert!(problems.contains("stored as 6×6×5"), "{problems}");

    let mut wrong_arity = graph.clone();
    wrong_arity.nodes[relu].inputs = vec![a, a];
    let problems = verify(&wrong_arity).expect_err("relu has two inputs");
    assert!(problems.contains("takes one input"), "{problems}");

    let mut same_path = graph.clone();
    same_path.nodes[b].path = "a".into();
    let problems = verify(&same_path).expect_err("two convs named a");
    assert!(problems.contains("path `a`"), "{problems}");

    let mut no_output = graph.clone();
    no_output.outputs.clear();
    assert!(verify(&no_output)
        .expect_err("no output")
        .contains("not set"));

    let mut unlisted = graph.clone();
    unlisted.inputs.clear();
    let problems = verify(&unlisted).expect_err("the input is not listed");
    assert!(problems.contains(&input.to_string()), "{problems}");

    let mut wrong_constant = graph.clone();
    let weight = wrong_constant
        .node_const(b, "weight")
        .expect("b has a weight");
    wrong_constant.consts[weight].shape = vec![4, 3, 1, 1];
    let problems = verify(&wrong_constant).expect_err("b's weight has the wrong shape");
    assert!(problems.contains("constant `weight`"), "{problems}");

    // Every problem is reported, not only the first.
    let mut two = wrong_shape.clone();
    two.outputs.clear();
    let problems = verify(&two).expect_err("two problems");
    assert_eq!(problems.lines().count(), 2, "{problems}");
}

/// Optimizing a network generates none of its weights: folding makes constants that are
/// computed when the code generator packs them, so `emit opt` and `summary` on VGG-16 with
/// batch norm cost no arithmetic on its 138 M numbers. The first request for a folded
/// constant's values computes them.
#[test]
fn optimizing_generates_no_weights() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("std/vgg.cnn");
    let graph = graphs_of_file(&path)
        .into_iter()
        .find(|g| g.name == "vgg16_bn")
        .expect("std/vgg.cnn has vgg16_bn");
    let mut optimized = graph.clone();
    let changed = opt::optimize(&mut optimized, &Options::default()).expect("runs");
    assert!(changed.contains(&"fold_batch_norm"), "{changed:?}");
    assert!(!census(&optimized).contains_key("batchnorm"));
    assert!(
        optimized.consts.values().all(|c| !c.is_materialised()),
        "a pass computed a constant's numbers"
    );
    let first_conv = optimized
        .nodes
        .keys()
        .find(|&id| matches!(optimized.nodes[id].op, Op::Conv(_)))
        .expect("a conv");
    let weight = &optimized.consts[optimized
        .node_const(first_conv, "weight")
        .expect("a weight")];
    assert_eq!(weight.values().len(), 64 * 3 * 3 * 3);
    assert!(weight.is_materialised());
}
