//! `cnnc summary`: the per-layer table of each network of a file (or of `--net`).

use super::{compile_file, report, select, EXIT_ERRORS, EXIT_OK};
use crate::driver::Select;
use crate::graph::summary::{Layout, Summary, SummaryOptions};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct SummaryArgs {
    /// The .cnn file.
    pub file: PathBuf,
    /// The network to show (default: every network of the file).
    #[arg(long)]
    pub net: Option<String>,
    /// The table as JSON: one object per network (an array of them when there are several);
    /// shapes are arrays, `[h, w, c]` (`[c]` when flat).
    #[arg(long)]
    pub json: bool,
    /// Collapse blocks deeper than N path segments into one row each, summing their
    /// parameters and MACs (`--depth 1`: `layer1`, `layer2`, …).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub depth: Option<u64>,
    /// Show shapes channels first (C×H×W), as PyTorch does.
    #[arg(long)]
    pub nchw: bool,
    /// Also the memory of a compiled training step (`cnnc train`'s): the arena per image or
    /// per thread, and the gradient accumulators.
    #[arg(long)]
    pub train: bool,
}

pub fn run(args: &SummaryArgs) -> u8 {
    let Some(compilation) = compile_file(&args.file, &select(&args.net, Select::All)) else {
        return EXIT_ERRORS;
    };
    report(&compilation);
    let options = SummaryOptions {
        depth: args.depth.map(|d| usize::try_from(d).unwrap_or(usize::MAX)),
        layout: if args.nchw { Layout::Chw } else { Layout::Hwc },
    };
    let mut objects = Vec::new();
    for (idx, graph) in compilation.graphs().enumerate() {
        let mut summary = Summary::with(graph, options);
        summary.arena_bytes = jit_arena_bytes(graph);
        let train = args.train.then(|| crate::train::jit::step_memory(graph));
        if args.json {
            let mut value = serde_json::to_value(&summary).unwrap_or_default();
            if let (Some(train), Some(object)) = (&train, value.as_object_mut()) {
                let entry = match train {
                    Ok(memory) => serde_json::to_value(memory).unwrap_or_default(),
                    Err(reason) => serde_json::json!({ "reference_interpreter": reason }),
                };
                object.insert("train".into(), entry);
            }
            objects.push(value);
            continue;
        }
        if idx > 0 {
            println!();
        }
        print!("{}", summary.table());
        match &train {
            None => {}
            Some(Ok(memory)) => println!(
                "Training step (compiled): arena {} per {}, gradient accumulators {} per thread",
                crate::graph::summary::human_bytes(memory.arena_bytes as u64),
                if memory.arena_per_image {
                    "image (batch norms in training need the whole batch's activations)"
                } else {
                    "thread"
                },
                crate::graph::summary::human_bytes(memory.accumulator_bytes as u64),
            ),
            Some(Err(reason)) => println!(
                "Training step: on the reference interpreter (the JIT cannot train it yet: {reason})"
            ),
        }
    }
    if args.json && !objects.is_empty() {
        let value = match objects.len() {
            1 => objects.swap_remove(0),
            _ => serde_json::Value::Array(objects),
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    }
    if compilation.has_errors() {
        EXIT_ERRORS
    } else {
        EXIT_OK
    }
}

/// The arena the JIT would plan: the optimizer's structure (no weights needed), then the
/// lowering's memory plan. `None` where the lowering does not handle the network.
fn jit_arena_bytes(graph: &crate::graph::Graph) -> Option<u64> {
    let mut optimized = graph.clone();
    crate::opt::optimize(&mut optimized, &crate::opt::Options::default()).ok()?;
    let program = crate::lower::lower(&optimized).ok()?;
    Some(program.arena_bytes() as u64)
}
