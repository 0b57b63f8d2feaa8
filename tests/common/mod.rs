//! What the CLI tests share: running the built `cnnc` and reading what it printed.
// Each test binary uses its own part of this module.
#![allow(dead_code)]

use cnnc::graph::{Graph, Op};
use cnnc::runtime::Weights;
use ndarray::{ArrayD, IxDyn};
use std::process::Command;

pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cnnc` with `args` from the package root, as a user in a checkout would.
pub fn cnnc(args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cnnc runs");
    Output {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Exit code, stdout and stderr as one text, for snapshots.
pub fn transcript(out: &Output) -> String {
    format!(
        "exit code: {}\n--- stdout\n{}--- stderr\n{}",
        out.code, out.stdout, out.stderr
    )
}

struct Rng(u64);

impl Rng {
    fn uniform(&mut self, low: f32, high: f32) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let unit = (z >> 40) as f32 / (1u64 << 24) as f32;
        low + (high - low) * unit
    }
}

/// Seeded weights with every batch norm given non-trivial statistics, so folding
/// is exercised on real numbers rather than on the identity the seeded init gives:
/// running mean ~ U(−0.5, 0.5), running variance ~ U(0.5, 2), γ ~ U(0.5, 1.5), β ~ U(−0.5, 0.5).
pub fn weights_with_batch_norm_statistics(graph: &Graph, seed: u64) -> Weights {
    let mut weights = Weights::seeded(graph, seed).expect("the weights fit");
    let mut rng = Rng(seed);
    for (name, node, spec) in graph.named_params() {
        if !matches!(graph.nodes[node].op, Op::BatchNorm { .. }) {
            continue;
        }
        let (low, high) = match spec.name {
            "running_mean" | "bias" => (-0.5, 0.5),
            "running_var" => (0.5, 2.0),
            _ => (0.5, 1.5),
        };
        let values: Vec<f32> = (0..spec.numel()).map(|_| rng.uniform(low, high)).collect();
        let tensor = ArrayD::from_shape_vec(IxDyn(&spec.shape), values).expect("a 1-D tensor");
        weights.insert(name, tensor);
    }
    weights
}
