//! What the CLI tests share: running the built `cnnc` and reading what it printed.
// Each test binary uses its own part of this module.
#![allow(dead_code)]

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
