//! The few graph edits every pass is made of: count a node's readers, send its readers to
//! another node, drop tensors from the weights.
//!
//! Passes never delete nodes themselves. A node that is bypassed is detached (its inputs
//! cleared, so it stops counting as a reader of them) and left in the arena; the pass ends
//! with `Graph::prune_unreachable`, which drops it and renumbers the rest in order.

use crate::graph::{Activation, Graph, NodeId};
use crate::runtime::Weights;
use std::collections::HashSet;

/// How many times the value of `id` is read: once per occurrence in a node's inputs (so
/// `add(x, x)` reads `x` twice), plus once if it is the network's output.
pub(super) fn use_count(graph: &Graph, id: NodeId) -> usize {
    let reads: usize = graph
        .nodes
        .values()
        .map(|node| node.inputs.iter().filter(|&&input| input == id).count())
        .sum();
    reads + usize::from(graph.output == Some(id))
}

/// The nodes that read `id`, each listed once.
pub(super) fn users(graph: &Graph, id: NodeId) -> Vec<NodeId> {
    graph
        .nodes
        .iter()
        .filter(|(_, node)| node.inputs.contains(&id))
        .map(|(user, _)| user)
        .collect()
}

/// Makes every reader of `old` (and the output, if it is `old`) read `new` instead, then
/// detaches `old`. The caller guarantees that `new` comes before every reader of `old`, so
/// the graph stays in topological order.
pub(super) fn replace_uses(graph: &mut Graph, old: NodeId, new: NodeId) {
    for node in graph.nodes.values_mut() {
        for input in node.inputs.iter_mut() {
            if *input == old {
                *input = new;
            }
        }
    }
    if graph.output == Some(old) {
        graph.output = Some(new);
    }
    detach(graph, old);
}

/// Clears the inputs of a node that is about to become unreachable, so that it no longer
/// counts as a reader of them while the pass goes on.
pub(super) fn detach(graph: &mut Graph, id: NodeId) {
    graph.nodes[id].inputs.clear();
}

/// The full name of a node's tensor, as `Graph::named_params` and the interpreter spell it.
pub(super) fn tensor_name(graph: &Graph, id: NodeId, suffix: &str) -> String {
    let path = &graph.nodes[id].path;
    if path.is_empty() {
        suffix.to_string()
    } else {
        format!("{path}.{suffix}")
    }
}

/// Drops the named tensors, keeping the others in their order. `Weights` has no removal of
/// its own, so it is rebuilt; passes call this once, with everything they folded away. The
/// kept tensors are moved, not copied: a large network's weights are hundreds of megabytes.
pub(super) fn remove_tensors(weights: &mut Weights, names: &[String]) {
    if names.is_empty() {
        return;
    }
    let removed: HashSet<&str> = names.iter().map(String::as_str).collect();
    let kept_names: Vec<String> = weights
        .iter()
        .map(|(name, _)| name)
        .filter(|name| !removed.contains(name))
        .map(str::to_string)
        .collect();
    let mut kept = Weights::new();
    for name in kept_names {
        if let Some(tensor) = weights.get_mut(&name) {
            kept.insert(name, std::mem::take(tensor));
        }
    }
    *weights = kept;
}

/// The activations a conv or dense epilogue computes; the code generator implements exactly
/// these, so `tanh` stays a node of its own.
pub(super) fn is_fusable(activation: Activation) -> bool {
    match activation {
        Activation::Relu | Activation::Relu6 | Activation::Sigmoid | Activation::Swish => true,
        Activation::Tanh => false,
    }
}
