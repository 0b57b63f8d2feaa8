//! Reverse-mode differentiation on the reference interpreter: runs the forward in a training
//! mode keeping every activation, then walks the nodes in reverse, handing each op's gradient
//! rule (`graph::ops::gradient`, implemented in the op's file) the gradient of its output and
//! summing what it returns into its inputs' gradients, so a tensor read by several nodes gets
//! the sum of their contributions.
//!
//! Only what the loss can change through something trainable is differentiated: a node is
//! *live* when it holds learned parameters and is not frozen, or (on request) is a network
//! input, or reads a live node. A rule is asked for input gradients only for live inputs and
//! for parameter gradients only on trainable layers, so a frozen base costs nothing below the
//! first trainable layer. This is the oracle the JIT's backward will be checked against.

use super::{check_inputs, Forward, RunError, Tensor};
use crate::graph::ops::gradient::{TrainingMode, Wanted};
use crate::graph::{Graph, NodeId, Op};
use crate::runtime::Weights;
use crate::train::loss::{cross_entropy_logits, LossError};
use cranelift_entity::{EntityRef, SecondaryMap};
use ndarray::{ArrayD, IxDyn};
use thiserror::Error;

/// What [`backward`] computes.
#[derive(Debug)]
pub struct Backward {
    /// The output tensor of the training forward (N×H×W×C, or N×C when flat).
    pub output: ArrayD<f32>,
    /// `∂L/∂tensor` for every trainable parameter, by full name, in graph order.
    pub params: Vec<(String, ArrayD<f32>)>,
    /// `∂L/∂input` per network input, when asked for (same layout as the input given).
    pub inputs: Vec<Option<ArrayD<f32>>>,
    /// The batch norms' batch statistics, for the running-statistics update.
    pub batch_norm_stats: Vec<BatchNormStats>,
}

/// The activations of a training forward, kept for the backward.
pub struct Activations {
    pub values: SecondaryMap<NodeId, Option<Tensor>>,
    pub batch: usize,
    /// The batch statistics of every batch norm that normalized with them, in graph order.
    pub batch_norm_stats: Vec<BatchNormStats>,
}

/// What one batch norm saw in a training step: PyTorch updates its running statistics from
/// these (`running ← (1 − momentum)·running + momentum·batch`, with the unbiased variance).
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNormStats {
    /// The full names of the layer's running statistics (`layer1.0.bn1.running_mean`, …).
    pub running_mean: String,
    pub running_var: String,
    pub mean: Vec<f64>,
    /// The biased variance (÷ M) the forward normalized with.
    pub var: Vec<f64>,
    /// M: the values per channel (batch × height × width).
    pub count: usize,
}

/// The mode one node runs in: a frozen layer runs as at inference (its batch norms use and
/// keep their running statistics, as Keras' `trainable = False` does), so a frozen base is a
/// fixed function and its tensors stay bit-identical.
pub fn node_mode(graph: &Graph, id: NodeId, mode: TrainingMode) -> TrainingMode {
    if graph.nodes[id].frozen {
        TrainingMode {
            training: false,
            ..mode
        }
    } else {
        mode
    }
}

/// Runs the forward in `mode`, keeping every node's value.
pub fn forward_training(
    graph: &Graph,
    weights: &Weights,
    inputs: &[ArrayD<f32>],
    mode: TrainingMode,
) -> Result<Activations, RunError> {
    let batch = check_inputs(graph, inputs)?;
    let mut values: SecondaryMap<NodeId, Option<Tensor>> = SecondaryMap::new();
    let mut batch_norm_stats = Vec::new();
    for (id, node) in graph.nodes.iter() {
        let args = arguments(&values, id, &node.inputs)?;
        let cx = context(graph, weights, id, inputs, batch);
        let mode = node_mode(graph, id, mode);
        if let (Op::BatchNorm { .. }, true, Some(x)) = (&node.op, mode.training, args.first()) {
            let (mean, var) = crate::graph::ops::batch_statistics(x);
            batch_norm_stats.push(BatchNormStats {
                running_mean: graph.tensor_name(id, "running_mean"),
                running_var: graph.tensor_name(id, "running_var"),
                mean,
                var,
                count: x.len() / x.dim().3.max(1),
            });
        }
        let value = node
            .op
            .with_grad_rule(|rule| rule.training_forward(&cx, mode, &args))?;
        let shape = cx.shape;
        if value.dim() != (batch, shape.h, shape.w, shape.c) {
            return Err(cx.malformed("the training forward's result has the wrong shape"));
        }
        values[id] = Some(value);
    }
    Ok(Activations {
        values,
        batch,
        batch_norm_stats,
    })
}

fn context<'a>(
    graph: &'a Graph,
    weights: &'a Weights,
    id: NodeId,
    inputs: &'a [ArrayD<f32>],
    batch: usize,
) -> Forward<'a> {
    Forward {
        graph,
        weights: Some(weights),
        id,
        inputs,
        batch,
        shape: graph.shape(id),
    }
}

fn arguments<'v>(
    values: &'v SecondaryMap<NodeId, Option<Tensor>>,
    id: NodeId,
    inputs: &[NodeId],
) -> Result<Vec<&'v Tensor>, RunError> {
    inputs
        .iter()
        .map(|&input| {
            if input.index() >= id.index() {
                return Err(RunError::Malformed(format!(
                    "{id} reads {input}, which comes after it"
                )));
            }
            values[input]
                .as_ref()
                .ok_or_else(|| RunError::Malformed(format!("{id} reads {input}, not computed")))
        })
        .collect()
}

/// Whether the node holds learned parameters that training updates.
pub fn is_trainable(graph: &Graph, id: NodeId) -> bool {
    let node = &graph.nodes[id];
    !node.frozen && graph.params(id).iter().any(|spec| !spec.is_buffer)
}

/// The nodes whose output gradient is needed: trainable layers, the inputs when
/// `input_gradients`, and everything downstream of them.
pub fn live_nodes(graph: &Graph, input_gradients: bool) -> SecondaryMap<NodeId, bool> {
    let mut live: SecondaryMap<NodeId, bool> = SecondaryMap::new();
    for (id, node) in graph.nodes.iter() {
        let is_input = matches!(node.op, Op::Input { .. });
        live[id] = is_trainable(graph, id)
            || (is_input && input_gradients)
            || node.inputs.iter().any(|&input| live[input]);
    }
    live
}

/// Differentiates the graph's output: `output_grad` is `∂L/∂output` in the output's layout
/// (N×C when flat). Input gradients are computed when `input_gradients`.
pub fn backward(
    graph: &Graph,
    weights: &Weights,
    inputs: &[ArrayD<f32>],
    mode: TrainingMode,
    output_grad: impl FnOnce(&ArrayD<f32>) -> Result<ArrayD<f32>, BackwardError>,
    input_gradients: bool,
) -> Result<Backward, BackwardError> {
    let activations = forward_training(graph, weights, inputs, mode)?;
    let batch = activations.batch;
    let values = &activations.values;
    let output_id = graph.output();
    let output = values[output_id]
        .as_ref()
        .ok_or_else(|| RunError::Malformed("the output is not computed".into()))?;
    let output_flat = to_output_layout(graph, output_id, output)?;
    let seed = output_grad(&output_flat)?;
    let seed = seed
        .into_shape_with_order(output.raw_dim())
        .map_err(|e| RunError::Malformed(format!("the output gradient: {e}")))?;

    let live = live_nodes(graph, input_gradients);
    let mut grads: SecondaryMap<NodeId, Option<Tensor>> = SecondaryMap::new();
    grads[output_id] = Some(seed);
    let mut params: Vec<Vec<(String, ArrayD<f32>)>> = Vec::new();
    let ids: Vec<NodeId> = graph.nodes.keys().collect();
    for &id in ids.iter().rev() {
        if !live[id] {
            continue;
        }
        let Some(grad) = grads[id].take() else {
            continue;
        };
        let node = &graph.nodes[id];
        if let Op::Input { .. } = node.op {
            grads[id] = Some(grad);
            continue;
        }
        let args = arguments(values, id, &node.inputs)?;
        let cx = context(graph, weights, id, inputs, batch);
        let wanted = Wanted {
            inputs: node.inputs.iter().any(|&input| live[input]),
            params: is_trainable(graph, id),
        };
        let output = values[id]
            .as_ref()
            .ok_or_else(|| RunError::Malformed(format!("{id} is not computed")))?;
        let mode = node_mode(graph, id, mode);
        let result = node.op.with_grad_rule(|rule| {
            rule.reference_backward(&cx, mode, &args, output, &grad, wanted)
        })?;
        let named = result.params.into_iter();
        params.push(
            named
                .map(|(suffix, t)| (graph.tensor_name(id, suffix), t))
                .collect(),
        );
        for (&input, input_grad) in node.inputs.iter().zip(result.inputs) {
            let Some(input_grad) = input_grad.filter(|_| live[input]) else {
                continue;
            };
            if input_grad.dim() != values[input].as_ref().map_or((0, 0, 0, 0), |v| v.dim()) {
                return Err(cx.malformed("an input gradient has the wrong shape").into());
            }
            grads[input] = Some(match grads[input].take() {
                Some(sum) => sum + input_grad,
                None => input_grad,
            });
        }
    }
    // Parameters in graph order, as the state dict lists them.
    let params: Vec<(String, ArrayD<f32>)> = params.into_iter().rev().flatten().collect();
    let mut input_grads = Vec::new();
    for (&id, given) in graph.inputs.iter().zip(inputs) {
        let grad = grads[id].take().filter(|_| input_gradients);
        let reshaped = grad
            .map(|g| g.into_shape_with_order(IxDyn(given.shape())))
            .transpose()
            .map_err(|e| RunError::Malformed(format!("an input gradient: {e}")))?;
        input_grads.push(reshaped);
    }
    Ok(Backward {
        output: output_flat,
        params,
        inputs: input_grads,
        batch_norm_stats: activations.batch_norm_stats,
    })
}

/// The output as `run` returns it: N×C when flat.
fn to_output_layout(graph: &Graph, id: NodeId, value: &Tensor) -> Result<ArrayD<f32>, RunError> {
    let shape = graph.shape(id);
    let value = value.as_standard_layout().into_owned();
    if shape.flat {
        let n = value.dim().0;
        value
            .into_shape_with_order(IxDyn(&[n, shape.c]))
            .map_err(|e| RunError::Malformed(e.to_string()))
    } else {
        Ok(value.into_dyn())
    }
}

#[derive(Debug, Error)]
pub enum BackwardError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Loss(#[from] LossError),
    #[error("training needs a network whose output is a flat vector of class scores, not {0}")]
    NotClassifier(String),
}

/// The loss and its gradients for a classifier: softmax cross-entropy on the logits that feed
/// a final `softmax` (or on the output itself when the network ends in logits), mean over the
/// batch, as PyTorch's `CrossEntropyLoss`.
pub struct LossGradients {
    pub loss: f32,
    pub backward: Backward,
}

/// The mean cross-entropy of `labels` and the gradients of every trainable parameter.
pub fn loss_gradients(
    graph: &Graph,
    weights: &Weights,
    inputs: &[ArrayD<f32>],
    labels: &[u32],
    mode: TrainingMode,
) -> Result<LossGradients, BackwardError> {
    let logits_graph = logits_graph(graph);
    let graph = logits_graph.as_ref().unwrap_or(graph);
    let shape = graph.shape(graph.output());
    if !shape.flat {
        return Err(BackwardError::NotClassifier(shape.to_string()));
    }
    let mut loss = 0.0;
    let backward = backward(
        graph,
        weights,
        inputs,
        mode,
        |logits| {
            let values: Vec<f32> = logits.iter().copied().collect();
            let result = cross_entropy_logits(&values, labels, shape.c)?;
            loss = result.loss;
            ArrayD::from_shape_vec(logits.raw_dim(), result.grad)
                .map_err(|e| BackwardError::Run(RunError::Malformed(e.to_string())))
        },
        false,
    )?;
    Ok(LossGradients { loss, backward })
}

/// The graph with a final softmax removed, so its output is the logits; `None` when the
/// output is not a softmax.
pub fn logits_graph(graph: &Graph) -> Option<Graph> {
    let output = graph.output();
    let node = &graph.nodes[output];
    if !matches!(node.op, Op::Softmax) {
        return None;
    }
    let logits = *node.inputs.first()?;
    let mut trimmed = graph.clone();
    trimmed.set_output(logits);
    trimmed.prune_unreachable();
    Some(trimmed)
}
