//! `cnnc export`: write a network and its weights as an ONNX model, to deploy it anywhere or
//! to check cnnc against another engine.
//!
//! The weights are those `cnnc run` uses with the same flags: a safetensors file checked
//! against the network, or the seeded initialization.

use super::{compile_network, EXIT_ERRORS, EXIT_OK};
use crate::diag::{self, thousands, Code, Diagnostic, Severity};
use crate::export::onnx::{self, ExportError, ExportOptions};
use crate::graph::Graph;
use crate::runtime::{LoadOptions, Weights};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ExportArgs {
    /// The .cnn file.
    pub file: PathBuf,
    /// The network to export (default: the file's first).
    #[arg(long)]
    pub net: Option<String>,
    /// Trained weights, named as in PyTorch's state_dict (default: a seeded initialization).
    #[arg(long, value_name = "W.safetensors")]
    pub weights: Option<PathBuf>,
    /// The seed of the initial weights, as `cnnc run --seed`.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// A fixed batch size for the model's input and output (default: a symbolic `N`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: Option<u64>,
    /// The ONNX file to write.
    #[arg(long, value_name = "OUT.onnx")]
    pub onnx: PathBuf,
}

pub fn run(args: &ExportArgs) -> u8 {
    let Some((compilation, graph)) = compile_network(&args.file, &args.net) else {
        return EXIT_ERRORS;
    };
    let sources = &compilation.program.sources;
    let weights = match load_weights(args, &graph) {
        Ok((weights, warnings)) => {
            diag::emit_stderr(sources, &warnings);
            weights
        }
        Err(errors) => {
            diag::emit_stderr(sources, &errors);
            return EXIT_ERRORS;
        }
    };
    let options = ExportOptions {
        batch: args.batch.map(|b| b as usize),
    };
    let written = onnx::export(&graph, &weights, &options).and_then(|model| {
        let bytes = onnx::save(&args.onnx, &model)?;
        Ok((model, bytes))
    });
    let (model, bytes) = match written {
        Ok(written) => written,
        Err(error) => {
            diag::emit_stderr(sources, &[export_diagnostic(&graph, &error)]);
            return EXIT_ERRORS;
        }
    };
    let (n_nodes, n_initializers) = model
        .graph
        .as_ref()
        .map_or((0, 0), |g| (g.node.len(), g.initializer.len()));
    let n_numbers: u64 = weights.iter().map(|(_, t)| t.len() as u64).sum();
    let source = match &args.weights {
        Some(path) => format!("weights from {}", path.display()),
        None => format!("seeded weights (seed {})", args.seed),
    };
    println!(
        "wrote {}: network `{}`, {n_nodes} nodes, {n_initializers} initializers ({} numbers, \
         {source}), opset {}, {} bytes",
        args.onnx.display(),
        graph.name,
        thousands(n_numbers),
        onnx::OPSET_VERSION,
        thousands(bytes as u64),
    );
    EXIT_OK
}

/// The weights `cnnc run` would use, and the warnings loading them gave.
fn load_weights(
    args: &ExportArgs,
    graph: &Graph,
) -> Result<(Weights, Vec<Diagnostic>), Vec<Diagnostic>> {
    let Some(path) = &args.weights else {
        return Weights::seeded(graph, args.seed)
            .map(|weights| (weights, Vec::new()))
            .map_err(|error| vec![error.to_diagnostic(graph)]);
    };
    let options = LoadOptions {
        seed: args.seed,
        ..LoadOptions::default()
    };
    let as_warning = |diagnostic: Diagnostic| Diagnostic {
        severity: Severity::Warning,
        ..diagnostic
    };
    match Weights::load_safetensors(path, graph, &options) {
        Ok(loaded) => {
            let warnings = loaded
                .warnings
                .iter()
                .map(|w| as_warning(w.to_diagnostic(graph)))
                .collect();
            Ok((loaded.weights, warnings))
        }
        Err(problems) => {
            let mut all: Vec<Diagnostic> = problems
                .errors
                .iter()
                .map(|e| e.to_diagnostic(graph))
                .collect();
            all.extend(
                problems
                    .warnings
                    .iter()
                    .map(|w| as_warning(w.to_diagnostic(graph))),
            );
            Err(all)
        }
    }
}

fn export_diagnostic(graph: &Graph, error: &ExportError) -> Diagnostic {
    match error.node() {
        Some(node) => graph.diagnostic_at(node, Code::Export, error.to_string(), "this layer"),
        None => Diagnostic::global(Code::Export, error.to_string()),
    }
}
