//! ONNX export: a network and its weights as a standard ONNX model (opset 13, float32, NCHW)
//! that other engines run.
//!
//! The model is the graph as expansion leaves it, before the optimizer, with the weights
//! `cnnc run` would use; running it in another engine (onnxruntime in `bench/compare.py`)
//! therefore checks cnnc's whole compile-and-JIT pipeline against an implementation that shares
//! none of its code.
//!
//! cnnc's tensors are NHWC inside, but everything a user sees is PyTorch's: weights are stored
//! `[out, in/groups, kh, kw]` and `[out, in]`, and `flatten` is channel-major. So once the
//! model's tensors are NCHW, every op maps onto ONNX operators directly and no weight is
//! transposed:
//!
//! | cnnc | ONNX |
//! |---|---|
//! | conv, dwconv | `Conv` (pads `[top, left, bottom, right]`, strides, dilations, group) |
//! | dense | `Gemm` with `transB = 1` (PyTorch's `[out, in]` weight) |
//! | maxpool, avgpool | `MaxPool`, `AveragePool` (`ceil_mode`, `count_include_pad`) |
//! | global pools | `GlobalAveragePool`, `GlobalMaxPool` |
//! | adaptive_avgpool | `AveragePool` when the grid divides the input; otherwise two `MatMul`s with constant averaging matrices (`P_h · X · P_wᵀ`), which is what adaptive pooling is |
//! | flatten | `Flatten` (axis 1) |
//! | batchnorm | `BatchNormalization` (inference form, running statistics) |
//! | relu, relu6, sigmoid, tanh | `Relu`, `Clip(0, 6)`, `Sigmoid`, `Tanh` |
//! | swish | `Sigmoid` then `Mul` (x · sigmoid(x)) |
//! | softmax | `Softmax` (axis 1: the channels) |
//! | `+`, `*`, concat | `Add`, `Mul` (broadcasting the 1×1×C gates of squeeze-and-excitation), `Concat` (axis 1) |
//! | dropout, identity | `Identity` |
//!
//! The translation of each op is in `onnx_ops.rs`. Fused forms, which only the optimizer makes (a conv with an activation or a residual
//! input, a dense layer with an activation), are written back out as separate nodes, so an
//! optimized graph exports too.
//!
//! Names: initializers carry the weights' own names (`layer1.0.conv1.weight`), values the
//! layer paths (`layer1.0.conv1`), inputs the network's input names. The batch dimension is
//! symbolic (`N`) unless a fixed batch is asked for.

use super::onnx_proto as pb;
use crate::graph::{ConvAttrs, DenseAttrs, Graph, Literal, NodeId, Op, Shape};
use crate::runtime::{describe_layer, Dims, Weights};
use cranelift_entity::SecondaryMap;
use prost::Message;
use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The operator set the model declares: the first with `Softmax` over one axis and `Clip`
/// bounds as inputs, read by every current engine.
pub const OPSET_VERSION: i64 = 13;
/// The IR version that goes with opset 13.
pub const IR_VERSION: i64 = 7;
/// Protobuf messages are limited to 2 GiB; larger ONNX models keep their weights in external
/// files, which this exporter does not write.
const MAX_MODEL_BYTES: u64 = (1 << 31) - 1;
/// The symbolic batch dimension of the inputs and the output.
pub const BATCH_DIM: &str = "N";

/// `TensorProto.DataType.FLOAT`.
const FLOAT: i32 = pb::tensor_proto::DataType::Float as i32;

#[derive(Clone, Debug, Default)]
pub struct ExportOptions {
    /// A fixed batch size; `None` writes the symbolic dimension [`BATCH_DIM`].
    pub batch: Option<usize>,
}

#[derive(Debug, Error)]
pub enum ExportError {
    #[error("the weights have no tensor `{name}`, which {layer} needs ({expected})")]
    MissingWeight {
        name: String,
        expected: Dims,
        layer: String,
        node: NodeId,
    },
    #[error("tensor `{name}` has shape {found} but {layer} needs {expected}")]
    WeightShape {
        name: String,
        found: Dims,
        expected: Dims,
        layer: String,
        node: NodeId,
    },
    #[error("the ONNX model of network `{network}` would hold {bytes} bytes of weights, more than the 2 GiB a protobuf file can hold")]
    TooLarge { network: String, bytes: u64 },
    #[error("the graph is malformed: {0}")]
    Malformed(String),
    #[error("cannot write the ONNX file `{}`: {source}", path.display())]
    Unwritable { path: PathBuf, source: io::Error },
}

impl ExportError {
    /// The layer the problem is about, if it is about one.
    pub fn node(&self) -> Option<NodeId> {
        match self {
            ExportError::MissingWeight { node, .. } | ExportError::WeightShape { node, .. } => {
                Some(*node)
            }
            _ => None,
        }
    }
}

/// The ONNX model of `graph` with `weights` (checked against the graph as they are read).
pub fn export(
    graph: &Graph,
    weights: &Weights,
    options: &ExportOptions,
) -> Result<pb::ModelProto, ExportError> {
    let mut builder = Builder::new(graph, weights, options);
    for id in graph.nodes.keys() {
        builder.node(id)?;
    }
    if builder.weight_bytes > MAX_MODEL_BYTES {
        return Err(ExportError::TooLarge {
            network: graph.name.clone(),
            bytes: builder.weight_bytes,
        });
    }
    // A network with several outputs (`return (a, b)`) has one graph output each, in order.
    let mut output_infos = Vec::new();
    for output in graph.outputs() {
        let output_value = match graph.nodes.get(output) {
            // A graph output must be produced by a node, so a network that returns its input
            // gets an `Identity`.
            Some(node) if matches!(node.op, Op::Input { .. }) => {
                let input = builder.values[output].clone();
                builder.emit("Identity", "output", vec![input], Vec::new())
            }
            Some(_) => builder.values[output].clone(),
            None => {
                return Err(ExportError::Malformed(format!(
                    "its output {output} is not a node"
                )))
            }
        };
        output_infos.push(builder.value_info(&output_value, graph.shape(output)));
    }
    let Builder {
        nodes,
        initializers,
        inputs,
        ..
    } = builder;
    let graph_proto = pb::GraphProto {
        name: Some(graph.name.clone()),
        node: nodes,
        initializer: initializers,
        input: inputs,
        output: output_infos,
        ..Default::default()
    };
    Ok(pb::ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![pb::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(OPSET_VERSION),
        }],
        producer_name: Some("cnnc".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        doc_string: Some(format!(
            "network `{}` exported by cnnc: float32, NCHW, weights in PyTorch's layout",
            graph.name
        )),
        graph: Some(graph_proto),
        ..Default::default()
    })
}

/// Writes `model` to `path`; returns the file's size in bytes.
pub fn save(path: &Path, model: &pb::ModelProto) -> Result<usize, ExportError> {
    let bytes = model.encode_to_vec();
    std::fs::write(path, &bytes).map_err(|source| ExportError::Unwritable {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(bytes.len())
}

/// The model under construction: nodes and initializers in order, and the name of the value
/// each graph node produced.
pub(super) struct Builder<'a> {
    pub(super) graph: &'a Graph,
    pub(super) weights: &'a Weights,
    pub(super) batch: Option<usize>,
    pub(super) nodes: Vec<pb::NodeProto>,
    pub(super) initializers: Vec<pb::TensorProto>,
    pub(super) inputs: Vec<pb::ValueInfoProto>,
    /// Every value and initializer name given out, so that each is unique.
    pub(super) taken: HashSet<String>,
    pub(super) values: SecondaryMap<NodeId, String>,
    pub(super) weight_bytes: u64,
    /// The `Clip` bounds of relu6, made once and shared.
    pub(super) relu6_bounds: Option<[String; 2]>,
}

impl<'a> Builder<'a> {
    fn new(graph: &'a Graph, weights: &'a Weights, options: &ExportOptions) -> Builder<'a> {
        // Weight names are reserved first, so that no value takes a name an initializer needs
        // (a layer labelled `fc.weight` would otherwise collide with layer `fc`'s weight).
        let mut taken: HashSet<String> = graph
            .named_params()
            .into_iter()
            .map(|(name, _, _)| name)
            .collect();
        for (id, node) in graph.nodes.iter() {
            if let Op::Conv(ConvAttrs { weights, .. }) | Op::Dense(DenseAttrs { weights, .. }) =
                &node.op
            {
                if weights.is_some() {
                    taken.insert(graph.tensor_name(id, "weight"));
                    taken.insert(graph.tensor_name(id, "bias"));
                }
            }
        }
        Builder {
            graph,
            weights,
            batch: options.batch,
            nodes: Vec::new(),
            initializers: Vec::new(),
            inputs: Vec::new(),
            taken,
            values: SecondaryMap::new(),
            weight_bytes: 0,
            relu6_bounds: None,
        }
    }

    /// `base`, or `base_1`, `base_2`, ... if it is taken.
    pub(super) fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut suffix = 0;
        while self.taken.contains(&name) {
            suffix += 1;
            name = format!("{base}_{suffix}");
        }
        self.taken.insert(name.clone());
        name
    }

    /// Adds one ONNX node with one output, named after `base`; returns the output's name.
    pub(super) fn emit(
        &mut self,
        op_type: &str,
        base: &str,
        inputs: Vec<String>,
        attribute: Vec<pb::AttributeProto>,
    ) -> String {
        let output = self.fresh(base);
        self.nodes.push(pb::NodeProto {
            input: inputs,
            output: vec![output.clone()],
            name: Some(output.clone()),
            op_type: Some(op_type.to_string()),
            attribute,
            ..Default::default()
        });
        output
    }

    /// An NCHW (or N×C, for a flat tensor) float value of one image's shape `shape`.
    pub(super) fn value_info(&self, name: &str, shape: Shape) -> pb::ValueInfoProto {
        use pb::tensor_shape_proto::{dimension::Value, Dimension};
        let batch = match self.batch {
            Some(n) => Value::DimValue(n as i64),
            None => Value::DimParam(BATCH_DIM.into()),
        };
        let per_image = if shape.flat {
            vec![shape.c]
        } else {
            vec![shape.c, shape.h, shape.w]
        };
        let mut dim = vec![Dimension {
            value: Some(batch),
            ..Default::default()
        }];
        dim.extend(per_image.into_iter().map(|d| Dimension {
            value: Some(Value::DimValue(d as i64)),
            ..Default::default()
        }));
        pb::ValueInfoProto {
            name: Some(name.to_string()),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: Some(FLOAT),
                    shape: Some(pb::TensorShapeProto { dim }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Adds a float initializer; its name must already be unique.
    pub(super) fn initializer(
        &mut self,
        name: String,
        dims: &[usize],
        values: impl Iterator<Item = f32>,
    ) {
        let raw: Vec<u8> = values.flat_map(f32::to_le_bytes).collect();
        self.weight_bytes += raw.len() as u64;
        self.initializers.push(pb::TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(FLOAT),
            name: Some(name),
            raw_data: Some(raw),
            ..Default::default()
        });
    }

    /// Adds an int64 initializer (shapes, slice bounds); returns its name, made unique.
    pub(super) fn int64_initializer(&mut self, base: &str, values: &[i64]) -> String {
        let name = self.fresh(base);
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializers.push(pb::TensorProto {
            dims: vec![values.len() as i64],
            data_type: Some(pb::tensor_proto::DataType::Int64 as i32),
            name: Some(name.clone()),
            raw_data: Some(raw),
            ..Default::default()
        });
        name
    }

    /// A layer's tensor as an initializer, from the literal the layer carries or from the
    /// weights, checked against the shape the layer needs; returns its name.
    pub(super) fn weight(
        &mut self,
        id: NodeId,
        suffix: &str,
        expected: &[usize],
        literal: Option<&Literal>,
    ) -> Result<String, ExportError> {
        let name = self.graph.tensor_name(id, suffix);
        let numel: usize = expected.iter().product();
        let wrong_shape = |found: &[usize]| ExportError::WeightShape {
            name: name.clone(),
            found: Dims::of(found),
            expected: Dims::of(expected),
            layer: describe_layer(self.graph, id),
            node: id,
        };
        let weights = self.weights;
        let values: Box<dyn Iterator<Item = f32>> = match literal {
            // A literal may leave out leading dimensions of size 1, so its values in
            // row-major order are exactly the full tensor's when the counts agree.
            Some(literal) if literal.values.len() == numel => {
                Box::new(literal.values.iter().copied())
            }
            Some(literal) => return Err(wrong_shape(&literal.shape)),
            None => match weights.get(&name) {
                Some(array) if array.shape() == expected => Box::new(array.iter().copied()),
                Some(array) => return Err(wrong_shape(array.shape())),
                None => {
                    return Err(ExportError::MissingWeight {
                        name: name.clone(),
                        expected: Dims::of(expected),
                        layer: describe_layer(self.graph, id),
                        node: id,
                    })
                }
            },
        };
        self.initializer(name.clone(), expected, values);
        Ok(name)
    }
}
