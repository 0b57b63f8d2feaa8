//! The diagnostics that no program in `examples/bad/` can show, because they are about the
//! files and flags of a run (a weights file, an input, an output path, a batch too large): one
//! test per diagnostic code, each building its bad files in a temp folder and snapshotting
//! what `cnnc` prints. `src/diag/code.rs` names each test here as the fixture of its code.

use std::path::{Path, PathBuf};

mod common;

use common::{cnnc, Output};

/// A folder of this test binary's own files under `target/`, created on first use.
fn temp_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("diagnostics");
    std::fs::create_dir_all(&dir).expect("the temp folder can be created");
    dir
}

/// Writes `text` to `name` in the temp folder and gives back its path.
fn temp_file(name: &str, text: impl AsRef<[u8]>) -> String {
    let path = temp_dir().join(name);
    std::fs::write(&path, text).expect("the temp file can be written");
    path.display().to_string()
}

/// Exit code, stdout and stderr, with the temp folder written as `[TMP]` so that snapshots do
/// not depend on where the repository is checked out.
fn transcript(out: &Output) -> String {
    common::transcript(out).replace(&temp_dir().display().to_string(), "[TMP]")
}

/// A one-conv network on a 4×4 gray image whose weights are `c1.weight` (2×1×3×3), `c1.bias`,
/// written as `{stem}.cnn` (one file per test: the tests run in parallel).
fn small_network(stem: &str) -> String {
    temp_file(
        &format!("{stem}.cnn"),
        "network small(x: 4x4x1) {\n    x -> c1: conv(2, 3) -> relu\n}\n",
    )
}

/// A network of 4,000,000,000 parameters (a dense layer of 2e9 outputs on one input): each
/// tensor is within the per-tensor limit, their total is not.
fn huge_network(stem: &str) -> String {
    temp_file(
        &format!("{stem}.cnn"),
        "network huge(x: 1x1x1) {\n    x -> flatten -> dense(2000000000)\n}\n",
    )
}

#[test]
fn input_batch_too_large() {
    let network = small_network("input_batch_too_large");
    let out = cnnc(&["run", &network, "--batch", "1000000000"]);
    assert_eq!(out.code, 1);
    insta::assert_snapshot!(transcript(&out));
}

#[test]
fn input_count_differs() {
    let network = small_network("input_count_differs");
    let out = cnnc(&["run", &network, "--input", "a.npy", "--input", "b.npy"]);
    assert_eq!(out.code, 1);
    insta::assert_snapshot!(transcript(&out));
}

#[test]
fn output_file_unwritable() {
    let network = small_network("output_file_unwritable");
    let output = temp_dir().join("no_such_folder").join("out.npy");
    let out = cnnc(&["run", &network, "--output", &output.display().to_string()]);
    assert_eq!(out.code, 1);
    insta::assert_snapshot!(transcript(&out));
}

/// The reference backend names the layer whose output is too large; see the report of issue 8
/// for the JIT's message, which points at the input.
#[test]
fn run_output_too_large() {
    let network = temp_file(
        "wide.cnn",
        "network wide(x: 1x1x1) {\n    x -> flatten -> dense(4096)\n}\n",
    );
    let out = cnnc(&[
        "run",
        &network,
        "--batch",
        "600000",
        "--backend",
        "reference",
    ]);
    assert_eq!(out.code, 1);
    insta::assert_snapshot!(transcript(&out));
}

#[test]
fn weights_too_large_to_seed() {
    let network = huge_network("weights_too_large_to_seed");
    let out = cnnc(&["run", &network]);
    assert_eq!(out.code, 1);
    insta::assert_snapshot!(transcript(&out));
}

#[test]
fn bench_weights_too_large_to_seed() {
    let network = huge_network("bench_weights_too_large_to_seed");
    let out = cnnc(&["bench", &network]);
    assert_eq!(out.code, 1);
    insta::assert_snapshot!(transcript(&out));
}

/// A safetensors file whose `c1.weight` holds integers (I32), which cnnc does not convert.
#[test]
fn weights_of_wrong_dtype() {
    let network = small_network("weights_of_wrong_dtype");
    let header = concat!(
        "{\"c1.weight\":{\"dtype\":\"I32\",\"shape\":[2,1,3,3],\"data_offsets\":[0,72]},",
        "\"c1.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[72,80]}}"
    );
    let mut header = header.to_string();
    while !header.len().is_multiple_of(8) {
        header.push(' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.resize(bytes.len() + 80, 0);
    let weights = temp_file("i32.safetensors", bytes);
    let out = cnnc(&["run", &network, "--weights", &weights]);
    assert_eq!(out.code, 1);
    insta::assert_snapshot!(transcript(&out));
}
