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

use super::mapped::{map_regular_file, FileDtype, MappedTensor};
use super::weights::{describe_layer, seeded_tensor, Weights, WeightsError};
use super::Dims;
use crate::graph::{ConstSource, Graph, NodeId, ParamSpec};
use ndarray::{ArrayD, IxDyn};
use safetensors::tensor::TensorView;
use safetensors::SafeTensors;
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// How a parameter of the graph is provided, once the file is checked.
pub(crate) enum Found<'a> {
    /// By the file's tensor of that name: the right shape, a dtype cnnc reads.
    File {
        view: TensorView<'a>,
        dtype: FileDtype,
    },
    /// By nothing: the file lacks it and `allow_missing` allows that, so it is seeded.
    Seeded,
}

/// What a checked file leaves to tell the user.
pub(crate) struct Report {
    pub warnings: Vec<WeightsError>,
    pub seeded: Vec<String>,
}

/// The bytes of a safetensors file, parsed: a file that is not one at all, or a damaged one,
/// is an error naming `path`.
pub(crate) fn parse<'a>(bytes: &'a [u8], path: &Path) -> Result<SafeTensors<'a>, WeightsErrors> {
    if let Some(what) = not_safetensors(bytes) {
        return Err(WeightsError::NotSafetensors {
            path: path.to_path_buf(),
            what,
        }
        .into());
    }
    SafeTensors::deserialize(bytes).map_err(|error| {
        WeightsError::Corrupt {
            path: path.to_path_buf(),
            reason: error.to_string(),
        }
        .into()
    })
}

/// Checks `file` against every parameter of `graph`, collecting every problem at once, and
/// hands each parameter that is fine to `take` (with its full name, layer and spec), which may
/// find a problem of its own.
pub(crate) fn check_file<'a>(
    file: &SafeTensors<'a>,
    graph: &Graph,
    options: &LoadOptions,
    mut take: impl FnMut(String, NodeId, &ParamSpec, Found<'a>) -> Result<(), WeightsError>,
) -> Result<Report, WeightsErrors> {
    // The crate hands out names in hash order; sorted, the messages are stable.
    let mut file_names: Vec<String> = file.names().into_iter().map(String::from).collect();
    file_names.sort();

    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut seeded = Vec::new();
    let mut used = HashSet::new();
    for (name, node, spec) in graph.named_params() {
        let layer = || describe_layer(graph, node);
        let Ok(view) = file.tensor(&name) else {
            if options.may_be_missing(&name) {
                seeded.push(name.clone());
                if let Err(error) = take(name, node, &spec, Found::Seeded) {
                    errors.push(error);
                }
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
        let Some(dtype) = FileDtype::of(view.dtype()) else {
            errors.push(WeightsError::WrongDtype {
                dtype: view.dtype().to_string(),
                name,
                node,
                layer: layer(),
            });
            continue;
        };
        if let Err(error) = take(name, node, &spec, Found::File { view, dtype }) {
            errors.push(error);
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
        Ok(Report { warnings, seeded })
    } else {
        Err(WeightsErrors { errors, warnings })
    }
}

/// [`bind_safetensors`]'s account of what it bound.
#[derive(Debug)]
pub struct Bound {
    /// Tensors bound from the file.
    pub from_file: usize,
    /// Problems that did not stop the load (tensors no layer uses, when not strict).
    pub warnings: Vec<WeightsError>,
    /// Names of tensors the file lacked that were seeded because `allow_missing` allowed it.
    pub seeded: Vec<String>,
}

/// Maps a weights file, an error naming it when it cannot be.
fn map_weights_file(path: &Path) -> Result<memmap2::Mmap, WeightsError> {
    // VGG-19 is 0.57 GB of f32; 16 GiB leaves room for any network.
    map_regular_file(path, 16 << 30).map_err(|source| WeightsError::Unreadable {
        path: path.to_path_buf(),
        source,
    })
}

/// Binds the safetensors file at `path` to `graph`'s learned constants in place: the file is
/// mapped and checked as [`Weights::load_safetensors`] checks it (the same errors, all at
/// once), then each constant reads its tensor from the mapped file (`ConstSource::Mapped`),
/// so no copy of the weights is made before packing, which releases each tensor's pages once
/// it is packed. A tensor `allow_missing` lets the file lack is seeded with `options.seed`.
/// On an error the graph is left as it was.
pub fn bind_safetensors(
    graph: &mut Graph,
    path: &Path,
    options: &LoadOptions,
) -> Result<Bound, WeightsErrors> {
    let map = Arc::new(map_weights_file(path)?);
    let file = parse(&map, path)?;
    let base = map.as_ptr() as usize;
    let mut sources = Vec::new();
    let report = check_file(&file, graph, options, |name, node, spec, found| {
        let source = match found {
            // Seeded lazily, unless the constant's own name (its stream's) differs from the
            // file's name for it, as in a graph whose layer paths were changed after it was
            // built: `Weights::seeded` draws from the file's name.
            Found::Seeded => match graph.node_const(node, spec.name) {
                Some(id) if graph.consts[id].name == name => ConstSource::Seeded {
                    seed: options.seed,
                    init: spec.init,
                },
                _ => {
                    let tensor =
                        seeded_tensor(graph, node, spec.name, &spec.shape, &name, options.seed);
                    ConstSource::Values(tensor.iter().copied().collect())
                }
            },
            Found::File { view, dtype } => {
                let offset = view.data().as_ptr() as usize - base;
                let tensor =
                    MappedTensor::new(Arc::clone(&map), offset, spec.shape.iter().product(), dtype)
                        .ok_or_else(|| WeightsError::Corrupt {
                            path: path.to_path_buf(),
                            reason: format!("tensor `{name}` runs past the end of the file"),
                        })?;
                ConstSource::Mapped(tensor)
            }
        };
        sources.push((node, spec.name, source));
        Ok(())
    })?;
    let from_file = sources.len() - report.seeded.len();
    for (node, suffix, source) in sources {
        if let Some(id) = graph.node_const(node, suffix) {
            graph.consts[id].set_source(source);
        }
    }
    Ok(Bound {
        from_file,
        warnings: report.warnings,
        seeded: report.seeded,
    })
}

impl Weights {
    /// Loads the weights of `graph` from a safetensors file: every tensor the graph names,
    /// checked for shape and converted to f32. See [`LoadOptions`] for what may differ.
    pub fn load_safetensors(
        path: &Path,
        graph: &Graph,
        options: &LoadOptions,
    ) -> Result<Loaded, WeightsErrors> {
        // Mapped, not read: the decoded tensors are the only copy made.
        let map = map_weights_file(path)?;
        Weights::from_safetensors_bytes(&map, path, graph, options)
    }

    /// [`Weights::load_safetensors`] on bytes already in memory; `path` is only named in
    /// messages.
    pub fn from_safetensors_bytes(
        bytes: &[u8],
        path: &Path,
        graph: &Graph,
        options: &LoadOptions,
    ) -> Result<Loaded, WeightsErrors> {
        let file = parse(bytes, path)?;
        let mut weights = Weights::new();
        let report = check_file(&file, graph, options, |name, node, spec, found| {
            let tensor = match found {
                Found::Seeded => {
                    seeded_tensor(graph, node, spec.name, &spec.shape, &name, options.seed)
                }
                Found::File { view, dtype } => {
                    let values = dtype.decode(view.data());
                    // The crate checked that the data length matches shape × dtype size, so
                    // the values fit the shape; a mismatch would be a corrupt file all the same.
                    ArrayD::from_shape_vec(IxDyn(&spec.shape), values).map_err(|error| {
                        WeightsError::Corrupt {
                            path: path.to_path_buf(),
                            reason: format!("tensor `{name}`: {error}"),
                        }
                    })?
                }
            };
            weights.insert(name, tensor);
            Ok(())
        })?;
        Ok(Loaded {
            weights,
            warnings: report.warnings,
            seeded: report.seeded,
        })
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
