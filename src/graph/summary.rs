//! The per-layer table of `cnnc summary` and the one-line result of `cnnc check`.

use super::Graph;
use super::Op;
use crate::diag::thousands;
use serde::Serialize;
use std::fmt::Write;

#[derive(Clone, Debug, Serialize)]
pub struct LayerRow {
    pub path: String,
    pub layer: String,
    pub output: String,
    pub parameters: u64,
    pub macs: u64,
    pub frozen: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub network: String,
    pub input: String,
    pub output: String,
    pub parameters: u64,
    pub trainable_parameters: u64,
    pub frozen_parameters: u64,
    pub macs: u64,
    /// The activation arena the JIT plans for one image, where the caller computed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arena_bytes: Option<u64>,
    /// The declared `augment(...)`, described (`cnnc train` applies it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub augment: Option<String>,
    pub layers: Vec<LayerRow>,
}

impl Summary {
    pub fn of(graph: &Graph) -> Summary {
        let mut layers = Vec::new();
        let (mut trainable, mut frozen) = (0u64, 0u64);
        for (id, node) in graph.nodes.iter() {
            if matches!(node.op, Op::Input { .. }) {
                continue;
            }
            let parameters: u64 = graph.node_parameters(id);
            if node.frozen {
                frozen += parameters;
            } else {
                trainable += parameters;
            }
            layers.push(LayerRow {
                path: node.path.clone(),
                layer: node.op.name().to_string(),
                output: graph.shape(id).to_string(),
                parameters,
                macs: graph.macs(id),
                frozen: node.frozen,
            });
        }
        let input = graph
            .inputs
            .iter()
            .map(|&id| graph.shape(id).to_string())
            .collect::<Vec<_>>()
            .join(", ");
        Summary {
            network: graph.name.clone(),
            input,
            output: graph.shape(graph.output()).to_string(),
            parameters: trainable + frozen,
            trainable_parameters: trainable,
            frozen_parameters: frozen,
            macs: layers.iter().map(|l| l.macs).sum(),
            arena_bytes: None,
            augment: graph.meta.augment.as_ref().map(|a| a.describe()),
            layers,
        }
    }

    /// `resnet18: 224×224×3 → 1000, 11,689,512 parameters, 1.81 GMACs`
    pub fn check_line(&self) -> String {
        let mut line = format!(
            "{}: {} → {}, {} parameters, {}",
            self.network,
            self.input,
            self.output,
            thousands(self.parameters),
            human_macs(self.macs)
        );
        if let Some(augment) = &self.augment {
            let _ = write!(line, "; augment: {augment}");
        }
        line
    }

    pub fn table(&self) -> String {
        let headers = ["Layer (path)", "Kind", "Output", "Params", "MACs"];
        let rows: Vec<[String; 5]> = self
            .layers
            .iter()
            .map(|l| {
                [
                    if l.path.is_empty() {
                        "-".to_string()
                    } else {
                        l.path.clone()
                    },
                    if l.frozen {
                        format!("{} (frozen)", l.layer)
                    } else {
                        l.layer.clone()
                    },
                    l.output.clone(),
                    thousands(l.parameters),
                    thousands(l.macs),
                ]
            })
            .collect();
        let mut widths = headers.map(|h| h.chars().count());
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let total_width = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
        let mut out = String::new();
        let _ = writeln!(out, "{}: {} → {}", self.network, self.input, self.output);
        let rule = "─".repeat(total_width);
        let _ = writeln!(out, "{rule}");
        let line = |cells: &[String; 5]| {
            format!(
                "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}  {:>w4$}",
                cells[0],
                cells[1],
                cells[2],
                cells[3],
                cells[4],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3],
                w4 = widths[4]
            )
            .trim_end()
            .to_string()
        };
        let _ = writeln!(out, "{}", line(&headers.map(String::from)));
        let _ = writeln!(out, "{rule}");
        for row in &rows {
            let _ = writeln!(out, "{}", line(row));
        }
        let _ = writeln!(out, "{rule}");
        let _ = writeln!(out, "Total params: {}", thousands(self.parameters));
        let _ = writeln!(
            out,
            "Trainable params: {}",
            thousands(self.trainable_parameters)
        );
        let _ = writeln!(
            out,
            "Non-trainable params: {}",
            thousands(self.frozen_parameters)
        );
        let _ = writeln!(
            out,
            "Total MACs: {} ({})",
            thousands(self.macs),
            human_macs(self.macs)
        );
        let _ = writeln!(
            out,
            "Parameter memory: {} (f32)",
            human_bytes(self.parameters.saturating_mul(4))
        );
        if let Some(augment) = &self.augment {
            let _ = writeln!(out, "Augmentation (cnnc train only): {augment}");
        }
        if let Some(arena) = self.arena_bytes {
            let _ = writeln!(
                out,
                "Activation memory (JIT arena, per image): {}",
                human_bytes(arena)
            );
        }
        out
    }
}

/// `1.81 GMACs`, `416.52 KMACs`, `2,160 MACs`.
pub fn human_macs(macs: u64) -> String {
    let m = macs as f64;
    if macs >= 1_000_000_000 {
        format!("{:.2} GMACs", m / 1e9)
    } else if macs >= 1_000_000 {
        format!("{:.2} MMACs", m / 1e6)
    } else if macs >= 10_000 {
        format!("{:.2} KMACs", m / 1e3)
    } else {
        format!("{} MACs", thousands(macs))
    }
}

pub fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if bytes >= 1 << 30 {
        format!("{:.2} GiB", b / (1u64 << 30) as f64)
    } else if bytes >= 1 << 20 {
        format!("{:.2} MiB", b / (1u64 << 20) as f64)
    } else if bytes >= 1 << 10 {
        format!("{:.2} KiB", b / 1024.0)
    } else {
        format!("{bytes} B")
    }
}
