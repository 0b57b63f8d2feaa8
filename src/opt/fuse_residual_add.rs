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

use super::rewrite::Readers;
use crate::graph::{Graph, NodeId, Op};

pub fn fuse_residual_add(graph: &mut Graph) -> bool {
    let adds: Vec<NodeId> = graph
        .nodes
        .iter()
        .filter(|(_, node)| matches!(node.op, Op::Add))
        .map(|(id, _)| id)
        .collect();
    let mut readers = Readers::of(graph);
    let mut changed = false;
    for add in adds {
        let &[left, right] = graph.nodes[add].inputs.as_slice() else {
            continue;
        };
        let operands = [(left, right), (right, left)];
        let Some(&(conv, skip)) = operands
            .iter()
            .find(|&&(conv, skip)| conv != skip && fusable_conv(graph, &readers, conv))
        else {
            continue;
        };
        let activation = following_activation(graph, &readers, add);
        let old = graph.nodes[conv].clone();
        let Op::Conv(mut attrs) = old.op else {
            continue;
        };
        let &[conv_input] = old.inputs.as_slice() else {
            continue;
        };
        attrs.residual = true;
        attrs.activation = activation.map(|(_, act)| act);
        // The add's readers stay; only what it reads changes.
        readers.set_inputs(graph, add, vec![conv_input, skip]);
        let node = &mut graph.nodes[add];
        node.op = Op::Conv(attrs);
        node.path = old.path;
        node.frozen = old.frozen;
        node.consts = old.consts;
        graph.origins[add] = graph.origins[conv].clone();
        readers.detach(graph, conv);
        if let Some((activation_node, _)) = activation {
            readers.replace_uses(graph, activation_node, add);
        }
        changed = true;
    }
    debug_assert!(readers.agrees_with(graph));
    if changed {
        graph.prune_unreachable();
    }
    changed
}

/// A conv whose output only the add reads, with no epilogue yet and one input.
fn fusable_conv(graph: &Graph, readers: &Readers, id: NodeId) -> bool {
    let node = &graph.nodes[id];
    let bare = matches!(&node.op, Op::Conv(a) if a.activation.is_none() && !a.residual);
    bare && node.inputs.len() == 1 && readers.use_count(id) == 1
}

/// The fusable activation that is the add's only reader, with its node.
fn following_activation(
    graph: &Graph,
    readers: &Readers,
    add: NodeId,
) -> Option<(NodeId, crate::graph::Activation)> {
    if readers.use_count(add) != 1 {
        return None;
    }
    let &[reader] = readers.users(add).as_slice() else {
        return None;
    };
    let Op::Activation(act) = graph.nodes[reader].op else {
        return None;
    };
    act.fuses_into_epilogue().then_some((reader, act))
}
