//! ONNX export, checked structurally: every example and a reduced-size copy of every standard
//! network is exported, the bytes are decoded back with the same prost types, and the model is
//! held against the graph and its weights — opset, node types and counts, the wiring (every
//! node reads only what exists before it), input and output shapes, and each initializer's
//! name, shape and numbers. The numbers an engine computes from the model are checked against
//! cnnc by `bench/compare.py` with onnxruntime (no Python here); the one mapping that is not
//! one operator per layer, adaptive pooling as two `MatMul`s, is evaluated here against the
//! reference interpreter.

use cnnc::driver::{self, Select};
use cnnc::export::onnx::{self, ExportOptions};
use cnnc::export::onnx_proto as pb;
use cnnc::graph::{Graph, Op, Shape};
use cnnc::runtime::{synthetic_input, Weights};
use ndarray::{Array2, Axis, IxDyn};
use prost::Message;
use std::collections::{BTreeMap, HashMap, HashSet};

mod common;

fn compile_all(name: &str, source: &str) -> Vec<Graph> {
    let compilation = driver::compile(driver::load_source(name, source), &Select::All);
    assert!(
        !compilation.has_errors(),
        "{name}:\n{}",
        compilation.render_diagnostics()
    );
    compilation.graphs().cloned().collect()
}

/// Exports with a symbolic batch and decodes the bytes, as another engine would read them.
fn round_trip(graph: &Graph, weights: &Weights) -> pb::ModelProto {
    let model = onnx::export(graph, weights, &ExportOptions::default())
        .unwrap_or_else(|error| panic!("{}: {error}", graph.name));
    pb::ModelProto::decode(model.encode_to_vec().as_slice()).expect("the bytes decode")
}

/// The dimensions of a value, `None` for a symbolic one.
fn value_dims(info: &pb::ValueInfoProto) -> Vec<Option<i64>> {
    use pb::tensor_shape_proto::dimension::Value;
    let Some(pb::type_proto::Value::TensorType(tensor)) =
        info.r#type.as_ref().and_then(|t| t.value.clone())
    else {
        panic!("{:?} is not a tensor", info.name);
    };
    assert_eq!(
        tensor.elem_type,
        Some(pb::tensor_proto::DataType::Float as i32)
    );
    tensor
        .shape
        .expect("a shape")
        .dim
        .iter()
        .map(|d| match &d.value {
            Some(Value::DimValue(v)) => Some(*v),
            _ => None,
        })
        .collect()
}

/// NCHW with a symbolic batch, or N×C for a flat tensor.
fn expected_dims(shape: Shape) -> Vec<Option<i64>> {
    let mut dims = vec![None, Some(shape.c as i64)];
    if !shape.flat {
        dims.extend([Some(shape.h as i64), Some(shape.w as i64)]);
    }
    dims
}

fn floats(tensor: &pb::TensorProto) -> Vec<f32> {
    let raw = tensor.raw_data.as_deref().expect("raw data");
    raw.chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// The ONNX operator each graph op becomes (an activation's first operator).
fn onnx_op_type(op: &Op) -> Option<&'static str> {
    use cnnc::graph::{Activation, PoolKind};
    Some(match op {
        Op::Input { .. } => return None,
        Op::Conv(_) => "Conv",
        Op::ConvTranspose(_) => "ConvTranspose",
        Op::Dense(_) => "Gemm",
        Op::Pool(attrs) if attrs.kind == PoolKind::Max => "MaxPool",
        Op::Pool(_) => "AveragePool",
        Op::GlobalPool(PoolKind::Max) => "GlobalMaxPool",
        Op::GlobalPool(PoolKind::Avg) => "GlobalAveragePool",
        // AveragePool or MatMul: checked by `adaptive_pooling_matches_the_interpreter`.
        Op::AdaptiveAvgPool { .. } => return None,
        Op::Flatten => "Flatten",
        Op::BatchNorm { .. } => "BatchNormalization",
        Op::Dropout { .. } | Op::Identity => "Identity",
        Op::Activation(Activation::Relu) => "Relu",
        Op::Activation(Activation::Relu6) => "Clip",
        Op::Activation(Activation::Sigmoid | Activation::Swish) => "Sigmoid",
        Op::Activation(Activation::Tanh) => "Tanh",
        Op::Activation(Activation::Hardswish | Activation::Hardsigmoid) => "HardSigmoid",
        Op::Activation(Activation::LeakyRelu(_)) => "LeakyRelu",
        Op::Activation(Activation::Elu(_)) => "Elu",
        Op::Activation(Activation::Gelu) => "Div",
        Op::Activation(Activation::GeluTanh) => "Mul",
        Op::Softmax => "Softmax",
        Op::Add => "Add",
        Op::Mul => "Mul",
        Op::Concat => "Concat",
        Op::ChannelShuffle(_) => "Reshape",
        Op::Split(_) => "Slice",
        Op::Upsample(_) => "Resize",
        Op::Pad(_) => "Pad",
        Op::LayerNorm(_) => "ReduceMean",
        Op::PointwiseDense(_) => "Transpose",
        Op::Parameter(_) => "Identity",
        Op::PRelu(_) => "PRelu",
        Op::GroupNorm(_) => "Reshape",
        Op::Arithmetic(cnnc::graph::ArithmeticOp::Sub) => "Sub",
        Op::Arithmetic(cnnc::graph::ArithmeticOp::Div) => "Div",
        Op::Scalar(attrs) => {
            use cnnc::graph::ScalarOp;
            match attrs.op {
                ScalarOp::Add => "Add",
                ScalarOp::Sub | ScalarOp::SubFrom => "Sub",
                ScalarOp::Mul => "Mul",
                ScalarOp::Div | ScalarOp::DivInto => "Div",
            }
        }
    })
}

/// Holds the decoded model against the graph and the weights it was exported with.
fn check_model(graph: &Graph, weights: &Weights, model: &pb::ModelProto) {
    let what = &graph.name;
    assert_eq!(model.ir_version, Some(onnx::IR_VERSION), "{what}");
    let opsets: Vec<(&str, i64)> = model
        .opset_import
        .iter()
        .map(|o| (o.domain.as_deref().unwrap_or(""), o.version.unwrap_or(0)))
        .collect();
    assert_eq!(opsets, [("", 13)], "{what}: opset");
    let onnx_graph = model.graph.as_ref().expect("a graph");

    // Inputs and output: names and NCHW shapes.
    let inputs: Vec<(String, Vec<Option<i64>>)> = onnx_graph
        .input
        .iter()
        .map(|i| (i.name.clone().unwrap_or_default(), value_dims(i)))
        .collect();
    let expected_inputs: Vec<(String, Vec<Option<i64>>)> = graph
        .inputs
        .iter()
        .map(|&id| match &graph.nodes[id].op {
            Op::Input { name, .. } => (name.clone(), expected_dims(graph.shape(id))),
            other => panic!("{what}: input {id} is a {}", other.name()),
        })
        .collect();
    assert_eq!(inputs, expected_inputs, "{what}: inputs");
    // One graph output per network output (`return (a, b)`), in order.
    let outputs = graph.outputs();
    assert_eq!(onnx_graph.output.len(), outputs.len(), "{what}: outputs");
    for (info, &output) in onnx_graph.output.iter().zip(&outputs) {
        assert_eq!(
            value_dims(info),
            expected_dims(graph.shape(output)),
            "{what}: output shape"
        );
    }

    // Initializers: every weight, by its own name, with its shape and its numbers.
    let initializers: HashMap<&str, &pb::TensorProto> = onnx_graph
        .initializer
        .iter()
        .map(|t| (t.name.as_deref().unwrap_or(""), t))
        .collect();
    assert_eq!(
        initializers.len(),
        onnx_graph.initializer.len(),
        "{what}: initializer names are unique"
    );
    for (name, tensor) in weights.iter() {
        let found = initializers
            .get(name)
            .unwrap_or_else(|| panic!("{what}: no initializer `{name}`"));
        let dims: Vec<usize> = found.dims.iter().map(|&d| d as usize).collect();
        assert_eq!(dims, tensor.shape(), "{what}: `{name}` shape");
        assert_eq!(
            found.data_type,
            Some(pb::tensor_proto::DataType::Float as i32)
        );
        let values: Vec<f32> = tensor.iter().copied().collect();
        assert!(floats(found) == values, "{what}: `{name}` numbers differ");
    }

    // Wiring: each node reads graph inputs, initializers or the outputs of nodes before it,
    // and the graph output is produced.
    let mut available: HashSet<&str> = initializers.keys().copied().collect();
    available.extend(inputs.iter().map(|(name, _)| name.as_str()));
    for node in &onnx_graph.node {
        // An empty name is an optional input left out (`Resize`'s region of interest).
        for input in node.input.iter().filter(|i| !i.is_empty()) {
            assert!(
                available.contains(input.as_str()),
                "{what}: {:?} reads `{input}` before it exists",
                node.name
            );
        }
        for output in &node.output {
            assert!(
                available.insert(output),
                "{what}: `{output}` is written twice"
            );
        }
    }
    for output in &onnx_graph.output {
        let output_name = output.name.as_deref().unwrap_or("");
        assert!(
            available.contains(output_name),
            "{what}: no node writes output `{output_name}`"
        );
    }

    // Each layer became its operator: the counts per operator type agree (the second node of
    // a swish is a `Mul`, counted with the graph's own products).
    let mut expected_counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (id, node) in graph.nodes.iter() {
        if let Some(op_type) = onnx_op_type(&node.op) {
            *expected_counts.entry(op_type).or_default() += 1;
        }
        // The operators after an activation's first.
        let rest: &[&str] = match node.op {
            Op::Activation(cnnc::graph::Activation::Swish | cnnc::graph::Activation::Hardswish) => {
                &["Mul"]
            }
            Op::Activation(cnnc::graph::Activation::Gelu) => &["Erf", "Add", "Mul", "Mul"],
            Op::Activation(cnnc::graph::Activation::GeluTanh) => {
                &["Mul", "Mul", "Add", "Mul", "Tanh", "Mul", "Add", "Mul"]
            }
            Op::ChannelShuffle(_) => &["Transpose", "Reshape"],
            // Over axis 1 at opset 13; γ and β unsqueezed to [C, 1, 1] on an image.
            Op::LayerNorm(_) if graph.input_shape(id).flat => &[
                "Sub",
                "Mul",
                "ReduceMean",
                "Add",
                "Sqrt",
                "Div",
                "Mul",
                "Add",
            ],
            Op::LayerNorm(_) => &[
                "Unsqueeze",
                "Unsqueeze",
                "Sub",
                "Mul",
                "ReduceMean",
                "Add",
                "Sqrt",
                "Div",
                "Mul",
                "Add",
            ],
            // Channels last, the weight transposed, (`MatMul`), the bias, channels first.
            Op::PointwiseDense(attrs) if attrs.bias => &["Transpose", "Add", "Transpose"],
            Op::PointwiseDense(_) => &["Transpose", "Transpose"],
            Op::PRelu(_) if !graph.input_shape(id).flat => &["Unsqueeze"],
            // A size that is not whole factors: its `sizes` input built from the input's shape.
            Op::Upsample(a) if a.factors(graph.input_shape(id)).is_none() => {
                &["Shape", "Slice", "Concat"]
            }
            Op::GroupNorm(a) if !a.affine => &["InstanceNormalization", "Reshape"],
            Op::GroupNorm(_) if graph.input_shape(id).flat => {
                &["InstanceNormalization", "Reshape", "Mul", "Add"]
            }
            Op::GroupNorm(_) => &[
                "InstanceNormalization",
                "Reshape",
                "Unsqueeze",
                "Unsqueeze",
                "Mul",
                "Add",
            ],
            _ => &[],
        };
        for op_type in rest {
            *expected_counts.entry(op_type).or_default() += 1;
        }
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for node in &onnx_graph.node {
        let op_type = node.op_type.as_deref().unwrap_or("");
        if op_type != "MatMul" && !(op_type == "AveragePool" && is_adaptive(graph, node)) {
            *counts.entry(op_type).or_default() += 1;
        }
    }
    assert_eq!(counts, expected_counts, "{what}: operators");
}

/// Whether an `AveragePool` node stands for an adaptive pooling layer (named by its path).
fn is_adaptive(graph: &Graph, node: &pb::NodeProto) -> bool {
    let name = node.name.as_deref().unwrap_or("");
    graph
        .nodes
        .values()
        .any(|n| n.path == name && matches!(n.op, Op::AdaptiveAvgPool { .. }))
}

#[test]
fn every_example_exports() {
    let mut files: Vec<_> = std::fs::read_dir("examples")
        .expect("the examples folder")
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "cnn"))
        .collect();
    files.sort();
    let mut n_networks = 0;
    for path in files {
        let source = std::fs::read_to_string(&path).expect("the example");
        for graph in compile_all(&path.to_string_lossy(), &source) {
            let weights = common::weights_with_batch_norm_statistics(&graph, 1);
            check_model(&graph, &weights, &round_trip(&graph, &weights));
            n_networks += 1;
        }
    }
    assert!(n_networks >= 20, "only {n_networks} example networks");
}

/// A standard network as a stage of a small network (its layers and weight names, a smaller
/// input), as `tests/std_networks.rs` runs them.
fn check_reduced_std_network(file: &str, network: &str) {
    let size = if network == "alexnet" { 63 } else { 32 };
    let source = format!(
        "import \"{file}\"\nnetwork small(image: {size}x{size}x3) {{ image -> {network} }}\n"
    );
    let graphs = compile_all("tests/reduced_size.cnn", &source);
    let graph = &graphs[0];
    let weights = Weights::seeded(graph, 0).expect("seeded weights");
    check_model(graph, &weights, &round_trip(graph, &weights));
}

macro_rules! std_network_exports {
    ($($file:literal: $($network:ident)*;)*) => {
        $($(
            #[test]
            fn $network() {
                super::check_reduced_std_network($file, stringify!($network));
            }
        )*)*
    };
}

mod reduced_std_network_exports {
    std_network_exports! {
        "std/alexnet.cnn": alexnet;
        "std/vgg.cnn": vgg11 vgg13 vgg16 vgg19 vgg16_bn;
        "std/resnet.cnn": resnet18 resnet34 resnet50 resnet101 resnet152;
        "std/googlenet.cnn": googlenet;
        "std/mobilenet.cnn": mobilenet_v1 mobilenet_v2 mobilenet_v3_large mobilenet_v3_small;
        "std/shufflenet.cnn": shufflenet_v2_x1_0;
        "std/convnext.cnn": convnext_tiny;
        "std/efficientnet.cnn": efficientnet_b0 efficientnet_b1 efficientnet_b2 efficientnet_b3
            efficientnet_b4 efficientnet_b5 efficientnet_b6 efficientnet_b7;
    }
}

/// The activations of issue 11 become their ONNX operators with PyTorch's coefficients; GELU
/// (an opset-20 operator) is `x · (1 + Erf(x / √2)) · 0.5`.
#[test]
fn new_activations_export() {
    let graph = &compile_all(
        "activations.cnn",
        "network t(x: 4x4x3) { x -> hardsigmoid -> leaky_relu(slope: 0.2) -> elu(alpha: 0.5) -> gelu }",
    )[0];
    let weights = Weights::seeded(graph, 0).expect("no weights");
    let model = round_trip(graph, &weights);
    check_model(graph, &weights, &model);
    let onnx_graph = model.graph.as_ref().expect("a graph");
    let nodes: Vec<(&str, Vec<f32>)> = onnx_graph
        .node
        .iter()
        .map(|n| {
            let floats = n.attribute.iter().filter_map(|a| a.f).collect();
            (n.op_type.as_deref().unwrap_or(""), floats)
        })
        .collect();
    assert_eq!(
        nodes,
        [
            ("HardSigmoid", vec![1.0 / 6.0, 0.5]),
            ("LeakyRelu", vec![0.2]),
            ("Elu", vec![0.5]),
            ("Div", vec![]),
            ("Erf", vec![]),
            ("Add", vec![]),
            ("Mul", vec![]),
            ("Mul", vec![]),
        ]
    );
    let scalar = |name: &str| {
        let tensor = onnx_graph
            .initializer
            .iter()
            .find(|t| t.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no initializer `{name}`"));
        floats(tensor)
    };
    // Div(x, √2), Add(erf, 1), Mul(product, 0.5).
    let gelu = &onnx_graph.node[3..];
    assert_eq!(scalar(&gelu[0].input[1]), [std::f32::consts::SQRT_2]);
    assert_eq!(scalar(&gelu[2].input[1]), [1.0]);
    assert_eq!(scalar(&gelu[4].input[1]), [0.5]);
    assert_eq!(
        gelu[3].input[0], onnx_graph.node[2].output[0],
        "x · (1 + erf)"
    );

    // The tanh approximation: six Mul, two Add and a Tanh (counted by `check_model`).
    let graph = &compile_all(
        "gelu_tanh.cnn",
        "network t(x: 4x4x3) { x -> gelu(approximate: \"tanh\") }",
    )[0];
    check_model(graph, &weights, &round_trip(graph, &weights));
}

/// `conv_transpose` is one `ConvTranspose` whose attributes mean what PyTorch's arguments do:
/// `pads` in ONNX's order (top, left, bottom, right), `output_padding`, `group`, and the
/// weight `[in, out/groups, kh, kw]` under the layer's name (checked by `check_model`).
#[test]
fn conv_transpose_exports_its_attributes() {
    let graph = &compile_all(
        "conv_transpose.cnn",
        "network t(x: 5x4x6) { x -> conv_transpose(4, [3, 2], stride: [2, 3], pad: [1, 0, 2, 1], output_padding: [1, 0], dilation: [1, 2], groups: 2) }",
    )[0];
    let weights = Weights::seeded(graph, 0).expect("seeded weights");
    let model = round_trip(graph, &weights);
    check_model(graph, &weights, &model);
    let onnx_graph = model.graph.as_ref().expect("a graph");
    let [node] = onnx_graph.node.as_slice() else {
        panic!("one node, not {}", onnx_graph.node.len());
    };
    assert_eq!(node.op_type.as_deref(), Some("ConvTranspose"));
    assert_eq!(node.input[1], "conv_transpose.weight");
    assert_eq!(node.input[2], "conv_transpose.bias");
    let attributes: BTreeMap<&str, Vec<i64>> = node
        .attribute
        .iter()
        .map(|a| {
            let ints = if a.ints.is_empty() {
                a.i.into_iter().collect()
            } else {
                a.ints.clone()
            };
            (a.name.as_deref().unwrap_or(""), ints)
        })
        .collect();
    let expected: BTreeMap<&str, Vec<i64>> = [
        ("kernel_shape", vec![3, 2]),
        ("strides", vec![2, 3]),
        ("dilations", vec![1, 2]),
        ("pads", vec![1, 2, 0, 1]),
        ("output_padding", vec![1, 0]),
        ("group", vec![2]),
    ]
    .into_iter()
    .collect();
    assert_eq!(attributes, expected);
    // ONNX's output size, stride·(in − 1) + output_padding + (k − 1)·d + 1 − pads: 11 × 9.
    assert_eq!(
        value_dims(&onnx_graph.output[0]),
        [None, Some(4), Some(11), Some(9)]
    );
}

/// `channel_shuffle` is `Reshape → Transpose → Reshape` and `split` a `Slice` on the channel
/// axis; evaluated here with ndarray on the exported shapes, permutation and bounds, an NCHW
/// input gives the interpreter's output.
#[test]
fn channel_shuffle_and_split_match_the_interpreter() {
    let graph = &compile_all(
        "channels.cnn",
        "network t(x: 3x2x12) { x -> channel_shuffle(3) -> split(4, 2) }",
    )[0];
    let weights = Weights::seeded(graph, 0).expect("no weights");
    let model = round_trip(graph, &weights);
    check_model(graph, &weights, &model);
    let onnx_graph = model.graph.as_ref().expect("a graph");
    let int64s = |name: &str| -> Vec<i64> {
        let tensor = onnx_graph
            .initializer
            .iter()
            .find(|t| t.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no initializer `{name}`"));
        assert_eq!(
            tensor.data_type,
            Some(pb::tensor_proto::DataType::Int64 as i32)
        );
        let raw = tensor.raw_data.as_deref().unwrap_or_default();
        raw.chunks(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect()
    };
    let nodes = &onnx_graph.node;
    let op_types: Vec<&str> = nodes
        .iter()
        .map(|n| n.op_type.as_deref().unwrap_or(""))
        .collect();
    assert_eq!(op_types, ["Reshape", "Transpose", "Reshape", "Slice"]);
    let dims = |values: Vec<i64>, batch: usize| -> Vec<usize> {
        values
            .iter()
            .map(|&d| if d == 0 { batch } else { d as usize })
            .collect()
    };
    let perm: Vec<usize> = nodes[1].attribute[0]
        .ints
        .iter()
        .map(|&p| p as usize)
        .collect();

    let input = synthetic_input(graph.shape(graph.inputs[0]), 2, 7).expect("an input");
    let expected = cnnc::reference::run(graph, &weights, std::slice::from_ref(&input))
        .expect("the interpreter runs");
    // NHWC → NCHW, then the exported nodes.
    let nchw = input
        .clone()
        .permuted_axes(IxDyn(&[0, 3, 1, 2]))
        .as_standard_layout()
        .to_owned();
    let grouped = nchw
        .into_shape_with_order(IxDyn(&dims(int64s(&nodes[0].input[1]), 2)))
        .expect("the grouped shape");
    let transposed = grouped
        .permuted_axes(IxDyn(&perm))
        .as_standard_layout()
        .to_owned();
    let shuffled = transposed
        .into_shape_with_order(IxDyn(&dims(int64s(&nodes[2].input[1]), 2)))
        .expect("the whole shape");
    let (start, end, axes) = (
        int64s(&nodes[3].input[1]),
        int64s(&nodes[3].input[2]),
        int64s(&nodes[3].input[3]),
    );
    assert_eq!(axes, [1]);
    let sliced = shuffled.slice_axis(Axis(1), (start[0] as usize..end[0] as usize).into());
    let back = sliced.permuted_axes(IxDyn(&[0, 2, 3, 1]));
    assert_eq!(back.shape(), expected.shape());
    assert!(back.iter().zip(expected.iter()).all(|(a, b)| a == b));
}

/// `pad` and a conv's `pad_mode` are `Pad` nodes with ONNX's mode names (`edge` for
/// replicate) and pads in NCHW order, begins then ends; the conv after one has no padding.
#[test]
fn padding_modes_export_as_pad() {
    let graph = &compile_all(
        "pad.cnn",
        "network t(x: 5x4x2) { x -> conv(3, 3, pad: [1, 2], pad_mode: \"reflect\") -> pad([0, 1, 2, 3], mode: \"replicate\") -> pad(1) }",
    )[0];
    let weights = Weights::seeded(graph, 0).expect("seeded weights");
    let model = round_trip(graph, &weights);
    check_model(graph, &weights, &model);
    let onnx_graph = model.graph.as_ref().expect("a graph");
    let pads: Vec<(String, Vec<i64>)> = onnx_graph
        .node
        .iter()
        .filter(|node| node.op_type.as_deref() == Some("Pad"))
        .map(|node| {
            let mode = node
                .attribute
                .iter()
                .find(|a| a.name.as_deref() == Some("mode"))
                .and_then(|a| a.s.clone())
                .expect("a mode");
            let pads = onnx_graph
                .initializer
                .iter()
                .find(|t| t.name.as_deref() == Some(node.input[1].as_str()))
                .and_then(|t| t.raw_data.clone())
                .expect("the pads");
            let pads = pads
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap_or_default()))
                .collect();
            (String::from_utf8_lossy(&mode).into_owned(), pads)
        })
        .collect();
    assert_eq!(
        pads,
        [
            ("reflect".to_string(), vec![0, 0, 1, 2, 0, 0, 1, 2]),
            ("edge".to_string(), vec![0, 0, 0, 2, 0, 0, 1, 3]),
            ("constant".to_string(), vec![0, 0, 1, 1, 0, 0, 1, 1]),
        ]
    );
    let conv = onnx_graph
        .node
        .iter()
        .find(|node| node.op_type.as_deref() == Some("Conv"))
        .expect("the conv");
    let conv_pads = conv
        .attribute
        .iter()
        .find(|a| a.name.as_deref() == Some("pads"))
        .map(|a| a.ints.clone());
    assert!(
        conv_pads.is_none_or(|p| p.iter().all(|&v| v == 0)),
        "the conv reads the padded tensor"
    );
}

/// A size that is not a whole multiple of the input is a `Resize` with `sizes` (the batch and
/// channels from the input's `Shape`, the height and width as written) and no scales.
#[test]
fn upsample_to_any_size_exports_sizes() {
    let graph = &compile_all(
        "upsample_size.cnn",
        "network t(x: 5x3x2) { x -> upsample(size: [7, 8], mode: \"bilinear\") }",
    )[0];
    let weights = Weights::seeded(graph, 0).expect("no weights");
    let model = round_trip(graph, &weights);
    check_model(graph, &weights, &model);
    let onnx_graph = model.graph.as_ref().expect("a graph");
    let ops: Vec<&str> = onnx_graph
        .node
        .iter()
        .filter_map(|n| n.op_type.as_deref())
        .collect();
    assert_eq!(ops, ["Shape", "Slice", "Concat", "Resize"]);
    let resize = &onnx_graph.node[3];
    assert_eq!(
        resize.input[1..3],
        ["", ""],
        "no region of interest, no scales"
    );
    assert_eq!(resize.input[3], onnx_graph.node[2].output[0], "the sizes");
}

/// `upsample` is a `Resize` with scales `[1, 1, sh, sw]` and the coordinate rule that gives
/// PyTorch's sampling: `asymmetric` with `floor` for nearest, `pytorch_half_pixel` for bilinear
/// (which the ONNX specification defines as PyTorch's `align_corners=False`).
#[test]
fn upsample_exports_as_resize() {
    let graph = &compile_all(
        "upsample.cnn",
        "network t(x: 3x4x2) { x -> upsample(scale: [2, 3]) -> upsample(mode: \"bilinear\") }",
    )[0];
    let weights = Weights::seeded(graph, 0).expect("no weights");
    let model = round_trip(graph, &weights);
    check_model(graph, &weights, &model);
    let onnx_graph = model.graph.as_ref().expect("a graph");
    type Attributes = Vec<(String, String)>;
    let described: Vec<(Vec<f32>, Attributes)> = onnx_graph
        .node
        .iter()
        .map(|node| {
            assert_eq!(node.op_type.as_deref(), Some("Resize"));
            assert_eq!(node.input[1], "", "no region of interest");
            let scales = onnx_graph
                .initializer
                .iter()
                .find(|t| t.name.as_deref() == Some(node.input[2].as_str()))
                .map(floats)
                .expect("the scales");
            let attributes = node
                .attribute
                .iter()
                .map(|a| {
                    let value = String::from_utf8_lossy(a.s.as_deref().unwrap_or_default());
                    (a.name.clone().unwrap_or_default(), value.into_owned())
                })
                .collect();
            (scales, attributes)
        })
        .collect();
    let pairs = |items: &[(&str, &str)]| -> Vec<(String, String)> {
        items
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(
        described,
        [
            (
                vec![1.0, 1.0, 2.0, 3.0],
                pairs(&[
                    ("mode", "nearest"),
                    ("coordinate_transformation_mode", "asymmetric"),
                    ("nearest_mode", "floor"),
                ])
            ),
            (
                vec![1.0, 1.0, 2.0, 2.0],
                pairs(&[
                    ("mode", "linear"),
                    ("coordinate_transformation_mode", "pytorch_half_pixel"),
                ])
            ),
        ]
    );
}

/// Arithmetic with a number is the ONNX operator with a scalar initializer, on the side the
/// number was written.
#[test]
fn tensor_number_arithmetic_exports() {
    let graph = &compile_all(
        "scalar.cnn",
        "network t(x: 2x3x4) { return 1 - x / 2 * 3 + 0.5 }",
    )[0];
    let weights = Weights::seeded(graph, 0).expect("no weights");
    let model = round_trip(graph, &weights);
    check_model(graph, &weights, &model);
    let onnx_graph = model.graph.as_ref().expect("a graph");
    let number = |name: &str| {
        onnx_graph
            .initializer
            .iter()
            .find(|t| t.name.as_deref() == Some(name))
            .map(floats)
    };
    type Operand = Option<Vec<f32>>;
    let described: Vec<(&str, Operand, Operand)> = onnx_graph
        .node
        .iter()
        .map(|n| {
            (
                n.op_type.as_deref().unwrap_or(""),
                number(&n.input[0]),
                number(&n.input[1]),
            )
        })
        .collect();
    assert_eq!(
        described,
        [
            ("Div", None, Some(vec![2.0])),
            ("Mul", None, Some(vec![3.0])),
            ("Sub", Some(vec![1.0]), None),
            ("Add", None, Some(vec![0.5])),
        ]
    );
}

/// Tensor `-` and `/` are ONNX's `Sub` and `Div` with the operands in the order written; a
/// 1×1×C operand is N×C×1×1 in NCHW and broadcasts there as it does here.
#[test]
fn tensor_sub_and_div_export() {
    let graph = &compile_all(
        "arithmetic.cnn",
        "network t(x: 2x3x4) { let g = x -> global_avgpool\n return (g - x) / (x * x + 1) }",
    )[0];
    let weights = Weights::seeded(graph, 0).expect("no weights");
    let model = round_trip(graph, &weights);
    check_model(graph, &weights, &model);
    let nodes = &model.graph.as_ref().expect("a graph").node;
    let find = |op_type: &str| {
        nodes
            .iter()
            .find(|n| n.op_type.as_deref() == Some(op_type))
            .unwrap_or_else(|| panic!("no {op_type} node"))
    };
    let (pool, sub, add, div) = (
        find("GlobalAveragePool"),
        find("Sub"),
        find("Add"),
        find("Div"),
    );
    assert_eq!(sub.input, [pool.output[0].clone(), "x".to_string()]);
    assert_eq!(div.input, [sub.output[0].clone(), add.output[0].clone()]);
}

/// LeNet-5 takes one gray channel, so it is exported at its own size.
#[test]
fn lenet5_exports() {
    let source = std::fs::read_to_string("std/lenet.cnn").expect("the std file");
    let graph = &compile_all("std/lenet.cnn", &source)[0];
    let weights = Weights::seeded(graph, 0).expect("seeded weights");
    let model = round_trip(graph, &weights);
    check_model(graph, &weights, &model);
    insta::assert_snapshot!(describe(&model));
}

/// One line per node (`op_type name (inputs) -> outputs {attributes}`), then the inputs, the
/// output and the initializers with their shapes.
fn describe(model: &pb::ModelProto) -> String {
    let graph = model.graph.as_ref().expect("a graph");
    let mut lines = Vec::new();
    let show_dims = |dims: Vec<Option<i64>>| {
        let dims: Vec<String> = dims
            .iter()
            .map(|d| d.map_or("N".to_string(), |d| d.to_string()))
            .collect();
        dims.join("×")
    };
    for input in &graph.input {
        let name = input.name.as_deref().unwrap_or("");
        lines.push(format!("input {name}: {}", show_dims(value_dims(input))));
    }
    for node in &graph.node {
        let attributes: Vec<String> = node
            .attribute
            .iter()
            .map(|a| {
                let value = if !a.ints.is_empty() {
                    format!("{:?}", a.ints)
                } else if let Some(f) = a.f {
                    format!("{f:e}")
                } else {
                    format!("{}", a.i.unwrap_or_default())
                };
                format!("{}={value}", a.name.as_deref().unwrap_or(""))
            })
            .collect();
        lines.push(format!(
            "{} {} ({}) -> {} {{{}}}",
            node.op_type.as_deref().unwrap_or(""),
            node.name.as_deref().unwrap_or(""),
            node.input.join(", "),
            node.output.join(", "),
            attributes.join(", ")
        ));
    }
    for output in &graph.output {
        let name = output.name.as_deref().unwrap_or("");
        lines.push(format!("output {name}: {}", show_dims(value_dims(output))));
    }
    for tensor in &graph.initializer {
        let dims: Vec<String> = tensor.dims.iter().map(i64::to_string).collect();
        lines.push(format!(
            "initializer {}: {}",
            tensor.name.as_deref().unwrap_or(""),
            dims.join("×")
        ));
    }
    lines.join("\n")
}

/// Adaptive pooling whose grid does not divide the input (7×5 to 3×2: windows of unequal
/// size that overlap) is exported as `P_h · X · P_wᵀ`; evaluated here with ndarray on the
/// exported matrices, it gives the interpreter's output.
#[test]
fn adaptive_pooling_matches_the_interpreter() {
    let graph = &compile_all(
        "adaptive.cnn",
        "network adaptive(x: 7x5x2) { x -> pool: adaptive_avgpool([3, 2]) }",
    )[0];
    let weights = Weights::seeded(graph, 0).expect("no weights");
    let model = round_trip(graph, &weights);
    let onnx_graph = model.graph.as_ref().expect("a graph");
    let op_types: Vec<&str> = onnx_graph
        .node
        .iter()
        .map(|n| n.op_type.as_deref().unwrap_or(""))
        .collect();
    assert_eq!(op_types, ["MatMul", "MatMul"]);
    let matrix = |name: &str| {
        let tensor = onnx_graph
            .initializer
            .iter()
            .find(|t| t.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no initializer `{name}`"));
        let dims: Vec<usize> = tensor.dims.iter().map(|&d| d as usize).collect();
        Array2::from_shape_vec((dims[0], dims[1]), floats(tensor)).expect("a matrix")
    };
    // The second MatMul reads (rows, first MatMul's output); the first (x, columns).
    let rows = matrix(&onnx_graph.node[1].input[0]);
    let columns = matrix(&onnx_graph.node[0].input[1]);
    assert_eq!((rows.dim(), columns.dim()), ((3, 7), (5, 2)));

    let input = synthetic_input(graph.shape(graph.inputs[0]), 1, 5).expect("an input");
    let expected = cnnc::reference::run(graph, &weights, std::slice::from_ref(&input))
        .expect("the interpreter runs");
    for channel in 0..2 {
        let plane = input
            .index_axis(Axis(3), channel)
            .index_axis(Axis(0), 0)
            .to_owned()
            .into_dimensionality::<ndarray::Ix2>()
            .expect("H×W");
        let pooled = rows.dot(&plane).dot(&columns);
        let wanted = expected
            .index_axis(Axis(3), channel)
            .index_axis(Axis(0), 0)
            .to_owned();
        for ((y, x), &value) in pooled.indexed_iter() {
            let reference = wanted[IxDyn(&[y, x])];
            assert!(
                (value - reference).abs() <= 1e-6 * reference.abs().max(1.0),
                "channel {channel}, cell ({y}, {x}): {value} vs {reference}"
            );
        }
    }
}

/// A path that cannot be written is a diagnostic and exit code 1, with nothing on stdout.
#[test]
fn unwritable_path_is_a_diagnostic() {
    let out = common::cnnc(&[
        "export",
        "examples/lenet5.cnn",
        "--onnx",
        "no/such/folder/lenet5.onnx",
    ]);
    assert_eq!(out.code, 1, "{}", common::transcript(&out));
    assert!(out.stdout.is_empty());
    assert!(
        out.stderr
            .starts_with("error[export]: cannot write the ONNX file `no/such/folder/lenet5.onnx`"),
        "{}",
        out.stderr
    );
    insta::assert_snapshot!(out.stderr);
}

/// The CLI writes the model of the seeded weights `cnnc run` uses (seed 0 by default) and of
/// a weights file when given one.
#[test]
fn cli_exports_the_weights_run_uses() {
    let folder = std::env::temp_dir().join(format!("cnnc-export-{}", std::process::id()));
    std::fs::create_dir_all(&folder).expect("a temporary folder");
    let onnx_path = folder.join("lenet5.onnx");
    let weights_path = folder.join("lenet5.safetensors");
    let onnx_arg = onnx_path.to_string_lossy().to_string();
    let weights_arg = weights_path.to_string_lossy().to_string();

    let source = std::fs::read_to_string("examples/lenet5.cnn").expect("the example");
    let graph = &compile_all("examples/lenet5.cnn", &source)[0];
    let read_back = || {
        let bytes = std::fs::read(&onnx_path).expect("the file was written");
        pb::ModelProto::decode(bytes.as_slice()).expect("the file decodes")
    };

    let out = common::cnnc(&["export", "examples/lenet5.cnn", "--onnx", &onnx_arg]);
    assert_eq!(out.code, 0, "{}", common::transcript(&out));
    let seeded = Weights::seeded(graph, 0).expect("seeded weights");
    check_model(graph, &seeded, &read_back());

    // Weights from a file (seed 7), exported with a fixed batch.
    let mut trained = Weights::seeded(graph, 7).expect("seeded weights");
    let scaled = trained.get("fc1.weight").expect("fc1").mapv(|v| v * 3.0);
    trained.insert("fc1.weight", scaled);
    trained.save_safetensors(&weights_path).expect("saved");
    let out = common::cnnc(&[
        "export",
        "examples/lenet5.cnn",
        "--weights",
        &weights_arg,
        "--batch",
        "4",
        "--onnx",
        &onnx_arg,
    ]);
    assert_eq!(out.code, 0, "{}", common::transcript(&out));
    let model = read_back();
    let input = &model.graph.as_ref().expect("a graph").input[0];
    assert_eq!(value_dims(input), [Some(4), Some(1), Some(32), Some(32)]);
    let fc1 = model
        .graph
        .as_ref()
        .and_then(|g| {
            g.initializer
                .iter()
                .find(|t| t.name.as_deref() == Some("fc1.weight"))
        })
        .expect("fc1.weight");
    let expected: Vec<f32> = trained
        .get("fc1.weight")
        .expect("fc1")
        .iter()
        .copied()
        .collect();
    assert!(floats(fc1) == expected, "fc1.weight is the file's");
    let _ = std::fs::remove_dir_all(&folder);
}

/// `return (scores, features)` exports two graph outputs, in order, each written by the node
/// of its layer.
#[test]
fn several_outputs_export_as_graph_outputs() {
    let graph = compile_all(
        "two.cnn",
        "network t(x: 9x7x3) {
            let features = x -> stem: conv(4, 3, pad: 1) -> relu
            return (features -> global_avgpool -> flatten -> head: dense(3), features)
        }",
    )
    .remove(0);
    let weights = Weights::seeded(&graph, 0).expect("seeded");
    let model = round_trip(&graph, &weights);
    check_model(&graph, &weights, &model);
    let onnx_graph = model.graph.expect("a graph");
    let dims: Vec<_> = onnx_graph.output.iter().map(value_dims).collect();
    assert_eq!(
        dims,
        [vec![None, Some(3)], vec![None, Some(4), Some(9), Some(7)],]
    );
    let writer = |name: &str| {
        let node = onnx_graph
            .node
            .iter()
            .find(|n| n.output.iter().any(|o| o == name));
        node.map(|n| n.op_type.clone().unwrap_or_default())
    };
    let names: Vec<&str> = onnx_graph
        .output
        .iter()
        .map(|o| o.name.as_deref().unwrap_or(""))
        .collect();
    assert_eq!(writer(names[0]).as_deref(), Some("Gemm"));
    assert_eq!(writer(names[1]).as_deref(), Some("Relu"));
}

/// A dilated max pool is `MaxPool` with `dilations` (opset 10 and later); an undilated one
/// has no `dilations` attribute, as before.
#[test]
fn dilated_max_pool_exports_its_dilations() {
    let graph = &compile_all(
        "dilated.cnn",
        "network t(x: 11x9x2) { x -> maxpool(3, stride: 1, pad: 1, dilation: [2, 3]) -> maxpool(2) }",
    )[0];
    let weights = Weights::seeded(graph, 0).expect("no weights");
    let model = round_trip(graph, &weights);
    check_model(graph, &weights, &model);
    let onnx_graph = model.graph.as_ref().expect("a graph");
    let dilations: Vec<Option<Vec<i64>>> = onnx_graph
        .node
        .iter()
        .map(|node| {
            assert_eq!(node.op_type.as_deref(), Some("MaxPool"));
            node.attribute
                .iter()
                .find(|a| a.name.as_deref() == Some("dilations"))
                .map(|a| a.ints.clone())
        })
        .collect();
    assert_eq!(dilations, [Some(vec![2, 3]), None]);
}
