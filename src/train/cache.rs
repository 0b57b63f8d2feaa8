//! Cached frozen features: when a network starts with a frozen part (a pretrained base) that
//! nothing trainable feeds, that part computes the same features for an image at every epoch.
//! `cnnc train` then runs it once per image, keeps the features (in memory, or in `--cache
//! DIR`) and trains only the rest, the *head*, on them.
//!
//! The graph is split at the *frontier* of its frozen prefix. The prefix is every node that
//! the loss cannot change through something trainable (not `live` in `reference::backward`)
//! and that computes in training what it computes at inference: frozen layers run as at
//! inference (their batch norms on running statistics, their dropout off, see
//! `reference::backward::node_mode`), and so do parameter-free layers other than an unfrozen
//! batch norm or dropout. The frontier is the set of prefix nodes the head reads; a cache is
//! built only when it is one tensor, when the prefix holds at least one frozen layer with
//! parameters, and when no augmentation applies to the images (an augmented image gives
//! different features at every epoch).
//!
//! The head is a graph of its own whose input is the frontier's tensor; it keeps the layers'
//! names, so the same weights train it. The features of the training and validation sets are
//! computed by an inference forward of the prefix given by the caller (the JIT in `cnnc
//! train`), in the data set's order, and become a data set of raw float samples with the same
//! labels and positions, so the trainer's shuffling, batches and steps are those of a run
//! without the cache.
//!
//! On disk (`--cache DIR`) a data set's features are `{name}.npy` beside `{name}.key`, a text
//! naming everything the features depend on: the prefix's layers, shapes and names, a hash
//! of its weights, the preprocessing and padding, a hash of every preprocessed input image
//! and its label, and the engine. Features are read back only when the key matches exactly,
//! so a stale cache is never used; otherwise both files are rewritten.

use super::data::{Dataset, InputSpec, SampleValues, Samples};
use super::data_error::DataError;
use crate::diag::{Code, Diagnostic};
use crate::graph::{Graph, Node, NodeId, Op, Origin, Shape};
use crate::reference::backward::live_nodes;
use crate::runtime::{npy_bytes, parse_npy, NpyArray, Weights};
use cranelift_entity::SecondaryMap;
use ndarray::ArrayD;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Whether the network declares augmentation of its training images (`augment(...)`):
/// augmented images give different features at every epoch, so they cannot be cached.
/// (`cnnc train --no-augment` clears the declaration from the graph it trains.)
pub fn augmentation_declared(graph: &Graph) -> bool {
    graph.meta.augment.is_some()
}

/// Why a network's training is not cached.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum NoCache {
    #[error("turned off by --no-cache")]
    Disabled,
    #[error("the network declares augmentation, which changes the features at every epoch")]
    Augmentation,
    #[error("no frozen layer comes before the trainable ones")]
    NoFrozenPrefix,
    #[error("nothing in the network is trainable")]
    NothingTrainable,
    #[error("the trainable layers read {0} tensors of the frozen part, not one")]
    SeveralTensors(usize),
}

/// A network cut at the frontier of its frozen prefix.
#[derive(Clone, Debug)]
pub struct FrozenSplit {
    /// The frozen prefix, from the network's input to the frontier (its output).
    pub prefix: Graph,
    /// The rest, from an input `features` of the frontier's shape to the network's output.
    pub head: Graph,
    /// The frontier's shape: one image's features.
    pub features: Shape,
    /// The frontier, for messages: its layer path (or op name) and shape.
    pub frontier: String,
}

/// Whether a node computes in training what it computes at inference.
fn same_in_training(node: &Node) -> bool {
    node.frozen || !matches!(node.op, Op::BatchNorm { .. } | Op::Dropout { .. })
}

/// Splits `graph` at the frontier of its frozen prefix (see the module docs).
pub fn split_frozen_prefix(graph: &Graph) -> Result<FrozenSplit, NoCache> {
    if augmentation_declared(graph) {
        return Err(NoCache::Augmentation);
    }
    let live = live_nodes(graph, false);
    let mut in_prefix: SecondaryMap<NodeId, bool> = SecondaryMap::new();
    for (id, node) in graph.nodes.iter() {
        in_prefix[id] = matches!(node.op, Op::Input { .. })
            || (!live[id]
                && same_in_training(node)
                && node.inputs.iter().all(|&input| in_prefix[input]));
    }
    if in_prefix[graph.output()] {
        return Err(NoCache::NothingTrainable);
    }
    let mut frontier: Vec<NodeId> = Vec::new();
    for (id, node) in graph.nodes.iter() {
        if in_prefix[id] {
            continue;
        }
        for &input in &node.inputs {
            if in_prefix[input] && !frontier.contains(&input) {
                frontier.push(input);
            }
        }
    }
    let frontier = match frontier.as_slice() {
        [one] => *one,
        [] => return Err(NoCache::NoFrozenPrefix),
        several => return Err(NoCache::SeveralTensors(several.len())),
    };
    let (mut prefix, renumbered) = copy_nodes(graph, |id| in_prefix[id], None);
    prefix.outputs = renumbered[frontier].into_iter().collect();
    prefix.prune_unreachable();
    let has_frozen_layer = prefix
        .nodes
        .keys()
        .any(|id| prefix.nodes[id].frozen && !prefix.params(id).is_empty());
    if !has_frozen_layer {
        return Err(NoCache::NoFrozenPrefix);
    }
    let features = graph.shape(frontier);
    let (mut head, _) = copy_nodes(graph, |id| !in_prefix[id], Some(frontier));
    head.meta.preprocess = None;
    let node = &graph.nodes[frontier];
    let name = if node.path.is_empty() {
        node.op.name().to_string()
    } else {
        node.path.clone()
    };
    Ok(FrozenSplit {
        prefix,
        head,
        features,
        frontier: format!("{name} ({features})"),
    })
}

/// A graph of the nodes `keep` selects, in order, with their constants, shapes and origins.
/// Returns the copy and each kept node's id in it.
///
/// With `input_for: Some(frontier)` (the head), the nodes left out (the prefix, which comes
/// first) are replaced by an input `features` of the frontier's shape and a chain of
/// identities of it, the last standing for the frontier, so each kept node keeps its number:
/// dropout draws its masks from the node's number, and the head must draw the network's. The
/// chain is on the way to the output, so pruning (the trainer's `logits_graph`) keeps it; it
/// costs a copy of the features per node, nothing beside a layer's backward.
fn copy_nodes(
    graph: &Graph,
    keep: impl Fn(NodeId) -> bool,
    input_for: Option<NodeId>,
) -> (Graph, SecondaryMap<NodeId, Option<NodeId>>) {
    let mut copy = Graph {
        name: graph.name.clone(),
        meta: graph.meta.clone(),
        span: graph.span,
        ..Graph::default()
    };
    let mut renumber: SecondaryMap<NodeId, Option<NodeId>> = SecondaryMap::new();
    let mut features: Option<NodeId> = None;
    for (id, node) in graph.nodes.iter() {
        if !keep(id) {
            let Some(frontier) = input_for else {
                continue;
            };
            let shape = graph.shape(frontier);
            let origin = graph.origins[id].clone();
            match features {
                None => {
                    let input = copy.add_input("features", shape, graph.origins[frontier].span);
                    copy.origins[input] = origin;
                    features = Some(input);
                }
                Some(previous) => {
                    let filler = copy.nodes.push(Node {
                        op: Op::Identity,
                        inputs: vec![previous],
                        path: String::new(),
                        frozen: true,
                        consts: Vec::new(),
                    });
                    copy.shapes[filler] = shape;
                    copy.origins[filler] = origin;
                    features = Some(filler);
                }
            }
            if id == frontier {
                renumber[id] = features;
            }
            continue;
        }
        let mut node = node.clone();
        node.inputs = node.inputs.iter().filter_map(|&i| renumber[i]).collect();
        for (_, constant) in &mut node.consts {
            *constant = copy.consts.push(graph.consts[*constant].clone());
        }
        let is_input = matches!(node.op, Op::Input { .. });
        let new_id = copy.nodes.push(node);
        copy.shapes[new_id] = graph.shape(id);
        copy.origins[new_id] = Origin::clone(&graph.origins[id]);
        if is_input {
            copy.inputs.push(new_id);
        }
        renumber[id] = Some(new_id);
    }
    copy.outputs = renumber[graph.output()].into_iter().collect();
    (copy, renumber)
}

#[derive(Debug, Error)]
pub enum CacheError {
    #[error("the frozen layers' forward failed: {0}")]
    Forward(String),
    #[error("the frozen layers gave {found} values for {images} images of {per_image} features")]
    WrongSize {
        found: usize,
        images: usize,
        per_image: usize,
    },
    #[error("the feature cache `{}` cannot be written: {source}", path.display())]
    Unwritable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the feature cache `{}` is not a folder", path.display())]
    NotAFolder { path: PathBuf },
    #[error(transparent)]
    Data(#[from] DataError),
}

impl CacheError {
    pub fn diagnostic(&self) -> Diagnostic {
        match self {
            CacheError::Data(e) => e.diagnostic(),
            CacheError::Unwritable { .. } | CacheError::NotAFolder { .. } => {
                Diagnostic::global(Code::FeatureCache, self.to_string()).with_help(
                    "give --cache an existing folder you can write to, or leave it out to keep \
                     the features in memory",
                )
            }
            _ => Diagnostic::global(Code::Run, self.to_string()),
        }
    }
}

/// An inference forward: N images to N × features.
pub type Forward<'a> = super::trainer::Forward<'a>;

/// The features of every image of `data`, in its order, `batch` images per forward.
pub fn compute_features(
    data: &Dataset,
    batch: usize,
    per_image: usize,
    forward: &mut Forward<'_>,
) -> Result<Vec<f32>, CacheError> {
    let order = data.epoch_order(0, 0, false);
    let mut features = Vec::with_capacity(data.len() * per_image);
    for batch in data.batches(&order, batch.max(1))? {
        let output = forward(&batch.images).map_err(CacheError::Forward)?;
        features.extend(output.iter().copied());
    }
    if features.len() != data.len() * per_image {
        return Err(CacheError::WrongSize {
            found: features.len(),
            images: data.len(),
            per_image,
        });
    }
    Ok(features)
}

/// `data` with each image replaced by its features (`features`, one `shape` after another in
/// the data set's order): the same labels, positions and classes, no preprocessing.
pub fn features_dataset(
    data: &Dataset,
    features: Vec<f32>,
    shape: Shape,
) -> Result<Dataset, CacheError> {
    let per_image = shape.numel();
    if features.len() != data.len() * per_image {
        return Err(CacheError::WrongSize {
            found: features.len(),
            images: data.len(),
            per_image,
        });
    }
    let samples = Samples {
        values: SampleValues::Raw(features),
        labels: (0..data.len()).map(|p| data.label(p)).collect(),
        stored: shape,
        source: data.source().to_path_buf(),
    };
    let spec = InputSpec {
        name: "features".into(),
        shape,
        preprocess: None,
        pad: 0,
    };
    Ok(Dataset::new(
        samples,
        spec,
        data.class_names().to_vec(),
        data.n_classes(),
    )?)
}

/// A 128-bit fingerprint of a byte stream (two independent 64-bit multiply–xorshift lanes
/// over 8-byte words): stable across platforms and runs, which `std`'s hasher is not.
#[derive(Clone)]
struct Fingerprint {
    lanes: [u64; 2],
    length: u64,
}

impl Fingerprint {
    fn new() -> Fingerprint {
        Fingerprint {
            lanes: [0x243F_6A88_85A3_08D3, 0x1319_8A2E_0370_7344],
            length: 0,
        }
    }

    fn word(&mut self, word: u64) {
        const MULTIPLIERS: [u64; 2] = [0x9E37_79B9_7F4A_7C15, 0xC2B2_AE3D_27D4_EB4F];
        for (lane, m) in self.lanes.iter_mut().zip(MULTIPLIERS) {
            let mixed = (*lane ^ word).wrapping_mul(m);
            *lane = mixed ^ (mixed >> 29);
        }
        self.length += 1;
    }

    fn bytes(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.word(u64::from_le_bytes(word));
        }
        let mut last = [0u8; 8];
        last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        self.word(u64::from_le_bytes(last));
        self.word(bytes.len() as u64);
    }

    fn floats(&mut self, values: impl IntoIterator<Item = f32>) {
        let mut count = 0u64;
        for value in values {
            self.word(u64::from(value.to_bits()));
            count += 1;
        }
        self.word(count);
    }

    fn hex(&self) -> String {
        let [a, b] = self.lanes;
        let fold = |x: u64| (x ^ self.length.rotate_left(17)).wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        format!("{:016x}{:016x}", fold(a), fold(b))
    }
}

/// The key of a data set's cached features: everything they depend on (see the module docs).
pub fn cache_key(
    split: &FrozenSplit,
    weights: &Weights,
    data: &Dataset,
    engine: &str,
) -> Result<String, CacheError> {
    let prefix = &split.prefix;
    let mut layers = Fingerprint::new();
    layers.bytes(prefix.dump().as_bytes());
    let mut weights_print = Fingerprint::new();
    for node in prefix.nodes.values() {
        layers.bytes(format!("{} {}", node.path, node.frozen).as_bytes());
        for &(_, id) in &node.consts {
            let constant = &prefix.consts[id];
            weights_print.bytes(constant.name.as_bytes());
            match weights.get(&constant.name).filter(|_| constant.learned) {
                Some(tensor) => weights_print.floats(tensor.iter().copied()),
                None => weights_print.floats(constant.values().iter().copied()),
            }
        }
    }
    let mut images = Fingerprint::new();
    let order = data.epoch_order(0, 0, false);
    for batch in data.batches(&order, 64)? {
        images.floats(batch.images.iter().copied());
        for label in batch.labels {
            images.word(u64::from(label));
        }
    }
    let spec = data.spec();
    let mut key = String::new();
    let _ = writeln!(key, "cnnc frozen features, format 1");
    let _ = writeln!(key, "network: {}", prefix.name);
    let _ = writeln!(key, "frontier: {}", split.frontier);
    let _ = writeln!(key, "layers: {}", layers.hex());
    let _ = writeln!(key, "weights: {}", weights_print.hex());
    let _ = writeln!(key, "preprocess: {:?}, pad {}", spec.preprocess, spec.pad);
    let _ = writeln!(key, "images: {} ({} images)", images.hex(), data.len());
    let _ = writeln!(key, "engine: {engine}");
    Ok(key)
}

/// Features read from `dir`, if its key for `name` is `key` and the array has the size.
fn read_cached(dir: &Path, name: &str, key: &str, expected: usize) -> Option<Vec<f32>> {
    let stored_key = std::fs::read_to_string(dir.join(format!("{name}.key"))).ok()?;
    if stored_key != key {
        return None;
    }
    let bytes = std::fs::read(dir.join(format!("{name}.npy"))).ok()?;
    match parse_npy(&bytes).ok()? {
        NpyArray::Float(array) if array.len() == expected => Some(array.iter().copied().collect()),
        _ => None,
    }
}

/// Writes the features and then their key (so a key never names features not yet written).
fn write_cached(dir: &Path, name: &str, key: &str, array: &ArrayD<f32>) -> Result<(), CacheError> {
    let key_path = dir.join(format!("{name}.key"));
    let npy_path = dir.join(format!("{name}.npy"));
    let write = |path: &Path, bytes: &[u8]| {
        let temporary = path.with_extension("tmp");
        std::fs::write(&temporary, bytes)
            .and_then(|()| std::fs::rename(&temporary, path))
            .map_err(|source| CacheError::Unwritable {
                path: path.to_path_buf(),
                source,
            })
    };
    // A key left from an earlier run must not vouch for the features being replaced.
    let _ = std::fs::remove_file(&key_path);
    write(&npy_path, &npy_bytes(array))?;
    write(&key_path, key.as_bytes())
}

/// A data set's features: computed by `forward`, or read from `dir` when its key matches
/// (and written there after computing). Returns the features' data set and whether they were
/// read from disk.
#[allow(clippy::too_many_arguments)]
pub fn cached_features(
    dir: Option<&Path>,
    name: &str,
    split: &FrozenSplit,
    weights: &Weights,
    data: &Dataset,
    batch: usize,
    engine: &str,
    forward: &mut Forward<'_>,
) -> Result<(Dataset, bool), CacheError> {
    let shape = split.features;
    let per_image = shape.numel();
    let Some(dir) = dir else {
        let features = compute_features(data, batch, per_image, forward)?;
        return Ok((features_dataset(data, features, shape)?, false));
    };
    if !dir.is_dir() {
        return Err(CacheError::NotAFolder {
            path: dir.to_path_buf(),
        });
    }
    let key = cache_key(split, weights, data, engine)?;
    if let Some(features) = read_cached(dir, name, &key, data.len() * per_image) {
        return Ok((features_dataset(data, features, shape)?, true));
    }
    let features = compute_features(data, batch, per_image, forward)?;
    let dims = if shape.flat {
        vec![data.len(), shape.c]
    } else {
        vec![data.len(), shape.h, shape.w, shape.c]
    };
    let array = ArrayD::from_shape_vec(ndarray::IxDyn(&dims), features).map_err(|_| {
        CacheError::WrongSize {
            found: 0,
            images: data.len(),
            per_image,
        }
    })?;
    write_cached(dir, name, &key, &array)?;
    let features = array.into_raw_vec_and_offset().0;
    Ok((features_dataset(data, features, shape)?, false))
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
