//! The `check`, `summary` and `emit` commands as a user runs them: output, exit codes
//! (0 ok, 1 errors, 2 usage) and the `--json` forms.

use std::process::Command;

mod common;

use common::{cnnc, transcript};

#[test]
fn check_prints_one_line_per_network() {
    let out = cnnc(&["check", "examples/cost.cnn"]);
    assert_eq!(out.code, 0);
    insta::assert_snapshot!(transcript(&out));
}

#[test]
fn check_selects_a_network() {
    let out = cnnc(&["check", "examples/cost.cnn", "--net", "separable"]);
    assert_eq!(out.code, 0);
    assert_eq!(
        out.stdout,
        "separable: 6×6×3 → 4×4×5, 42 parameters, 672 MACs\n"
    );
}

#[test]
fn check_json() {
    let out = cnnc(&["check", "examples/one_layer.cnn", "--json"]);
    assert_eq!(out.code, 0);
    let value: serde_json::Value = serde_json::from_str(&out.stdout).expect("valid JSON");
    assert_eq!(value[0]["network"], "ten_filters");
    assert_eq!(value[0]["parameters"], 280);
    assert_eq!(value[1]["output"], serde_json::json!([28, 28, 6]));
    assert_eq!(
        value[1]["inputs"],
        serde_json::json!([{ "name": "img", "shape": [32, 32, 3] }])
    );
    insta::assert_snapshot!(out.stdout);
}

#[test]
fn check_json_with_errors() {
    let out = cnnc(&["check", "examples/bad/add_stride_mismatch.cnn", "--json"]);
    assert_eq!(out.code, 1);
    let value: serde_json::Value = serde_json::from_str(&out.stdout).expect("valid JSON");
    assert_eq!(value[0]["diagnostics"][0]["code"], "shape-mismatch");
    insta::assert_snapshot!(out.stdout);
}

#[test]
fn check_errors_exit_1() {
    let out = cnnc(&["check", "examples/bad/unknown_layer.cnn"]);
    assert_eq!(out.code, 1);
    assert!(out.stdout.is_empty());
    assert!(
        out.stderr.contains("did you mean `conv`?"),
        "{}",
        out.stderr
    );
}

#[test]
fn warnings_exit_0() {
    let out = cnnc(&["check", "examples/bad/unused_let.cnn"]);
    assert_eq!(out.code, 0);
    assert!(out.stderr.contains("warning[unused-let]"));
    assert!(out.stdout.starts_with("n: 8×8×3 → 6×6×16"));
}

#[test]
fn unknown_network() {
    let out = cnnc(&["check", "examples/cost.cnn", "--net", "seperable"]);
    assert_eq!(out.code, 1);
    insta::assert_snapshot!(transcript(&out));
}

#[test]
fn unreadable_file_exit_1() {
    let out = cnnc(&["check", "examples/does_not_exist.cnn"]);
    assert_eq!(out.code, 1);
    insta::assert_snapshot!(transcript(&out));
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(cnnc(&["check"]).code, 2);
    assert_eq!(cnnc(&["frobnicate", "x.cnn"]).code, 2);
    assert_eq!(cnnc(&["emit", "bytecode", "examples/lenet5.cnn"]).code, 2);
}

#[test]
fn summary_starts_with_the_first_network_of_the_file() {
    let out = cnnc(&["summary", "examples/residual.cnn"]);
    assert_eq!(out.code, 0);
    assert!(out
        .stdout
        .starts_with("identity_shortcut: 56×56×64 → 56×56×64\n"));
    assert!(out.stdout.contains("Total params: 73,984\n"));
    // The JIT's memory plan for one image: the 56×56×64 input, the block's intermediate
    // tensors as the plan reuses them, and the output.
    assert!(
        out.stdout
            .contains("Activation memory (JIT arena, per image): "),
        "{}",
        out.stdout
    );
}

#[test]
fn summary_json() {
    let out = cnnc(&["summary", "examples/lenet5.cnn", "--json"]);
    assert_eq!(out.code, 0);
    let value: serde_json::Value = serde_json::from_str(&out.stdout).expect("valid JSON");
    assert_eq!(value["parameters"], 61_706);
    assert_eq!(value["macs"], 416_520);
    assert_eq!(value["layers"][0]["path"], "conv1");
    // conv1's 28×28×6 output is the largest tensor; the plan fits in 23 KiB.
    assert_eq!(value["arena_bytes"], 23 * 1024);
}

#[test]
fn std_files_are_embedded() {
    // `std/...` resolves to the embedded standard library, whatever the working directory.
    let output = Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .args(["check", "std/lenet.cnn"])
        .current_dir(std::env::temp_dir())
        .output()
        .expect("cnnc runs");
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stdout)
        .starts_with("lenet5: 32×32×1 → 10, 61,706 parameters"));
}

#[test]
fn emit_stages() {
    let ast = cnnc(&["emit", "ast", "examples/lenet5.cnn"]);
    assert_eq!(ast.code, 0);
    assert!(
        ast.stdout.starts_with("network lenet5 @5:1\n"),
        "{}",
        ast.stdout
    );
    let graph = cnnc(&["emit", "graph", "examples/lenet5.cnn"]);
    assert_eq!(graph.code, 0);
    assert!(graph
        .stdout
        .starts_with("network lenet5(image: 32×32×1) -> 10\n"));
}

#[test]
fn graph_as_dot() {
    let out = cnnc(&[
        "graph",
        "examples/residual.cnn",
        "--net",
        "projection_shortcut",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // The projection shortcut branches from the input and joins at the add.
    assert!(out.stdout.contains("n0 -> n6;"), "{}", out.stdout);
    assert!(out.stdout.contains("n7 -> n8;"), "{}", out.stdout);
    insta::assert_snapshot!(out.stdout);
}

/// The code generator's output for the edge detector and one small convolution: a change to
/// the lowering or the generated code shows up here in review.
#[test]
fn emit_loops_and_clif() {
    for (file, net) in [
        ("examples/edges.cnn", "vertical_edges"),
        ("examples/one_layer.cnn", "ten_filters"),
    ] {
        for stage in ["loops", "clif"] {
            let out = cnnc(&["emit", stage, file, "--net", net]);
            assert_eq!(out.code, 0, "{}", out.stderr);
            insta::assert_snapshot!(format!("emit_{stage}_{net}"), out.stdout);
        }
    }
}

#[test]
fn bench_reports_json() {
    let out = cnnc(&[
        "bench",
        "examples/lenet5.cnn",
        "--runs",
        "3",
        "--warmup",
        "1",
        "--threads",
        "1",
        "--json",
        "--profile",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let value: serde_json::Value = serde_json::from_str(&out.stdout).expect("valid JSON");
    for key in [
        "compile_ms",
        "median_ms",
        "min_ms",
        "gflops",
        "images_per_s",
        "arena_bytes",
        "peak_rss_bytes",
    ] {
        assert!(value[key].is_number(), "{key}: {}", out.stdout);
    }
    assert_eq!(value["macs_per_image"], 416_520);
    assert!(value["median_ms"].as_f64() >= value["min_ms"].as_f64());
    // The profile names every kernel once.
    let kernels = value["profile"].as_array().expect("a profile");
    assert!(kernels
        .iter()
        .any(|k| k["kernel"].as_str().is_some_and(|n| n.contains("conv1"))));
}

/// `bench --weights` compiles with a weights file (mapped, as `run` reads it): the seeded
/// weights written to a file bench as the seeded ones do, and a damaged file is the diagnostic
/// `run` gives for it.
#[test]
fn bench_with_a_weights_file() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli_check");
    std::fs::create_dir_all(&dir).expect("a temporary folder");
    let path = dir.join("lenet5.safetensors");
    let path = path.to_str().expect("a UTF-8 path");
    let written = cnnc(&["weights", "examples/lenet5.cnn", "--out", path]);
    assert_eq!(written.code, 0, "{}", written.stderr);
    let bench = |weights: Option<&str>| {
        let mut args = vec![
            "bench",
            "examples/lenet5.cnn",
            "--runs",
            "1",
            "--warmup",
            "0",
        ];
        args.extend(["--threads", "1", "--json"]);
        args.extend(weights.iter().flat_map(|w| ["--weights", w]));
        cnnc(&args)
    };
    let (seeded, loaded) = (bench(None), bench(Some(path)));
    assert_eq!(loaded.code, 0, "{}", loaded.stderr);
    let json = |out: &common::Output| -> serde_json::Value {
        serde_json::from_str(&out.stdout).expect("valid JSON")
    };
    assert_eq!(json(&loaded)["weight_bytes"], json(&seeded)["weight_bytes"]);
    assert!(json(&loaded)["peak_rss_bytes"].is_number());

    let bytes = std::fs::read(path).expect("the weights were written");
    let truncated = dir.join("lenet5_truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("written");
    let truncated = truncated.to_str().expect("a UTF-8 path");
    let out = bench(Some(truncated));
    assert_eq!(out.code, 1);
    let run = cnnc(&["run", "examples/lenet5.cnn", "--weights", truncated]);
    assert_eq!((out.stderr.as_str(), run.code), (run.stderr.as_str(), 1));
    assert!(
        out.stderr.contains("not a valid safetensors file"),
        "{}",
        out.stderr
    );
}

/// At a batch of several images, images per second is the batch over the median run time, and
/// GFLOP/s counts every image; on two threads, which share the images out.
#[test]
fn bench_reports_images_per_second_at_a_batch() {
    let out = cnnc(&[
        "bench",
        "examples/lenet5.cnn",
        "--runs",
        "3",
        "--warmup",
        "1",
        "--batch",
        "40",
        "--threads",
        "2",
        "--json",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let value: serde_json::Value = serde_json::from_str(&out.stdout).expect("valid JSON");
    let number = |key: &str| value[key].as_f64().expect(key);
    assert_eq!(value["batch"], 40);
    let seconds = number("median_ms") * 1e-3;
    let expected_images = 40.0 / seconds;
    assert!((number("images_per_s") - expected_images).abs() <= 1e-9 * expected_images);
    let expected_gflops = 2.0 * 416_520.0 * 40.0 / seconds / 1e9;
    assert!((number("gflops") - expected_gflops).abs() <= 1e-9 * expected_gflops);
}

/// A byte-order mark opening a file and a form feed between tokens are accepted, as rustc
/// accepts them; the same program without them gives the same line.
#[test]
fn byte_order_mark_and_form_feed_are_accepted() {
    let dir = std::env::temp_dir().join(format!("cnnc-bom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plain = "network n(x: 8x8x3) {\n    x -> conv(4, 3)\n}\n";
    let marked = "\u{FEFF}network n(x: 8x8x3) {\n\u{0C}    x -> conv(4, 3)\n}\n".to_string();
    let mut lines = Vec::new();
    for (name, text) in [("plain.cnn", plain.to_string()), ("marked.cnn", marked)] {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let out = cnnc(&["check", path.to_str().unwrap()]);
        assert_eq!(out.code, 0, "{name}: {}", out.stderr);
        lines.push(out.stdout);
    }
    assert_eq!(lines[0], lines[1]);
    assert_eq!(lines[0], "n: 8×8×3 → 6×6×4, 112 parameters, 3,888 MACs\n");
    std::fs::remove_dir_all(&dir).ok();
}

/// A file that is not UTF-8 is reported with the line, column and offset of its first bad
/// byte, so the user can find it.
#[test]
fn non_utf8_file_names_the_bad_byte() {
    let dir = std::env::temp_dir().join(format!("cnnc-utf8-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("latin1.cnn");
    // "réseau" in Latin-1: é is the single byte 0xE9 on line 2.
    std::fs::write(
        &path,
        b"// a network\nnetwork r\xE9seau(x: 8x8x3) {\n    x -> relu\n}\n",
    )
    .unwrap();
    let out = cnnc(&["check", path.to_str().unwrap()]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains(
            "the byte 0xE9 at line 2, column 10 (byte offset 22) does not start a UTF-8 character"
        ),
        "{}",
        out.stderr
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// The preprocessing `cnnc run` and `cnnc train` accept passes `check`: one mean/std value
/// for every channel, a crop equal to the input, a resize whose shorter side is the input's
/// (the longer side follows the image), a crop to the size before the padding, and no
/// resize at all (run resizes to the input). Each changed by one gives `error[preprocess]`.
#[test]
fn preprocess_accepted_at_the_boundaries() {
    let dir = std::env::temp_dir().join(format!("cnnc-preprocess-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        (
            "8x8x3",
            "mean: [0.5], std: [0.25]",
            "mean: [0.5, 0.5], std: [0.25]",
        ),
        ("8x8x3", "resize: 10, crop: 8", "resize: 10, crop: 9"),
        ("8x8x3", "resize: 8, crop: 8", "resize: 7, crop: 8"),
        ("8x12x3", "resize: 8", "resize: 12"),
        (
            "12x12x1",
            "pad: 2, resize: 9, crop: 8",
            "pad: 2, resize: 9, crop: 12",
        ),
        ("12x12x1", "pad: 5", "pad: 6"),
        ("8x8x3", "std: [1.0, 2.0, 0.5]", "std: [1.0, 2.0, -0.5]"),
    ];
    for (i, (shape, good, bad)) in cases.iter().enumerate() {
        for (args, accepted) in [(good, true), (bad, false)] {
            let path = dir.join(format!("case{i}_{accepted}.cnn"));
            let text = format!(
                "network n(x: {shape}) {{\n    preprocess({args})\n    x -> conv(4, 3)\n}}\n"
            );
            std::fs::write(&path, text).unwrap();
            let out = cnnc(&["check", path.to_str().unwrap()]);
            if accepted {
                assert_eq!(out.code, 0, "{shape} {args}: {}", out.stderr);
            } else {
                assert_eq!(out.code, 1, "{shape} {args} was accepted");
                assert!(
                    out.stderr.contains("error[preprocess]"),
                    "{shape} {args}: {}",
                    out.stderr
                );
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Each limit of the numeric arguments and built-ins is accepted exactly up to its edge, and
/// the first value past it gets the range or overflow diagnostic (not a type error).
#[test]
fn number_limits_accepted_at_the_boundaries() {
    let dir = std::env::temp_dir().join(format!("cnnc-number-limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        ("x -> dropout(0.0)", "x -> dropout(-0.5)", "argument-range"),
        ("x -> dropout(0.999)", "x -> dropout(1.0)", "argument-range"),
        (
            "x -> batchnorm(eps: 0.0)",
            "x -> batchnorm(eps: -1e-9)",
            "argument-range",
        ),
        (
            "x -> conv(abs(-9223372036854775807) - 9223372036854775803, 1)",
            "x -> conv(abs(-9223372036854775807 - 1), 1)",
            "overflow",
        ),
        (
            "x -> conv(int(-9.2e18) + 9200000000000000004, 1)",
            "x -> conv(int(-9.3e18), 1)",
            "overflow",
        ),
        (
            "x -> conv(floor(4.9), 1)",
            "x -> conv(floor(1e19), 1)",
            "overflow",
        ),
        (
            "x -> conv(make_divisible(4.0, 4), 1)",
            "x -> conv(make_divisible(9.3e18, 8), 1)",
            "overflow",
        ),
        (
            "x -> conv(4, 1) -> batchnorm(eps: 1e307 * 10.0 / 1e308 / 1e6)",
            "x -> conv(4, 1) -> batchnorm(eps: 1e308 * 10.0 / 1e308 / 1e6)",
            "overflow",
        ),
        (
            "x -> conv(4, 1) -> leaky_relu(slope: 3.4e38)",
            "x -> conv(4, 1) -> leaky_relu(slope: 3.5e38)",
            "argument-range",
        ),
    ];
    for (i, (good, bad, code)) in cases.iter().enumerate() {
        for (body, accepted) in [(good, true), (bad, false)] {
            let path = dir.join(format!("case{i}_{accepted}.cnn"));
            std::fs::write(&path, format!("network n(x: 8x8x3) {{\n    {body}\n}}\n")).unwrap();
            let out = cnnc(&["check", path.to_str().unwrap()]);
            if accepted {
                assert_eq!(out.code, 0, "{body}: {}", out.stderr);
            } else {
                assert_eq!(out.code, 1, "{body} was accepted");
                assert!(
                    out.stderr.contains(&format!("error[{code}]")),
                    "{body}: {}",
                    out.stderr
                );
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Unused blocks and parameters are warnings: `cnnc check` shows them and exits 0; they are
/// held back while the program has errors (an unused block is then most often the one a
/// misspelled call meant).
#[test]
fn unused_blocks_and_parameters_warn_and_check_succeeds() {
    for fixture in ["unused_block.cnn", "unused_parameter.cnn"] {
        let path = format!("examples/bad/{fixture}");
        let out = cnnc(&["check", &path]);
        assert_eq!(out.code, 0, "{fixture}: {}", out.stderr);
        assert!(
            out.stderr.contains("warning[unused-"),
            "{fixture}: {}",
            out.stderr
        );
    }
    let out = cnnc(&["check", "examples/bad/unknown_block.cnn"]);
    assert_eq!(out.code, 1);
    assert!(!out.stderr.contains("unused-block"), "{}", out.stderr);
}
