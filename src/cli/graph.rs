//! `cnnc graph`: the network as a picture, Graphviz DOT or (with `dot` installed) SVG.

use super::{compile_file, report, select, EXIT_ERRORS, EXIT_OK};
use crate::driver::Select;
use crate::graph::dot::to_dot;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

#[derive(clap::Args)]
pub struct GraphArgs {
    /// The .cnn file.
    pub file: PathBuf,
    /// The network to draw (default: the file's first).
    #[arg(long)]
    pub net: Option<String>,
    /// Render SVG with Graphviz's `dot` instead of printing DOT.
    #[arg(long)]
    pub svg: bool,
}

pub fn run(args: &GraphArgs) -> u8 {
    let Some(compilation) = compile_file(&args.file, &select(&args.net, Select::First)) else {
        return EXIT_ERRORS;
    };
    report(&compilation);
    let Some(graph) = compilation.graphs().next() else {
        return EXIT_ERRORS;
    };
    let dot = to_dot(graph);
    if !args.svg {
        print!("{dot}");
        return EXIT_OK;
    }
    match render_svg(&dot) {
        Ok(svg) => {
            print!("{svg}");
            EXIT_OK
        }
        Err(error) => {
            eprintln!("error: cannot run Graphviz's `dot` to render SVG: {error}");
            eprintln!(" = help: install Graphviz, or leave out --svg to print DOT");
            EXIT_ERRORS
        }
    }
}

fn render_svg(dot: &str) -> std::io::Result<String> {
    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(dot.as_bytes())?;
    }
    let output = child.wait_with_output()?;
    if !output.status.success() {
        return Err(std::io::Error::other(
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
