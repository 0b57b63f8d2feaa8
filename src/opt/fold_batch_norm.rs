//! `fold_batch_norm`: a batch norm whose input is a conv or dense layer read by nothing else
//! is folded into that layer's weights and bias.
//!
//! At inference a batch norm is a per-channel affine map, `y = x·scale + shift` with
//! `scale = γ/√(var+ε)` and `shift = β − mean·scale`. Applied to a conv's output channel `k`,
//! `(w_k ∗ x + b_k)·scale_k + shift_k = (w_k·scale_k) ∗ x + (b_k·scale_k + shift_k)`, so the
//! conv absorbs it: every weight of filter `k` is multiplied by `scale_k`, and the bias becomes
//! `(b − mean)·γ/√(var+ε) + β` (a conv without a bias gains one, from `b = 0`). Dense layers are
//! the same with rows for filters.
//!
//! The pass rewrites structure only: the layer's weight and bias become *folded* constants
//! (`graph::constants::Fold`) that remember their sources, and their numbers are computed
//! (in f64, rounded once) when something first asks for them — the code generator, on all its
//! threads. So optimising a network costs no arithmetic on its weights, and `emit opt` needs
//! none. A layer whose weights are written in the source keeps them there: its folded numbers
//! are computed at once and written back into its literal values, so it stays
//! self-contained.
//!
//! The layer must not have a fused activation or residual yet (the affine would have to pass
//! through them).

use super::rewrite::Readers;
use crate::graph::constants::{BatchNormConstants, ConstSource, Fold, FoldedPart};
use crate::graph::{ConstId, Constant, Graph, Literal, NodeId, Op};
use std::sync::Arc;

pub fn fold_batch_norm(graph: &mut Graph) -> bool {
    let batch_norms: Vec<NodeId> = graph
        .nodes
        .iter()
        .filter(|(_, node)| matches!(node.op, Op::BatchNorm { .. }))
        .map(|(id, _)| id)
        .collect();
    let mut readers = Readers::of(graph);
    let mut changed = false;
    for bn in batch_norms {
        let &[producer] = graph.nodes[bn].inputs.as_slice() else {
            continue;
        };
        if readers.use_count(producer) != 1 {
            continue;
        }
        let Some(batch_norm) = batch_norm_constants(graph, bn) else {
            continue;
        };
        if !fold_into(graph, producer, batch_norm) {
            continue;
        }
        readers.replace_uses(graph, bn, producer);
        changed = true;
    }
    debug_assert!(readers.agrees_with(graph));
    if changed {
        graph.prune_unreachable();
    }
    changed
}

/// The batch norm's four constants, if each has one value per channel.
pub(crate) fn batch_norm_constants(graph: &Graph, bn: NodeId) -> Option<BatchNormConstants> {
    let Op::BatchNorm { eps } = graph.nodes[bn].op else {
        return None;
    };
    let channels = graph.shape(bn).c;
    let get = |suffix| {
        let constant = &graph.consts[graph.node_const(bn, suffix)?];
        (constant.numel() == channels).then(|| constant.clone())
    };
    Some(BatchNormConstants {
        weight: get("weight")?,
        bias: get("bias")?,
        running_mean: get("running_mean")?,
        running_var: get("running_var")?,
        eps,
    })
}

/// Makes the producer's weight and bias the folded ones; false when it cannot absorb the
/// batch norm.
fn fold_into(graph: &mut Graph, producer: NodeId, batch_norm: BatchNormConstants) -> bool {
    let Some(epilogue) = graph.nodes[producer].op.epilogue() else {
        return false;
    };
    let channels = epilogue.channels;
    if epilogue.activation.is_some() || epilogue.residual || channels == 0 {
        return false;
    }
    let literal = epilogue.weights.is_some();
    let literal_bias = epilogue.bias_values.is_some() || (literal && !epilogue.bias);
    if batch_norm.weight.numel() != channels {
        return false;
    }
    let Some(weight_id) = graph.node_const(producer, "weight") else {
        return false;
    };
    let weight = graph.consts[weight_id].clone();
    if weight.numel() == 0 || !weight.numel().is_multiple_of(channels) {
        return false;
    }
    let bias_id = graph.node_const(producer, "bias");
    let bias = bias_id.map(|id| graph.consts[id].clone());
    if bias.as_ref().is_some_and(|b| b.numel() != channels) {
        return false;
    }
    let bias_learned = bias.as_ref().map_or(!literal, |b| b.learned);
    let bias_name = graph.tensor_name(producer, "bias");
    let folded = |part, source: Option<Constant>, name, shape, learned| {
        let fold = Fold {
            part,
            source,
            batch_norm: batch_norm.clone(),
        };
        Constant::new(name, shape, learned, ConstSource::Folded(Arc::new(fold)))
    };
    let new_weight = folded(
        FoldedPart::Weight,
        Some(weight.clone()),
        weight.name.clone(),
        weight.shape.clone(),
        weight.learned,
    );
    let new_bias = folded(
        FoldedPart::Bias,
        bias,
        bias_name,
        vec![channels],
        bias_learned,
    );

    // Numbers written in the source stay in the source: computed now, written back.
    let literal_weight_values = literal.then(|| new_weight.values().to_vec());
    let literal_bias_values = literal_bias.then(|| new_bias.values().to_vec());
    let new_weight = match &literal_weight_values {
        Some(values) => {
            Constant::from_values(new_weight.name, new_weight.shape, false, values.clone())
        }
        None => new_weight,
    };
    let new_bias = match &literal_bias_values {
        Some(values) => Constant::from_values(new_bias.name, new_bias.shape, false, values.clone()),
        None => new_bias,
    };
    let new_weight_id = graph.consts.push(new_weight);
    let new_bias_id = graph.consts.push(new_bias);
    let node = &mut graph.nodes[producer];
    set_const(&mut node.consts, "weight", new_weight_id);
    set_const(&mut node.consts, "bias", new_bias_id);
    // `epilogue` succeeded above, so this does too.
    let Some(epilogue) = node.op.epilogue_mut() else {
        return false;
    };
    if let (Some(literal), Some(values)) = (epilogue.weights.as_mut(), literal_weight_values) {
        literal.values = values;
    }
    if let Some(values) = literal_bias_values {
        *epilogue.bias_values = Some(Literal {
            shape: vec![channels],
            values,
        });
    }
    *epilogue.bias = true;
    true
}

/// Points a node's constant `suffix` at `id`, adding it if the node had none.
fn set_const(consts: &mut Vec<(&'static str, ConstId)>, suffix: &'static str, id: ConstId) {
    match consts.iter_mut().find(|(name, _)| *name == suffix) {
        Some(entry) => entry.1 = id,
        None => consts.push((suffix, id)),
    }
}
