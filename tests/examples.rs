//! Snapshot tests of the front end over the example programs: the `check` line, the
//! `summary` table and the `emit ast` / `emit graph` dumps of every example, and the rendered
//! diagnostics of every program in `examples/bad/`. Plain assertions pin the course's numbers.

use cnnc::driver::{self, Compilation, Select};
use cnnc::graph::summary::Summary;
use cnnc::graph::Graph;
use std::path::Path;

/// Compiles a file given by its path relative to the package root, as a user would name it.
fn compile(path: &Path) -> Compilation {
    let relative = path
        .strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap_or(path);
    let program = driver::load(relative).expect("the example is readable");
    driver::compile(program, &Select::All)
}

fn compile_ok(path: &Path) -> Compilation {
    let compilation = compile(path);
    assert!(
        !compilation.has_errors(),
        "{} has errors:\n{}",
        path.display(),
        compilation.render_diagnostics()
    );
    compilation
}

#[test]
fn examples_check() {
    insta::glob!("../examples", "*.cnn", |path| {
        let compilation = compile_ok(path);
        let lines: Vec<String> = compilation
            .graphs()
            .map(|g| Summary::of(g).check_line())
            .collect();
        insta::assert_snapshot!(lines.join("\n"));
    });
}

#[test]
fn examples_summary() {
    insta::glob!("../examples", "*.cnn", |path| {
        let compilation = compile_ok(path);
        let tables: Vec<String> = compilation
            .graphs()
            .map(|g| Summary::of(g).table())
            .collect();
        insta::assert_snapshot!(tables.join("\n"));
    });
}

#[test]
fn examples_emit_ast() {
    insta::glob!("../examples", "*.cnn", |path| {
        let compilation = compile_ok(path);
        let root = &compilation.program.files[0];
        insta::assert_snapshot!(cnnc::syntax::dump(&compilation.program.sources, &root.ast));
    });
}

#[test]
fn examples_emit_graph() {
    insta::glob!("../examples", "*.cnn", |path| {
        let compilation = compile_ok(path);
        let dumps: Vec<String> = compilation.graphs().map(Graph::dump).collect();
        insta::assert_snapshot!(dumps.join("\n"));
    });
}

#[test]
fn std_check() {
    insta::glob!("../std", "*.cnn", |path| {
        let compilation = compile_ok(path);
        let lines: Vec<String> = compilation
            .graphs()
            .map(|g| Summary::of(g).check_line())
            .collect();
        insta::assert_snapshot!(lines.join("\n"));
    });
}

/// Every bad program is rejected with its diagnostics rendered as plain text. A program that
/// only warns (`unused_let.cnn`, `unused_value.cnn`, `unused_block.cnn`,
/// `unused_parameter.cnn`: every `unused_*.cnn`) must still compile.
#[test]
fn bad_examples_diagnostics() {
    insta::glob!("../examples/bad", "*.cnn", |path| {
        let compilation = compile(path);
        let rendered = compilation.render_diagnostics();
        let only_warns = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("unused_"));
        if only_warns {
            assert!(!compilation.has_errors(), "{rendered}");
            assert!(rendered.contains("warning"), "{rendered}");
        } else {
            assert!(compilation.has_errors(), "{} was accepted", path.display());
        }
        insta::assert_snapshot!(rendered);
    });
}

fn network(path: &str, name: &str) -> Graph {
    let program = driver::load(Path::new(path)).expect("readable");
    let compilation = driver::compile(program, &Select::Named(name.to_string()));
    assert!(
        !compilation.has_errors(),
        "{}",
        compilation.render_diagnostics()
    );
    let graph = compilation.graphs().next().expect("one graph").clone();
    graph
}

fn layer_macs(graph: &Graph) -> Vec<u64> {
    graph
        .nodes
        .keys()
        .map(|id| graph.macs(id))
        .filter(|&m| m > 0)
        .collect()
}

#[test]
fn lenet5_counts() {
    for (file, name) in [
        ("examples/lenet5.cnn", "lenet5"),
        ("std/lenet.cnn", "lenet5"),
    ] {
        let graph = network(file, name);
        assert_eq!(graph.n_parameters(), 61_706);
        assert_eq!(graph.total_macs(), 416_520);
        assert_eq!(graph.shape(graph.output()).to_string(), "10");
    }
}

#[test]
fn one_layer_counts() {
    let ten = network("examples/one_layer.cnn", "ten_filters");
    assert_eq!(ten.n_parameters(), 280);
    let six = network("examples/one_layer.cnn", "six_filters");
    assert_eq!(six.n_parameters(), 456);
    assert_eq!(six.shape(six.output()).to_string(), "28×28×6");
    let gray = network("examples/one_layer.cnn", "six_filters_gray");
    assert_eq!(gray.n_parameters(), 156);
}

#[test]
fn cost_counts() {
    let normal = network("examples/cost.cnn", "normal");
    assert_eq!(normal.shape(normal.output()).to_string(), "4×4×5");
    assert_eq!(normal.total_macs(), 2_160);
    let separable = network("examples/cost.cnn", "separable");
    assert_eq!(layer_macs(&separable), vec![432, 240]);
    assert_eq!(separable.total_macs(), 672);
    assert_eq!(
        network("examples/cost.cnn", "big_conv").total_macs(),
        120_422_400
    );
    assert_eq!(
        network("examples/cost.cnn", "bottleneck").total_macs(),
        12_443_648
    );
}

#[test]
fn edges_shapes() {
    for name in ["vertical_edges", "horizontal_edges", "sobel", "scharr"] {
        let graph = network("examples/edges.cnn", name);
        assert_eq!(graph.shape(graph.output()).to_string(), "4×4×1");
        assert_eq!(
            graph.n_parameters(),
            0,
            "literal weights are not parameters"
        );
    }
    let strided = network("examples/edges.cnn", "strided");
    assert_eq!(strided.shape(strided.output()).to_string(), "3×3×1");
}

#[test]
fn block_examples_shapes() {
    let cases = [
        ("examples/residual.cnn", "identity_shortcut", "56×56×64"),
        ("examples/residual.cnn", "projection_shortcut", "28×28×128"),
        ("examples/inception.cnn", "inception_3a", "28×28×256"),
        ("examples/bottleneck.cnn", "with_residual", "56×56×24"),
        ("examples/bottleneck.cnn", "downsampling", "28×28×32"),
    ];
    for (file, name, shape) in cases {
        let graph = network(file, name);
        assert_eq!(graph.shape(graph.output()).to_string(), shape, "{name}");
    }
    // Only the projection shortcut has a downsample branch; torchvision names it so.
    let projection = network("examples/residual.cnn", "projection_shortcut");
    let names: Vec<String> = projection
        .named_params()
        .into_iter()
        .map(|(n, _, _)| n)
        .collect();
    assert!(names.contains(&"block.downsample.0.weight".to_string()));
    let identity = network("examples/residual.cnn", "identity_shortcut");
    assert!(identity
        .named_params()
        .iter()
        .all(|(n, _, _)| !n.contains("downsample")));
}

/// The kind shown and the automatic weight names follow what the program wrote: a grouped
/// `conv` whose groups equal its filters stays `conv`, a `dwconv` with a multiplier stays
/// `dwconv` (issue 11, bug 8).
#[test]
fn conv_kind_follows_what_was_written() {
    let source = "network t(x: 8x8x32) { x -> conv(4, 3, groups: 4) -> dwconv(3, multiplier: 2) }";
    let program = driver::load_source("t.cnn", source);
    let compilation = driver::compile(program, &Select::All);
    assert!(
        !compilation.has_errors(),
        "{}",
        compilation.render_diagnostics()
    );
    let graph = compilation.graphs().next().expect("one graph");
    let names: Vec<String> = graph
        .named_params()
        .into_iter()
        .map(|(name, _, _)| name)
        .collect();
    assert_eq!(
        names,
        ["conv.weight", "conv.bias", "dwconv.weight", "dwconv.bias"]
    );
    let kinds: Vec<&str> = graph.nodes.values().map(|node| node.op.name()).collect();
    assert_eq!(kinds, ["input", "conv", "dwconv"]);
}

/// The names of a one-network program's learned tensors and buffers, in order.
fn weight_names(source: &str) -> Vec<String> {
    let program = driver::load_source("t.cnn", source);
    let compilation = driver::compile(program, &Select::All);
    assert!(
        !compilation.has_errors(),
        "{}",
        compilation.render_diagnostics()
    );
    let graph = compilation.graphs().next().expect("one graph");
    graph
        .named_params()
        .into_iter()
        .map(|(name, _, _)| name)
        .collect()
}

/// A label on a repeated stage keeps the iteration index in the weight path, as a labelled
/// layer inside a repeated sequence does (issue 11, bug 2): `tower.0.c`, `tower.1.c`, not a
/// duplicate `tower.c`.
#[test]
fn label_on_a_repeated_layer_keeps_the_iteration_index() {
    let bare = weight_names("network t(x: 8x8x4) { x -> tower: repeat 3 c: conv(4, 3, pad: 1) }");
    assert_eq!(
        bare,
        [
            "tower.0.c.weight",
            "tower.0.c.bias",
            "tower.1.c.weight",
            "tower.1.c.bias",
            "tower.2.c.weight",
            "tower.2.c.bias"
        ]
    );
    let bracketed =
        weight_names("network t(x: 8x8x4) { x -> tower: repeat 3 [c: conv(4, 3, pad: 1)] }");
    assert_eq!(bare, bracketed);
    // Without a label on the repeat, the index is the first segment.
    let unlabelled =
        weight_names("network t(x: 8x8x4) { x -> repeat 2 c: frozen conv(4, 3, pad: 1) }");
    assert_eq!(
        unlabelled,
        [
            "repeat.0.c.weight",
            "repeat.0.c.bias",
            "repeat.1.c.weight",
            "repeat.1.c.bias"
        ]
    );
}

/// Quoted labels take torchvision's names with a hyphen; a computed label names each
/// iteration of a repeat in place of its index, and each item of a `for` (issue 11).
#[test]
fn quoted_and_computed_labels_name_the_weights() {
    let names = weight_names(
        r#"network t(x: 8x8x4) {
            x -> "block2-0": conv(4, 1)
              -> features: repeat 3 as i "denselayer{i + 1}": conv(4, 1, bias: false)
              -> head: [for k in ["a", "b"] { "fc_{k}": conv(2, 1, bias: false) }]
        }"#,
    );
    assert_eq!(
        names,
        [
            "block2-0.weight",
            "block2-0.bias",
            "features.denselayer1.weight",
            "features.denselayer2.weight",
            "features.denselayer3.weight",
            "head.fc_a.weight",
            "head.fc_b.weight"
        ]
    );
    // A label variable used only inside a computed label is used: no warning.
    let program = driver::load_source(
        "t.cnn",
        "block b(x, n: int) { x -> \"c{n}\": conv(4, 1) }\nnetwork t(x: 8x8x4) { x -> b(7) }",
    );
    let compilation = driver::compile(program, &Select::All);
    assert!(
        compilation.all_diagnostics().is_empty(),
        "{}",
        compilation.render_diagnostics()
    );
    assert_eq!(
        compilation
            .graphs()
            .next()
            .expect("one graph")
            .named_params()[0]
            .0,
        "b.c7.weight"
    );
}

/// `import … as name` puts the file's blocks and networks under `name.`: the importing file
/// keeps its own `basic`, `resnet.basic` is std's, and std's networks still find their own
/// `basic` (issue 11).
#[test]
fn an_import_as_a_name_has_its_own_namespace() {
    let program = driver::load_source(
        "t.cnn",
        "use std::resnet as resnet
         block basic(x) { x -> resnet.basic(4) }
         network own(x: 8x8x4) { x -> basic -> tail: resnet.basic(4) }
         network whole(image: 224x224x3) { image -> resnet.resnet18 }",
    );
    let compilation = driver::compile(program, &Select::All);
    assert!(
        !compilation.has_errors(),
        "{}",
        compilation.render_diagnostics()
    );
    let graphs: Vec<&Graph> = compilation.graphs().collect();
    let names: Vec<String> = graphs[0]
        .named_params()
        .into_iter()
        .map(|(name, _, _)| name)
        .filter(|name| name.ends_with(".weight"))
        .collect();
    assert_eq!(
        names,
        [
            "basic.basic.conv1.weight",
            "basic.basic.bn1.weight",
            "basic.basic.conv2.weight",
            "basic.basic.bn2.weight",
            "tail.conv1.weight",
            "tail.bn1.weight",
            "tail.conv2.weight",
            "tail.bn2.weight"
        ]
    );
    // torchvision's ResNet-18 count: std's `resnet18` used std's `basic`, not this file's.
    assert_eq!(Summary::of(graphs[1]).parameters, 11_689_512);
}

/// A block that is one unlabelled layer stands for that layer, as torchvision's `conv3x3`
/// helper returns the `Conv2d` itself: `a: wrap` names `a.weight`. A labelled inner layer, or
/// a block of several layers, keeps its own segment (issue 11).
#[test]
fn a_thin_wrapper_block_adds_no_segment() {
    let names = weight_names(
        "block wrap(x) { x -> conv(4, 1) }
         block conv3x3(x, c: int) { return x -> conv(c, 3, pad: 1, bias: false) }
         block labelled(x) { x -> conv: conv(4, 1, bias: false) }
         block two(x) { x -> conv(4, 1, bias: false) -> relu }
         network n(x: 8x8x3) {
             x -> a: wrap -> b: conv3x3(8) -> c: labelled -> d: two -> layer1: repeat 2 conv3x3(4)
         }",
    );
    assert_eq!(
        names,
        [
            "a.weight",
            "a.bias",
            "b.weight",
            "c.conv.weight",
            "d.conv.weight",
            "layer1.0.weight",
            "layer1.1.weight"
        ]
    );
}
