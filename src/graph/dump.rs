//! The deterministic text form of a graph, printed by `cnnc emit graph`.

use super::op::{Op, PoolAttrs};
use super::{Graph, NodeId};
use crate::diag::thousands;
use std::fmt::Write;

fn pair(v: [usize; 2]) -> String {
    if v[0] == v[1] {
        v[0].to_string()
    } else {
        format!("{}×{}", v[0], v[1])
    }
}

fn attributes(op: &Op) -> String {
    match op {
        Op::Input { name, .. } => name.clone(),
        Op::Conv(a) => {
            let mut s = format!(
                "filters={} kernel={} stride={} pad={}",
                a.filters,
                pair(a.kernel),
                pair(a.stride),
                a.pad
            );
            if a.dilation != [1, 1] {
                let _ = write!(s, " dilation={}", pair(a.dilation));
            }
            if a.groups != 1 {
                let _ = write!(s, " groups={}", a.groups);
            }
            if !a.bias {
                s.push_str(" bias=false");
            }
            if a.weights.is_some() {
                s.push_str(" weights=literal");
            }
            if a.bias_values.is_some() {
                s.push_str(" bias=literal");
            }
            if a.residual {
                s.push_str(" residual");
            }
            if let Some(act) = a.activation {
                let _ = write!(s, " activation={}", act.name());
            }
            s
        }
        Op::Dense(a) => {
            let mut s = format!("units={}", a.units);
            if !a.bias {
                s.push_str(" bias=false");
            }
            if a.weights.is_some() {
                s.push_str(" weights=literal");
            }
            if let Some(act) = a.activation {
                let _ = write!(s, " activation={}", act.name());
            }
            s
        }
        Op::Pool(PoolAttrs {
            kernel,
            stride,
            pad,
            ceil_mode,
            count_include_pad,
            ..
        }) => {
            let mut s = format!(
                "kernel={} stride={} pad={}",
                pair(*kernel),
                pair(*stride),
                pad
            );
            if *ceil_mode {
                s.push_str(" ceil_mode");
            }
            if !count_include_pad {
                s.push_str(" exclude_pad");
            }
            s
        }
        Op::AdaptiveAvgPool { out } => format!("out={}", pair(*out)),
        Op::BatchNorm { eps } => format!("eps={eps:e}"),
        Op::Dropout { p } => format!("p={p}"),
        _ => String::new(),
    }
}

/// One line per node: id, op and attributes, operands, weight path, shape, parameters, MACs.
pub fn dump(graph: &Graph) -> String {
    let mut out = String::new();
    let inputs: Vec<String> = graph
        .inputs
        .iter()
        .map(|&id| match &graph.nodes[id].op {
            Op::Input { name, .. } => format!("{name}: {}", graph.shape(id)),
            _ => String::new(),
        })
        .collect();
    let _ = writeln!(
        out,
        "network {}({}) -> {}",
        graph.name,
        inputs.join(", "),
        graph.shape(graph.output())
    );
    for (id, node) in graph.nodes.iter() {
        let operands: Vec<String> = node.inputs.iter().map(NodeId::to_string).collect();
        let mut line = format!("  {id} = {}", node.op.name());
        if !operands.is_empty() {
            let _ = write!(line, "({})", operands.join(", "));
        }
        let attrs = attributes(&node.op);
        if !attrs.is_empty() && !matches!(node.op, Op::Input { .. }) {
            let _ = write!(line, " {attrs}");
        } else if let Op::Input { name, .. } = &node.op {
            let _ = write!(line, " {name}");
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
    let _ = writeln!(out, "  return {}", graph.output());
    out
}
