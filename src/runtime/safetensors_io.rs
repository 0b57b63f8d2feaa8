//! Reading weights from, and writing them to, safetensors files.
//!
//! Loading checks the file against the graph and collects every problem at once — missing
//! tensors, wrong shapes, unsupported dtypes, tensors no layer uses — so that a user fixing an
//! export sees the whole list, each item naming the layer and both shapes. Parsing is left to
//! the `safetensors` crate, which validates the header and every offset before handing out a
//! byte slice; the bytes are then decoded here without any alignment assumption.
//!
//! Saving is written by hand (the format is an 8-byte length, a JSON header and the raw data)
//! so that tensors appear in the graph's `state_dict` order rather than the crate's sorted one.

use super::weights::{describe_layer, seeded_tensor, Weights, WeightsError};
use super::Dims;
use crate::graph::Graph;
use half::{bf16, f16};
use ndarray::{ArrayD, IxDyn};
use safetensors::{Dtype, SafeTensors};
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

/// How strictly a weights file must match the graph.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Tensors that no layer uses are errors instead of warnings.
    pub strict: bool,
    /// Tensors under these layer paths may be absent from the file: they are seeded instead
    /// (as [`Weights::seeded`] would), e.g. `["fc"]` to fine-tune a new classifier head.
    /// A prefix matches a whole path component: `fc` matches `fc.weight`, not `fc2.weight`;
    /// the empty prefix matches every tensor.
    pub allow_missing: Vec<String>,
    /// The seed for tensors seeded because of `allow_missing`.
    pub seed: u64,
}

impl LoadOptions {
    pub fn strict() -> LoadOptions {
        LoadOptions {
            strict: true,
            ..LoadOptions::default()
        }
    }

    fn may_be_missing(&self, name: &str) -> bool {
        self.allow_missing.iter().any(|prefix| {
            let prefix = prefix.trim_end_matches('.');
            prefix.is_empty()
                || name == prefix
                || (name.starts_with(prefix) && name[prefix.len()..].starts_with('.'))
        })
    }
}

/// Weights that loaded, with what the caller should tell the user.
#[derive(Debug)]
pub struct Loaded {
    pub weights: Weights,
    /// Problems that did not stop the load (tensors no layer uses, when not strict).
    pub warnings: Vec<WeightsError>,
    /// Names of tensors the file lacked that were seeded because `allow_missing` allowed it.
    pub seeded: Vec<String>,
}

/// Every problem found in a weights file that could not be loaded.
#[derive(Debug)]
pub struct WeightsErrors {
    pub errors: Vec<WeightsError>,
    pub warnings: Vec<WeightsError>,
}

impl From<WeightsError> for WeightsErrors {
    fn from(error: WeightsError) -> WeightsErrors {
        WeightsErrors {
            errors: vec![error],
            warnings: Vec::new(),
        }
    }
}

impl fmt::Display for WeightsErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.errors.iter().map(|e| e.to_string()).collect();
        write!(f, "{}", lines.join("\n"))
    }
}

impl std::error::Error for WeightsErrors {}

/// Little-endian floats of a supported dtype to f32; `None` for any other dtype.
fn decode(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    let values = match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
            .collect(),
        _ => return None,
    };
    Some(values)
}

/// Why `bytes` are not a safetensors file at all, as opposed to a damaged one: a safetensors
/// file opens with the header's length (8 bytes, little-endian) and the header, a JSON object.
/// `None` when the bytes open that way.
pub(crate) fn not_safetensors(bytes: &[u8]) -> Option<String> {
    let looks_like_text = |b: &[u8]| {
        let head = &b[..b.len().min(64)];
        !head.is_empty()
            && head
                .iter()
                .all(|&c| c == b'\n' || c == b'\r' || c == b'\t' || (0x20..0x7f).contains(&c))
    };
    if bytes.len() < 10 {
        return Some(format!(
            "it holds {} bytes, fewer than the smallest safetensors file",
            bytes.len()
        ));
    }
    let mut length = [0u8; 8];
    length.copy_from_slice(&bytes[..8]);
    let header_len = u64::from_le_bytes(length);
    if header_len <= (bytes.len() - 8) as u64 && bytes[8] == b'{' {
        return None;
    }
    Some(if looks_like_text(bytes) {
        "it is a text file (a safetensors file opens with an 8-byte header length and a JSON \
         header)"
            .to_string()
    } else {
        "it does not open with a safetensors header (an 8-byte length, then a JSON object)"
            .to_string()
    })
}

/// PyTorch's batch norm keeps an integer step counter in its `state_dict`; it plays no part
/// in inference, so a file exported from torchvision may carry it without complaint.
fn is_ignored(name: &str) -> bool {
    name.ends_with("num_batches_tracked")
}

impl Weights {
    /// Loads the weights of `graph` from a safetensors file: every tensor the graph names,
    /// checked for shape and converted to f32. See [`LoadOptions`] for what may differ.
    pub fn load_safetensors(
        path: &Path,
        graph: &Graph,
        options: &LoadOptions,
    ) -> Result<Loaded, WeightsErrors> {
        // VGG-19 is 0.57 GB of f32; 16 GiB leaves room for any network and is below this
        // machine's memory.
        let bytes = crate::source::read_regular_file(path, 16 << 30).map_err(|source| {
            WeightsError::Unreadable {
                path: path.to_path_buf(),
                source,
            }
        })?;
        Weights::from_safetensors_bytes(&bytes, path, graph, options)
    }

    /// [`Weights::load_safetensors`] on bytes already in memory; `path` is only named in
    /// messages.
    pub fn from_safetensors_bytes(
        bytes: &[u8],
        path: &Path,
        graph: &Graph,
        options: &LoadOptions,
    ) -> Result<Loaded, WeightsErrors> {
        if let Some(what) = not_safetensors(bytes) {
            return Err(WeightsError::NotSafetensors {
                path: path.to_path_buf(),
                what,
            }
            .into());
        }
        let file = SafeTensors::deserialize(bytes).map_err(|error| WeightsError::Corrupt {
            path: path.to_path_buf(),
            reason: error.to_string(),
        })?;
        // The crate hands out names in hash order; sorted, the messages are stable.
        let mut file_names: Vec<String> = file.names().into_iter().map(String::from).collect();
        file_names.sort();

        let mut weights = Weights::new();
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let mut seeded = Vec::new();
        let mut used = HashSet::new();
        for (name, node, spec) in graph.named_params() {
            let layer = || describe_layer(graph, node);
            let Ok(view) = file.tensor(&name) else {
                if options.may_be_missing(&name) {
                    let tensor =
                        seeded_tensor(graph, node, spec.name, &spec.shape, &name, options.seed);
                    weights.insert(name.clone(), tensor);
                    seeded.push(name);
                } else {
                    let suffix = format!(".{name}");
                    errors.push(WeightsError::Missing {
                        found_as: file_names.iter().find(|n| n.ends_with(&suffix)).cloned(),
                        expected: Dims(spec.shape),
                        name,
                        node,
                        layer: layer(),
                    });
                }
                continue;
            };
            used.insert(name.clone());
            if view.shape() != spec.shape.as_slice() {
                errors.push(WeightsError::WrongShape {
                    found: Dims::of(view.shape()),
                    expected: Dims(spec.shape),
                    name,
                    node,
                    layer: layer(),
                });
                continue;
            }
            let Some(values) = decode(view.dtype(), view.data()) else {
                errors.push(WeightsError::WrongDtype {
                    dtype: view.dtype().to_string(),
                    name,
                    node,
                    layer: layer(),
                });
                continue;
            };
            // The crate checked that the data length matches shape × dtype size, so the
            // values fit the shape; a mismatch would be a corrupt file all the same.
            match ArrayD::from_shape_vec(IxDyn(&spec.shape), values) {
                Ok(tensor) => weights.insert(name, tensor),
                Err(error) => errors.push(WeightsError::Corrupt {
                    path: path.to_path_buf(),
                    reason: format!("tensor `{name}`: {error}"),
                }),
            }
        }

        for name in &file_names {
            if used.contains(name) || is_ignored(name) {
                continue;
            }
            let shape = file
                .tensor(name)
                .map(|view| Dims::of(view.shape()))
                .unwrap_or_default();
            let problem = WeightsError::Unexpected {
                name: name.clone(),
                shape,
                network: graph.name.clone(),
            };
            if options.strict {
                errors.push(problem);
            } else {
                warnings.push(problem);
            }
        }

        if errors.is_empty() {
            Ok(Loaded {
                weights,
                warnings,
                seeded,
            })
        } else {
            Err(WeightsErrors { errors, warnings })
        }
    }

    /// The weights as a safetensors file: every tensor as F32, in this set's order.
    pub fn to_safetensors_bytes(&self) -> Vec<u8> {
        let mut header = String::from("{");
        let mut offset = 0usize;
        for (idx, (name, tensor)) in self.iter().enumerate() {
            let size = tensor.len() * 4;
            // serde_json quotes and escapes the name exactly as JSON requires.
            let quoted = serde_json::to_string(name).unwrap_or_else(|_| "\"\"".into());
            let shape: Vec<String> = tensor.shape().iter().map(|d| d.to_string()).collect();
            if idx > 0 {
                header.push(',');
            }
            header.push_str(&format!(
                "{quoted}:{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[{offset},{}]}}",
                shape.join(","),
                offset + size
            ));
            offset += size;
        }
        header.push('}');
        // The format pads the header with spaces so the data starts 8-byte aligned.
        while header.len() % 8 != 0 {
            header.push(' ');
        }
        let mut bytes = Vec::with_capacity(8 + header.len() + offset);
        bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        for (_, tensor) in self.iter() {
            // `iter` walks the logical (row-major) order whatever the memory layout.
            for value in tensor.iter() {
                bytes.extend_from_slice(&value.to_le_bytes());
            }
        }
        bytes
    }

    /// Writes [`Weights::to_safetensors_bytes`] to `path`.
    pub fn save_safetensors(&self, path: &Path) -> Result<(), WeightsError> {
        std::fs::write(path, self.to_safetensors_bytes()).map_err(|source| {
            WeightsError::Unwritable {
                path: PathBuf::from(path),
                source,
            }
        })
    }
}
