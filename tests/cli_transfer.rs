//! Transfer learning end to end: cached frozen features give the weights of a run without the
//! cache (the frozen tensors bit-identical), a `--cache` folder is read back by a second run,
//! and `examples/transfer.cnn` fine-tunes its head and then `layer4` on a small image folder
//! (written by the test: three classes of coloured images) in its two recipe stages.

use cnnc::train::checkpoint::{load_checkpoint, Checkpoint};
use serde_json::Value;
use std::path::{Path, PathBuf};

mod common;

use common::{cnnc, Output};

const SMALL: &str = "tests/data/train/small_transfer.cnn";
const TRAIN: &str = "tests/data/mnist/train-images.npy";
const TEST: &str = "tests/data/mnist/test-images.npy";
const TRANSFER: &str = "examples/transfer.cnn";

fn temp_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli_transfer");
    std::fs::create_dir_all(&dir).expect("the temp folder can be created");
    dir
}

fn temp(name: &str) -> String {
    temp_dir().join(name).display().to_string()
}

fn transcript(out: &Output) -> String {
    common::transcript(out).replace(&temp_dir().display().to_string(), "[TMP]")
}

fn ok_json(out: &Output) -> Value {
    assert_eq!(out.code, 0, "{}", transcript(out));
    serde_json::from_str(&out.stdout).expect("the output is JSON")
}

fn checkpoint(path: &str) -> Checkpoint {
    load_checkpoint(Path::new(path)).expect("the checkpoint loads")
}

fn bit_identical(a: &ndarray::ArrayD<f32>, b: &ndarray::ArrayD<f32>) -> bool {
    a.shape() == b.shape()
        && a.iter()
            .zip(b.iter())
            .all(|(x, y)| x.to_bits() == y.to_bits())
}

/// The base's weights for `small_transfer`, written once per test that asks.
fn small_base(name: &str) -> String {
    let base = temp(name);
    let made = cnnc(&[
        "weights", SMALL, "--net", "base", "--seed", "3", "--out", &base,
    ]);
    assert_eq!(made.code, 0, "{}", transcript(&made));
    base
}

fn train_small(base: &str, out: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "train",
        SMALL,
        "--net",
        "small_transfer",
        "--data",
        TRAIN,
        "--val",
        TEST,
        "--weights",
        base,
        "--allow-missing",
        "head",
        "--epochs",
        "3",
        "--batch",
        "32",
        "--optimizer",
        "sgd",
        "--lr",
        "0.1",
        "--momentum",
        "0.9",
        "--threads",
        "1",
        "--out",
        out,
        "--json",
    ];
    args.extend_from_slice(extra);
    ok_json(&cnnc(&args))
}

fn epoch_seconds(report: &Value) -> Vec<f64> {
    let epochs = report["epochs"].as_array().expect("epochs");
    epochs
        .iter()
        .map(|e| e["seconds"].as_f64().expect("seconds"))
        .collect()
}

/// The prefix runs on the JIT with the cache and on the interpreter without it, so trained
/// weights agree to float tolerance, not bit for bit; the frozen base is untouched by both.
#[test]
fn cached_features_train_the_weights_of_a_run_without_the_cache() {
    let base = small_base("base_same.safetensors");
    let (cached_out, plain_out) = (temp("cached.safetensors"), temp("plain.safetensors"));
    let cached_report = train_small(&base, &cached_out, &[]);
    let plain = train_small(&base, &plain_out, &["--no-cache"]);
    let features = &cached_report["features_cached"];
    assert_eq!(
        features["images"], 768,
        "512 training + 256 validation digits"
    );
    assert_eq!(features["floats_per_image"], 144, "4 channels of 6×6");
    assert_eq!(plain["features_cached"], Value::Null);
    eprintln!(
        "epoch seconds, cached {:?} (caching {:.3} s), not cached {:?}",
        epoch_seconds(&cached_report),
        features["seconds"].as_f64().unwrap_or(0.0),
        epoch_seconds(&plain)
    );
    let (cached, plain, start) = (
        checkpoint(&cached_out),
        checkpoint(&plain_out),
        checkpoint(&base),
    );
    for (name, tensor) in start.weights.iter() {
        for (run, weights) in [("cached", &cached), ("plain", &plain)] {
            let trained = weights
                .weights
                .get(name)
                .expect("every base tensor is written");
            assert!(
                bit_identical(tensor, trained),
                "{name} changed in the {run} run"
            );
        }
    }
    for name in ["head.weight", "head.bias"] {
        let a = cached.weights.get(name).expect("trained");
        let b = plain.weights.get(name).expect("trained");
        let start = ndarray::ArrayD::<f32>::zeros(a.raw_dim());
        let moved = a.iter().zip(start.iter()).any(|(x, y)| x != y);
        assert!(moved, "{name} was trained");
        let worst = a
            .iter()
            .zip(b.iter())
            .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "{name} differs by {worst} (relative)");
    }
    // Validation ran the head on cached features; `eval` runs the whole network.
    let last = cached_report["epochs"][2]["validation"].clone();
    let eval = ok_json(&cnnc(&[
        "eval",
        SMALL,
        "--net",
        "small_transfer",
        "--weights",
        &cached_out,
        "--data",
        TEST,
        "--batch",
        "32",
        "--threads",
        "1",
        "--json",
    ]));
    assert_eq!(eval["accuracy"], last["accuracy"]);
    let (a, b) = (eval["loss"].as_f64(), last["loss"].as_f64());
    assert!(
        (a.unwrap_or(0.0) - b.unwrap_or(1.0)).abs() < 1e-6,
        "{a:?} {b:?}"
    );
}

#[test]
fn a_cache_folder_is_read_back_when_nothing_changed() {
    let base = small_base("base_disk.safetensors");
    let dir = temp_dir().join("features");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the cache folder");
    let dir = dir.display().to_string();
    let (first_out, second_out) = (temp("disk1.safetensors"), temp("disk2.safetensors"));
    let first = train_small(&base, &first_out, &["--cache", &dir]);
    let second = train_small(&base, &second_out, &["--cache", &dir]);
    assert_eq!(first["features_cached"]["from_disk"], false);
    assert_eq!(second["features_cached"]["from_disk"], true);
    for file in ["train.npy", "train.key", "val.npy", "val.key"] {
        assert!(Path::new(&dir).join(file).is_file(), "{file}");
    }
    let (a, b) = (checkpoint(&first_out), checkpoint(&second_out));
    for (name, tensor) in a.weights.iter() {
        assert!(
            bit_identical(tensor, b.weights.get(name).expect("written")),
            "{name}"
        );
    }
    // Other frozen weights: the key differs and the features are computed again.
    let other = temp("base_other.safetensors");
    let made = cnnc(&[
        "weights", SMALL, "--net", "base", "--seed", "4", "--out", &other,
    ]);
    assert_eq!(made.code, 0, "{}", transcript(&made));
    let third = train_small(&other, &temp("disk3.safetensors"), &["--cache", &dir]);
    assert_eq!(third["features_cached"]["from_disk"], false);
}

#[test]
fn a_cache_folder_that_does_not_exist_is_a_diagnostic() {
    let base = small_base("base_missing.safetensors");
    let out = cnnc(&[
        "train",
        SMALL,
        "--net",
        "small_transfer",
        "--data",
        TRAIN,
        "--weights",
        &base,
        "--allow-missing",
        "head",
        "--steps",
        "1",
        "--threads",
        "1",
        "--cache",
        "no/such/folder",
    ]);
    assert_eq!(out.code, 1);
    insta::assert_snapshot!(transcript(&out));
}

/// `n` images per class of 24×24 pixels: red, green or blue squares on noise, so the three
/// classes differ in colour whatever the (seeded) base makes of them.
fn image_folder(name: &str, n: usize, seed: u32) -> String {
    let root = temp_dir().join(name);
    let _ = std::fs::remove_dir_all(&root);
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        (state % 64) as u8
    };
    for (class, channel) in [("blue", 2), ("green", 1), ("red", 0)] {
        let folder = root.join(class);
        std::fs::create_dir_all(&folder).expect("a class folder");
        for index in 0..n {
            let image = image::RgbImage::from_fn(24, 24, |x, y| {
                let inside = (4..20).contains(&x) && (4..20).contains(&y);
                let mut pixel = [noise(), noise(), noise()];
                if inside {
                    pixel[channel] = 200 + noise() / 2;
                }
                image::Rgb(pixel)
            });
            image
                .save(folder.join(format!("{index}.png")))
                .expect("the PNG is written");
        }
    }
    root.display().to_string()
}

/// The example's two stages: the head alone on cached base features, then `layer4` and the
/// head on cached `layer3` features (the reference trainer through `layer4`). Everything below
/// `layer4` is bit-identical afterwards; `layer4` (with its batch norms' running statistics,
/// which train in the second stage) and the head have moved.
#[test]
fn transfer_example_trains_the_head_then_layer4() {
    let train = image_folder("photos", 2, 1);
    let val = image_folder("photos_val", 1, 2);
    let start = temp("transfer_start.safetensors");
    let made = cnnc(&["weights", TRANSFER, "--seed", "5", "--out", &start]);
    assert_eq!(made.code, 0, "{}", transcript(&made));
    let out = temp("transfer_tuned.safetensors");
    let run = cnnc(&[
        "train",
        TRANSFER,
        "--data",
        &train,
        "--val",
        &val,
        "--weights",
        &start,
        "--batch",
        "6",
        "--steps",
        "1",
        "--out",
        &out,
        "--json",
    ]);
    let report = ok_json(&run);
    let stages = report["stages"].as_array().expect("stages");
    assert_eq!(stages.len(), 2, "{report}");
    assert_eq!(stages[0]["unfreeze"], serde_json::json!([]));
    assert_eq!(stages[1]["unfreeze"], serde_json::json!(["layer4"]));
    assert_eq!(stages[0]["lr"], 0.01);
    assert_eq!(stages[1]["lr"], 0.001);
    assert_eq!(stages[0]["trainable_parameters"], 512 * 3 + 3);
    // layer4: two blocks of two 3×3 convs and batch norms, and the 1×1 downsample.
    let layer4 = 256 * 512 * 9 + 3 * 512 * 512 * 9 + 256 * 512 + 5 * 2 * 512;
    assert_eq!(stages[1]["trainable_parameters"], layer4 + 512 * 3 + 3);
    let first = &stages[0]["features_cached"];
    let second = &stages[1]["features_cached"];
    assert_eq!(first["floats_per_image"], 512, "{first}");
    assert_eq!(second["floats_per_image"], 14 * 14 * 256, "{second}");
    assert_eq!(first["images"], 9);
    let epochs = report["epochs"].as_array().expect("epochs");
    let stage_of: Vec<u64> = epochs
        .iter()
        .map(|e| e["stage"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(stage_of[0], 1);
    assert_eq!(stage_of.last(), Some(&2));
    eprintln!(
        "caching {} s and {} s; epochs {:?}",
        first["seconds"],
        second["seconds"],
        epochs
            .iter()
            .map(|e| (e["stage"].clone(), e["seconds"].clone()))
            .collect::<Vec<_>>()
    );

    let (before, after) = (checkpoint(&start), checkpoint(&out));
    let mut unchanged = 0;
    for (name, tensor) in before.weights.iter() {
        let trained = after.weights.get(name).expect("every tensor is written");
        let same = bit_identical(tensor, trained);
        if name.starts_with("layer4.") || name.starts_with("head.") {
            let buffer_of_skipped = name.ends_with("num_batches_tracked");
            assert!(!same || buffer_of_skipped, "{name} did not train");
        } else {
            assert!(same, "{name} changed");
            unchanged += 1;
        }
    }
    assert!(unchanged > 60, "{unchanged} frozen tensors compared");
}

const STAGES: &str = "tests/data/train/small_stages.cnn";

/// The two stages in one run, and stage 1 then `--stage 2` from its checkpoint, end with the
/// same weights: a stage starts from the weights alone (a fresh optimizer, its own epochs).
#[test]
fn stages_run_one_by_one_give_the_weights_of_one_run() {
    let base = temp("stages_base.safetensors");
    let made = cnnc(&[
        "weights", STAGES, "--net", "base", "--seed", "3", "--out", &base,
    ]);
    assert_eq!(made.code, 0, "{}", transcript(&made));
    let common = ["--data", TRAIN, "--threads", "1", "--json"];
    let whole = temp("stages_whole.safetensors");
    let mut args = vec!["train", STAGES, "--net", "small_stages", "--weights", &base];
    args.extend(["--allow-missing", "head", "--out", &whole]);
    args.extend(common);
    let report = ok_json(&cnnc(&args));
    let stages = report["stages"].as_array().expect("stages");
    assert_eq!(stages.len(), 2);
    assert_eq!(stages[0]["trainable_parameters"], 1450);
    assert_eq!(stages[1]["trainable_parameters"], 1450 + 4 * 25 + 4 + 8);
    assert_ne!(stages[0]["features_cached"], Value::Null);
    assert_eq!(
        stages[1]["features_cached"],
        Value::Null,
        "nothing is frozen"
    );

    let first = temp("stages_1.safetensors");
    let mut args = vec!["train", STAGES, "--net", "small_stages", "--weights", &base];
    args.extend(["--allow-missing", "head", "--stage", "1", "--out", &first]);
    args.extend(common);
    let one = ok_json(&cnnc(&args));
    assert_eq!(one["stages"].as_array().map(Vec::len), Some(1));
    let second = temp("stages_2.safetensors");
    let mut args = vec![
        "train",
        STAGES,
        "--net",
        "small_stages",
        "--weights",
        &first,
    ];
    args.extend(["--stage", "2", "--out", &second]);
    args.extend(common);
    let two = ok_json(&cnnc(&args));
    assert_eq!(two["stages"][0]["stage"], 2);
    assert_eq!(two["stages"][0]["lr"], 0.01);

    let (whole, split, start) = (checkpoint(&whole), checkpoint(&second), checkpoint(&base));
    for (name, tensor) in whole.weights.iter() {
        let other = split.weights.get(name).expect("written");
        assert!(bit_identical(tensor, other), "{name} differs");
    }
    let conv = "features.c1.weight";
    let moved = start.weights.get(conv).expect("base");
    assert!(!bit_identical(
        moved,
        whole.weights.get(conv).expect("trained")
    ));
}

#[test]
fn stage_flags_are_checked() {
    let beyond = cnnc(&[
        "train",
        STAGES,
        "--net",
        "small_stages",
        "--data",
        TRAIN,
        "--stage",
        "3",
    ]);
    assert_eq!(beyond.code, 1);
    assert!(
        beyond
            .stderr
            .contains("--stage 3 asks for a stage the recipe does not have: it has 2"),
        "{}",
        beyond.stderr
    );
    let resume = cnnc(&[
        "train",
        STAGES,
        "--net",
        "small_stages",
        "--data",
        TRAIN,
        "--resume",
        "x.safetensors",
    ]);
    assert_eq!(resume.code, 1);
    assert!(
        resume
            .stderr
            .contains("--resume continues one stage, and this recipe has 2"),
        "{}",
        resume.stderr
    );
}
