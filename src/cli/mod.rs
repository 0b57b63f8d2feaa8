//! The subcommands of `cnnc`, one file each; `main.rs` only dispatches. Each returns the
//! process exit code: 0 success, 1 the program or its inputs are wrong, 2 usage.

pub mod augment;
pub mod bench;
mod bench_train;
pub mod check;
pub mod emit;
pub mod engine;
pub mod eval;
pub mod export;
pub mod graph;
pub mod json;
pub mod run;
pub mod summary;
pub mod train;
mod train_stage;
pub mod weights;

use crate::diag;
use crate::driver::{self, Compilation, Select};
use std::path::Path;

pub const EXIT_OK: u8 = 0;
pub const EXIT_ERRORS: u8 = 1;

/// Loads and compiles a file (`-`: standard input), printing the diagnostics to standard
/// error. `None` when the file cannot be read (already reported).
pub fn compile_file(path: &Path, select: &Select) -> Option<Compilation> {
    let loaded = if path == Path::new("-") {
        driver::load_reader(std::io::stdin().lock())
    } else {
        driver::load(path)
    };
    match loaded {
        Ok(program) => Some(driver::compile(program, select)),
        Err(error) => {
            let name = match path == Path::new("-") {
                true => driver::STDIN_NAME.to_string(),
                false => path.display().to_string(),
            };
            eprintln!("error: cannot read `{name}`: {error}");
            None
        }
    }
}

/// Compiles the network a command works on (`--net`, or the file's first) and takes its
/// graph, printing the diagnostics; `None` when there is nothing to work on.
pub fn compile_network(
    path: &Path,
    net: &Option<String>,
) -> Option<(Compilation, crate::graph::Graph)> {
    let mut compilation = compile_file(path, &select(net, Select::First))?;
    report(&compilation);
    if compilation.has_errors() {
        return None;
    }
    let graph = compilation
        .networks
        .iter_mut()
        .find_map(|network| network.graph.take())?;
    Some((compilation, graph))
}

pub fn report(compilation: &Compilation) {
    diag::emit_stderr(&compilation.program.sources, &compilation.all_diagnostics());
}

pub fn select(net: &Option<String>, default: Select) -> Select {
    match net {
        Some(name) => Select::Named(name.clone()),
        None => default,
    }
}
