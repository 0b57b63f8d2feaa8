//! Data augmentation end to end on the 512 + 256 MNIST digits of `tests/data/mnist`:
//! `cnnc augment` writes readable PNG samples; `cnnc train` gives the same losses with one
//! loader thread and three; augmentation changes training but not validation or `cnnc eval`.

use serde_json::Value;
use std::path::{Path, PathBuf};

mod common;

use common::{cnnc, transcript, Output};

const AUGMENTED: &str = "examples/lenet5_augment.cnn";
const PLAIN: &str = "examples/lenet5_mnist.cnn";
const TRAIN: &str = "tests/data/mnist/train-images.npy";
const TEST: &str = "tests/data/mnist/test-images.npy";

fn temp_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("cli_augment")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the temp folder can be created");
    dir
}

fn ok_json(out: &Output) -> Value {
    assert_eq!(out.code, 0, "{}", transcript(out));
    serde_json::from_str(&out.stdout).expect("the output is JSON")
}

fn losses(report: &Value) -> Vec<f64> {
    report["epochs"]
        .as_array()
        .expect("epochs")
        .iter()
        .map(|e| e["loss"].as_f64().expect("loss"))
        .collect()
}

/// The PNG files of a folder, sorted, decoded as 8-bit grey images.
fn pngs(dir: &Path) -> Vec<(String, image::GrayImage)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("the folder exists")
        .map(|e| e.expect("an entry").path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let name = path.file_name().expect("a name").to_string_lossy().into();
            (name, image::open(&path).expect("a readable PNG").to_luma8())
        })
        .collect()
}

#[test]
fn augment_writes_readable_pngs_of_the_input_size() {
    let dir = temp_dir("first_images");
    let out = cnnc(&[
        "augment",
        AUGMENTED,
        "--data",
        TRAIN,
        "--out",
        &dir.display().to_string(),
        "-n",
        "5",
    ]);
    assert_eq!(out.code, 0, "{}", transcript(&out));
    assert!(out.stdout.contains("wrote 5 sample(s)"), "{}", out.stdout);
    let images = pngs(&dir);
    assert_eq!(images.len(), 5);
    let plain_dir = temp_dir("plain");
    let out = cnnc(&[
        "augment",
        PLAIN,
        "--data",
        TRAIN,
        "--out",
        &plain_dir.display().to_string(),
        "-n",
        "5",
    ]);
    assert_eq!(out.code, 0, "{}", transcript(&out));
    assert!(out.stdout.contains("declares no `augment(...)`"));
    let plain = pngs(&plain_dir);
    for ((name, image), (_, unaugmented)) in images.iter().zip(&plain) {
        assert_eq!(image.dimensions(), (32, 32), "{name}");
        assert!(name.starts_with("sample"), "{name}");
        assert_ne!(image, unaugmented, "{name} is augmented");
    }
    // Without augmentation a sample is the padded digit: a 2-pixel black border around the
    // stored 28×28 bytes (the first digit's, read from the .npy).
    let bytes = std::fs::read(TRAIN).expect("the digits are readable");
    let cnnc::runtime::NpyArray::U8(digits) = cnnc::runtime::parse_npy(&bytes).expect("a .npy")
    else {
        panic!("the digits are bytes");
    };
    let first: Vec<u8> = digits.iter().take(28 * 28).copied().collect();
    let plain_first = &plain[0].1;
    for y in 0..32u32 {
        for x in 0..32u32 {
            let inside = (2..30).contains(&y) && (2..30).contains(&x);
            let expected = if inside {
                first[((y - 2) * 28 + (x - 2)) as usize]
            } else {
                0
            };
            assert_eq!(plain_first.get_pixel(x, y).0[0], expected, "({x}, {y})");
        }
    }
}

#[test]
fn augment_of_one_image_shows_its_epochs_and_a_bad_image_index_is_a_diagnostic() {
    let dir = temp_dir("one_image");
    let dir_text = dir.display().to_string();
    let args = [
        "augment", AUGMENTED, "--data", TRAIN, "--out", &dir_text, "-n", "4", "--image", "7",
        "--seed", "3",
    ];
    let out = cnnc(&args);
    assert_eq!(out.code, 0, "{}", transcript(&out));
    let images = pngs(&dir);
    let names: Vec<&str> = images.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names[0].starts_with("sample000_image7_epoch0_label"),
        "{names:?}"
    );
    assert!(
        names[3].starts_with("sample003_image7_epoch3_label"),
        "{names:?}"
    );
    assert_ne!(images[0].1, images[1].1);
    // The same seed writes the same files again.
    let again = cnnc(&args);
    assert_eq!(again.code, 0);
    assert_eq!(pngs(&dir), images);
    let out = cnnc(&[
        "augment", AUGMENTED, "--data", TRAIN, "--out", &dir_text, "--image", "512",
    ]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("error[data-option]: --image 512 is past the data set's end"),
        "{}",
        out.stderr
    );
}

fn train(file: &str, extra: &[&str], out: &str) -> Value {
    let mut args = vec![
        "train",
        file,
        "--data",
        TRAIN,
        "--val",
        TEST,
        "--epochs",
        "2",
        "--steps",
        "6",
        "--batch",
        "32",
        "--threads",
        "1",
        "--out",
        out,
        "--json",
    ];
    args.extend_from_slice(extra);
    ok_json(&cnnc(&args))
}

#[test]
fn training_losses_are_the_same_with_one_and_three_loader_threads() {
    let dir = temp_dir("threads");
    let out = dir.join("w.safetensors").display().to_string();
    let one = train(AUGMENTED, &["--loader-threads", "1"], &out);
    let three = train(AUGMENTED, &["--loader-threads", "3"], &out);
    assert_eq!(losses(&one), losses(&three));
    assert_eq!(one["loader_threads"], 1);
    assert_eq!(three["loader_threads"], 3);
    assert_eq!(
        one["augment"],
        "crop 32×32 (pad 2), rotate ±10°, shear ±5°, scale 0.9–1.1"
    );
    // Without the augmentation the same run sees other images, so other losses.
    let plain = train(AUGMENTED, &["--no-augment"], &out);
    assert_eq!(plain["augment"], Value::Null);
    assert_ne!(losses(&plain), losses(&one));
}

#[test]
fn validation_and_eval_see_the_images_unaugmented() {
    let dir = temp_dir("eval");
    let out = dir.join("w.safetensors").display().to_string();
    let report = train(AUGMENTED, &["--loader-threads", "2"], &out);
    let epochs = report["epochs"].as_array().expect("epochs");
    let validation = &epochs[epochs.len() - 1]["validation"];
    let eval = ok_json(&cnnc(&[
        "eval",
        PLAIN,
        "--weights",
        &out,
        "--data",
        TEST,
        "--batch",
        "32",
        "--threads",
        "1",
        "--json",
    ]));
    // The plain network is the same network without `augment(...)`: its evaluation of the
    // written weights is the augmented run's validation, exactly.
    assert_eq!(eval["loss"], validation["loss"]);
    assert_eq!(eval["accuracy"], validation["accuracy"]);
}

#[test]
fn check_json_names_the_augmentation_only_where_declared() {
    let report = ok_json(&cnnc(&["check", AUGMENTED, "--json"]));
    assert_eq!(
        report[0]["augment"],
        "crop 32×32 (pad 2), rotate ±10°, shear ±5°, scale 0.9–1.1"
    );
    let plain = ok_json(&cnnc(&["check", PLAIN, "--json"]));
    assert!(plain[0].get("augment").is_none());
}
