//! `cnnc train` and `cnnc eval` end to end on the 512 + 256 MNIST digits of `tests/data/mnist`,
//! a few optimizer steps each: the validation of the last epoch and `eval` agree, a seed gives
//! the same loss curve twice (one thread and two), a frozen base is bit-identical after
//! training and the optimizer updates exactly the summary's trainable count, resuming gives the
//! weights of an uninterrupted run, divergence names its step and keeps the last checkpoint,
//! and bad flags and files are diagnostics.

use cnnc::train::checkpoint::{load_checkpoint, Checkpoint};
use cnnc::train::optim::ParamState;
use serde_json::Value;
use std::path::{Path, PathBuf};

mod common;

use common::{cnnc, Output};

const LENET: &str = "examples/lenet5_mnist.cnn";
const TRAIN: &str = "tests/data/mnist/train-images.npy";
const TEST: &str = "tests/data/mnist/test-images.npy";
const TRANSFER: &str = "tests/data/train/small_transfer.cnn";

fn temp_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli_train");
    std::fs::create_dir_all(&dir).expect("the temp folder can be created");
    dir
}

fn temp(name: &str) -> String {
    temp_dir().join(name).display().to_string()
}

/// Exit code and output, with the temp folder as `[TMP]` and each epoch's speed and time
/// (which depend on the machine) as `[speed, time]`.
fn transcript(out: &Output) -> String {
    let text = common::transcript(out).replace(&temp_dir().display().to_string(), "[TMP]");
    let lines: Vec<String> = text
        .lines()
        .map(
            |line| match (line.starts_with("epoch "), line.find(" images/s")) {
                (true, Some(at)) => {
                    let start = line[..at].rfind("  ").unwrap_or(at);
                    format!("{}  [speed, time]", &line[..start])
                }
                _ => line.to_string(),
            },
        )
        .collect();
    lines.join("\n") + "\n"
}

fn ok_json(out: &Output) -> Value {
    assert_eq!(out.code, 0, "{}", transcript(out));
    serde_json::from_str(&out.stdout).expect("the output is JSON")
}

fn checkpoint(path: &str) -> Checkpoint {
    load_checkpoint(Path::new(path)).expect("the checkpoint loads")
}

/// The per-epoch training losses of a `--json` run.
fn losses(report: &Value) -> Vec<f64> {
    report["epochs"]
        .as_array()
        .expect("epochs")
        .iter()
        .map(|e| e["loss"].as_f64().expect("loss"))
        .collect()
}

#[test]
fn eval_of_the_written_weights_matches_the_last_validation() {
    let out = temp("eval_matches.safetensors");
    let report = ok_json(&cnnc(&[
        "train", LENET, "--data", TRAIN, "--val", TEST, "--epochs", "2", "--steps", "10", "--out",
        &out, "--json",
    ]));
    let epochs = report["epochs"].as_array().expect("epochs");
    assert_eq!(epochs.len(), 2);
    assert_eq!(epochs[1]["global_step"], 10);
    let validation = &epochs[1]["validation"];
    let eval = ok_json(&cnnc(&[
        "eval",
        LENET,
        "--weights",
        &out,
        "--data",
        TEST,
        "--json",
    ]));
    assert_eq!(eval["n"], 256);
    assert_eq!(eval["accuracy"], validation["accuracy"]);
    assert_eq!(eval["loss"], validation["loss"]);
    let accuracy = eval["accuracy"].as_f64().expect("accuracy");
    assert!((0.0..=1.0).contains(&accuracy));
    // Ten steps of Adam already beat chance (10 %) by far on digits.
    assert!(accuracy > 0.3, "accuracy {accuracy}");
    let confusion = eval["confusion"].as_array().expect("a confusion matrix");
    let total: u64 = confusion
        .iter()
        .flat_map(|row| row.as_array().expect("row").iter())
        .map(|c| c.as_u64().expect("count"))
        .sum();
    assert_eq!(total, 256);
    assert!(eval["top5"].as_f64().expect("top-5") >= accuracy);
}

#[test]
fn a_seed_gives_the_same_loss_curve_twice() {
    for threads in ["1", "2"] {
        let run = || {
            ok_json(&cnnc(&[
                "train",
                LENET,
                "--data",
                TRAIN,
                "--epochs",
                "2",
                "--batch",
                "128",
                "--steps",
                "6",
                "--threads",
                threads,
                "--seed",
                "7",
                "--json",
            ]))
        };
        let (first, second) = (run(), run());
        assert_eq!(losses(&first).len(), 2);
        assert_eq!(losses(&first), losses(&second), "threads {threads}");
    }
    // Another seed, another curve.
    let other = ok_json(&cnnc(&[
        "train", LENET, "--data", TRAIN, "--epochs", "1", "--batch", "32", "--steps", "3",
        "--seed", "8", "--json",
    ]));
    let seven = ok_json(&cnnc(&[
        "train", LENET, "--data", TRAIN, "--epochs", "1", "--batch", "32", "--steps", "3",
        "--seed", "7", "--json",
    ]));
    assert_ne!(losses(&other), losses(&seven));
}

#[test]
fn a_frozen_base_is_bit_identical_and_the_trainable_count_is_what_is_updated() {
    let base = temp("base.safetensors");
    let made = cnnc(&[
        "weights", TRANSFER, "--net", "base", "--seed", "3", "--out", &base,
    ]);
    assert_eq!(made.code, 0, "{}", transcript(&made));
    let out = temp("transfer.safetensors");
    let trained = cnnc(&[
        "train",
        TRANSFER,
        "--net",
        "small_transfer",
        "--data",
        TRAIN,
        "--weights",
        &base,
        "--allow-missing",
        "head",
        "--epochs",
        "1",
        "--steps",
        "4",
        "--optimizer",
        "sgd",
        "--lr",
        "0.5",
        "--momentum",
        "0.9",
        "--out",
        &out,
    ]);
    assert_eq!(trained.code, 0, "{}", transcript(&trained));
    assert!(trained
        .stdout
        .contains("1,450 trainable parameters, 112 frozen"));
    let before = checkpoint(&base);
    let after = checkpoint(&out);
    let mut compared = 0;
    for (name, tensor) in before.weights.iter() {
        let trained = after.weights.get(name).expect("the base tensor is written");
        let same = tensor
            .iter()
            .zip(trained.iter())
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{name} changed");
        compared += 1;
    }
    assert_eq!(compared, 6, "conv weight/bias, bn weight/bias/mean/var");
    let head = after.weights.get("head.weight").expect("head");
    assert!(head.iter().any(|&v| v != 0.0));
    // What the optimizer holds state for is what `cnnc summary` counts as trainable.
    let summary = cnnc(&["summary", TRANSFER, "--net", "small_transfer", "--json"]);
    let summary: Value = serde_json::from_str(&summary.stdout).expect("JSON");
    let updated: usize = after
        .optimizer_state
        .iter()
        .map(|(_, state)| match state {
            ParamState::Sgd {
                momentum_buffer: Some(b),
            } => b.len(),
            other => panic!("unexpected state {other:?}"),
        })
        .sum();
    assert_eq!(summary["trainable_parameters"], updated as u64);
    let names: Vec<&str> = after
        .optimizer_state
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(names, ["head.bias", "head.weight"]);
}

#[test]
fn resuming_gives_the_weights_of_an_uninterrupted_run() {
    let common_args = ["--data", TRAIN, "--batch", "128", "--seed", "2"];
    let straight = temp("straight.safetensors");
    let mut args = vec!["train", LENET, "--epochs", "2", "--out", &straight];
    args.extend(common_args);
    assert_eq!(cnnc(&args).code, 0);
    let half = temp("half.safetensors");
    let mut args = vec!["train", LENET, "--epochs", "1", "--out", &half];
    args.extend(common_args);
    assert_eq!(cnnc(&args).code, 0);
    let resumed = temp("resumed.safetensors");
    let mut args = vec![
        "train", LENET, "--epochs", "2", "--resume", &half, "--out", &resumed,
    ];
    args.extend(common_args);
    let out = cnnc(&args);
    assert_eq!(out.code, 0, "{}", transcript(&out));
    assert!(out.stdout.contains("resumed from"), "{}", out.stdout);
    assert!(
        !out.stdout.contains("epoch 1/2"),
        "epoch 1 is not trained again"
    );
    let (straight, resumed) = (checkpoint(&straight), checkpoint(&resumed));
    assert_eq!(straight.progress, resumed.progress);
    assert_eq!(straight.progress.global_step, 8);
    assert_eq!(straight.weights, resumed.weights);
    assert_eq!(straight.optimizer_state, resumed.optimizer_state);
}

#[test]
fn divergence_names_the_step() {
    // One step per epoch (a batch of all 512 digits): epoch 1 ends and writes its checkpoint,
    // and the step of epoch 2 meets the weights a learning rate of 1e30 made.
    let out = temp("diverged.safetensors");
    let _ = std::fs::remove_file(&out);
    let run = cnnc(&[
        "train",
        LENET,
        "--data",
        TRAIN,
        "--epochs",
        "3",
        "--batch",
        "512",
        "--optimizer",
        "sgd",
        "--lr",
        "1e30",
        "--threads",
        "1",
        "--out",
        &out,
    ]);
    assert_eq!(run.code, 1);
    insta::assert_snapshot!(transcript(&run));
    let kept = checkpoint(&out);
    assert_eq!(kept.progress.epoch, 1);
}

#[test]
fn a_flag_for_another_optimizer_is_refused() {
    let run = cnnc(&["train", LENET, "--data", TRAIN, "--momentum", "0.9"]);
    assert_eq!(run.code, 1);
    insta::assert_snapshot!(transcript(&run));
}

#[test]
fn a_text_file_as_weights_is_not_a_safetensors_file() {
    let path = temp("notes.safetensors");
    std::fs::write(&path, "these are my notes, not weights\n").expect("write");
    let eval = cnnc(&["eval", LENET, "--weights", &path, "--data", TEST]);
    assert_eq!(eval.code, 1);
    let resume = cnnc(&["train", LENET, "--data", TRAIN, "--resume", &path]);
    assert_eq!(resume.code, 1);
    insta::assert_snapshot!(format!("{}\n{}", transcript(&eval), transcript(&resume)));
}

#[test]
fn digits_without_the_declared_padding_are_explained() {
    let run = cnnc(&[
        "eval",
        "examples/lenet5.cnn",
        "--weights",
        "nothing.safetensors",
        "--data",
        TEST,
    ]);
    assert_eq!(run.code, 1);
    insta::assert_snapshot!(transcript(&run));
}

#[test]
fn the_recipe_is_printed_with_flags_over_it() {
    let run = cnnc(&[
        "train",
        LENET,
        "--data",
        TRAIN,
        "--steps",
        "1",
        "--optimizer",
        "sgd",
        "--lr",
        "0.05",
        "--nesterov",
        "--momentum",
        "0.9",
        "--schedule",
        "cosine",
        "--threads",
        "1",
    ]);
    assert_eq!(run.code, 0, "{}", transcript(&run));
    let recipe = run
        .stdout
        .lines()
        .find(|l| l.starts_with("recipe:"))
        .expect("a recipe line");
    assert_eq!(
        recipe,
        "recipe: sgd (lr 0.05, momentum 0.9, nesterov, weight decay 0), 10 epoch(s), batch 64, \
         schedule cosine (over 10 epochs to 0), seed 1; 1 thread(s)"
    );
}

#[test]
fn a_batch_whose_activations_do_not_fit_is_refused() {
    let run = cnnc(&[
        "bench",
        "tests/data/train/huge_activations.cnn",
        "--train",
        "--batch",
        "64",
        "--runs",
        "1",
        "--warmup",
        "0",
        "--threads",
        "1",
    ]);
    assert_eq!(run.code, 1);
    insta::assert_snapshot!(transcript(&run));
}

#[test]
fn summary_reports_the_training_step_memory() {
    // LeNet-5: one arena per thread; ResNet-18 (batch norms): one per image; a network the
    // JIT cannot differentiate yet (a grouped conv) names why.
    let lenet = cnnc(&["summary", LENET, "--train"]);
    assert_eq!(lenet.code, 0);
    let last = |out: &str| out.lines().last().unwrap_or_default().to_string();
    insta::assert_snapshot!(last(&lenet.stdout), @"Training step (compiled): arena 55.12 KiB per thread, gradient accumulators 242.06 KiB per thread");
    let resnet = cnnc(&["summary", "std/resnet.cnn", "--net", "resnet18", "--train"]);
    insta::assert_snapshot!(last(&resnet.stdout), @"Training step (compiled): arena 26.83 MiB per image (batch norms in training need the whole batch's activations), gradient accumulators 44.56 MiB per thread");
    let grouped = temp("grouped.cnn");
    let source = "network g(x: 6x6x4) { x -> c: conv(4, 3, groups: 2) -> flatten -> fc: dense(3) }";
    std::fs::write(&grouped, source).expect("write");
    let grouped = cnnc(&["summary", &grouped, "--train"]);
    insta::assert_snapshot!(last(&grouped.stdout), @"Training step: on the reference interpreter (the JIT cannot train it yet: n1 (conv c) has no compiled backward yet)");
    let json = cnnc(&["summary", LENET, "--train", "--json"]);
    let value: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(value["train"]["arena_per_image"], false);
    assert_eq!(
        value["train"]["accumulator_bytes"].as_u64().map(|b| b % 4),
        Some(0)
    );
}

#[test]
fn bench_train_profiles_the_kernels_and_the_work_between_them() {
    let run = cnnc(&[
        "bench",
        LENET,
        "--train",
        "--batch",
        "4",
        "--runs",
        "2",
        "--warmup",
        "1",
        "--threads",
        "2",
        "--profile",
        "--json",
    ]);
    assert_eq!(run.code, 0, "{}", transcript(&run));
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    let rows = report["profile"].as_array().expect("a profile");
    let names: Vec<&str> = rows.iter().filter_map(|r| r["kernel"].as_str()).collect();
    // Every learned layer's weight gradient has its kernel; the parts outside the kernels
    // are listed too.
    for layer in ["conv1", "conv2", "fc1", "fc2", "fc3"] {
        assert!(
            names
                .iter()
                .any(|n| n.ends_with(&format!("weight_grad_{layer}"))),
            "{layer}: {names:?}"
        );
    }
    for part in [
        "(pack the weights)",
        "(optimizer update)",
        "(sum the threads' gradients)",
    ] {
        assert!(names.contains(&part), "{part}: {names:?}");
    }
    let shares: f64 = rows.iter().filter_map(|r| r["share"].as_f64()).sum();
    assert!((shares - 1.0).abs() < 1e-6, "shares sum to {shares}");
    let ms: Vec<f64> = rows.iter().filter_map(|r| r["ms"].as_f64()).collect();
    assert!(ms.windows(2).all(|w| w[0] >= w[1]), "largest first: {ms:?}");
}

#[test]
fn a_network_with_several_outputs_is_not_trained() {
    // The loss compares one output with the labels; `return (a, b)` gives two.
    let run = cnnc(&["train", "examples/two_heads.cnn", "--data", TRAIN]);
    assert_eq!(run.code, 1);
    insta::assert_snapshot!(transcript(&run));
}
