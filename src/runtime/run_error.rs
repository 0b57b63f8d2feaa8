//! What can go wrong when a network runs, whichever engine runs it (the JIT or the
//! reference interpreter), and the check of the input tensors every engine makes first.

use super::{Dims, WeightsError};
use crate::diag::{Code, Diagnostic};
use crate::graph::{Graph, NodeId, Shape};
use ndarray::ArrayD;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum RunError {
    #[error("network `{network}` takes {expected} input tensor(s), but {found} were given")]
    InputCount {
        network: String,
        expected: usize,
        found: usize,
    },
    #[error("input `{input}` must be {expected}, but the tensor given is {found}")]
    InputShape {
        input: String,
        expected: String,
        found: Dims,
    },
    #[error("input `{input}` has a batch of {batch}, but the first input has {first}")]
    BatchMismatch {
        input: String,
        batch: usize,
        first: usize,
    },
    #[error("the batch is empty: give at least one image")]
    EmptyBatch,
    #[error("the output of {layer} for a batch of {batch} ({batch} × {shape}) has more than cnnc's limit of 2^31 elements")]
    TooLarge {
        layer: String,
        batch: usize,
        shape: Shape,
        node: NodeId,
    },
    /// A weight tensor given by name is missing or has the wrong shape.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error("the graph is malformed: {0}")]
    Malformed(String),
}

/// The diagnostic of a failed run: at the layer concerned where there is one.
impl RunError {
    pub fn to_diagnostic(&self, graph: &Graph) -> Diagnostic {
        if let RunError::Weights(error) = self {
            return error.to_diagnostic(graph);
        }
        match self.node() {
            Some(node) if graph.nodes.get(node).is_some() => graph.diagnostic_at(
                node,
                Code::Run,
                self.to_string(),
                "while running this layer",
            ),
            _ => Diagnostic::global(Code::Run, self.to_string()),
        }
    }
}

impl RunError {
    /// The layer the error is about, if it is about one.
    pub fn node(&self) -> Option<NodeId> {
        match self {
            RunError::TooLarge { node, .. } => Some(*node),
            RunError::Weights(error) => error.node(),
            _ => None,
        }
    }
}

/// Checks tensors against a network's inputs (name and shape each, in order): one tensor per
/// input, N×H×W×C (N×C for a flat input), every batch the same size. Returns the batch size.
/// Every engine runs this before touching the data.
pub fn check_batch(
    network: &str,
    specs: &[(String, Shape)],
    inputs: &[ArrayD<f32>],
) -> Result<usize, RunError> {
    if inputs.len() != specs.len() {
        return Err(RunError::InputCount {
            network: network.to_string(),
            expected: specs.len(),
            found: inputs.len(),
        });
    }
    let mut batch = None;
    for ((name, shape), tensor) in specs.iter().zip(inputs) {
        let (name, shape) = (name.clone(), *shape);
        let dims = tensor.shape();
        let fits = if shape.flat {
            matches!(dims, &[_, c] | &[_, 1, 1, c] if c == shape.c)
        } else {
            dims.len() == 4 && dims[1..] == [shape.h, shape.w, shape.c]
        };
        if !fits {
            let expected = if shape.flat {
                format!("N×{} (batch × features)", shape.c)
            } else {
                format!(
                    "N×{}×{}×{} (batch × height × width × channels)",
                    shape.h, shape.w, shape.c
                )
            };
            return Err(RunError::InputShape {
                input: name,
                expected,
                found: Dims::of(dims),
            });
        }
        let n = dims[0];
        match batch {
            None if n == 0 => return Err(RunError::EmptyBatch),
            None => batch = Some(n),
            Some(first) if first != n => {
                return Err(RunError::BatchMismatch {
                    input: name,
                    batch: n,
                    first,
                })
            }
            Some(_) => {}
        }
    }
    // A network without inputs computes one result.
    Ok(batch.unwrap_or(1))
}
