//! `cnnc weights`: write a network's seeded initial weights to a safetensors file.
//!
//! The file holds exactly what `cnnc run` uses without `--weights` (same seed, same numbers),
//! named as PyTorch's `state_dict` would name them, so it is both a template for an export
//! and a way to check that loading a file gives the same result as seeding.

use super::{compile_network, EXIT_ERRORS, EXIT_OK};
use crate::diag::{self, thousands};
use crate::runtime::Weights;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct WeightsArgs {
    /// The .cnn file.
    pub file: PathBuf,
    /// The network whose weights to write (default: the file's first).
    #[arg(long)]
    pub net: Option<String>,
    /// The seed of the initialization, as `cnnc run --seed`.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The safetensors file to write.
    #[arg(long, value_name = "W.safetensors")]
    pub out: PathBuf,
}

pub fn run(args: &WeightsArgs) -> u8 {
    let Some((compilation, graph)) = compile_network(&args.file, &args.net) else {
        return EXIT_ERRORS;
    };
    let sources = &compilation.program.sources;
    let saved = Weights::seeded(&graph, args.seed).and_then(|weights| {
        weights.save_safetensors(&args.out)?;
        Ok(weights)
    });
    let weights = match saved {
        Ok(weights) => weights,
        Err(error) => {
            diag::emit_stderr(sources, &[error.to_diagnostic(&graph)]);
            return EXIT_ERRORS;
        }
    };
    let n_numbers: u64 = weights.iter().map(|(_, t)| t.len() as u64).sum();
    let n_parameters = graph.n_parameters();
    // Batch-norm running statistics are stored too but are buffers, not parameters.
    let n_buffer_numbers = n_numbers - n_parameters.min(n_numbers);
    let buffers = if n_buffer_numbers > 0 {
        format!(" and {} buffer values", thousands(n_buffer_numbers))
    } else {
        String::new()
    };
    println!(
        "wrote {} tensors of network `{}` to {}: {} parameters{buffers}, seeded with seed {}",
        weights.len(),
        graph.name,
        args.out.display(),
        thousands(n_parameters),
        args.seed
    );
    EXIT_OK
}
