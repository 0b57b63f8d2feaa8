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
//! Fused forms, which only the optimizer makes (a conv with an activation or a residual
//! input, a dense layer with an activation), are written back out as separate nodes, so an
//! optimized graph exports too.
//!
//! Names: initializers carry the weights' own names (`layer1.0.conv1.weight`), values the
//! layer paths (`layer1.0.conv1`), inputs the network's input names. The batch dimension is
//! symbolic (`N`) unless a fixed batch is asked for.

use super::onnx_proto as pb;
use crate::graph::{
    Activation, ConvAttrs, DenseAttrs, Graph, Literal, NodeId, Op, PoolAttrs, PoolKind, Shape,
};
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
    let output = graph.output();
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
    let output_info = builder.value_info(&output_value, graph.shape(output));
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
        output: vec![output_info],
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
struct Builder<'a> {
    graph: &'a Graph,
    weights: &'a Weights,
    batch: Option<usize>,
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
    inputs: Vec<pb::ValueInfoProto>,
    /// Every value and initializer name given out, so that each is unique.
    taken: HashSet<String>,
    values: SecondaryMap<NodeId, String>,
    weight_bytes: u64,
    /// The `Clip` bounds of relu6, made once and shared.
    relu6_bounds: Option<[String; 2]>,
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
    fn fresh(&mut self, base: &str) -> String {
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
    fn emit(
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
    fn value_info(&self, name: &str, shape: Shape) -> pb::ValueInfoProto {
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
    fn initializer(&mut self, name: String, dims: &[usize], values: impl Iterator<Item = f32>) {
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

    /// A layer's tensor as an initializer, from the literal the layer carries or from the
    /// weights, checked against the shape the layer needs; returns its name.
    fn weight(
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

    /// Translates graph node `id`, recording the name of the value it produces.
    fn node(&mut self, id: NodeId) -> Result<(), ExportError> {
        let graph = self.graph;
        let node = &graph.nodes[id];
        let mut args = Vec::with_capacity(node.inputs.len());
        for &input in &node.inputs {
            match self.values.get(input) {
                Some(name) if !name.is_empty() => args.push(name.clone()),
                _ => {
                    return Err(ExportError::Malformed(format!(
                        "{id} reads {input}, which does not come before it"
                    )))
                }
            }
        }
        let arity = |n: usize| {
            if args.len() >= n {
                Ok(())
            } else {
                Err(ExportError::Malformed(format!(
                    "{id} ({}) has {} inputs, not {n}",
                    node.op.name(),
                    args.len()
                )))
            }
        };
        let base = if node.path.is_empty() {
            format!("{}_{id}", node.op.name())
        } else {
            node.path.clone()
        };
        let input_shape = graph.input_shape(id);
        let output = match &node.op {
            Op::Input { name, .. } => {
                let value = self.fresh(name);
                let info = self.value_info(&value, graph.shape(id));
                self.inputs.push(info);
                value
            }
            Op::Conv(attrs) => {
                arity(if attrs.residual { 2 } else { 1 })?;
                self.conv(id, attrs, input_shape, &args, &base)?
            }
            Op::Dense(attrs) => {
                arity(1)?;
                self.dense(id, attrs, input_shape, &args[0], &base)?
            }
            Op::Pool(attrs) => {
                arity(1)?;
                self.emit(
                    pool_op_type(attrs.kind),
                    &base,
                    vec![args[0].clone()],
                    pool_attributes(attrs),
                )
            }
            Op::GlobalPool(kind) => {
                arity(1)?;
                let op_type = match kind {
                    PoolKind::Max => "GlobalMaxPool",
                    PoolKind::Avg => "GlobalAveragePool",
                };
                self.emit(op_type, &base, vec![args[0].clone()], Vec::new())
            }
            Op::AdaptiveAvgPool { out } => {
                arity(1)?;
                self.adaptive_avg_pool(&args[0], input_shape, *out, &base)
            }
            Op::Flatten => {
                arity(1)?;
                let attributes = vec![int("axis", 1)];
                self.emit("Flatten", &base, vec![args[0].clone()], attributes)
            }
            Op::BatchNorm { eps } => {
                arity(1)?;
                let channels = [input_shape.c];
                let mut inputs = vec![args[0].clone()];
                for suffix in ["weight", "bias", "running_mean", "running_var"] {
                    inputs.push(self.weight(id, suffix, &channels, None)?);
                }
                let attributes = vec![float("epsilon", *eps as f32)];
                self.emit("BatchNormalization", &base, inputs, attributes)
            }
            Op::Dropout { .. } | Op::Identity => {
                arity(1)?;
                self.emit("Identity", &base, vec![args[0].clone()], Vec::new())
            }
            Op::Activation(activation) => {
                arity(1)?;
                self.activation(*activation, &args[0], &base)
            }
            Op::Softmax => {
                arity(1)?;
                let attributes = vec![int("axis", 1)];
                self.emit("Softmax", &base, vec![args[0].clone()], attributes)
            }
            Op::Add | Op::Mul => {
                arity(2)?;
                let op_type = if node.op == Op::Add { "Add" } else { "Mul" };
                self.emit(op_type, &base, args[..2].to_vec(), Vec::new())
            }
            Op::Concat => {
                arity(1)?;
                let attributes = vec![int("axis", 1)];
                self.emit("Concat", &base, args, attributes)
            }
        };
        self.values[id] = output;
        Ok(())
    }

    /// `Conv`, then the residual `Add` and the activation the optimizer may have fused into it.
    fn conv(
        &mut self,
        id: NodeId,
        attrs: &ConvAttrs,
        input_shape: Shape,
        args: &[String],
        base: &str,
    ) -> Result<String, ExportError> {
        let groups = attrs.groups.max(1);
        let weight_shape = [
            attrs.filters,
            input_shape.c / groups,
            attrs.kernel[0],
            attrs.kernel[1],
        ];
        let mut inputs = vec![args[0].clone()];
        inputs.push(self.weight(id, "weight", &weight_shape, attrs.weights.as_ref())?);
        if attrs.bias || attrs.bias_values.is_some() {
            inputs.push(self.weight(id, "bias", &[attrs.filters], attrs.bias_values.as_ref())?);
        }
        let pad = attrs.pad;
        let attributes = vec![
            ints("kernel_shape", &attrs.kernel),
            ints("strides", &attrs.stride),
            ints("dilations", &attrs.dilation),
            ints("pads", &[pad.top, pad.left, pad.bottom, pad.right]),
            int("group", groups as i64),
        ];
        let residual = attrs.residual.then(|| args[1].clone());
        let conv_name = if residual.is_some() || attrs.activation.is_some() {
            format!("{base}/conv")
        } else {
            base.to_string()
        };
        let mut value = self.emit("Conv", &conv_name, inputs, attributes);
        if let Some(skip) = residual {
            let add_name = if attrs.activation.is_some() {
                format!("{base}/add")
            } else {
                base.to_string()
            };
            value = self.emit("Add", &add_name, vec![value, skip], Vec::new());
        }
        Ok(match attrs.activation {
            Some(activation) => self.activation(activation, &value, base),
            None => value,
        })
    }

    /// `Gemm` with PyTorch's `[out, in]` weight (`transB = 1`), then a fused activation.
    fn dense(
        &mut self,
        id: NodeId,
        attrs: &DenseAttrs,
        input_shape: Shape,
        input: &str,
        base: &str,
    ) -> Result<String, ExportError> {
        let weight_shape = [attrs.units, input_shape.c];
        let mut inputs = vec![input.to_string()];
        inputs.push(self.weight(id, "weight", &weight_shape, attrs.weights.as_ref())?);
        if attrs.bias || attrs.bias_values.is_some() {
            inputs.push(self.weight(id, "bias", &[attrs.units], attrs.bias_values.as_ref())?);
        }
        let gemm_name = match attrs.activation {
            Some(_) => format!("{base}/gemm"),
            None => base.to_string(),
        };
        let value = self.emit("Gemm", &gemm_name, inputs, vec![int("transB", 1)]);
        Ok(match attrs.activation {
            Some(activation) => self.activation(activation, &value, base),
            None => value,
        })
    }

    fn activation(&mut self, activation: Activation, input: &str, base: &str) -> String {
        let x = input.to_string();
        match activation {
            Activation::Relu => self.emit("Relu", base, vec![x], Vec::new()),
            Activation::Sigmoid => self.emit("Sigmoid", base, vec![x], Vec::new()),
            Activation::Tanh => self.emit("Tanh", base, vec![x], Vec::new()),
            Activation::Relu6 => {
                let [low, high] = self.relu6_bounds();
                self.emit("Clip", base, vec![x, low, high], Vec::new())
            }
            Activation::Swish => {
                let gate = self.emit(
                    "Sigmoid",
                    &format!("{base}/sigmoid"),
                    vec![x.clone()],
                    Vec::new(),
                );
                self.emit("Mul", base, vec![x, gate], Vec::new())
            }
        }
    }

    /// The scalar initializers 0 and 6 that every relu6's `Clip` shares.
    fn relu6_bounds(&mut self) -> [String; 2] {
        if let Some(bounds) = &self.relu6_bounds {
            return bounds.clone();
        }
        let low = self.fresh("relu6.min");
        let high = self.fresh("relu6.max");
        self.initializer(low.clone(), &[], std::iter::once(0.0));
        self.initializer(high.clone(), &[], std::iter::once(6.0));
        let bounds = [low, high];
        self.relu6_bounds = Some(bounds.clone());
        bounds
    }

    /// PyTorch's `AdaptiveAvgPool2d`. When the grid divides the input, every window has the
    /// same size and stride, which is an `AveragePool`. Otherwise the windows overlap or
    /// differ in size; the pooling is still linear and separable, `Y = P_h · X · P_wᵀ` per
    /// channel, where row `i` of `P` averages input cells `floor(i·n/out) .. ceil((i+1)·n/out)`,
    /// so it is two `MatMul`s with constant matrices.
    fn adaptive_avg_pool(
        &mut self,
        input: &str,
        input_shape: Shape,
        out: [usize; 2],
        base: &str,
    ) -> String {
        let [out_h, out_w] = out;
        let (h, w) = (input_shape.h, input_shape.w);
        if out_h > 0 && out_w > 0 && h % out_h == 0 && w % out_w == 0 {
            let kernel = [h / out_h, w / out_w];
            let attributes = vec![ints("kernel_shape", &kernel), ints("strides", &kernel)];
            return self.emit("AveragePool", base, vec![input.to_string()], attributes);
        }
        // [W, out_w]: X [N, C, H, W] · P_wᵀ gives [N, C, H, out_w].
        let columns_name = self.fresh(&format!("{base}.columns"));
        let columns = averaging_matrix(w, out_w);
        let transposed = (0..w).flat_map(|x| {
            let columns = &columns;
            (0..out_w).map(move |j| columns[j * w + x])
        });
        let transposed: Vec<f32> = transposed.collect();
        self.initializer(columns_name.clone(), &[w, out_w], transposed.into_iter());
        // [out_h, H]: P_h · [N, C, H, out_w] broadcasts to [N, C, out_h, out_w].
        let rows_name = self.fresh(&format!("{base}.rows"));
        self.initializer(
            rows_name.clone(),
            &[out_h, h],
            averaging_matrix(h, out_h).into_iter(),
        );
        let pooled_columns = self.emit(
            "MatMul",
            &format!("{base}/columns"),
            vec![input.to_string(), columns_name],
            Vec::new(),
        );
        self.emit("MatMul", base, vec![rows_name, pooled_columns], Vec::new())
    }
}

/// `[out, n]`, row-major: row `i` averages cells `floor(i·n/out) .. ceil((i+1)·n/out)`, the
/// windows of PyTorch's adaptive pooling along one axis.
fn averaging_matrix(n: usize, out: usize) -> Vec<f32> {
    let mut matrix = vec![0.0f32; out * n];
    for i in 0..out {
        let start = i * n / out;
        let end = ((i + 1) * n).div_ceil(out);
        let weight = 1.0 / (end - start).max(1) as f32;
        for cell in start..end {
            matrix[i * n + cell] = weight;
        }
    }
    matrix
}

fn pool_op_type(kind: PoolKind) -> &'static str {
    match kind {
        PoolKind::Max => "MaxPool",
        PoolKind::Avg => "AveragePool",
    }
}

fn pool_attributes(attrs: &PoolAttrs) -> Vec<pb::AttributeProto> {
    let pad = attrs.pad;
    let mut attributes = vec![
        ints("kernel_shape", &attrs.kernel),
        ints("strides", &attrs.stride),
        ints("pads", &[pad.top, pad.left, pad.bottom, pad.right]),
        int("ceil_mode", attrs.ceil_mode as i64),
    ];
    if attrs.kind == PoolKind::Avg {
        attributes.push(int("count_include_pad", attrs.count_include_pad as i64));
    }
    attributes
}

fn int(name: &str, value: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: Some(name.into()),
        r#type: Some(pb::attribute_proto::AttributeType::Int as i32),
        i: Some(value),
        ..Default::default()
    }
}

fn ints(name: &str, values: &[usize]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: Some(name.into()),
        r#type: Some(pb::attribute_proto::AttributeType::Ints as i32),
        ints: values.iter().map(|&v| v as i64).collect(),
        ..Default::default()
    }
}

fn float(name: &str, value: f32) -> pb::AttributeProto {
    pb::AttributeProto {
        name: Some(name.into()),
        r#type: Some(pb::attribute_proto::AttributeType::Float as i32),
        f: Some(value),
        ..Default::default()
    }
}
