//! The tensors a network runs with, by full PyTorch name, their deterministic seeded
//! initialization, and the boundary where they meet the graph's constants.
//!
//! `Weights` is deliberately dumb: an ordered map from names like `layer1.0.conv1.weight`
//! (exactly as [`Graph::named_params`] spells them) to arrays in PyTorch's layout — the form
//! of a weights file and of what a trainer updates. Inside the compiler weights are the
//! graph's constants (`graph::constants`); [`bind`] checks a `Weights` against them once
//! (missing, wrong shape: [`WeightsError`], the error the file loader also reports wrong
//! dtypes and unused tensors with), [`seed`] reseeds them, [`learned_weights`] gives the
//! name-keyed view back.

use super::{Dims, MAX_ELEMENTS};
use crate::diag::{Code, Diagnostic};
use crate::graph::constants::seeded_values;
use crate::graph::{ConstSource, Graph, Init, NodeId};
use ndarray::{ArrayD, IxDyn};
use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use thiserror::Error;

/// A problem with a weights file, or with a set of weights for a graph.
///
/// Errors about one tensor carry the `NodeId` of the layer that owns it, so that the caller
/// can point at the layer's source through `graph.origins[node]`.
#[derive(Debug, Error)]
pub enum WeightsError {
    #[error("cannot read the weights file `{}`: {source}", path.display())]
    Unreadable { path: PathBuf, source: io::Error },
    #[error("cannot write the weights file `{}`: {source}", path.display())]
    Unwritable { path: PathBuf, source: io::Error },
    #[error("`{}` is not a valid safetensors file: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("`{}` is not a safetensors file: {what}", path.display())]
    NotSafetensors { path: PathBuf, what: String },
    #[error("the weights file has no tensor `{name}`, which {layer} needs ({expected})")]
    Missing {
        name: String,
        expected: Dims,
        node: NodeId,
        layer: String,
        /// A tensor of the file whose name ends with this one (`model.conv1.weight`), which
        /// suggests the file's names carry a prefix.
        found_as: Option<String>,
    },
    #[error("tensor `{name}` has shape {found} but {layer} needs {expected}")]
    WrongShape {
        name: String,
        found: Dims,
        expected: Dims,
        node: NodeId,
        layer: String,
    },
    #[error("tensor `{name}` for {layer} is stored as {dtype}; cnnc reads F32, F16, BF16 and F64 tensors")]
    WrongDtype {
        name: String,
        dtype: String,
        node: NodeId,
        layer: String,
    },
    #[error("the weights file has a tensor `{name}` ({shape}) that no layer of network `{network}` uses")]
    Unexpected {
        name: String,
        shape: Dims,
        network: String,
    },
    #[error(
        "the weights of network `{network}` would hold {} numbers, more than cnnc's limit of 2^31",
        crate::diag::thousands(*elements)
    )]
    TooLarge { network: String, elements: u64 },
}

impl WeightsError {
    /// A weights problem as a diagnostic: at the layer's source line when it is about a layer,
    /// about no place when it is about the file. Always an error: the caller makes it a warning
    /// when the load went on regardless (unused tensors without `--strict`).
    pub fn to_diagnostic(&self, graph: &Graph) -> Diagnostic {
        let mut diagnostic = match self {
            WeightsError::Missing { name, node, .. } => graph.diagnostic_at(
                *node,
                Code::WeightsMissing,
                self.to_string(),
                &format!("this layer needs `{name}`"),
            ),
            WeightsError::WrongShape { expected, node, .. } => graph.diagnostic_at(
                *node,
                Code::WeightsShape,
                self.to_string(),
                &format!("this layer's weights are {expected}"),
            ),
            WeightsError::WrongDtype { name, node, .. } => graph.diagnostic_at(
                *node,
                Code::WeightsDtype,
                self.to_string(),
                &format!("this layer needs `{name}`"),
            ),
            WeightsError::Unexpected { .. } => {
                Diagnostic::global(Code::WeightsUnused, self.to_string())
            }
            WeightsError::TooLarge { .. } => {
                Diagnostic::global(Code::WeightsTooLarge, self.to_string())
            }
            WeightsError::Unreadable { .. }
            | WeightsError::Unwritable { .. }
            | WeightsError::NotSafetensors { .. } => {
                Diagnostic::global(Code::WeightsFile, self.to_string())
            }
            WeightsError::Corrupt { .. } => Diagnostic::global(Code::WeightsFile, self.to_string())
                .with_note(
                    "a safetensors file is an 8-byte header length, a JSON header naming every \
                     tensor's dtype, shape and offsets, then the data: a file cut short or not \
                     written by a safetensors library fails here",
                ),
        };
        if let Some(help) = self.help() {
            diagnostic = diagnostic.with_help(help);
        }
        diagnostic
    }
}

impl WeightsError {
    /// The layer the problem is about, if it is about one.
    pub fn node(&self) -> Option<NodeId> {
        match self {
            WeightsError::Missing { node, .. }
            | WeightsError::WrongShape { node, .. }
            | WeightsError::WrongDtype { node, .. } => Some(*node),
            _ => None,
        }
    }

    /// A fix, where one is known.
    pub fn help(&self) -> Option<String> {
        match self {
            WeightsError::Missing {
                found_as: Some(other),
                name,
                ..
            } => Some(format!(
                "the file has `{other}`: its names carry a prefix; export the state_dict of the \
                 inner model so the names start like `{name}`"
            )),
            WeightsError::Missing { name, .. } => Some(format!(
                "the label of a layer is the prefix of its weight names: check that the layer \
                 labels match the names in the file, or pass `--allow-missing {}` to start \
                 this layer from seeded weights (a new head for transfer learning)",
                name.rsplit_once('.')
                    .map_or(name.as_str(), |(path, _)| path)
            )),
            WeightsError::WrongDtype { .. } => {
                Some("convert the tensor to float32 before saving the file".into())
            }
            WeightsError::Unexpected { .. } => Some(
                "check that the layer meant to use it is labelled with the tensor's prefix".into(),
            ),
            _ => None,
        }
    }
}

/// A layer described for messages: "conv `layer1.0.conv1`", or "the unlabelled conv n3".
pub(crate) fn describe_layer(graph: &Graph, node: NodeId) -> String {
    let node_data = &graph.nodes[node];
    let op = node_data.op.name();
    if node_data.path.is_empty() {
        format!("the unlabelled {op} {node}")
    } else {
        format!("{op} `{}`", node_data.path)
    }
}

/// Named tensors in PyTorch layout, kept in insertion order (the graph's `state_dict` order
/// when built by [`Weights::seeded`] or loaded from a file), so that saving is deterministic.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Weights {
    tensors: Vec<(String, ArrayD<f32>)>,
    index: HashMap<String, usize>,
}

impl Weights {
    pub fn new() -> Weights {
        Weights::default()
    }

    /// Adds a tensor, replacing one of the same name in place.
    pub fn insert(&mut self, name: impl Into<String>, tensor: ArrayD<f32>) {
        let name = name.into();
        match self.index.get(&name) {
            Some(&idx) => self.tensors[idx].1 = tensor,
            None => {
                self.index.insert(name.clone(), self.tensors.len());
                self.tensors.push((name, tensor));
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&ArrayD<f32>> {
        self.index.get(name).map(|&idx| &self.tensors[idx].1)
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut ArrayD<f32>> {
        self.index.get(name).map(|&idx| &mut self.tensors[idx].1)
    }

    /// The tensors in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ArrayD<f32>)> {
        self.tensors.iter().map(|(name, t)| (name.as_str(), t))
    }

    /// The tensors in insertion order, to change in place.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&str, &mut ArrayD<f32>)> {
        self.tensors.iter_mut().map(|(name, t)| (name.as_str(), t))
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Deterministic weights for every parameter and buffer of `graph`, initialized as
    /// PyTorch's default constructors do:
    ///
    /// - conv and dense weights: Kaiming-uniform with `a = sqrt(5)`, which works out to
    ///   U(−1/√fan_in, 1/√fan_in), where fan_in = in/groups·kh·kw for conv and `in` for dense;
    /// - conv and dense biases: U(−1/√fan_in, 1/√fan_in) with the same fan_in;
    /// - batch norm: weight 1, bias 0, running mean 0, running variance 1.
    ///
    /// Each tensor's numbers come from a stream seeded by `seed` and the tensor's name, so they
    /// do not depend on the other tensors of the network.
    pub fn seeded(graph: &Graph, seed: u64) -> Result<Weights, WeightsError> {
        let named = graph.named_params();
        let total = named
            .iter()
            .fold(0u64, |sum, (_, _, spec)| sum.saturating_add(spec.numel()));
        if total > MAX_ELEMENTS {
            return Err(WeightsError::TooLarge {
                network: graph.name.clone(),
                elements: total,
            });
        }
        let mut weights = Weights::new();
        for (name, node, spec) in named {
            let tensor = seeded_tensor(graph, node, spec.name, &spec.shape, &name, seed);
            weights.insert(name, tensor);
        }
        Ok(weights)
    }
}

/// One tensor of [`Weights::seeded`]; also used to fill tensors a file is allowed to lack.
pub(crate) fn seeded_tensor(
    graph: &Graph,
    node: NodeId,
    suffix: &str,
    shape: &[usize],
    full_name: &str,
    seed: u64,
) -> ArrayD<f32> {
    let numel: usize = shape.iter().product();
    // A tensor the layer does not declare (which callers never ask for) starts at zero.
    let init = graph
        .params(node)
        .into_iter()
        .find(|spec| spec.name == suffix)
        .map_or(Init::Constant(0.0), |spec| spec.init);
    let values = seeded_values(init, seed, full_name, numel);
    // The element count is the product of `shape`, so the shape always fits.
    ArrayD::from_shape_vec(IxDyn(shape), values)
        .unwrap_or_else(|_| ArrayD::from_elem(IxDyn(shape), 0.0))
}

// ---------------------------------------------------------------------------------------------
// Weights and the graph's constants: the boundary between name-keyed tensors and the graph

/// Reseeds `graph`'s learned constants with `seed` (their numbers are generated when first
/// needed); an error when they would hold more than cnnc's limit of numbers.
pub fn seed(graph: &mut Graph, seed: u64) -> Result<(), WeightsError> {
    let total = graph
        .consts
        .values()
        .filter(|c| c.learned)
        .fold(0u64, |sum, c| sum.saturating_add(c.numel() as u64));
    if total > MAX_ELEMENTS {
        return Err(WeightsError::TooLarge {
            network: graph.name.clone(),
            elements: total,
        });
    }
    graph.seed_constants(seed);
    Ok(())
}

/// Binds `weights` to `graph`: every learned constant takes the tensor of its name, which
/// must exist and have its shape. Tensors no layer uses are not looked at (the file loader
/// reports them, where `--strict` decides).
pub fn bind(graph: &mut Graph, weights: &Weights) -> Result<(), WeightsError> {
    check_bindable(graph, weights)?;
    bind_present(graph, weights);
    Ok(())
}

/// Whether [`bind`] would bind `weights` to `graph`: every learned constant has a tensor of
/// its name and shape.
pub fn check_bindable(graph: &Graph, weights: &Weights) -> Result<(), WeightsError> {
    for node in graph.nodes.keys() {
        for &(_, id) in &graph.nodes[node].consts {
            let constant = &graph.consts[id];
            if !constant.learned {
                continue;
            }
            let Some(tensor) = weights.get(&constant.name) else {
                return Err(WeightsError::Missing {
                    name: constant.name.clone(),
                    expected: Dims::of(&constant.shape),
                    node,
                    layer: describe_layer(graph, node),
                    found_as: None,
                });
            };
            if tensor.shape() != constant.shape.as_slice() {
                return Err(WeightsError::WrongShape {
                    name: constant.name.clone(),
                    found: Dims::of(tensor.shape()),
                    expected: Dims::of(&constant.shape),
                    node,
                    layer: describe_layer(graph, node),
                });
            }
        }
    }
    Ok(())
}

/// Binds the tensors of `weights` that name a learned constant with its shape; the other
/// constants keep their sources.
pub fn bind_present(graph: &mut Graph, weights: &Weights) {
    for constant in graph.consts.values_mut() {
        if !constant.learned {
            continue;
        }
        if let Some(tensor) = weights.get(&constant.name) {
            if tensor.shape() == constant.shape.as_slice() {
                // Straight into the shared slice: one copy (a `Vec` turned into an `Arc`
                // is copied again, and a training step binds every weight).
                match tensor.as_slice() {
                    Some(values) => constant.set_values(values),
                    None => constant.set_source(ConstSource::Values(
                        tensor.iter().copied().collect::<Arc<[f32]>>(),
                    )),
                }
            }
        }
    }
}

/// The learned constants of `graph` as name-keyed weights, in `state_dict` order, generating
/// (or folding) the numbers of those that have none yet.
pub fn learned_weights(graph: &Graph) -> Weights {
    let mut weights = Weights::new();
    for node in graph.nodes.values() {
        for &(_, id) in &node.consts {
            let constant = &graph.consts[id];
            if !constant.learned {
                continue;
            }
            let values = constant.values().to_vec();
            if let Ok(tensor) = ArrayD::from_shape_vec(IxDyn(&constant.shape), values) {
                weights.insert(constant.name.clone(), tensor);
            }
        }
    }
    weights
}
