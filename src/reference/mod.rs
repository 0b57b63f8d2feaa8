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
//! - Weights are the graph's constants (`graph::constants`): seeded, bound from a file or
//!   written in the source. [`run`] takes the learned ones by their full PyTorch name
//!   (`layer1.0.conv1.weight`) from a [`Weights`] instead, for callers that keep them by
//!   name (the tests, the trainer).
//!
//! This file is the driver: it walks the nodes in order and hands each op its arguments
//! through a [`Forward`] context. Each op's definition is its `reference_forward`, in its
//! file under `graph/ops/`.

pub mod backward;
pub mod backward_plan;

use crate::graph::{Graph, NodeId, Shape};
use crate::runtime::{describe_layer, Dims, Weights, WeightsError, MAX_ELEMENTS};
use cranelift_entity::{EntityRef, SecondaryMap};
use ndarray::{Array4, ArrayD, CowArray, IxDyn};

// The errors of a run, and the input check every engine makes first, belong to the runtime;
// they are re-exported here for the op files' reference forwards.
pub use crate::runtime::{check_batch, RunError};

/// One value of the interpreter: N×H×W×C.
pub type Tensor = Array4<f32>;

/// Runs `graph` with its own constants on `inputs` (one tensor per network input, in
/// declaration order) and returns the output tensor: N×H×W×C, or N×C when the output is a
/// flat vector.
pub fn evaluate(graph: &Graph, inputs: &[ArrayD<f32>]) -> Result<ArrayD<f32>, RunError> {
    first(run_with(graph, None, inputs)?)
}

/// [`evaluate`] for every output of a network that returns several (`return (a, b)`): one
/// tensor per output, in order.
pub fn evaluate_all(graph: &Graph, inputs: &[ArrayD<f32>]) -> Result<Vec<ArrayD<f32>>, RunError> {
    run_with(graph, None, inputs)
}

/// [`run`] for every output, in order.
pub fn run_all(
    graph: &Graph,
    weights: &Weights,
    inputs: &[ArrayD<f32>],
) -> Result<Vec<ArrayD<f32>>, RunError> {
    run_with(graph, Some(weights), inputs)
}

fn first(outputs: Vec<ArrayD<f32>>) -> Result<ArrayD<f32>, RunError> {
    outputs
        .into_iter()
        .next()
        .ok_or_else(|| RunError::Malformed("it has no output".into()))
}

/// [`evaluate`] with the learned tensors taken by name from `weights` instead of the graph's
/// constants (literal numbers still come from the graph): for callers that keep a name-keyed
/// set of weights, such as tests and the trainer. A missing or misshapen tensor is an error.
pub fn run(
    graph: &Graph,
    weights: &Weights,
    inputs: &[ArrayD<f32>],
) -> Result<ArrayD<f32>, RunError> {
    first(run_with(graph, Some(weights), inputs)?)
}

fn run_with(
    graph: &Graph,
    weights: Option<&Weights>,
    inputs: &[ArrayD<f32>],
) -> Result<Vec<ArrayD<f32>>, RunError> {
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
    let outputs = graph.outputs();
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
            if remaining_uses[input] == 0 && !outputs.contains(&input) {
                values[input] = None;
            }
        }
        values[id] = Some(result);
    }

    let mut results = Vec::with_capacity(outputs.len());
    for &output in &outputs {
        // Cloned, not taken: an output may be listed twice once a pass merged two of them.
        let result = values[output]
            .clone()
            .ok_or_else(|| RunError::Malformed(format!("its output {output} is not a node")))?;
        results.push(as_output(result, graph.shape(output))?);
    }
    Ok(results)
}

/// An output as runs return it: N×H×W×C, or N×C for a flat vector.
fn as_output(result: Tensor, shape: Shape) -> Result<ArrayD<f32>, RunError> {
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

fn input_name(graph: &Graph, id: NodeId) -> String {
    graph.nodes[id]
        .op
        .input_name()
        .map_or_else(|| id.to_string(), str::to_string)
}

/// What an op's reference forward may ask about the node it computes.
pub struct Forward<'a> {
    graph: &'a Graph,
    /// Learned tensors by name, overriding the graph's constants (`run`, the trainer).
    weights: Option<&'a Weights>,
    id: NodeId,
    /// The network's inputs, for `input` nodes.
    pub inputs: &'a [ArrayD<f32>],
    pub batch: usize,
    /// The output shape inference gave the node.
    pub shape: Shape,
}

impl<'a> Forward<'a> {
    /// The node's position in the graph, which seeds per-node randomness (dropout masks).
    pub fn node_index(&self) -> usize {
        self.id.index()
    }

    /// The shape of the node's first input.
    pub fn input_shape(&self) -> Shape {
        self.graph.input_shape(self.id)
    }

    /// The node's input `idx`.
    pub fn arg<'t>(&self, args: &[&'t Tensor], idx: usize) -> Result<&'t Tensor, RunError> {
        args.get(idx)
            .copied()
            .ok_or_else(|| self.malformed("too few inputs"))
    }

    /// A malformed-graph error about this node.
    pub fn malformed(&self, what: &str) -> RunError {
        let op = self.graph.nodes[self.id].op.name();
        RunError::Malformed(format!("{} ({op}): {what}", self.id))
    }

    /// A constant of the node (`weight`, `bias`, `running_mean`, …) of the shape the layer
    /// needs: the graph's constant, or for a learned one the tensor of that name when the run
    /// was given weights by name.
    pub fn tensor(
        &self,
        suffix: &str,
        expected: &[usize],
    ) -> Result<CowArray<'a, f32, IxDyn>, RunError> {
        let (graph, id) = (self.graph, self.id);
        let constant = graph
            .node_const(id, suffix)
            .map(|c| &graph.consts[c])
            .ok_or_else(|| self.malformed(&format!("it has no constant `{suffix}`")))?;
        let wrong_shape = |found: &[usize]| {
            RunError::Weights(WeightsError::WrongShape {
                name: constant.name.clone(),
                found: Dims::of(found),
                expected: Dims::of(expected),
                layer: describe_layer(graph, id),
                node: id,
            })
        };
        match self.weights {
            Some(weights) if constant.learned => {
                let array = weights.get(&constant.name).ok_or_else(|| {
                    RunError::Weights(WeightsError::Missing {
                        name: constant.name.clone(),
                        expected: Dims::of(expected),
                        node: id,
                        layer: describe_layer(graph, id),
                        found_as: None,
                    })
                })?;
                if array.shape() != expected {
                    return Err(wrong_shape(array.shape()));
                }
                Ok(CowArray::from(array.view()))
            }
            _ => {
                // A literal may leave out leading dimensions of size 1, so only its count
                // must agree; its values in row-major order are exactly the full tensor's.
                let values = constant.values();
                let array = ndarray::ArrayView::from_shape(IxDyn(expected), values)
                    .map_err(|_| wrong_shape(&constant.shape))?;
                Ok(CowArray::from(array))
            }
        }
    }

    /// A conv's or dense layer's bias of `n` values, if it has one (learned or literal).
    pub fn bias(&self, n: usize) -> Result<Option<CowArray<'a, f32, IxDyn>>, RunError> {
        if self.graph.node_const(self.id, "bias").is_some() {
            self.tensor("bias", &[n]).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// Computes node `id` from its arguments.
fn eval(
    graph: &Graph,
    weights: Option<&Weights>,
    id: NodeId,
    args: &[&Tensor],
    inputs: &[ArrayD<f32>],
    batch: usize,
) -> Result<Tensor, RunError> {
    let shape = graph.shape(id);
    let cx = Forward {
        graph,
        weights,
        id,
        inputs,
        batch,
        shape,
    };
    let value = graph.nodes[id].op.reference_forward(&cx, args)?;
    // Every op's result must have the shape inference gave it; anything else is a bug in
    // this interpreter or in the graph, and is reported rather than propagated.
    if value.shape() != [batch, shape.h, shape.w, shape.c] {
        return Err(cx.malformed(&format!(
            "computed {} but inference says {batch}×{}×{}×{}",
            Dims::of(value.shape()),
            shape.h,
            shape.w,
            shape.c
        )));
    }
    Ok(value)
}
