//! `fuse_residual_add`: `add(conv_out, skip)`, where `conv_out` is a conv without an
//! activation read only by the add, becomes a residual conv `conv(x, skip)` whose epilogue
//! adds the skip tensor after the bias; an activation that is the add's only reader is fused
//! too, after the skip. That is ResNet's `relu(bn2(conv2(y)) + shortcut)` in one node, once
//! batch norm is folded: the sum is never written to memory on its own.
//!
//! The skip tensor is often computed after the conv (ResNet's projection shortcut comes
//! after the main path in node order), so the fused conv cannot stay where the conv was: it
//! takes the add's place, where both of its inputs already exist, and the old conv node is
//! dropped. It keeps the conv's path, parameters and origin.
//!
//! When both operands qualify, the first is fused; either choice computes the same sum.

use super::rewrite::{detach, is_fusable, replace_uses, use_count, users};
use crate::graph::{Graph, Node, NodeId, Op};
use crate::runtime::Weights;

pub fn fuse_residual_add(graph: &mut Graph, _weights: &mut Weights) -> bool {
    let adds: Vec<NodeId> = graph
        .nodes
        .iter()
        .filter(|(_, node)| matches!(node.op, Op::Add))
        .map(|(id, _)| id)
        .collect();
    let mut changed = false;
    for add in adds {
        let &[left, right] = graph.nodes[add].inputs.as_slice() else {
            continue;
        };
        let operands = [(left, right), (right, left)];
        let Some(&(conv, skip)) = operands
            .iter()
            .find(|&&(conv, skip)| conv != skip && fusable_conv(graph, conv))
        else {
            continue;
        };
        let activation = following_activation(graph, add);
        let old = graph.nodes[conv].clone();
        let Op::Conv(mut attrs) = old.op else {
            continue;
        };
        let &[conv_input] = old.inputs.as_slice() else {
            continue;
        };
        attrs.residual = true;
        attrs.activation = activation.map(|(_, act)| act);
        graph.nodes[add] = Node {
            op: Op::Conv(attrs),
            inputs: vec![conv_input, skip],
            path: old.path,
            frozen: old.frozen,
        };
        graph.origins[add] = graph.origins[conv].clone();
        detach(graph, conv);
        if let Some((activation_node, _)) = activation {
            replace_uses(graph, activation_node, add);
        }
        changed = true;
    }
    if changed {
        graph.prune_unreachable();
    }
    changed
}

/// A conv whose output only the add reads, with no epilogue yet and one input.
fn fusable_conv(graph: &Graph, id: NodeId) -> bool {
    let node = &graph.nodes[id];
    let bare = matches!(&node.op, Op::Conv(a) if a.activation.is_none() && !a.residual);
    bare && node.inputs.len() == 1 && use_count(graph, id) == 1
}

/// The fusable activation that is the add's only reader, with its node.
fn following_activation(graph: &Graph, add: NodeId) -> Option<(NodeId, crate::graph::Activation)> {
    if use_count(graph, add) != 1 {
        return None;
    }
    let &[reader] = users(graph, add).as_slice() else {
        return None;
    };
    match graph.nodes[reader].op {
        Op::Activation(act) if is_fusable(act) => Some((reader, act)),
        _ => None,
    }
}
