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
}

pub fn run(args: &SummaryArgs) -> u8 {
    let Some(compilation) = compile_file(&args.file, &select(&args.net, Select::First)) else {
        return EXIT_ERRORS;
    };
    report(&compilation);
    for graph in compilation.graphs() {
        let mut summary = Summary::of(graph);
        summary.arena_bytes = jit_arena_bytes(graph);
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&summary).unwrap_or_default()
            );
        } else {
            print!("{}", summary.table());
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
