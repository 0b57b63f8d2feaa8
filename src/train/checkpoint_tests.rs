//! Checkpoints: bit-identical round trips, resuming, atomic writes, and bad files.

use super::*;
use crate::runtime::LoadOptions;
use crate::train::optim::{AdamConfig, OptimizerConfig, SgdConfig};

/// A scratch folder of this test process, emptied first.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cnnc-checkpoint-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

/// Two tensors with values that a lossy round trip would change: −0, a subnormal, infinity,
/// a NaN with a payload, and numbers with all mantissa bits used.
fn weights() -> Weights {
    let mut weights = Weights::new();
    let tricky = vec![
        -0.0f32,
        f32::from_bits(1),
        f32::INFINITY,
        f32::from_bits(0x7fc0_1234),
        1.0 / 3.0,
        -std::f32::consts::PI,
    ];
    weights.insert(
        "conv1.weight",
        ArrayD::from_shape_vec(IxDyn(&[2, 1, 1, 3]), tricky).expect("shape"),
    );
    weights.insert(
        "conv1.bias",
        ArrayD::from_shape_vec(IxDyn(&[2]), vec![0.1, -0.2]).expect("shape"),
    );
    weights
}

fn bits(weights: &Weights) -> Vec<(String, Vec<usize>, Vec<u32>)> {
    weights
        .iter()
        .map(|(name, t)| {
            let bits = t.iter().map(|v| v.to_bits()).collect();
            (name.to_string(), t.shape().to_vec(), bits)
        })
        .collect()
}

/// Two Adam steps on both tensors (finite values only, so the state is meaningful).
fn trained_adam() -> (Weights, Optimizer) {
    let mut weights = Weights::new();
    weights.insert(
        "fc.weight",
        ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![0.5, -0.25, 0.125, 1.0, 2.0, -3.0])
            .expect("shape"),
    );
    weights.insert(
        "fc.bias",
        ArrayD::from_shape_vec(IxDyn(&[2]), vec![0.0, 0.1]).expect("shape"),
    );
    let mut optimizer = Optimizer::new(OptimizerConfig::Adam(AdamConfig::adam())).expect("valid");
    for step in 0..2 {
        for name in ["fc.weight", "fc.bias"] {
            let tensor = weights.get_mut(name).expect("present");
            let grads: Vec<f32> = (0..tensor.len())
                .map(|i| (i as f32 - 1.5) * (step + 1) as f32 * 0.1)
                .collect();
            let params = tensor.as_slice_mut().expect("standard layout");
            optimizer.step_tensor(name, params, &grads).expect("step");
        }
    }
    (weights, optimizer)
}

#[test]
fn weights_round_trip_bit_identical() {
    let dir = scratch("roundtrip");
    let path = dir.join("ckpt.safetensors");
    let progress = Progress {
        epoch: 3,
        global_step: 330,
    };
    save_checkpoint(&path, &weights(), None, &progress).expect("saved");
    let back = load_checkpoint(&path).expect("loads");
    assert_eq!(bits(&back.weights), bits(&weights()));
    assert_eq!(back.progress, progress);
    assert_eq!(back.optimizer_kind, None);
    assert!(back.optimizer_state.is_empty());
    // The bytes in memory are the bytes on disk.
    let on_disk = std::fs::read(&path).expect("read");
    assert_eq!(on_disk, checkpoint_bytes(&weights(), None, &progress));
}

#[test]
fn adam_state_round_trips_and_resumes_exactly() {
    let dir = scratch("adam");
    let path = dir.join("ckpt.safetensors");
    let (weights, optimizer) = trained_adam();
    let progress = Progress {
        epoch: 1,
        global_step: 2,
    };
    save_checkpoint(&path, &weights, Some(&optimizer), &progress).expect("saved");
    let back = load_checkpoint(&path).expect("loads");
    assert_eq!(bits(&back.weights), bits(&weights));
    assert_eq!(back.optimizer_kind.as_deref(), Some("adam"));
    let states: Vec<(&str, &ParamState)> = back
        .optimizer_state
        .iter()
        .map(|(n, s)| (n.as_str(), s))
        .collect();
    assert_eq!(states, optimizer.states());

    // A third step after resuming equals a third step without the interruption, bit for bit.
    let mut resumed = Optimizer::new(OptimizerConfig::Adam(AdamConfig::adam())).expect("valid");
    back.restore_optimizer(&mut resumed, &path)
        .expect("same optimizer");
    let mut continued = optimizer.clone();
    let grads = [0.3f32, -0.1, 0.0, 0.7, 0.2, -0.4];
    let mut a = weights.get("fc.weight").expect("present").clone();
    let mut b = back.weights.get("fc.weight").expect("present").clone();
    let a = a.as_slice_mut().expect("standard");
    let b = b.as_slice_mut().expect("standard");
    continued.step_tensor("fc.weight", a, &grads).expect("step");
    resumed.step_tensor("fc.weight", b, &grads).expect("step");
    let to_bits = |s: &[f32]| s.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(to_bits(a), to_bits(b));
}

#[test]
fn the_file_is_plain_safetensors_with_separate_optimizer_names() {
    let (weights, optimizer) = trained_adam();
    let bytes = checkpoint_bytes(&weights, Some(&optimizer), &Progress::default());
    let file = SafeTensors::deserialize(&bytes).expect("valid safetensors");
    let mut names: Vec<&str> = file.names();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "fc.bias",
            "fc.weight",
            "optim.fc.bias.exp_avg",
            "optim.fc.bias.exp_avg_sq",
            "optim.fc.weight.exp_avg",
            "optim.fc.weight.exp_avg_sq",
        ]
    );
    // The state keeps its parameter's shape.
    let state = file.tensor("optim.fc.weight.exp_avg").expect("present");
    assert_eq!(state.shape(), [2, 3]);
    let (_, header) = SafeTensors::read_metadata(&bytes).expect("valid");
    let metadata = header.metadata().clone().expect("metadata");
    assert_eq!(metadata["format"], "pt");
    assert_eq!(metadata["cnnc.optimizer"], "adam");
    assert_eq!(metadata["optim.fc.weight.step"], "2");
    assert!(is_optimizer_tensor("optim.fc.weight.exp_avg_sq"));
    assert!(!is_optimizer_tensor("optim.weight"));
    assert!(!is_optimizer_tensor("fc.weight"));
}

#[test]
fn sgd_momentum_round_trips_and_plain_sgd_writes_no_state() {
    let mut optimizer = Optimizer::new(OptimizerConfig::Sgd(SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        ..SgdConfig::default()
    }))
    .expect("valid");
    let mut weights = Weights::new();
    weights.insert("w", ArrayD::from_elem(IxDyn(&[3]), 1.0f32));
    let params = weights.get_mut("w").expect("present");
    let params = params.as_slice_mut().expect("standard");
    optimizer
        .step_tensor("w", params, &[0.5, -0.5, 1e-30])
        .expect("step");
    let bytes = checkpoint_bytes(&weights, Some(&optimizer), &Progress::default());
    let back = checkpoint_from_bytes(&bytes, Path::new("m.safetensors")).expect("loads");
    assert_eq!(back.optimizer_kind.as_deref(), Some("sgd"));
    assert_eq!(
        back.optimizer_state,
        [(
            "w".to_string(),
            ParamState::Sgd {
                momentum_buffer: Some(vec![0.5, -0.5, 1e-30])
            }
        )]
    );
    let plain = Optimizer::new(OptimizerConfig::Sgd(SgdConfig::default())).expect("valid");
    let bytes = checkpoint_bytes(&weights, Some(&plain), &Progress::default());
    let back = checkpoint_from_bytes(&bytes, Path::new("p.safetensors")).expect("loads");
    assert!(back.optimizer_state.is_empty());
}

#[test]
fn a_failed_write_leaves_the_old_file_intact() {
    let dir = scratch("atomic");
    let path = dir.join("ckpt.safetensors");
    save_checkpoint(&path, &weights(), None, &Progress::default()).expect("saved");
    let before = std::fs::read(&path).expect("read");
    // The write fails half-way, as a full disk or a killed process would leave it.
    let error = write_atomically(&path, |out| {
        out.write_all(b"half a checkpoint")?;
        Err(io::Error::other("disk full"))
    })
    .unwrap_err();
    assert!(error.to_string().contains("disk full"), "{error}");
    assert_eq!(std::fs::read(&path).expect("read"), before);
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(leftovers, ["ckpt.safetensors"]);
    // A checkpoint into a folder that does not exist is an error, not a panic.
    let missing = dir.join("no such folder").join("ckpt.safetensors");
    assert!(matches!(
        save_checkpoint(&missing, &weights(), None, &Progress::default()),
        Err(CheckpointError::Unwritable { .. })
    ));
}

#[test]
fn resuming_with_another_optimizer_is_an_error() {
    let (weights, optimizer) = trained_adam();
    let bytes = checkpoint_bytes(&weights, Some(&optimizer), &Progress::default());
    let path = Path::new("run/ckpt.safetensors");
    let back = checkpoint_from_bytes(&bytes, path).expect("loads");
    let mut sgd = Optimizer::new(OptimizerConfig::Sgd(SgdConfig::default())).expect("valid");
    let error = back.restore_optimizer(&mut sgd, path).unwrap_err();
    let text = crate::diag::render_plain(&crate::source::SourceMap::new(), &[error.diagnostic()]);
    insta::assert_snapshot!(text, @r"
    error[checkpoint]: the checkpoint `run/ckpt.safetensors` holds adam optimizer state, but training uses sgd
     = help: resume with the optimizer the checkpoint was written with, or start a new run from its weights with --weights
    ");
}

#[test]
fn broken_files_are_errors() {
    let path = Path::new("bad.safetensors");
    let error = checkpoint_from_bytes(b"not a checkpoint", path).unwrap_err();
    assert!(
        matches!(error, CheckpointError::NotSafetensors { .. }),
        "{error}"
    );
    assert!(error
        .to_string()
        .contains("is not a safetensors file: it is a text file"));
    // Adam state without its step count.
    let (weights, optimizer) = trained_adam();
    let bytes = checkpoint_bytes(&weights, Some(&optimizer), &Progress::default());
    // Edits of the JSON header that keep its length, so the data offsets stay valid.
    let edit = |from: &str, to: &str| -> Vec<u8> {
        assert_eq!(from.len(), to.len());
        let at = bytes
            .windows(from.len())
            .position(|w| w == from.as_bytes())
            .expect("the header has the text");
        let mut edited = bytes.clone();
        edited[at..at + to.len()].copy_from_slice(to.as_bytes());
        edited
    };
    let edited = edit("\"optim.fc.bias.step\"", "\"optim.fc.bias.stop\"");
    let error = checkpoint_from_bytes(&edited, path).unwrap_err();
    assert_eq!(
        error.to_string(),
        "`bad.safetensors` is not a valid checkpoint: metadata `optim.fc.bias.step` is missing"
    );
    let edited = edit("\"cnnc.epoch\":\"0\"", "\"cnnc.epoch\":\"x\"");
    let error = checkpoint_from_bytes(&edited, path).unwrap_err();
    assert!(error.to_string().contains("`x`, not a count"), "{error}");
}

#[test]
fn the_weights_loader_reads_a_checkpoint_and_only_warns_about_the_optimizer() {
    let program = crate::driver::load_source(
        "t.cnn",
        "network t(x: 4x4x1) { x -> flatten -> fc: dense(2) }",
    );
    let compilation = crate::driver::compile(program, &crate::driver::Select::First);
    let graph = compilation.graphs().next().expect("one network");
    let weights = Weights::seeded(graph, 3).expect("seeded");
    let mut optimizer = Optimizer::new(OptimizerConfig::AdamW(AdamConfig::adamw())).expect("ok");
    let mut stepped = weights.clone();
    for name in ["fc.weight", "fc.bias"] {
        let tensor = stepped.get_mut(name).expect("present");
        let grads = vec![0.1f32; tensor.len()];
        let params = tensor.as_slice_mut().expect("standard");
        optimizer.step_tensor(name, params, &grads).expect("step");
    }
    let bytes = checkpoint_bytes(&stepped, Some(&optimizer), &Progress::default());
    let loaded = Weights::from_safetensors_bytes(
        &bytes,
        Path::new("c.safetensors"),
        graph,
        &LoadOptions::default(),
    )
    .expect("the network's tensors are all there");
    assert_eq!(loaded.weights, stepped);
    assert_eq!(loaded.warnings.len(), 4);
    assert!(loaded.warnings.iter().all(|w| match w {
        crate::runtime::WeightsError::Unexpected { name, .. } => is_optimizer_tensor(name),
        _ => false,
    }));
}
