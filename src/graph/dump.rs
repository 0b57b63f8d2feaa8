//! The deterministic text form of a graph, printed by `cnnc emit graph`.

use super::Op;
use super::{Graph, NodeId};
use crate::diag::thousands;
use std::fmt::Write;

/// One line per node: id, op and attributes, operands, weight path, shape, parameters, MACs.
pub fn dump(graph: &Graph) -> String {
    let mut out = String::new();
    let inputs: Vec<String> = graph
        .inputs
        .iter()
        .map(|&id| {
            if let Op::Input { name, .. } = &graph.nodes[id].op {
                format!("{name}: {}", graph.shape(id))
            } else {
                String::new()
            }
        })
        .collect();
    // Several outputs are listed in parentheses, as `return (a, b)` wrote them.
    let outputs = graph.outputs();
    let listed = |item: &dyn Fn(NodeId) -> String| {
        let items: Vec<String> = outputs.iter().map(|&id| item(id)).collect();
        match items.as_slice() {
            [one] => one.clone(),
            _ => format!("({})", items.join(", ")),
        }
    };
    let _ = writeln!(
        out,
        "network {}({}) -> {}",
        graph.name,
        inputs.join(", "),
        listed(&|id| graph.shape(id).to_string())
    );
    for (id, node) in graph.nodes.iter() {
        let operands: Vec<String> = node.inputs.iter().map(NodeId::to_string).collect();
        let mut line = format!("  {id} = {}", node.op.name());
        if !operands.is_empty() {
            let _ = write!(line, "({})", operands.join(", "));
        }
        let attrs = node.op.dump_attrs();
        if !attrs.is_empty() {
            let _ = write!(line, " {attrs}");
        }
        let _ = write!(line, " : {}", graph.shape(id));
        if !node.path.is_empty() {
            let _ = write!(line, "  @{}", node.path);
        }
        let n_params: u64 = graph.node_parameters(id);
        if n_params > 0 {
            let _ = write!(line, "  params={}", thousands(n_params));
        }
        let macs = graph.macs(id);
        if macs > 0 {
            let _ = write!(line, "  macs={}", thousands(macs));
        }
        if node.frozen {
            line.push_str("  frozen");
        }
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out, "  return {}", listed(&|id| id.to_string()));
    out
}
