//! `cnnc emit STAGE FILE`: the compiler's intermediate forms as text.

use super::{compile_file, report, select, EXIT_ERRORS, EXIT_OK};
use crate::driver::{self, Select};
use crate::syntax;
use std::path::PathBuf;

#[derive(Copy, Clone, Debug, clap::ValueEnum)]
pub enum Stage {
    /// The syntax tree of the file.
    Ast,
    /// The expanded graph with shapes, parameters and MACs.
    Graph,
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
        Stage::Graph => {
            let Some(compilation) = compile_file(&args.file, &select(&args.net, Select::All))
            else {
                return EXIT_ERRORS;
            };
            report(&compilation);
            let dumps: Vec<String> = compilation.graphs().map(|g| g.dump()).collect();
            print!("{}", dumps.join("\n"));
            if compilation.has_errors() {
                EXIT_ERRORS
            } else {
                EXIT_OK
            }
        }
    }
}
