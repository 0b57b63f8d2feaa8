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
//! - no two nodes with parameters share a weight path, since the path names their tensors.
//!
//! Every violation is reported, one per line, not only the first.

use super::{infer, Graph, NodeId, Op};
use cranelift_entity::EntityRef;
use std::collections::HashMap;

/// `Ok` if `graph` satisfies every invariant; otherwise one line per violation.
pub fn verify(graph: &Graph) -> Result<(), String> {
    let mut problems = Vec::new();
    for (id, node) in graph.nodes.iter() {
        check_node(graph, id, &mut problems);
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
    match graph.output {
        None => problems.push("the output is not set".into()),
        Some(output) if output.index() >= graph.nodes.len() => {
            problems.push(format!("the output {output} is not a node"));
        }
        Some(_) => {}
    }
    check_paths(graph, &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// Order, arity and shape of one node.
fn check_node(graph: &Graph, id: NodeId, problems: &mut Vec<String>) {
    let node = &graph.nodes[id];
    let mut ordered = true;
    for &input in &node.inputs {
        if input.index() >= id.index() {
            problems.push(format!("{id} reads {input}, which does not come before it"));
            ordered = false;
        }
    }
    // Input nodes have no shape rule: their shape is declared, not computed.
    if !ordered || matches!(node.op, Op::Input { .. }) {
        return;
    }
    let input_shapes: Vec<_> = node.inputs.iter().map(|&i| graph.shapes[i]).collect();
    match infer::output_shape(&node.op, &input_shapes) {
        Ok(shape) if shape == graph.shapes[id] => {}
        Ok(shape) => problems.push(format!(
            "{id} ({}) is stored as {} but its inputs give {shape}",
            node.op.name(),
            graph.shapes[id]
        )),
        Err(error) => problems.push(format!("{id} ({}): {error}", node.op.name())),
    }
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
