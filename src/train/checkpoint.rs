//! Training checkpoints: the network's tensors and the optimizer's state in one safetensors
//! file, written atomically, and read back split into the two.
//!
//! Layout of a checkpoint:
//!
//! - every parameter and buffer under its torchvision name (`layer1.0.conv1.weight`), F32, in
//!   the weights' order, so the file loads with `cnnc run --weights` (which warns about the
//!   optimizer's tensors) and, in PyTorch, with
//!   `model.load_state_dict(safetensors.torch.load_file(path), strict=False)`; written
//!   without an optimizer, a checkpoint holds the network's tensors alone and loads with
//!   `strict=True`;
//! - the optimizer's state per parameter under the prefix `optim.`, in the parameter's shape:
//!   `optim.{name}.momentum_buffer` (SGD with momentum), `optim.{name}.exp_avg` and
//!   `optim.{name}.exp_avg_sq` (Adam, AdamW). A parameter's name always ends in `weight`,
//!   `bias`, `running_mean` or `running_var`, never in these three, so a name is optimizer
//!   state exactly when it starts with `optim.` and ends in one of them;
//! - header metadata: `format` = `pt` (what `safetensors.torch` writes), `cnnc.epoch` (epochs
//!   completed), `cnnc.global_step` (optimizer steps taken), `cnnc.optimizer` (`sgd`, `adam`,
//!   `adamw`), and `optim.{name}.step` for each Adam tensor, all as decimal strings.
//!
//! Writing goes to a temporary file in the target's directory, is flushed to disk, and is
//! renamed over the target: an interrupted run leaves the previous checkpoint whole.

use super::optim::{Optimizer, ParamState};
use crate::diag::{Code, Diagnostic};
use crate::runtime::Weights;
use ndarray::{ArrayD, IxDyn};
use safetensors::{Dtype, SafeTensors};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The prefix of optimizer-state tensors.
pub const OPTIM_PREFIX: &str = "optim.";
const STATE_FIELDS: [&str; 3] = ["momentum_buffer", "exp_avg", "exp_avg_sq"];

/// How far training had come when a checkpoint was written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Epochs completed.
    pub epoch: u64,
    /// Optimizer steps taken.
    pub global_step: u64,
}

/// A checkpoint read back.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// Parameters and buffers, in the file's order.
    pub weights: Weights,
    /// `sgd`, `adam` or `adamw`; `None` for a file written without an optimizer.
    pub optimizer_kind: Option<String>,
    /// The optimizer's state per parameter name, sorted by name.
    pub optimizer_state: Vec<(String, ParamState)>,
    pub progress: Progress,
}

#[derive(Debug, Error)]
pub enum CheckpointError {
    #[error("cannot read the checkpoint `{}`: {source}", path.display())]
    Unreadable { path: PathBuf, source: io::Error },
    #[error("cannot write the checkpoint `{}`: {source}", path.display())]
    Unwritable { path: PathBuf, source: io::Error },
    #[error("`{}` is not a valid checkpoint: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("`{}` is not a safetensors file: {what}", path.display())]
    NotSafetensors { path: PathBuf, what: String },
    #[error("the checkpoint `{}` holds {found} optimizer state, but training uses {expected}", path.display())]
    OptimizerMismatch {
        path: PathBuf,
        found: String,
        expected: String,
    },
}

impl CheckpointError {
    pub fn diagnostic(&self) -> Diagnostic {
        let diagnostic = Diagnostic::global(Code::Checkpoint, self.to_string());
        match self {
            CheckpointError::OptimizerMismatch { .. } => diagnostic.with_help(
                "resume with the optimizer the checkpoint was written with, or start a new run \
                 from its weights with --weights",
            ),
            _ => diagnostic,
        }
    }
}

/// One tensor of the file: name, shape, values (borrowed unless the array had to be copied
/// into row-major order).
type Entry<'a> = (String, Vec<usize>, Cow<'a, [f32]>);

/// The tensors and metadata of a checkpoint, in the order they are written.
fn entries<'a>(
    weights: &'a Weights,
    optimizer: Option<&'a Optimizer>,
    progress: &Progress,
) -> (Vec<Entry<'a>>, BTreeMap<String, String>) {
    let mut tensors: Vec<Entry<'a>> = Vec::new();
    for (name, tensor) in weights.iter() {
        let values = match tensor.as_slice() {
            Some(values) => Cow::Borrowed(values),
            None => Cow::Owned(tensor.iter().copied().collect()),
        };
        tensors.push((name.to_string(), tensor.shape().to_vec(), values));
    }
    let mut metadata = BTreeMap::new();
    metadata.insert("format".to_string(), "pt".to_string());
    metadata.insert("cnnc.epoch".to_string(), progress.epoch.to_string());
    metadata.insert(
        "cnnc.global_step".to_string(),
        progress.global_step.to_string(),
    );
    if let Some(optimizer) = optimizer {
        metadata.insert(
            "cnnc.optimizer".to_string(),
            optimizer.config().kind().to_string(),
        );
        for (name, state) in optimizer.states() {
            // The parameter's own shape where the weights have it, else a flat vector.
            let shape = |n: usize| match weights.get(name) {
                Some(t) if t.len() == n => t.shape().to_vec(),
                _ => vec![n],
            };
            let mut push = |field: &str, values: &'a [f32]| {
                let full = format!("{OPTIM_PREFIX}{name}.{field}");
                tensors.push((full, shape(values.len()), Cow::Borrowed(values)));
            };
            match state {
                ParamState::Sgd {
                    momentum_buffer: Some(buffer),
                } => push("momentum_buffer", buffer),
                ParamState::Sgd {
                    momentum_buffer: None,
                } => {}
                ParamState::Adam {
                    step,
                    exp_avg,
                    exp_avg_sq,
                } => {
                    push("exp_avg", exp_avg);
                    push("exp_avg_sq", exp_avg_sq);
                    metadata.insert(format!("{OPTIM_PREFIX}{name}.step"), step.to_string());
                }
            }
        }
    }
    (tensors, metadata)
}

/// Writes the safetensors encoding of the entries: an 8-byte header length, the JSON header
/// (padded with spaces to 8 bytes), the little-endian data.
fn write_safetensors(
    out: &mut impl Write,
    tensors: &[Entry<'_>],
    metadata: &BTreeMap<String, String>,
) -> io::Result<()> {
    let mut header = serde_json::Map::new();
    header.insert(
        "__metadata__".to_string(),
        serde_json::to_value(metadata).map_err(io::Error::other)?,
    );
    let mut offset = 0usize;
    for (name, shape, values) in tensors {
        let size = values.len() * 4;
        header.insert(
            name.clone(),
            serde_json::json!({
                "dtype": "F32",
                "shape": shape,
                "data_offsets": [offset, offset + size],
            }),
        );
        offset += size;
    }
    let mut text = serde_json::to_string(&header).map_err(io::Error::other)?;
    while text.len() % 8 != 0 {
        text.push(' ');
    }
    out.write_all(&(text.len() as u64).to_le_bytes())?;
    out.write_all(text.as_bytes())?;
    for (_, _, values) in tensors {
        for value in values.iter() {
            out.write_all(&value.to_le_bytes())?;
        }
    }
    Ok(())
}

/// The checkpoint as bytes (what [`save_checkpoint`] writes).
pub fn checkpoint_bytes(
    weights: &Weights,
    optimizer: Option<&Optimizer>,
    progress: &Progress,
) -> Vec<u8> {
    let (tensors, metadata) = entries(weights, optimizer, progress);
    let mut bytes = Vec::new();
    // Writing to a Vec cannot fail, and serde_json cannot fail on strings and numbers.
    let _ = write_safetensors(&mut bytes, &tensors, &metadata);
    bytes
}

/// Writes a checkpoint to `path` atomically (see the module docs).
pub fn save_checkpoint(
    path: &Path,
    weights: &Weights,
    optimizer: Option<&Optimizer>,
    progress: &Progress,
) -> Result<(), CheckpointError> {
    let (tensors, metadata) = entries(weights, optimizer, progress);
    write_atomically(path, |file| write_safetensors(file, &tensors, &metadata))
}

/// Runs `write` on a temporary file beside `path`, flushes it to disk and renames it over
/// `path`; on any failure the temporary file is removed and `path` is untouched.
pub(crate) fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> Result<(), CheckpointError> {
    let unwritable = |source| CheckpointError::Unwritable {
        path: path.to_path_buf(),
        source,
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| unwritable(io::Error::other("the path names no file")))?;
    let temporary = path.with_file_name(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut out = BufWriter::new(File::create(&temporary)?);
        write(&mut out)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if let Err(source) = result {
        let _ = std::fs::remove_file(&temporary);
        return Err(unwritable(source));
    }
    // The rename is durable once the directory is synced; where that is not possible (some
    // file systems refuse to open a directory), the file itself is already complete.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(dir) = File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

/// Reads a checkpoint and splits it into weights and optimizer state.
pub fn load_checkpoint(path: &Path) -> Result<Checkpoint, CheckpointError> {
    let bytes = crate::source::read_regular_file(path, 16 << 30).map_err(|source| {
        CheckpointError::Unreadable {
            path: path.to_path_buf(),
            source,
        }
    })?;
    checkpoint_from_bytes(&bytes, path)
}

/// [`load_checkpoint`] on bytes in memory; `path` is only named in messages.
pub fn checkpoint_from_bytes(bytes: &[u8], path: &Path) -> Result<Checkpoint, CheckpointError> {
    let corrupt = |reason: String| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    if let Some(what) = crate::runtime::safetensors_io::not_safetensors(bytes) {
        return Err(CheckpointError::NotSafetensors {
            path: path.to_path_buf(),
            what,
        });
    }
    let file = SafeTensors::deserialize(bytes).map_err(|e| corrupt(e.to_string()))?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| corrupt(e.to_string()))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let number = |key: &str| -> Result<u64, CheckpointError> {
        match metadata.get(key) {
            None => Ok(0),
            Some(text) => text
                .parse()
                .map_err(|_| corrupt(format!("metadata `{key}` is `{text}`, not a count"))),
        }
    };
    let progress = Progress {
        epoch: number("cnnc.epoch")?,
        global_step: number("cnnc.global_step")?,
    };
    let optimizer_kind = metadata.get("cnnc.optimizer").cloned();

    let mut weights = Weights::new();
    let mut fields: BTreeMap<String, BTreeMap<&'static str, Vec<f32>>> = BTreeMap::new();
    for name in header.offset_keys() {
        let view = file.tensor(&name).map_err(|e| corrupt(e.to_string()))?;
        if view.dtype() != Dtype::F32 {
            return Err(corrupt(format!(
                "tensor `{name}` is {}; checkpoints hold F32 tensors",
                view.dtype()
            )));
        }
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        match optimizer_field(&name) {
            Some((param, field)) => {
                fields
                    .entry(param.to_string())
                    .or_default()
                    .insert(field, values);
            }
            None => {
                let tensor = ArrayD::from_shape_vec(IxDyn(view.shape()), values)
                    .map_err(|e| corrupt(format!("tensor `{name}`: {e}")))?;
                weights.insert(name, tensor);
            }
        }
    }

    let mut optimizer_state = Vec::new();
    for (param, mut found) in fields {
        let state = if let Some(buffer) = found.remove("momentum_buffer") {
            ParamState::Sgd {
                momentum_buffer: Some(buffer),
            }
        } else {
            let (Some(exp_avg), Some(exp_avg_sq)) =
                (found.remove("exp_avg"), found.remove("exp_avg_sq"))
            else {
                return Err(corrupt(format!(
                    "the Adam state of `{param}` lacks `exp_avg` or `exp_avg_sq`"
                )));
            };
            let key = format!("{OPTIM_PREFIX}{param}.step");
            if !metadata.contains_key(&key) {
                return Err(corrupt(format!("metadata `{key}` is missing")));
            }
            ParamState::Adam {
                step: number(&key)?,
                exp_avg,
                exp_avg_sq,
            }
        };
        optimizer_state.push((param, state));
    }
    Ok(Checkpoint {
        weights,
        optimizer_kind,
        optimizer_state,
        progress,
    })
}

/// Whether a tensor name of a checkpoint is optimizer state rather than a network tensor:
/// the trainer loads a checkpoint's weights with the ordinary weights loader (which checks
/// them against the graph) and drops its warnings about these names.
pub fn is_optimizer_tensor(name: &str) -> bool {
    optimizer_field(name).is_some()
}

/// `optim.{param}.{field}` → (param, field) for the optimizer's fields; `None` otherwise.
fn optimizer_field(name: &str) -> Option<(&str, &'static str)> {
    let rest = name.strip_prefix(OPTIM_PREFIX)?;
    let (param, field) = rest.rsplit_once('.')?;
    let field = STATE_FIELDS.into_iter().find(|f| *f == field)?;
    Some((param, field))
}

impl Checkpoint {
    /// Puts the checkpoint's optimizer state into `optimizer`, which must be of the same kind.
    pub fn restore_optimizer(
        &self,
        optimizer: &mut Optimizer,
        path: &Path,
    ) -> Result<(), CheckpointError> {
        let expected = optimizer.config().kind();
        let mismatch = |found: &str| CheckpointError::OptimizerMismatch {
            path: path.to_path_buf(),
            found: found.to_string(),
            expected: expected.to_string(),
        };
        match self.optimizer_kind.as_deref() {
            Some(kind) if kind != expected => return Err(mismatch(kind)),
            None if !self.optimizer_state.is_empty() => return Err(mismatch("unnamed")),
            _ => {}
        }
        for (name, state) in &self.optimizer_state {
            optimizer
                .restore_state(name, state.clone())
                .map_err(|e| CheckpointError::Corrupt {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "checkpoint_tests.rs"]
mod tests;
