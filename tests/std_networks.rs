//! The standard library against its references. Every network of `std/` must have exactly
//! torchvision's parameter count, tensor count, and `state_dict` names and shapes, in
//! `state_dict` order, so that a torchvision checkpoint converted to safetensors loads as it is;
//! and its MACs must round to the published figure. The reference lists live in
//! `tests/data/torchvision/` (one `name<TAB>shape` line per tensor, and `PARAMS.tsv`), copied
//! from the torchvision models themselves; see the README there.
//!
//! Snapshots record the `check` line of every network and the `summary` table of a few. Every
//! network also runs through the reference interpreter, at a reduced input size (the full sizes
//! are an ignored test: `cargo test --test std_networks -- --ignored`).

use cnnc::driver::{self, Select};
use cnnc::graph::summary::Summary;
use cnnc::graph::Graph;
use cnnc::runtime::{synthetic_input, Weights};
use std::path::Path;

mod common;

const DATA: &str = "tests/data/torchvision";

/// Every network of the standard library: its file, and its MACs at its declared input size
/// as published (in GMACs), with the number of decimals it was published to.
///
/// The figures are those of the table where it gives one, and otherwise torchvision's
/// documented `GFLOPS` (which count multiply-accumulates, despite the name).
const NETWORKS: &[(&str, &str, f64, i32)] = &[
    ("std/lenet.cnn", "lenet5", 0.000417, 6),
    ("std/alexnet.cnn", "alexnet", 0.71, 2),
    ("std/vgg.cnn", "vgg11", 7.61, 2),
    ("std/vgg.cnn", "vgg13", 11.31, 2),
    ("std/vgg.cnn", "vgg16", 15.47, 2),
    ("std/vgg.cnn", "vgg19", 19.63, 2),
    ("std/vgg.cnn", "vgg16_bn", 15.47, 2),
    ("std/resnet.cnn", "resnet18", 1.81, 2),
    ("std/resnet.cnn", "resnet34", 3.66, 2),
    ("std/resnet.cnn", "resnet50", 4.09, 2),
    ("std/resnet.cnn", "resnet101", 7.80, 2),
    ("std/resnet.cnn", "resnet152", 11.51, 2),
    ("std/googlenet.cnn", "googlenet", 1.50, 2),
    ("std/mobilenet.cnn", "mobilenet_v1", 0.569, 3),
    ("std/mobilenet.cnn", "mobilenet_v2", 0.30, 2),
    ("std/mobilenet.cnn", "mobilenet_v3_large", 0.22, 2),
    ("std/mobilenet.cnn", "mobilenet_v3_small", 0.06, 2),
    ("std/shufflenet.cnn", "shufflenet_v2_x1_0", 0.14, 2),
    ("std/convnext.cnn", "convnext_tiny", 4.46, 2),
    ("std/efficientnet.cnn", "efficientnet_b0", 0.39, 2),
    ("std/efficientnet.cnn", "efficientnet_b1", 0.69, 2),
    ("std/efficientnet.cnn", "efficientnet_b2", 1.09, 2),
    ("std/efficientnet.cnn", "efficientnet_b3", 1.83, 2),
    ("std/efficientnet.cnn", "efficientnet_b4", 4.39, 2),
    ("std/efficientnet.cnn", "efficientnet_b5", 10.27, 2),
    ("std/efficientnet.cnn", "efficientnet_b6", 19.07, 2),
    ("std/efficientnet.cnn", "efficientnet_b7", 37.75, 2),
];

/// Compiles one network of a standard-library file, as `cnnc check FILE --net NAME` does.
fn compile(file: &str, network: &str) -> Graph {
    let program = driver::load(Path::new(file)).expect("the std file is readable");
    let compilation = driver::compile(program, &Select::Named(network.to_string()));
    assert!(
        !compilation.has_errors(),
        "{file} --net {network} has errors:\n{}",
        compilation.render_diagnostics()
    );
    let graph = compilation.graphs().next().expect("one network").clone();
    graph
}

/// `(parameters, tensors)` of a network, from `PARAMS.tsv`.
fn published_counts(network: &str) -> (u64, usize) {
    let table = std::fs::read_to_string(format!("{DATA}/PARAMS.tsv")).expect("PARAMS.tsv");
    let row = table
        .lines()
        .skip(1)
        .map(|line| line.split('\t').collect::<Vec<_>>())
        .find(|cells| cells[0] == network)
        .unwrap_or_else(|| panic!("{network} is not in PARAMS.tsv"));
    (
        row[1].parse().expect("a parameter count"),
        row[2].parse().expect("a tensor count"),
    )
}

/// The network's tensors as `name<TAB>shape` lines, shapes written as in the reference files
/// (`64x3x7x7`).
fn tensor_lines(graph: &Graph) -> Vec<String> {
    graph
        .named_params()
        .into_iter()
        .map(|(name, _, spec)| {
            let dims: Vec<String> = spec.shape.iter().map(usize::to_string).collect();
            format!("{name}\t{}", dims.join("x"))
        })
        .collect()
}

/// Fails at the first line where the two lists differ, showing that line of each, so that a
/// naming mistake deep inside a network is easy to find.
fn assert_same_tensors(network: &str, actual: &[String], expected: &[String]) {
    let first_difference = actual
        .iter()
        .zip(expected)
        .position(|(a, e)| a != e)
        .or_else(|| (actual.len() != expected.len()).then(|| actual.len().min(expected.len())));
    if let Some(idx) = first_difference {
        let line = |lines: &[String]| lines.get(idx).cloned().unwrap_or("(none)".to_string());
        panic!(
            "{network}: tensor {} of {} (torchvision has {}) differs:\n  cnnc:        {}\n  torchvision: {}",
            idx + 1,
            actual.len(),
            expected.len(),
            line(actual),
            line(expected)
        );
    }
}

fn check_against_torchvision(network: &str) {
    let &(file, _, published_gmacs, decimals) = NETWORKS
        .iter()
        .find(|(_, name, _, _)| *name == network)
        .expect("the network is listed");
    let graph = compile(file, network);

    let reference = std::fs::read_to_string(format!("{DATA}/{network}.tsv")).expect("the list");
    let expected: Vec<String> = reference.lines().map(str::to_string).collect();
    let actual = tensor_lines(&graph);
    assert_same_tensors(network, &actual, &expected);

    let (parameters, tensors) = published_counts(network);
    assert_eq!(actual.len(), tensors, "{network}: tensors");
    assert_eq!(graph.n_parameters(), parameters, "{network}: parameters");

    // Rounded to the published precision, the MACs are the published figure.
    let gmacs = graph.total_macs() as f64 / 1e9;
    let tolerance = 0.5 * 10f64.powi(-decimals) + 1e-12;
    assert!(
        (gmacs - published_gmacs).abs() <= tolerance,
        "{network}: {gmacs:.6} GMACs, published {published_gmacs:.*}",
        decimals as usize
    );
}

/// Three tests per network (`resnet50::matches_torchvision`, ...), so that each failure is
/// reported on its own and the networks run in parallel.
macro_rules! std_network_tests {
    ($($network:ident)*) => {
        $(
            mod $network {
                #[test]
                fn matches_torchvision() {
                    super::check_against_torchvision(stringify!($network));
                }

                #[test]
                fn runs_at_reduced_size() {
                    super::run_at_reduced_size(stringify!($network));
                }

                #[test]
                #[ignore = "minutes in a debug build; run with --ignored"]
                fn runs_at_full_size() {
                    super::run_at_full_size(stringify!($network));
                }
            }
        )*
    };
}

std_network_tests! {
    lenet5
    alexnet
    vgg11 vgg13 vgg16 vgg19 vgg16_bn
    resnet18 resnet34 resnet50 resnet101 resnet152
    googlenet
    mobilenet_v1 mobilenet_v2 mobilenet_v3_large mobilenet_v3_small
    shufflenet_v2_x1_0
    convnext_tiny
    efficientnet_b0 efficientnet_b1 efficientnet_b2 efficientnet_b3
    efficientnet_b4 efficientnet_b5 efficientnet_b6 efficientnet_b7
}

/// Every reference list has a network, and every network a test.
#[test]
fn every_reference_is_tested() {
    let mut listed: Vec<&str> = NETWORKS.iter().map(|(_, name, _, _)| *name).collect();
    listed.sort_unstable();
    let mut references: Vec<String> = std::fs::read_dir(DATA)
        .expect("the data folder")
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            let network = name.strip_suffix(".tsv")?;
            (network != "PARAMS").then(|| network.to_string())
        })
        .collect();
    references.sort_unstable();
    assert_eq!(listed, references);
}

/// The copy of each file embedded in the binary (what `import "std/..."` reads) is the file.
#[test]
fn std_files_are_embedded() {
    let mut files: Vec<&str> = NETWORKS.iter().map(|(file, _, _, _)| *file).collect();
    files.dedup();
    for file in files {
        let on_disk = std::fs::read_to_string(file).expect("the std file");
        assert_eq!(
            cnnc::stdlib::get(file),
            Some(on_disk.as_str()),
            "{file} is not in stdlib::FILES, or differs"
        );
    }
}

#[test]
fn check_lines() {
    let lines: Vec<String> = NETWORKS
        .iter()
        .map(|(file, network, _, _)| Summary::of(&compile(file, network)).check_line())
        .collect();
    insta::assert_snapshot!(lines.join("\n"));
}

#[test]
fn summaries() {
    for (file, network) in [
        ("std/lenet.cnn", "lenet5"),
        ("std/resnet.cnn", "resnet18"),
        ("std/mobilenet.cnn", "mobilenet_v2"),
        ("std/mobilenet.cnn", "mobilenet_v3_small"),
        ("std/shufflenet.cnn", "shufflenet_v2_x1_0"),
        ("std/efficientnet.cnn", "efficientnet_b0"),
    ] {
        let table = Summary::of(&compile(file, network)).table();
        insta::assert_snapshot!(format!("summary_{network}"), table);
    }
}

/// The file a network is defined in.
fn file_of(network: &str) -> &'static str {
    NETWORKS
        .iter()
        .find(|(_, name, _, _)| *name == network)
        .map(|(file, _, _, _)| *file)
        .expect("the network is listed")
}

/// Runs a network on a seeded input with seeded weights, and checks that its output is a
/// probability distribution over the classes: finite, summing to 1, and not constant.
fn run_and_check(graph: &Graph, what: &str) {
    let weights = Weights::seeded(graph, 0).expect("seeded weights");
    let input = synthetic_input(graph.shape(graph.inputs[0]), 1, 0).expect("a synthetic input");
    let output = cnnc::reference::run(graph, &weights, &[input])
        .unwrap_or_else(|error| panic!("{what} does not run: {error}"));
    let classes = graph.shape(graph.output()).c;
    assert_eq!(output.shape(), &[1, classes], "{what}: output shape");
    assert!(output.iter().all(|p| p.is_finite()), "{what}: not finite");
    let total: f32 = output.iter().sum();
    assert!((total - 1.0).abs() < 1e-4, "{what}: sums to {total}");
    let (min, max) = output
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), &p| (lo.min(p), hi.max(p)));
    assert!(max > min, "{what}: every class has probability {min}");
}

/// The network used as a stage of a small test network (`image -> resnet50`), which keeps its
/// layers and weight names but not its input size, run through the reference interpreter.
/// The pooling before every classifier here is global or adaptive, so 32×32 suffices (LeNet's
/// own size); AlexNet's stem needs 63×63 to leave its last max-pool a pixel. This also reads
/// the copy of `std/` embedded in the binary, as an installed `cnnc` does.
fn run_at_reduced_size(network: &str) {
    let file = file_of(network);
    let full = compile(file, network);
    let size = if network == "alexnet" { 63 } else { 32 };
    let channels = full.shape(full.inputs[0]).c;
    let source = format!(
        "import \"{file}\"\nnetwork small(image: {size}x{size}x{channels}) {{ image -> {network} }}\n"
    );
    let program = driver::load_source("tests/reduced_size.cnn", &source);
    let compilation = driver::compile(program, &Select::Named("small".to_string()));
    assert!(
        !compilation.has_errors(),
        "{network} at {size}×{size}:\n{}",
        compilation.render_diagnostics()
    );
    let small = compilation.graphs().next().expect("one network");
    assert_eq!(
        tensor_lines(small),
        tensor_lines(&full),
        "{network}: used as a stage, its weights keep their names"
    );
    run_and_check(small, &format!("{network} at {size}×{size}"));
    compare_jit_with_reference(small, &format!("{network} at {size}×{size}"));
}

/// The JIT, bounds-checked, with fusion on and off, gives the interpreter's output: the
/// classifier's probabilities agree to 1e-4 relative (f32 sums in another order move the
/// logits by about 1e-6; the probabilities are all far from zero).
fn compare_jit_with_reference(graph: &Graph, what: &str) {
    let weights = common::weights_with_batch_norm_statistics(graph, 3);
    let input = synthetic_input(graph.shape(graph.inputs[0]), 2, 3).expect("a synthetic input");
    let expected = cnnc::reference::run(graph, &weights, std::slice::from_ref(&input))
        .unwrap_or_else(|error| panic!("{what}: {error}"));
    for fuse in [true, false] {
        let mut optimized = graph.clone();
        let mut folded = weights.clone();
        let options = cnnc::opt::Options {
            fuse,
            ..cnnc::opt::Options::default()
        };
        cnnc::opt::optimize_weights(&mut optimized, &mut folded, &options).expect("the passes run");
        let codegen = cnnc::codegen::CodegenOptions {
            checked: true,
            threads: 2,
            ..Default::default()
        };
        let compiled = cnnc::codegen::compile(&optimized, &folded, &codegen)
            .unwrap_or_else(|error| panic!("{what}: cannot compile: {error}"));
        let found = compiled
            .run(std::slice::from_ref(&input))
            .unwrap_or_else(|error| panic!("{what}: the JIT fails: {error}"));
        assert_eq!(found.shape(), expected.shape(), "{what}");
        let worst = found
            .iter()
            .zip(expected.iter())
            .map(|(a, b)| (a - b).abs() / b.abs().max(1e-30))
            .fold(0.0f32, f32::max);
        assert!(
            worst <= 1e-4,
            "{what} (fuse: {fuse}): JIT differs by {worst} relative"
        );
    }
}

fn run_at_full_size(network: &str) {
    run_and_check(&compile(file_of(network), network), network);
}
