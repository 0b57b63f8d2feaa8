//! `remove_identities`: dropout (the identity at inference) and explicit identity nodes are
//! bypassed, their readers reading their input directly, and then dropped.

use super::rewrite::Readers;
use crate::graph::{Graph, NodeId, Op};

pub fn remove_identities(graph: &mut Graph) -> bool {
    let identities: Vec<NodeId> = graph
        .nodes
        .iter()
        .filter(|(_, node)| matches!(node.op, Op::Dropout { .. } | Op::Identity))
        .map(|(id, _)| id)
        .collect();
    let mut readers = Readers::of(graph);
    let mut changed = false;
    // In node order, so in a chain `dropout -> identity` the second is bypassed to the
    // first's input, which its reader was already rewired to.
    for id in identities {
        let &[input] = graph.nodes[id].inputs.as_slice() else {
            // Wrong arity is the verifier's to report, not this pass's to guess at.
            continue;
        };
        readers.replace_uses(graph, id, input);
        changed = true;
    }
    debug_assert!(readers.agrees_with(graph));
    if changed {
        graph.prune_unreachable();
    }
    changed
}
