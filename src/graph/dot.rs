//! The graph as Graphviz DOT, printed by `cnnc graph`.

use super::ops::Category;
use super::Graph;
use super::Op;
use crate::diag::thousands;
use std::fmt::Write;

fn escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

/// One box per layer (path, layer, output shape, parameters), one edge per tensor.
pub fn to_dot(graph: &Graph) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", escape(&graph.name));
    let _ = writeln!(out, "  rankdir=TB;");
    let _ = writeln!(
        out,
        "  node [shape=box, style=\"rounded,filled\", fillcolor=\"#f4f4f4\", fontname=\"Helvetica\", fontsize=10];"
    );
    for (id, node) in graph.nodes.iter() {
        let mut label = String::new();
        if !node.path.is_empty() {
            let _ = write!(label, "{}\\n", escape(&node.path));
        }
        let kind = if let Op::Input { name, .. } = &node.op {
            format!("input {}", escape(name))
        } else {
            node.op.name().to_string()
        };
        let _ = write!(label, "{kind}\\n{}", graph.shape(id));
        let n_params: u64 = graph.node_parameters(id);
        if n_params > 0 {
            let _ = write!(label, "\\n{} params", thousands(n_params));
        }
        let fill = match node.op.category() {
            Category::Input => "#d8e8ff",
            Category::Weighted => "#ffe9c7",
            Category::Merge => "#dff5dd",
            Category::Other => "#f4f4f4",
        };
        let frozen = if node.frozen {
            ", style=\"rounded,filled,dashed\""
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  {id} [label=\"{label}\", fillcolor=\"{fill}\"{frozen}];"
        );
    }
    for (id, node) in graph.nodes.iter() {
        for input in &node.inputs {
            let _ = writeln!(out, "  {input} -> {id};");
        }
    }
    out.push_str("}\n");
    out
}
