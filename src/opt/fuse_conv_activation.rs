//! `fuse_conv_activation`: an activation whose input is a conv or dense layer read by nothing
//! else becomes that layer's `activation`, computed in its epilogue right after the bias, so
//! the layer's output is written once instead of written, read and written again.

use super::rewrite::Readers;
use crate::graph::{Graph, NodeId, Op};

pub fn fuse_conv_activation(graph: &mut Graph) -> bool {
    let activations: Vec<NodeId> = graph
        .nodes
        .iter()
        .filter(|(_, node)| matches!(node.op, Op::Activation(act) if act.fuses_into_epilogue()))
        .map(|(id, _)| id)
        .collect();
    let mut readers = Readers::of(graph);
    let mut changed = false;
    for id in activations {
        let Op::Activation(activation) = graph.nodes[id].op else {
            continue;
        };
        let &[producer] = graph.nodes[id].inputs.as_slice() else {
            continue;
        };
        // Another reader of the layer needs the value before the activation.
        if readers.use_count(producer) != 1 {
            continue;
        }
        // A layer with an activation already is followed by a second one: `relu(relu6(x))`
        // stays two functions rather than be guessed into one.
        let Some(epilogue) = graph.nodes[producer].op.epilogue_mut() else {
            continue;
        };
        let slot = epilogue.activation;
        if slot.is_some() {
            continue;
        }
        *slot = Some(activation);
        readers.replace_uses(graph, id, producer);
        changed = true;
    }
    debug_assert!(readers.agrees_with(graph));
    if changed {
        graph.prune_unreachable();
    }
    changed
}
