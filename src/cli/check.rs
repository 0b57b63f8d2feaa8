//! `cnnc check`: one line per network, or its diagnostics.

use super::{compile_file, json, report, select, EXIT_ERRORS, EXIT_OK};
use crate::driver::Select;
use crate::graph::summary::Summary;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct CheckArgs {
    /// The .cnn file; `-` reads the program from standard input (named `<stdin>`).
    pub file: PathBuf,
    /// Check only this network (default: every network of the file).
    #[arg(long)]
    pub net: Option<String>,
    /// One JSON object per network, for tools.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &CheckArgs) -> u8 {
    let Some(compilation) = compile_file(&args.file, &select(&args.net, Select::All)) else {
        return EXIT_ERRORS;
    };
    if args.json {
        println!("{}", json::check_report(&compilation));
    } else {
        report(&compilation);
        for graph in compilation.graphs() {
            println!("{}", Summary::of(graph).check_line());
        }
    }
    if compilation.has_errors() {
        EXIT_ERRORS
    } else {
        EXIT_OK
    }
}
