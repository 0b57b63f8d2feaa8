//! `cnnc summary`: the per-layer table of one network.

use super::{compile_file, report, select, EXIT_ERRORS, EXIT_OK};
use crate::driver::Select;
use crate::graph::summary::Summary;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct SummaryArgs {
    /// The .cnn file.
    pub file: PathBuf,
    /// The network to show (default: the file's first).
    #[arg(long)]
    pub net: Option<String>,
    /// The table as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also the memory of a compiled training step (`cnnc train`'s): the arena per image or
    /// per thread, and the gradient accumulators.
    #[arg(long)]
    pub train: bool,
}

pub fn run(args: &SummaryArgs) -> u8 {
    let Some(compilation) = compile_file(&args.file, &select(&args.net, Select::First)) else {
        return EXIT_ERRORS;
    };
    report(&compilation);
    for graph in compilation.graphs() {
        let mut summary = Summary::of(graph);
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
            println!(
                "{}",
                serde_json::to_string_pretty(&value).unwrap_or_default()
            );
        } else {
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
