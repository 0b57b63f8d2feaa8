//! The per-layer table of `cnnc summary` and the one-line result of `cnnc check`.

use super::{Graph, NodeId, Op, Shape};
use crate::diag::thousands;
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::{self, Write};

/// The order a summary shows a shape's dimensions in. The batch dimension stays implicit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum Layout {
    /// Height × width × channels, cnnc's own convention.
    #[default]
    #[serde(rename = "HWC")]
    Hwc,
    /// Channels × height × width, as PyTorch (torchinfo) prints them.
    #[serde(rename = "CHW")]
    Chw,
}

/// What a summary shows: every layer, or blocks collapsed below a depth; which layout.
#[derive(Clone, Copy, Debug, Default)]
pub struct SummaryOptions {
    /// Layers whose path has more segments than this are summed into the row of their first
    /// `depth` segments (`layer1.0.conv1` at depth 2 is part of `layer1.0`).
    pub depth: Option<usize>,
    pub layout: Layout,
}

/// A shape's dimensions in the summary's layout: `[h, w, c]`, `[c, h, w]`, or `[c]` when flat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Dims(pub Vec<usize>);

impl Dims {
    pub fn of(shape: Shape, layout: Layout) -> Dims {
        Dims(match (shape.flat, layout) {
            (true, _) => vec![shape.c],
            (false, Layout::Hwc) => vec![shape.h, shape.w, shape.c],
            (false, Layout::Chw) => vec![shape.c, shape.h, shape.w],
        })
    }
}

impl fmt::Display for Dims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text: Vec<String> = self.0.iter().map(usize::to_string).collect();
        f.write_str(&text.join("×"))
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct NamedShape {
    pub name: String,
    pub shape: Dims,
}

#[derive(Clone, Debug, Serialize)]
pub struct LayerRow {
    /// The layer's weight path; for a collapsed block, the block's path.
    pub path: String,
    /// The op (`conv`); for a collapsed block, what made the scope (`basic`, `sequence`).
    pub layer: String,
    /// How many layers the row stands for: 1, or the layers of a collapsed block.
    pub layers: usize,
    /// The shapes the row reads from outside itself, in order.
    pub inputs: Vec<Dims>,
    pub output: Dims,
    /// The rows (or network inputs) those inputs come from, by path.
    pub connected_to: Vec<String>,
    pub parameters: u64,
    pub macs: u64,
    /// Every layer of the row is frozen.
    pub frozen: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub network: String,
    pub layout: Layout,
    pub inputs: Vec<NamedShape>,
    /// The (first) output's shape.
    pub output: Dims,
    /// Every output, named by the layer that computes it; listed only when there are several.
    #[serde(skip_serializing_if = "is_single")]
    pub outputs: Vec<NamedShape>,
    pub parameters: u64,
    pub trainable_parameters: u64,
    pub frozen_parameters: u64,
    pub macs: u64,
    /// The `--depth` the rows were collapsed to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depth: Option<usize>,
    /// The activation arena the JIT plans for one image, where the caller computed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arena_bytes: Option<u64>,
    /// The declared `augment(...)`, described (`cnnc train` applies it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub augment: Option<String>,
    pub layers: Vec<LayerRow>,
}

fn is_single(outputs: &[NamedShape]) -> bool {
    outputs.len() <= 1
}

/// A node's name in the "connected to" column: its path, or a network input's name.
fn node_name(graph: &Graph, id: NodeId) -> String {
    match &graph.nodes[id].op {
        Op::Input { name, .. } => name.clone(),
        _ => display_path(&graph.nodes[id].path),
    }
}

fn display_path(path: &str) -> String {
    if path.is_empty() {
        "-".to_string()
    } else {
        path.to_string()
    }
}

/// The row a path is summed into at `depth`: its first `depth` segments, when it has more.
fn collapsed_prefix(path: &str, depth: Option<usize>) -> Option<&str> {
    let depth = depth?;
    let (end, _) = path.match_indices('.').nth(depth.checked_sub(1)?)?;
    Some(&path[..end])
}

impl Summary {
    pub fn of(graph: &Graph) -> Summary {
        Summary::with(graph, SummaryOptions::default())
    }

    pub fn with(graph: &Graph, options: SummaryOptions) -> Summary {
        let layout = options.layout;
        let mut layers: Vec<LayerRow> = Vec::new();
        // The row each node is summed into, and the node whose shape is each row's output.
        let mut row_of: HashMap<NodeId, usize> = HashMap::new();
        let mut group_rows: HashMap<String, usize> = HashMap::new();
        let mut last_node: Vec<NodeId> = Vec::new();
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
            let macs = graph.macs(id);
            let prefix = collapsed_prefix(&node.path, options.depth);
            if let Some(&row) = prefix.and_then(|p| group_rows.get(p)) {
                let entry = &mut layers[row];
                entry.layers += 1;
                entry.parameters += parameters;
                entry.macs += macs;
                entry.frozen &= node.frozen;
                last_node[row] = id;
                row_of.insert(id, row);
                continue;
            }
            let (path, layer) = match prefix {
                Some(prefix) => {
                    group_rows.insert(prefix.to_string(), layers.len());
                    let kind = graph
                        .meta
                        .scopes
                        .get(prefix)
                        .map_or("block", String::as_str);
                    (prefix.to_string(), kind.to_string())
                }
                None => (node.path.clone(), node.op.name().to_string()),
            };
            row_of.insert(id, layers.len());
            last_node.push(id);
            layers.push(LayerRow {
                path,
                layer,
                layers: 1,
                inputs: Vec::new(),
                output: Dims(Vec::new()),
                connected_to: Vec::new(),
                parameters,
                macs,
                frozen: node.frozen,
            });
        }
        // Each row's inputs: the tensors its layers read from outside the row.
        let mut sources: Vec<Vec<NodeId>> = vec![Vec::new(); layers.len()];
        for (id, node) in graph.nodes.iter() {
            let Some(&row) = row_of.get(&id) else {
                continue;
            };
            for &input in &node.inputs {
                if row_of.get(&input) != Some(&row) && !sources[row].contains(&input) {
                    sources[row].push(input);
                }
            }
        }
        let row_names: Vec<String> = layers.iter().map(|l| display_path(&l.path)).collect();
        for ((row, sources), last) in layers.iter_mut().zip(sources).zip(last_node) {
            row.output = Dims::of(graph.shape(last), layout);
            row.inputs = sources
                .iter()
                .map(|&s| Dims::of(graph.shape(s), layout))
                .collect();
            let mut names: Vec<String> = Vec::new();
            for source in sources {
                let name = match row_of.get(&source) {
                    Some(&from) => row_names[from].clone(),
                    None => node_name(graph, source),
                };
                if !names.contains(&name) {
                    names.push(name);
                }
            }
            row.connected_to = names;
        }
        let inputs = graph
            .inputs
            .iter()
            .map(|&id| NamedShape {
                name: node_name(graph, id),
                shape: Dims::of(graph.shape(id), layout),
            })
            .collect();
        Summary {
            network: graph.name.clone(),
            layout,
            inputs,
            output: Dims::of(graph.shape(graph.output()), layout),
            outputs: graph
                .outputs()
                .into_iter()
                .map(|id| NamedShape {
                    name: display_path(&node_name(graph, id)),
                    shape: Dims::of(graph.shape(id), layout),
                })
                .collect(),
            parameters: trainable + frozen,
            trainable_parameters: trainable,
            frozen_parameters: frozen,
            macs: layers.iter().map(|l| l.macs).sum(),
            depth: options.depth,
            arena_bytes: None,
            augment: graph.meta.augment.as_ref().map(|a| a.describe()),
            layers,
        }
    }

    /// The input shapes, `224×224×3` (several: `28×28×1, 10`).
    pub fn input_text(&self) -> String {
        let shapes: Vec<String> = self.inputs.iter().map(|i| i.shape.to_string()).collect();
        shapes.join(", ")
    }

    /// The output shapes, `1000` (several: `5, 7×6×12`).
    pub fn output_text(&self) -> String {
        let shapes: Vec<String> = self.outputs.iter().map(|o| o.shape.to_string()).collect();
        shapes.join(", ")
    }

    /// `resnet18: 224×224×3 → 1000, 11,689,512 parameters, 1.81 GMACs`; with several
    /// outputs, `→ (5, 7×6×12)`.
    pub fn check_line(&self) -> String {
        let mut line = format!(
            "{}: {} → {}, {} parameters, {}",
            self.network,
            self.input_text(),
            self.output_list(),
            thousands(self.parameters),
            human_macs(self.macs)
        );
        if let Some(augment) = &self.augment {
            let _ = write!(line, "; augment: {augment}");
        }
        line
    }

    /// Whether some row reads something other than the row just above it (the network's
    /// input, for the first): then the order of the rows does not show the graph, and the
    /// table gets a "Connected to" column, as Keras's does for branching models.
    pub fn branches(&self) -> bool {
        self.layers.iter().enumerate().any(|(idx, row)| {
            let above = match idx {
                0 => match self.inputs.as_slice() {
                    [only] => only.name.clone(),
                    _ => return true,
                },
                _ => display_path(&self.layers[idx - 1].path),
            };
            row.connected_to != [above]
        })
    }

    pub fn table(&self) -> String {
        let (input_header, output_header) = match self.layout {
            Layout::Hwc => ("Input", "Output"),
            Layout::Chw => ("Input (C×H×W)", "Output (C×H×W)"),
        };
        let mut headers = vec![
            "Layer (path)",
            "Kind",
            input_header,
            output_header,
            "Params",
            "MACs",
        ];
        let connected = self.branches();
        if connected {
            headers.push("Connected to");
        }
        let rows: Vec<Vec<String>> = self
            .layers
            .iter()
            .map(|l| row_cells(l, connected))
            .collect();
        let header_cells: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
        let mut widths: Vec<usize> = header_cells.iter().map(|h| h.chars().count()).collect();
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let total_width = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}: {} → {}",
            self.network,
            self.input_text(),
            self.output_list()
        );
        let rule = "─".repeat(total_width);
        let _ = writeln!(out, "{rule}");
        // Paths, kinds, shapes and connections read left to right; numbers align right.
        let line = |cells: &[String]| {
            let mut text = String::new();
            for (idx, (cell, width)) in cells.iter().zip(&widths).enumerate() {
                if idx > 0 {
                    text.push_str("  ");
                }
                if matches!(idx, 4 | 5) {
                    let _ = write!(text, "{cell:>width$}");
                } else {
                    let _ = write!(text, "{cell:<width$}");
                }
            }
            text.trim_end().to_string()
        };
        let _ = writeln!(out, "{}", line(&header_cells));
        let _ = writeln!(out, "{rule}");
        for row in &rows {
            let _ = writeln!(out, "{}", line(row));
        }
        let _ = writeln!(out, "{rule}");
        self.totals(&mut out);
        out
    }

    /// The output shape, or the outputs' in parentheses as `return (a, b)` lists them.
    fn output_list(&self) -> String {
        match self.outputs.as_slice() {
            [_, _, ..] => format!("({})", self.output_text()),
            _ => self.output.to_string(),
        }
    }

    fn totals(&self, out: &mut String) {
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
        if self.outputs.len() > 1 {
            let listed: Vec<String> = self
                .outputs
                .iter()
                .enumerate()
                .map(|(idx, o)| format!("{idx}: {} ({})", o.name, o.shape))
                .collect();
            let _ = writeln!(out, "Outputs: {}", listed.join(", "));
        }
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
    }
}

fn row_cells(row: &LayerRow, connected: bool) -> Vec<String> {
    let path = display_path(&row.path);
    let mut kind = row.layer.clone();
    if row.layers > 1 {
        let _ = write!(kind, " ({} layers)", row.layers);
    }
    if row.frozen {
        kind.push_str(" (frozen)");
    }
    let inputs: Vec<String> = row.inputs.iter().map(Dims::to_string).collect();
    let mut cells = vec![
        path,
        kind,
        inputs.join(", "),
        row.output.to_string(),
        thousands(row.parameters),
        thousands(row.macs),
    ];
    if connected {
        cells.push(row.connected_to.join(", "));
    }
    cells
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
