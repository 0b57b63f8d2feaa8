//! The backward plan as text (`cnnc emit grad`): which nodes the reverse pass visits, in its
//! order, and which gradients each produces, as `backward::backward` runs them. It is what the
//! snapshot tests pin, and what a lowered backward will have to match step for step.

use super::backward::{is_trainable, live_nodes, logits_graph};
use crate::graph::{Graph, Op};
use cranelift_entity::EntityRef;
use std::fmt::Write;

/// One line per backward step, last node first; nodes the loss does not differentiate (the
/// frozen base, anything upstream of the earliest trainable layer) are listed at the end.
pub fn dump_backward_plan(graph: &Graph) -> String {
    let trimmed = logits_graph(graph);
    let plan_graph = trimmed.as_ref().unwrap_or(graph);
    let output = plan_graph.output();
    let mut out = format!("backward {}: ", graph.name);
    if trimmed.is_some() {
        let _ = writeln!(
            out,
            "softmax cross-entropy on the logits {output}, the input of the final softmax {}",
            graph.output()
        );
    } else {
        let _ = writeln!(out, "the loss's gradient is given at the output {output}");
    }
    let live = live_nodes(plan_graph, false);
    let mut n_readers = cranelift_entity::SecondaryMap::<_, usize>::new();
    for (id, node) in plan_graph.nodes.iter() {
        if live[id] {
            for &input in &node.inputs {
                n_readers[input] += 1;
            }
        }
    }
    let mut skipped: Vec<usize> = Vec::new();
    for (id, node) in plan_graph.nodes.iter().rev() {
        if !live[id] {
            skipped.push(id.index());
            continue;
        }
        let mut produced: Vec<String> = node
            .inputs
            .iter()
            .filter(|&&input| live[input])
            .map(|input| format!("∂{input}"))
            .collect();
        if is_trainable(plan_graph, id) {
            for spec in plan_graph.params(id).iter().filter(|s| !s.is_buffer) {
                let dims: Vec<String> = spec.shape.iter().map(usize::to_string).collect();
                let name = plan_graph.tensor_name(id, spec.name);
                produced.push(format!("∂{name} {}", dims.join("×")));
            }
        }
        let _ = write!(out, "  {id} {} @{}", node.op.name(), node.path);
        if n_readers[id] > 1 {
            let _ = write!(out, " (∂{id} sums {} readers)", n_readers[id]);
        }
        if let Op::Input { .. } = node.op {
            produced.push("the input's gradient".into());
        }
        let _ = writeln!(out, " → {}", produced.join(", "));
    }
    if !skipped.is_empty() {
        skipped.reverse();
        let _ = writeln!(out, "  not differentiated: {}", runs(&skipped));
    }
    out
}

/// Ascending node indices as runs, `n0–n68 n70`, so a frozen base stays one short line.
fn runs(indices: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut idx = 0;
    while idx < indices.len() {
        let start = indices[idx];
        let mut end = start;
        while idx + 1 < indices.len() && indices[idx + 1] == end + 1 {
            idx += 1;
            end = indices[idx];
        }
        parts.push(if start == end {
            format!("n{start}")
        } else {
            format!("n{start}–n{end}")
        });
        idx += 1;
    }
    parts.join(" ")
}
