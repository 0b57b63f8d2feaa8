//! The graph verifier: checks the invariants every later stage relies on, so that a pass
//! that breaks one is caught right after it runs rather than as a wrong number three stages
//! later.
//!
//! A graph built by [`Graph::add`] satisfies these by construction; the optimizer edits
//! nodes in place, so its passes are checked by running this after each one (in tests, and
//! in debug builds of `opt::optimize`). The invariants:
//!
//! - every input of a node is an earlier node (insertion order is a topological order);
//! - every node has the number of inputs its op takes, and its stored shape is the one
//!   [`infer::output_shape`] gives for its inputs' shapes;
//! - the network inputs are exactly the `Input` nodes, each listed at its own index;
//! - the output is set and is a node of the graph;
//! - no two nodes with parameters share a weight path, since the path names their tensors;
//! - every parameter a node's op declares is a learned constant of the node with its name and
//!   shape, and every literal tensor is a constant of its full shape.
//!
//! Every violation is reported, one per line, not only the first.

use super::{infer, Graph, NodeId, Op};
use cranelift_entity::EntityRef;
use std::collections::{HashMap, HashSet};

/// `Ok` if `graph` satisfies every invariant; otherwise one line per violation.
pub fn verify(graph: &Graph) -> Result<(), String> {
    let mut problems = Vec::new();
    let mut misshapen = HashSet::new();
    for (id, node) in graph.nodes.iter() {
        if !check_node(graph, id, &mut problems) {
            misshapen.insert(id);
        }
        if let Op::Input { index, .. } = node.op {
            if graph.inputs.get(index) != Some(&id) {
                problems.push(format!(
                    "{id} is input {index} but graph.inputs does not list it there"
                ));
            }
        }
    }
    for (idx, &input) in graph.inputs.iter().enumerate() {
        let listed_ok = graph
            .nodes
            .get(input)
            .is_some_and(|node| matches!(node.op, Op::Input { index, .. } if index == idx));
        if !listed_ok {
            problems.push(format!(
                "graph.inputs[{idx}] = {input} is not input node {idx}"
            ));
        }
    }
    if graph.outputs.is_empty() {
        problems.push("the output is not set".into());
    }
    for output in &graph.outputs {
        if output.index() >= graph.nodes.len() {
            problems.push(format!("the output {output} is not a node"));
        }
    }
    check_paths(graph, &mut problems);
    check_constants(graph, &misshapen, &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// Order, arity and shape of one node; false when they are wrong.
fn check_node(graph: &Graph, id: NodeId, problems: &mut Vec<String>) -> bool {
    let node = &graph.nodes[id];
    let mut ordered = true;
    for &input in &node.inputs {
        if input.index() >= id.index() {
            problems.push(format!("{id} reads {input}, which does not come before it"));
            ordered = false;
        }
    }
    // Input nodes have no shape rule: their shape is declared, not computed.
    if matches!(node.op, Op::Input { .. }) {
        return ordered;
    }
    if !ordered {
        return false;
    }
    let input_shapes: Vec<_> = node.inputs.iter().map(|&i| graph.shapes[i]).collect();
    match infer::output_shape(&node.op, &input_shapes) {
        Ok(shape) if shape == graph.shapes[id] => return true,
        Ok(shape) => problems.push(format!(
            "{id} ({}) is stored as {} but its inputs give {shape}",
            node.op.name(),
            graph.shapes[id]
        )),
        Err(error) => problems.push(format!("{id} ({}): {error}", node.op.name())),
    }
    false
}

/// A weight path may belong to one node with parameters only: two would read one tensor.
fn check_paths(graph: &Graph, problems: &mut Vec<String>) {
    let mut owners: HashMap<&str, NodeId> = HashMap::new();
    for (id, node) in graph.nodes.iter() {
        if graph.params(id).is_empty() {
            continue;
        }
        if let Some(first) = owners.insert(node.path.as_str(), id) {
            problems.push(format!(
                "{first} and {id} both have parameters under the path `{}`",
                node.path
            ));
        }
    }
}

/// The constants each node computes with are the ones its op declares. A node whose shapes
/// are already wrong (or read a wrong one) is not checked again here: one mistake, one line.
fn check_constants(graph: &Graph, misshapen: &HashSet<NodeId>, problems: &mut Vec<String>) {
    for (id, node) in graph.nodes.iter() {
        if misshapen.contains(&id) || node.inputs.iter().any(|i| misshapen.contains(i)) {
            continue;
        }
        let input = graph.input_shape(id);
        let declared = graph
            .params(id)
            .into_iter()
            .map(|spec| (spec.name, spec.shape, true));
        let literal = node
            .op
            .literal_tensors(input)
            .into_iter()
            .map(|(name, shape, _)| (name, shape, false));
        for (suffix, shape, learned) in declared.chain(literal) {
            let Some(constant) = graph
                .node_const(id, suffix)
                .and_then(|c| graph.consts.get(c))
            else {
                problems.push(format!(
                    "{id} ({}) has no constant `{suffix}`",
                    node.op.name()
                ));
                continue;
            };
            if constant.shape != shape || constant.learned != learned {
                problems.push(format!(
                    "{id}'s constant `{suffix}` is {:?} (learned: {}) but its op needs {shape:?} (learned: {learned})",
                    constant.shape, constant.learned
                ));
            }
            if constant.learned && constant.name != graph.tensor_name(id, suffix) {
                problems.push(format!(
                    "{id}'s constant `{suffix}` is named `{}`, not `{}`",
                    constant.name,
                    graph.tensor_name(id, suffix)
                ));
            }
        }
    }
}
