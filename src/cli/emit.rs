//! `cnnc emit STAGE FILE`: the compiler's intermediate forms as text.

use super::{compile_file, report, select, EXIT_ERRORS, EXIT_OK};
use crate::driver::{self, Select};
use crate::graph::Graph;
use crate::opt;
use crate::syntax;
use std::path::PathBuf;

#[derive(Copy, Clone, Debug, clap::ValueEnum)]
pub enum Stage {
    /// The syntax tree of the file.
    Ast,
    /// The expanded graph with shapes, parameters and MACs.
    Graph,
    /// The graph after the optimizer's passes (batch norm folded, activations and residual
    /// adds fused), in the same format as `graph`.
    Opt,
    /// The loop nests the optimized graph is lowered to.
    Loops,
    /// The Cranelift IR generated from the loop nests.
    Clif,
    /// The reverse pass of training: one line per backward step, with the gradients it
    /// produces.
    Grad,
}

#[derive(clap::Args)]
pub struct EmitArgs {
    /// Which form to print.
    pub stage: Stage,
    /// The .cnn file.
    pub file: PathBuf,
    /// Only this network (default: every network of the file).
    #[arg(long)]
    pub net: Option<String>,
    /// With `opt`: run only these passes (comma-separated), still in the optimizer's order.
    #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(opt::pass_names()))]
    pub passes: Option<Vec<String>>,
    /// With `opt`: leave activations and residual adds unfused, for comparison.
    #[arg(long)]
    pub no_fuse: bool,
    /// With `loops` and `clif`: lower every convolution directly, without Winograd's
    /// algorithm.
    #[arg(long)]
    pub no_winograd: bool,
}

pub fn run(args: &EmitArgs) -> u8 {
    match args.stage {
        Stage::Ast => {
            let program = match driver::load(&args.file) {
                Ok(program) => program,
                Err(error) => {
                    eprintln!("error: cannot read `{}`: {error}", args.file.display());
                    return EXIT_ERRORS;
                }
            };
            crate::diag::emit_stderr(&program.sources, &program.diagnostics);
            if program.diagnostics.iter().any(|d| d.is_error()) {
                return EXIT_ERRORS;
            }
            if let Some(root) = program.files.first() {
                print!("{}", syntax::dump(&program.sources, &root.ast));
            }
            EXIT_OK
        }
        Stage::Graph | Stage::Opt | Stage::Loops | Stage::Clif | Stage::Grad => {
            let Some(compilation) = compile_file(&args.file, &select(&args.net, Select::All))
            else {
                return EXIT_ERRORS;
            };
            report(&compilation);
            let options = opt::Options {
                fuse: !args.no_fuse,
                only: args.passes.clone(),
            };
            let lower_options = crate::lower::LowerOptions {
                winograd: super::engine::winograd_choice(!args.no_winograd),
            };
            let mut dumps = Vec::new();
            for graph in compilation.graphs() {
                let dump = match args.stage {
                    Stage::Opt => optimized(graph, &options).map(|g| g.dump()),
                    Stage::Loops => optimized(graph, &options).and_then(|g| {
                        crate::lower::emit_loops_with(&g, &lower_options).map_err(|e| e.to_string())
                    }),
                    Stage::Clif => optimized(graph, &options).and_then(|g| {
                        let codegen_options = crate::codegen::CodegenOptions {
                            winograd: lower_options.winograd,
                            ..Default::default()
                        };
                        crate::codegen::emit_clif(&g, &codegen_options).map_err(|e| e.to_string())
                    }),
                    Stage::Grad => Ok(crate::reference::backward_plan::dump_backward_plan(graph)),
                    _ => Ok(graph.dump()),
                };
                match dump {
                    Ok(dump) => dumps.push(dump),
                    Err(message) => {
                        eprintln!("error: network `{}`: {message}", graph.name);
                        return EXIT_ERRORS;
                    }
                }
            }
            print!("{}", dumps.join("\n"));
            if compilation.has_errors() {
                EXIT_ERRORS
            } else {
                EXIT_OK
            }
        }
    }
}

/// `graph` after the optimizer. The passes change constants' sources, not their numbers, so
/// no weight is generated for a dump.
fn optimized(graph: &Graph, options: &opt::Options) -> Result<Graph, String> {
    let mut graph = graph.clone();
    opt::optimize(&mut graph, options).map_err(|e| e.to_string())?;
    Ok(graph)
}
