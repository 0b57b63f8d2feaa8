//! The reference interpreter: runs a [`Graph`] on ndarray tensors with the plainest loops
//! that compute each op's definition. It is the oracle the JIT and every graph rewrite are
//! checked against, so it is written to be obviously right, not fast.
//!
//! Conventions:
//! - Inside, every value is an N×H×W×C `Array4<f32>`; a flat vector of `c` features is
//!   N×1×1×C, which makes `flatten` of a 1×1×C tensor the identity, as in PyTorch.
//! - Inputs are given N×H×W×C (a flat input may also be given N×C); all share one batch N ≥ 1.
//! - The result is N×H×W×C for a spatial output and N×C for a flat one.
//! - Convolution and dense sums accumulate in f64, so the oracle's own rounding error is far
//!   below the tolerance the JIT is held to.
//! - Weights are looked up by their full PyTorch name (`layer1.0.conv1.weight`) in
//!   [`Weights`], or taken from the literal values a layer carries.
//!
//! The ops live in three files: `conv.rs` (conv, dense), `pool.rs` (every pooling), and
//! `elementwise.rs` (everything that maps values without a window).

mod conv;
mod elementwise;
mod pool;

use crate::graph::{ConvAttrs, DenseAttrs, Graph, Literal, NodeId, Op, Shape};
use crate::runtime::{describe_layer, Dims, Weights, MAX_ELEMENTS};
use cranelift_entity::{EntityRef, SecondaryMap};
use ndarray::{Array4, ArrayD, CowArray, IxDyn};
use thiserror::Error;

/// One value of the interpreter: N×H×W×C.
type Tensor = Array4<f32>;

#[derive(Debug, Error)]
pub enum RunError {
    #[error("network `{network}` takes {expected} input tensor(s), but {found} were given")]
    InputCount {
        network: String,
        expected: usize,
        found: usize,
    },
    #[error("input `{input}` must be {expected}, but the tensor given is {found}")]
    InputShape {
        input: String,
        expected: String,
        found: Dims,
    },
    #[error("input `{input}` has a batch of {batch}, but the first input has {first}")]
    BatchMismatch {
        input: String,
        batch: usize,
        first: usize,
    },
    #[error("the batch is empty: give at least one image")]
    EmptyBatch,
    #[error("the output of {layer} for a batch of {batch} ({batch} × {shape}) has more than cnnc's limit of 2^31 elements")]
    TooLarge {
        layer: String,
        batch: usize,
        shape: Shape,
        node: NodeId,
    },
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
    #[error("the graph is malformed: {0}")]
    Malformed(String),
}

impl RunError {
    /// The layer the error is about, if it is about one.
    pub fn node(&self) -> Option<NodeId> {
        match self {
            RunError::TooLarge { node, .. }
            | RunError::MissingWeight { node, .. }
            | RunError::WeightShape { node, .. } => Some(*node),
            _ => None,
        }
    }
}

/// Runs `graph` on `inputs` (one tensor per network input, in declaration order) and returns
/// the output tensor: N×H×W×C, or N×C when the output is a flat vector.
pub fn run(
    graph: &Graph,
    weights: &Weights,
    inputs: &[ArrayD<f32>],
) -> Result<ArrayD<f32>, RunError> {
    if graph.nodes.is_empty() {
        return Err(RunError::Malformed("it has no nodes".into()));
    }
    let batch = check_inputs(graph, inputs)?;
    for (id, shape) in graph.shapes.iter() {
        if (shape.numel() as u64).saturating_mul(batch as u64) > MAX_ELEMENTS {
            return Err(RunError::TooLarge {
                layer: describe_layer(graph, id),
                batch,
                shape: *shape,
                node: id,
            });
        }
    }

    // How many later nodes still read each value, so a value is dropped after its last use
    // and a deep network's memory stays near its widest point rather than its total.
    let output = graph.output();
    let mut remaining_uses: SecondaryMap<NodeId, usize> = SecondaryMap::new();
    for node in graph.nodes.values() {
        for &input in &node.inputs {
            remaining_uses[input] += 1;
        }
    }
    let mut values: SecondaryMap<NodeId, Option<Tensor>> = SecondaryMap::new();
    for (id, node) in graph.nodes.iter() {
        let mut args = Vec::with_capacity(node.inputs.len());
        for &input in &node.inputs {
            if input.index() >= id.index() {
                return Err(RunError::Malformed(format!(
                    "{id} reads {input}, which comes after it"
                )));
            }
            let value = values[input].as_ref().ok_or_else(|| {
                RunError::Malformed(format!("{id} reads {input} after its last use"))
            })?;
            args.push(value);
        }
        let result = eval(graph, weights, id, &args, inputs, batch)?;
        for &input in &node.inputs {
            remaining_uses[input] -= 1;
            if remaining_uses[input] == 0 && input != output {
                values[input] = None;
            }
        }
        values[id] = Some(result);
    }

    let result = values[output]
        .take()
        .ok_or_else(|| RunError::Malformed(format!("its output {output} is not a node")))?;
    let shape = graph.shape(output);
    if shape.flat {
        let n = result.shape()[0];
        let flat = result.into_shape_with_order(IxDyn(&[n, shape.c]));
        flat.map_err(|e| RunError::Malformed(e.to_string()))
    } else {
        Ok(result.into_dyn())
    }
}

/// Checks the inputs against the network's declared inputs; returns the batch size.
fn check_inputs(graph: &Graph, inputs: &[ArrayD<f32>]) -> Result<usize, RunError> {
    let specs: Vec<(String, Shape)> = graph
        .inputs
        .iter()
        .map(|&id| (input_name(graph, id), graph.shape(id)))
        .collect();
    check_batch(&graph.name, &specs, inputs)
}

/// Checks tensors against a network's inputs (name and shape each, in order): one tensor per
/// input, N×H×W×C (N×C for a flat input), every batch the same size. Returns the batch size.
/// Every engine runs this before touching the data.
pub fn check_batch(
    network: &str,
    specs: &[(String, Shape)],
    inputs: &[ArrayD<f32>],
) -> Result<usize, RunError> {
    if inputs.len() != specs.len() {
        return Err(RunError::InputCount {
            network: network.to_string(),
            expected: specs.len(),
            found: inputs.len(),
        });
    }
    let mut batch = None;
    for ((name, shape), tensor) in specs.iter().zip(inputs) {
        let (name, shape) = (name.clone(), *shape);
        let dims = tensor.shape();
        let fits = if shape.flat {
            matches!(dims, &[_, c] | &[_, 1, 1, c] if c == shape.c)
        } else {
            dims.len() == 4 && dims[1..] == [shape.h, shape.w, shape.c]
        };
        if !fits {
            let expected = if shape.flat {
                format!("N×{} (batch × features)", shape.c)
            } else {
                format!(
                    "N×{}×{}×{} (batch × height × width × channels)",
                    shape.h, shape.w, shape.c
                )
            };
            return Err(RunError::InputShape {
                input: name,
                expected,
                found: Dims::of(dims),
            });
        }
        let n = dims[0];
        match batch {
            None if n == 0 => return Err(RunError::EmptyBatch),
            None => batch = Some(n),
            Some(first) if first != n => {
                return Err(RunError::BatchMismatch {
                    input: name,
                    batch: n,
                    first,
                })
            }
            Some(_) => {}
        }
    }
    // A network without inputs computes one result.
    Ok(batch.unwrap_or(1))
}

fn input_name(graph: &Graph, id: NodeId) -> String {
    match &graph.nodes[id].op {
        Op::Input { name, .. } => name.clone(),
        _ => id.to_string(),
    }
}

/// A weight tensor of node `id`, from its literal values or from `weights`, checked against
/// the shape the layer needs.
fn tensor<'a>(
    graph: &Graph,
    weights: &'a Weights,
    id: NodeId,
    suffix: &str,
    expected: &[usize],
    literal: Option<&Literal>,
) -> Result<CowArray<'a, f32, IxDyn>, RunError> {
    let name = graph.tensor_name(id, suffix);
    let wrong_shape = |found: &[usize]| RunError::WeightShape {
        name: name.clone(),
        found: Dims::of(found),
        expected: Dims::of(expected),
        layer: describe_layer(graph, id),
        node: id,
    };
    if let Some(literal) = literal {
        // A literal may leave out leading dimensions of size 1 (inference checked that the
        // rest agree), so its values in row-major order are exactly the full tensor's.
        let array = ArrayD::from_shape_vec(IxDyn(expected), literal.values.clone())
            .map_err(|_| wrong_shape(&literal.shape))?;
        return Ok(CowArray::from(array));
    }
    let Some(array) = weights.get(&name) else {
        return Err(RunError::MissingWeight {
            name: name.clone(),
            expected: Dims::of(expected),
            layer: describe_layer(graph, id),
            node: id,
        });
    };
    if array.shape() != expected {
        return Err(wrong_shape(array.shape()));
    }
    Ok(CowArray::from(array.view()))
}

/// A conv's or dense layer's bias of `n` values, if it has one (learned or literal).
fn bias<'a>(
    graph: &Graph,
    weights: &'a Weights,
    id: NodeId,
    n: usize,
    learned: bool,
    literal: Option<&Literal>,
) -> Result<Option<CowArray<'a, f32, IxDyn>>, RunError> {
    if learned || literal.is_some() {
        tensor(graph, weights, id, "bias", &[n], literal).map(Some)
    } else {
        Ok(None)
    }
}

/// Computes node `id` from its arguments.
fn eval(
    graph: &Graph,
    weights: &Weights,
    id: NodeId,
    args: &[&Tensor],
    inputs: &[ArrayD<f32>],
    batch: usize,
) -> Result<Tensor, RunError> {
    let shape = graph.shape(id);
    let malformed =
        |what: &str| RunError::Malformed(format!("{id} ({}): {what}", graph.nodes[id].op.name()));
    let arg = |idx: usize| {
        args.get(idx)
            .copied()
            .ok_or_else(|| malformed("too few inputs"))
    };
    let value = match &graph.nodes[id].op {
        Op::Input { index, .. } => {
            let given = inputs
                .get(*index)
                .ok_or_else(|| malformed("no such input"))?;
            let dims = [batch, shape.h, shape.w, shape.c];
            let standard = given.as_standard_layout().into_owned();
            standard
                .into_shape_with_order(dims)
                .map_err(|e| malformed(&e.to_string()))?
        }
        Op::Conv(attrs) => {
            let ConvAttrs {
                filters,
                groups,
                kernel,
                ..
            } = attrs;
            let input_channels = graph.input_shape(id).c;
            let weight_shape = [
                *filters,
                input_channels / (*groups).max(1),
                kernel[0],
                kernel[1],
            ];
            let weight = tensor(
                graph,
                weights,
                id,
                "weight",
                &weight_shape,
                attrs.weights.as_ref(),
            )?;
            let bias = bias(
                graph,
                weights,
                id,
                *filters,
                attrs.bias,
                attrs.bias_values.as_ref(),
            )?;
            // A residual conv's skip tensor must match the output exactly; indexing it
            // with the output's coordinates is then in bounds.
            let skip = if attrs.residual {
                let skip = arg(1)?;
                if skip.dim() != (batch, shape.h, shape.w, shape.c) {
                    return Err(malformed(
                        "the residual input's shape differs from the output",
                    ));
                }
                Some(skip)
            } else {
                None
            };
            conv::conv(arg(0)?, attrs, &weight, bias.as_ref(), skip, shape)
        }
        Op::Dense(attrs) => {
            let DenseAttrs { units, .. } = attrs;
            let in_features = graph.input_shape(id).c;
            let weight = tensor(
                graph,
                weights,
                id,
                "weight",
                &[*units, in_features],
                attrs.weights.as_ref(),
            )?;
            let bias = bias(
                graph,
                weights,
                id,
                *units,
                attrs.bias,
                attrs.bias_values.as_ref(),
            )?;
            conv::dense(arg(0)?, &weight, bias.as_ref(), attrs.activation)
        }
        Op::Pool(attrs) => pool::pool(arg(0)?, attrs, shape),
        Op::GlobalPool(kind) => pool::global_pool(arg(0)?, *kind),
        Op::AdaptiveAvgPool { out } => pool::adaptive_avg_pool(arg(0)?, *out),
        Op::Flatten => elementwise::flatten(arg(0)?),
        Op::BatchNorm { eps } => {
            let c = [shape.c];
            let get = |suffix| tensor(graph, weights, id, suffix, &c, None);
            let (weight, bias) = (get("weight")?, get("bias")?);
            let (mean, var) = (get("running_mean")?, get("running_var")?);
            elementwise::batch_norm(arg(0)?, &weight, &bias, &mean, &var, *eps)
        }
        Op::Dropout { .. } | Op::Identity => arg(0)?.clone(),
        Op::Activation(activation) => arg(0)?.mapv(|x| activation.apply(x)),
        Op::Softmax => elementwise::softmax(arg(0)?),
        Op::Add => elementwise::add(arg(0)?, arg(1)?).ok_or_else(|| malformed("shapes differ"))?,
        Op::Mul => elementwise::mul(arg(0)?, arg(1)?)
            .ok_or_else(|| malformed("shapes do not broadcast"))?,
        Op::Concat => {
            elementwise::concat(args).ok_or_else(|| malformed("heights or widths differ"))?
        }
    };
    // Every op's result must have the shape inference gave it; anything else is a bug in
    // this interpreter or in the graph, and is reported rather than propagated.
    if value.shape() != [batch, shape.h, shape.w, shape.c] {
        return Err(malformed(&format!(
            "computed {} but inference says {batch}×{}×{}×{}",
            Dims::of(value.shape()),
            shape.h,
            shape.w,
            shape.c
        )));
    }
    Ok(value)
}
