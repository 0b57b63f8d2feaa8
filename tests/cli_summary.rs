//! `cnnc summary` as a user runs it: every network of a file, the input and "connected to"
//! columns, `--depth`, `--nchw`, `--json`; and `cnnc check -` reading standard input.

use std::io::Write;
use std::process::{Command, Stdio};

mod common;

use common::{cnnc, transcript, Output};

#[test]
fn summary_shows_every_network_of_the_file() {
    let out = cnnc(&["summary", "examples/cost.cnn"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let titles: Vec<&str> = out
        .stdout
        .lines()
        .filter(|line| line.contains(" → "))
        .collect();
    assert_eq!(
        titles,
        [
            "normal: 6×6×3 → 4×4×5",
            "separable: 6×6×3 → 4×4×5",
            "big_conv: 28×28×192 → 28×28×32",
            "bottleneck: 28×28×192 → 28×28×32"
        ]
    );
    insta::assert_snapshot!(out.stdout);
}

#[test]
fn summary_connects_the_branches_of_a_block() {
    // Inception: every branch reads `x`; the concat reads the four branches' last layers.
    let out = cnnc(&["summary", "examples/inception.cnn"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let concat = out
        .stdout
        .lines()
        .find(|line| line.starts_with("inception3a.concat"))
        .expect("the concat row");
    assert!(
        concat.ends_with(
            "inception3a.branch1.relu, inception3a.branch2.1.relu, \
             inception3a.branch3.1.relu, inception3a.branch4.0.relu"
        ),
        "{concat}"
    );
    // A plain chain needs no such column: each row reads the one above it.
    let lenet = cnnc(&["summary", "examples/lenet5.cnn"]);
    assert!(!lenet.stdout.contains("Connected to"), "{}", lenet.stdout);
}

#[test]
fn summary_depth_collapses_blocks_into_sums() {
    let out = cnnc(&["summary", "examples/inception.cnn", "--depth", "2"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // branch2 is conv_bn(96, 1) then conv_bn(128, 3) on 192 channels, without conv biases:
    // 192·96 + 2·96 + 96·128·9 + 2·128 = 18,432 + 192 + 110,592 + 256 = 129,472 parameters.
    let branch2 = out
        .stdout
        .lines()
        .find(|line| line.starts_with("inception3a.branch2 "))
        .expect("the collapsed branch");
    assert!(branch2.contains("sequence (6 layers)"), "{branch2}");
    assert!(branch2.contains("129,472"), "{branch2}");
    assert!(out.stdout.contains("Total params: 155,872\n"));
    insta::assert_snapshot!(out.stdout);
}

#[test]
fn summary_depth_one_of_resnet18() {
    let out = cnnc(&[
        "summary",
        "std/resnet.cnn",
        "--net",
        "resnet18",
        "--depth",
        "1",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // layer1 is two basic blocks of two 3×3×64×64 convs and two batch norms each:
    // 2 · (2 · 36,864 + 2 · 128) = 147,968.
    let layer1 = out
        .stdout
        .lines()
        .find(|line| line.starts_with("layer1 "))
        .expect("layer1's row");
    assert!(layer1.contains("147,968"), "{layer1}");
    assert!(!out.stdout.contains("layer1.0"), "{}", out.stdout);
    insta::assert_snapshot!(out.stdout);
}

#[test]
fn summary_nchw_puts_channels_first() {
    let out = cnnc(&["summary", "examples/lenet5.cnn", "--nchw"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("Output (C×H×W)"), "{}", out.stdout);
    insta::assert_snapshot!(out.stdout);
}

#[test]
fn summary_depth_zero_is_a_usage_error() {
    let out = cnnc(&["summary", "examples/lenet5.cnn", "--depth", "0"]);
    assert_eq!(out.code, 2, "{}", transcript(&out));
}

#[test]
fn summary_json_shapes_are_arrays() {
    let out = cnnc(&[
        "summary",
        "examples/inception.cnn",
        "--json",
        "--depth",
        "2",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let value: serde_json::Value = serde_json::from_str(&out.stdout).expect("valid JSON");
    assert_eq!(
        value["inputs"],
        serde_json::json!([{ "name": "x", "shape": [28, 28, 192] }])
    );
    assert_eq!(value["output"], serde_json::json!([28, 28, 256]));
    assert_eq!(
        value["layers"][5]["inputs"][1],
        serde_json::json!([28, 28, 128])
    );
    insta::assert_snapshot!(out.stdout);
    // Flat shapes are one number long; --nchw orders the arrays channels first.
    let lenet = cnnc(&["summary", "examples/lenet5.cnn", "--json", "--nchw"]);
    let value: serde_json::Value = serde_json::from_str(&lenet.stdout).expect("valid JSON");
    assert_eq!(value["layout"], "CHW");
    assert_eq!(value["inputs"][0]["shape"], serde_json::json!([1, 32, 32]));
    assert_eq!(value["output"], serde_json::json!([10]));
}

#[test]
fn summary_json_of_several_networks_is_an_array() {
    let out = cnnc(&["summary", "examples/cost.cnn", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let value: serde_json::Value = serde_json::from_str(&out.stdout).expect("valid JSON");
    let networks: Vec<&str> = value
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|n| n["network"].as_str())
        .collect();
    assert_eq!(networks, ["normal", "separable", "big_conv", "bottleneck"]);
    assert_eq!(value[1]["macs"], 672);
}

/// Runs `cnnc` with `input` on its standard input.
fn cnnc_with_stdin(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cnnc runs");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).expect("stdin written");
    }
    let output = child.wait_with_output().expect("cnnc ends");
    Output {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn check_reads_standard_input() {
    let source = std::fs::read_to_string("examples/cost.cnn").expect("the example");
    let out = cnnc_with_stdin(&["check", "-"], &source);
    let from_file = cnnc(&["check", "examples/cost.cnn"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, from_file.stdout);
    // Imports are relative to the current directory.
    let out = cnnc_with_stdin(
        &["check", "-"],
        "use std::lenet\nnetwork mine(x: 32x32x1) { x -> lenet5 }\n",
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.starts_with("mine: 32×32×1 → 10,"),
        "{}",
        out.stdout
    );
}

#[test]
fn check_names_standard_input_in_diagnostics() {
    let out = cnnc_with_stdin(
        &["check", "-"],
        "network n(x: 8x8x3) {\n    x -> conv(4, 9)\n}\n",
    );
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("<stdin>:2:"), "{}", out.stderr);
    insta::assert_snapshot!(transcript(&out));
    let out = cnnc_with_stdin(&["check", "-"], "network n(x: 8x8x3) { x \u{0} }");
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("<stdin>"), "{}", out.stderr);
}
