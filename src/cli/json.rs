//! The `--json` forms of the reports, for tools.

use crate::diag::{Diagnostic, Severity};
use crate::driver::Compilation;
use crate::graph::summary::Summary;
use crate::source::SourceMap;
use serde_json::{json, Value};

pub fn diagnostic(sources: &SourceMap, d: &Diagnostic) -> Value {
    let location = d.primary.as_ref().map(|p| {
        let (line, column) = sources.line_col(p.span);
        json!({
            "file": sources.name(p.span.file),
            "line": line,
            "column": column,
            "label": p.message,
        })
    });
    json!({
        "severity": match d.severity { Severity::Error => "error", Severity::Warning => "warning" },
        "code": d.code.as_str(),
        "message": d.message,
        "location": location,
        "notes": d.notes,
        "help": d.help,
    })
}

/// An array with one object per network: `network`, `inputs` (`[{name, shape}]`, shapes as
/// `[h, w, c]` arrays, `[c]` when flat), `output`, `parameters`, `macs`, `diagnostics`. File-level diagnostics (syntax, imports) come as an object whose `network`
/// is null.
pub fn check_report(compilation: &Compilation) -> String {
    let sources = &compilation.program.sources;
    let mut out = Vec::new();
    if !compilation.diagnostics.is_empty() {
        out.push(json!({
            "network": Value::Null,
            "diagnostics": compilation.diagnostics.iter().map(|d| diagnostic(sources, d)).collect::<Vec<_>>(),
        }));
    }
    for network in &compilation.networks {
        let diagnostics: Vec<Value> = network
            .diagnostics
            .iter()
            .map(|d| diagnostic(sources, d))
            .collect();
        let entry = match &network.graph {
            Some(graph) => {
                let summary = Summary::of(graph);
                let mut entry = json!({
                    "network": network.name,
                    "inputs": summary.inputs,
                    "output": summary.output,
                    "parameters": summary.parameters,
                    "macs": summary.macs,
                    "diagnostics": diagnostics,
                });
                if let (Some(augment), Some(fields)) = (summary.augment, entry.as_object_mut()) {
                    fields.insert("augment".into(), Value::String(augment));
                }
                if let (true, Some(fields)) = (summary.outputs.len() > 1, entry.as_object_mut()) {
                    fields.insert("outputs".into(), json!(summary.outputs));
                }
                entry
            }
            None => json!({
                "network": network.name,
                "inputs": Value::Null,
                "output": Value::Null,
                "parameters": Value::Null,
                "macs": Value::Null,
                "diagnostics": diagnostics,
            }),
        };
        out.push(entry);
    }
    serde_json::to_string_pretty(&out).unwrap_or_default()
}
