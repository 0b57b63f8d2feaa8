//! `cnnc run` and `cnnc weights` as a user runs them: the course's worked examples with their
//! exact numbers, every example file, weights written and read back, and every way a weights,
//! input or labels file can be wrong — each a diagnostic with exit code 1, never a panic.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use common::{cnnc, Output};

/// A folder of this test binary's own files under `target/`, created on first use.
fn temp_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli_run");
    std::fs::create_dir_all(&dir).expect("the temp folder can be created");
    dir
}

fn temp_path(name: &str) -> String {
    temp_dir().join(name).display().to_string()
}

/// Exit code, stdout and stderr, with the temp folder written as `[TMP]` so that snapshots do
/// not depend on where the repository is checked out. (A plain replacement rather than insta's
/// regex filters, which need a feature this crate does not enable.)
fn transcript(out: &Output) -> String {
    common::transcript(out).replace(&temp_dir().display().to_string(), "[TMP]")
}

/// A safetensors file of F32 zeros with the given tensor names and shapes.
fn safetensors_zeros(tensors: &[(&str, &[usize])]) -> Vec<u8> {
    let mut entries = Vec::new();
    let mut offset = 0;
    for (name, shape) in tensors {
        let size = shape.iter().product::<usize>() * 4;
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        entries.push(format!(
            "\"{name}\":{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[{offset},{}]}}",
            dims.join(","),
            offset + size
        ));
        offset += size;
    }
    let mut header = format!("{{{}}}", entries.join(","));
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.resize(bytes.len() + offset, 0);
    bytes
}

/// The tensors of `examples/lenet5.cnn`, by PyTorch name.
const LENET5: &[(&str, &[usize])] = &[
    ("conv1.weight", &[6, 1, 5, 5]),
    ("conv1.bias", &[6]),
    ("conv2.weight", &[16, 6, 5, 5]),
    ("conv2.bias", &[16]),
    ("fc1.weight", &[120, 400]),
    ("fc1.bias", &[120]),
    ("fc2.weight", &[84, 120]),
    ("fc2.bias", &[84]),
    ("fc3.weight", &[10, 84]),
    ("fc3.bias", &[10]),
];

// ---------------------------------------------------------------------------------------------
// The course's worked examples

fn run_edges(net: &str, input: &str) -> Output {
    let input = format!("examples/data/{input}");
    cnnc(&["run", "examples/edges.cnn", "--net", net, "--input", &input])
}

#[test]
fn course_vertical_edges() {
    let out = run_edges("vertical_edges", "edges_6x6.npy");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains(
        "output: 4×4×1\n   -5  -4   0   8\n  -10  -2   2   3\n    0  -2  -4  -7\n   -3  -2  -3 -16\n"
    ));
    insta::assert_snapshot!(transcript(&out));
}

#[test]
fn course_step_edge() {
    let out = run_edges("vertical_edges", "step_6x6.npy");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains(&"   0 30 30  0\n".repeat(4)));
    insta::assert_snapshot!(transcript(&out));
}

#[test]
fn course_flipped_step_edge() {
    let out = run_edges("vertical_edges", "step_flipped_6x6.npy");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains(&"    0 -30 -30   0\n".repeat(4)));
    insta::assert_snapshot!(transcript(&out));
}

#[test]
fn course_checkerboard_horizontal_edges() {
    let out = run_edges("horizontal_edges", "checkerboard_6x6.npy");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out
        .stdout
        .contains("    0   0   0   0\n   30  10 -10 -30\n   30  10 -10 -30\n    0   0   0   0\n"));
    insta::assert_snapshot!(transcript(&out));
}

#[test]
fn course_strided() {
    let out = run_edges("strided", "strided_7x7.npy");
    assert_eq!(out.code, 0, "{}", out.stderr);
    // The lecture slide shows 83 and 127 where the sums are 88 and 117.
    assert!(out
        .stdout
        .contains("output: 3×3×1\n   91 100  88\n   69  91 117\n   44  72  74\n"));
    insta::assert_snapshot!(transcript(&out));
}

// ---------------------------------------------------------------------------------------------
// Seeded weights, synthetic inputs, every example

#[test]
fn lenet5_seeded_synthetic_top5() {
    let out = cnnc(&["run", "examples/lenet5.cnn"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out
        .stdout
        .contains("weights: seeded initialisation (seed 0); pass --weights to load trained ones"));
    insta::assert_snapshot!(transcript(&out));
}

#[test]
fn lenet5_batch_of_two() {
    let out = cnnc(&["run", "examples/lenet5.cnn", "--batch", "2", "--top", "2"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    insta::assert_snapshot!(transcript(&out));
}

#[test]
fn every_example_runs() {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples"))
            .expect("examples/ is readable")
            .map(|entry| entry.expect("a directory entry").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "cnn"))
            .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    // Not snapshotted: the outputs of seeded networks are ranges of numbers that say little,
    // and a snapshot of all of them would change whenever someone adds an example.
    for path in files {
        let name = format!(
            "examples/{}",
            path.file_name().expect("a file name").to_string_lossy()
        );
        // The JIT (bounds-checked, two threads, a batch of two) against the interpreter.
        let stem = path
            .file_stem()
            .expect("a file stem")
            .to_string_lossy()
            .into_owned();
        let jit_out = temp_path(&format!("every_example_{stem}_jit.npy"));
        let reference_out = temp_path(&format!("every_example_{stem}_reference.npy"));
        let common = ["run", &name, "--batch", "2", "--top", "1"];
        let out = cnnc(
            &[
                &common[..],
                &["--checked", "--threads", "2", "--output", &jit_out],
            ]
            .concat(),
        );
        assert_eq!(out.code, 0, "{name}: {}", out.stderr);
        assert!(out.stderr.is_empty(), "{name}: {}", out.stderr);
        assert!(
            out.stdout.contains("\noutput: ") || out.stdout.contains("\noutput 0 ("),
            "{name}: {}",
            out.stdout
        );
        let out = cnnc(
            &[
                &common[..],
                &["--backend", "reference", "--output", &reference_out],
            ]
            .concat(),
        );
        assert_eq!(out.code, 0, "{name}: {}", out.stderr);
        // A network with several outputs writes `X.0.npy`, `X.1.npy`, … instead of `X.npy`.
        for (jit_file, reference_file) in written_outputs(&jit_out)
            .into_iter()
            .zip(written_outputs(&reference_out))
        {
            let (jit, reference) = (read_npy(&jit_file), read_npy(&reference_file));
            assert_eq!(jit.shape(), reference.shape(), "{name}");
            // f32 sums in another order: relative to the magnitude, with 1 as the floor so that
            // values near zero are compared absolutely.
            let worst = jit
                .iter()
                .zip(reference.iter())
                .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
                .fold(0.0f32, f32::max);
            assert!(
                worst <= 1e-4,
                "{name}: JIT and interpreter differ by {worst}"
            );
        }
    }
}

/// The files `--output PATH` wrote: `PATH`, or `PATH` numbered (`out.0.npy`, `out.1.npy`, …).
fn written_outputs(path: &str) -> Vec<String> {
    if Path::new(path).exists() {
        return vec![path.to_string()];
    }
    let stem = path.trim_end_matches(".npy");
    let numbered: Vec<String> = (0..)
        .map(|idx| format!("{stem}.{idx}.npy"))
        .take_while(|file| Path::new(file).exists())
        .collect();
    assert!(numbered.len() >= 2, "{path}: no output written");
    numbered
}

/// `return (scores, features)` writes `out.0.npy` (the scores) and `out.1.npy` (the
/// features) and prints each output under its number and layer; each file holds what the
/// same layers give as a network's one output.
#[test]
fn several_outputs_write_one_file_each() {
    let source = temp_path("two_outputs.cnn");
    std::fs::write(
        &source,
        "network both(x: 9x7x3) {
            let features = x -> stem: conv(4, 3, pad: 1) -> relu
            let scores = features -> global_avgpool -> flatten -> head: dense(3)
            return (scores, features)
        }
        network scores_only(x: 9x7x3) {
            x -> stem: conv(4, 3, pad: 1) -> relu -> global_avgpool -> flatten -> head: dense(3)
        }
        network features_only(x: 9x7x3) {
            x -> stem: conv(4, 3, pad: 1) -> relu
        }\n",
    )
    .expect("write the program");
    let out = temp_path("both.npy");
    let numbered = [temp_path("both.0.npy"), temp_path("both.1.npy")];
    for file in numbered.iter().chain([&out]) {
        let _ = std::fs::remove_file(file);
    }
    let both = cnnc(&[
        "run",
        &source,
        "--net",
        "both",
        "--batch",
        "3",
        "--threads",
        "2",
        "--output",
        &out,
    ]);
    assert_eq!(both.code, 0, "{}", both.stderr);
    assert!(!Path::new(&out).exists(), "{out} is not written");
    for line in [
        "output 0 (head): 3 for each of 3 images",
        "output 1 (relu): 9×7×4 for each of 3 images",
        "wrote [TMP]/both.0.npy (3×3)",
        "wrote [TMP]/both.1.npy (3×9×7×4)",
    ] {
        assert!(
            transcript(&both).contains(line),
            "{line}\n{}",
            transcript(&both)
        );
    }
    for (file, alone) in numbered.iter().zip(["scores_only", "features_only"]) {
        let single = temp_path(&format!("{alone}.npy"));
        let run = cnnc(&[
            "run",
            &source,
            "--net",
            alone,
            "--batch",
            "3",
            "--threads",
            "2",
            "--output",
            &single,
        ]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_eq!(read_npy(file), read_npy(&single), "{file} against {alone}");
    }
}

fn read_npy(path: &str) -> ndarray::ArrayD<f32> {
    let bytes = std::fs::read(path).expect("the output was written");
    match cnnc::runtime::parse_npy(&bytes).expect("a valid .npy") {
        cnnc::runtime::NpyArray::Float(array) => array,
        cnnc::runtime::NpyArray::U8(_) => panic!("{path} holds bytes, not floats"),
    }
}

#[test]
fn backend_is_checked_by_the_command_line() {
    let out = cnnc(&["run", "examples/lenet5.cnn", "--backend", "reference"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = cnnc(&["run", "examples/lenet5.cnn", "--backend", "gpu"]);
    assert_eq!(out.code, 2);
    let out = cnnc(&["run", "examples/lenet5.cnn", "--batch", "0"]);
    assert_eq!(out.code, 2);
}

// ---------------------------------------------------------------------------------------------
// Weights files

/// Writes the seeded weights with `cnnc weights`, runs with them and without, and compares.
fn weights_round_trip(file: &str, stem: &str) -> String {
    let weights = temp_path(&format!("{stem}.safetensors"));
    let written = cnnc(&["weights", file, "--out", &weights]);
    assert_eq!(written.code, 0, "{}", written.stderr);
    let (loaded_npy, seeded_npy) = (
        temp_path(&format!("{stem}_loaded.npy")),
        temp_path(&format!("{stem}_seeded.npy")),
    );
    let loaded = cnnc(&["run", file, "--weights", &weights, "--output", &loaded_npy]);
    assert_eq!(loaded.code, 0, "{}", loaded.stderr);
    let seeded = cnnc(&["run", file, "--output", &seeded_npy]);
    assert_eq!(seeded.code, 0, "{}", seeded.stderr);
    let loaded_bytes = std::fs::read(&loaded_npy).expect("the loaded run wrote its output");
    let seeded_bytes = std::fs::read(&seeded_npy).expect("the seeded run wrote its output");
    assert_eq!(loaded_bytes, seeded_bytes);
    assert!(loaded_bytes.starts_with(b"\x93NUMPY"));
    format!("{}{}", transcript(&written), transcript(&loaded))
}

#[test]
fn weights_written_then_loaded_give_the_seeded_output() {
    insta::assert_snapshot!(weights_round_trip("examples/lenet5.cnn", "lenet5"));
}

#[test]
fn weights_with_batch_norm_buffers_round_trip() {
    insta::assert_snapshot!(weights_round_trip("examples/residual.cnn", "residual"));
}

#[test]
fn weights_of_wrong_shape() {
    let mut tensors = LENET5.to_vec();
    tensors[2] = ("conv2.weight", &[16, 6, 3, 3]);
    let path = temp_path("wrong_shape.safetensors");
    std::fs::write(&path, safetensors_zeros(&tensors)).expect("written");
    let out = cnnc(&["run", "examples/lenet5.cnn", "--weights", &path]);
    assert_eq!(out.code, 1);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    insta::assert_snapshot!(transcript(&out));
}

#[test]
fn weights_truncated() {
    let full = safetensors_zeros(LENET5);
    let path = temp_path("truncated.safetensors");
    std::fs::write(&path, &full[..full.len() / 2]).expect("written");
    let out = cnnc(&["run", "examples/lenet5.cnn", "--weights", &path]);
    assert_eq!(out.code, 1);
    insta::assert_snapshot!(transcript(&out));
}

#[test]
fn weights_file_missing() {
    let out = cnnc(&[
        "run",
        "examples/lenet5.cnn",
        "--weights",
        "examples/data/no_such.safetensors",
    ]);
    assert_eq!(out.code, 1);
    insta::assert_snapshot!(transcript(&out));
}

#[test]
fn weights_unused_tensor_warns_and_strict_refuses() {
    let mut tensors = LENET5.to_vec();
    tensors.push(("fc4.weight", &[3, 10]));
    let path = temp_path("extra.safetensors");
    std::fs::write(&path, safetensors_zeros(&tensors)).expect("written");
    let relaxed = cnnc(&[
        "run",
        "examples/lenet5.cnn",
        "--weights",
        &path,
        "--top",
        "3",
    ]);
    assert_eq!(relaxed.code, 0, "{}", relaxed.stderr);
    let strict = cnnc(&["run", "examples/lenet5.cnn", "--weights", &path, "--strict"]);
    assert_eq!(strict.code, 1);
    insta::assert_snapshot!(format!("{}{}", transcript(&relaxed), transcript(&strict)));
}

#[test]
fn weights_allowed_to_miss_a_head() {
    let tensors: Vec<(&str, &[usize])> = LENET5
        .iter()
        .copied()
        .filter(|(name, _)| !name.starts_with("fc3."))
        .collect();
    let path = temp_path("headless.safetensors");
    std::fs::write(&path, safetensors_zeros(&tensors)).expect("written");
    let refused = cnnc(&["run", "examples/lenet5.cnn", "--weights", &path]);
    assert_eq!(refused.code, 1);
    let allowed = cnnc(&[
        "run",
        "examples/lenet5.cnn",
        "--weights",
        &path,
        "--allow-missing",
        "fc3",
        "--top",
        "2",
    ]);
    assert_eq!(allowed.code, 0, "{}", allowed.stderr);
    insta::assert_snapshot!(format!("{}{}", transcript(&refused), transcript(&allowed)));
}

// ---------------------------------------------------------------------------------------------
// Input files

#[test]
fn input_text_file_named_png() {
    let path = temp_path("not_an_image.png");
    std::fs::write(&path, "this is text, not a picture\n").expect("written");
    let out = cnnc(&["run", "examples/lenet5.cnn", "--input", &path]);
    assert_eq!(out.code, 1);
    insta::assert_snapshot!(transcript(&out));
}

#[test]
fn input_npy_of_wrong_shape() {
    let out = cnnc(&[
        "run",
        "examples/lenet5.cnn",
        "--input",
        "examples/data/edges_6x6.npy",
    ]);
    assert_eq!(out.code, 1);
    insta::assert_snapshot!(transcript(&out));
}

#[test]
fn input_file_missing() {
    let out = cnnc(&[
        "run",
        "examples/lenet5.cnn",
        "--input",
        "examples/data/no_such.npy",
    ]);
    assert_eq!(out.code, 1);
    insta::assert_snapshot!(transcript(&out));
}

#[test]
fn input_errors_are_collected_with_weights_errors() {
    let out = cnnc(&[
        "run",
        "examples/lenet5.cnn",
        "--input",
        "examples/data/no_such.npy",
        "--weights",
        "examples/data/no_such.safetensors",
    ]);
    assert_eq!(out.code, 1);
    insta::assert_snapshot!(transcript(&out));
}

#[test]
fn input_png_and_jpeg_through_lenet5() {
    // A 40×48 colour gradient: not the network's 32×32 grayscale, so it is converted and resized.
    let image = image::RgbImage::from_fn(48, 40, |x, y| {
        image::Rgb([(x * 5) as u8, (y * 6) as u8, ((x + y) * 3) as u8])
    });
    for name in ["gradient.png", "gradient.jpg"] {
        let path = temp_path(name);
        image.save(&path).expect("the image is written");
        let out = cnnc(&["run", "examples/lenet5.cnn", "--input", &path]);
        assert_eq!(out.code, 0, "{name}: {}", out.stderr);
        assert!(
            out.stdout.contains("top 5 of 10 classes:"),
            "{}",
            out.stdout
        );
        assert!(out.stdout.contains("(1×32×32×1)"), "{}", out.stdout);
        if name.ends_with(".png") {
            insta::assert_snapshot!(transcript(&out));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Labels

/// A three-class network in the temp folder that declares `labels(labels_file)`.
fn labelled_network(stem: &str, labels_file: &str) -> String {
    let source = format!(
        "network {stem}(x: 4x4x1) {{\n    labels(\"{labels_file}\")\n    x -> flatten -> fc: dense(3) -> softmax\n}}\n"
    );
    let path = temp_path(&format!("{stem}.cnn"));
    std::fs::write(&path, source).expect("written");
    path
}

#[test]
fn labels_read_relative_to_the_network_file() {
    std::fs::write(temp_path("three_classes.txt"), "cat\ndog\nbird\n").expect("written");
    let path = labelled_network("three", "three_classes.txt");
    let out = cnnc(&["run", &path]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    insta::assert_snapshot!(transcript(&out));
}

#[test]
fn labels_count_differs_from_outputs() {
    std::fs::write(temp_path("two_classes.txt"), "cat\ndog\n").expect("written");
    let path = labelled_network("two", "two_classes.txt");
    let out = cnnc(&["run", &path]);
    assert_eq!(out.code, 1);
    insta::assert_snapshot!(transcript(&out));
}

#[test]
fn labels_file_missing() {
    let path = labelled_network("missing", "no_such_classes.txt");
    let out = cnnc(&["run", &path]);
    assert_eq!(out.code, 1);
    insta::assert_snapshot!(transcript(&out));
}

#[test]
fn labels_from_the_standard_library() {
    let source = "network imagenet_head(x: 4x4x3) {\n    labels(\"std/imagenet_classes.txt\")\n    x -> global_avgpool -> flatten -> fc: dense(1000)\n}\n";
    let path = temp_path("imagenet_head.cnn");
    std::fs::write(&path, source).expect("written");
    let out = cnnc(&["run", &path, "--top", "3"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    insta::assert_snapshot!(transcript(&out));
}

#[test]
fn imagenet_classes_are_torchvisions() {
    let text = cnnc::stdlib::get_data("std/imagenet_classes.txt").expect("embedded");
    let classes: Vec<&str> = text.lines().collect();
    assert_eq!(classes.len(), 1000);
    assert_eq!(&classes[..3], ["tench", "goldfish", "great white shark"]);
    assert_eq!(classes[999], "toilet tissue");
}

/// `cnnc run` with no file runs the embedded default (ResNet-18 from the standard library) from
/// any directory, on seeded weights and a synthetic input, and names ImageNet classes.
#[test]
fn embedded_default_runs_anywhere() {
    let output = Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .args(["run", "--top", "3"])
        .current_dir(std::env::temp_dir())
        .output()
        .expect("cnnc runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(stdout.starts_with("network: resnet18"), "{stdout}");
    assert!(
        stdout.contains("weights: seeded initialisation (seed 0)"),
        "{stdout}"
    );
    assert!(stdout.contains("output: 1000"), "{stdout}");
    assert!(stdout.contains("top 3 of 1000 classes:"), "{stdout}");
}

/// Transfer learning: the base of `examples/transfer.cnn` loads from a full ResNet-18 file;
/// its new head is missing from the file, an error unless `--allow-missing head` seeds it.
#[test]
fn transfer_loads_a_full_resnet18() {
    let weights = temp_path("resnet18_for_transfer.safetensors");
    let written = cnnc(&[
        "weights",
        "std/resnet.cnn",
        "--net",
        "resnet18",
        "--out",
        &weights,
    ]);
    assert_eq!(written.code, 0, "{}", written.stderr);

    let strict_head = cnnc(&["run", "examples/transfer.cnn", "--weights", &weights]);
    assert_eq!(strict_head.code, 1);
    assert!(
        strict_head.stderr.contains("no tensor `head.weight`"),
        "{}",
        strict_head.stderr
    );
    assert!(
        strict_head.stderr.contains("--allow-missing head"),
        "{}",
        strict_head.stderr
    );

    let out = cnnc(&[
        "run",
        "examples/transfer.cnn",
        "--weights",
        &weights,
        "--allow-missing",
        "head",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("seeded (seed 0) because of --allow-missing: head.weight, head.bias"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("top 3 of 3 classes:"), "{}", out.stdout);
    // The unused 1000-way head of the file is only a warning.
    assert!(
        out.stderr.contains("warning[weights-unused]"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("`fc.weight`"), "{}", out.stderr);
}

#[test]
fn transfer_summary_counts_frozen_parameters() {
    let out = cnnc(&["summary", "examples/transfer.cnn"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("Trainable params: 1,539\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("Non-trainable params: 11,176,512\n"),
        "{}",
        out.stdout
    );
}

/// An `--output` that cannot be written is reported before anything is compiled or run, so a
/// long run is not wasted; nothing is printed on standard output.
#[test]
fn unwritable_output_is_reported_before_running() {
    let out = cnnc(&[
        "run",
        "examples/lenet5.cnn",
        "--output",
        "examples/no_such_folder/out.npy",
    ]);
    assert_eq!(out.code, 1);
    assert_eq!(out.stdout, "", "the network ran: {}", out.stdout);
    insta::assert_snapshot!(out.stderr);
    let out = cnnc(&["run", "examples/lenet5.cnn", "--output", "examples"]);
    assert_eq!(out.code, 1);
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr
            .contains("cannot write `examples`: it is a folder"),
        "{}",
        out.stderr
    );
}
