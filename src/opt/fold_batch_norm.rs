//! `fold_batch_norm`: a batch norm whose input is a conv or dense layer read by nothing else
//! is folded into that layer's weights and bias.
//!
//! At inference a batch norm is a per-channel affine map, `y = x·scale + shift` with
//! `scale = γ/√(var+ε)` and `shift = β − mean·scale`. Applied to a conv's output channel `k`,
//! `(w_k ∗ x + b_k)·scale_k + shift_k = (w_k·scale_k) ∗ x + (b_k·scale_k + shift_k)`, so the
//! conv absorbs it: every weight of filter `k` is multiplied by `scale_k`, and the bias becomes
//! `(b − mean)·γ/√(var+ε) + β` (a conv without a bias gains one, from `b = 0`). Dense layers are
//! the same with rows for filters. The arithmetic is done in f64 and rounded once.
//!
//! Learned tensors are rewritten in `Weights` under the layer's path, and the batch norm's
//! four tensors are removed. Literal weights are folded into the literal values, and a
//! literal-weight layer without a bias gains literal bias values, so it stays self-contained.
//!
//! The layer must not have a fused activation or residual yet (the affine would have to pass
//! through them), and every tensor involved must be present with the shape the graph gives
//! it; otherwise the batch norm is left for the interpreter or runtime to report.

use super::rewrite::{remove_tensors, Readers};
use crate::graph::{Graph, Literal, NodeId, Op};
use crate::runtime::Weights;
use ndarray::{ArrayD, IxDyn};

pub fn fold_batch_norm(graph: &mut Graph, weights: &mut Weights) -> bool {
    let batch_norms: Vec<NodeId> = graph
        .nodes
        .iter()
        .filter(|(_, node)| matches!(node.op, Op::BatchNorm { .. }))
        .map(|(id, _)| id)
        .collect();
    let mut readers = Readers::of(graph);
    let mut folded_tensors = Vec::new();
    // Without any weights the pass changes the structure only (the layer gains its bias, the
    // batch norm goes), for what needs the optimized shape of a network but not its numbers:
    // the memory plan that `cnnc summary` reports.
    let structure_only = weights.is_empty();
    let mut restructured = false;
    for bn in batch_norms {
        let &[producer] = graph.nodes[bn].inputs.as_slice() else {
            continue;
        };
        if readers.use_count(producer) != 1 {
            continue;
        }
        if structure_only {
            let Some(epilogue) = graph.nodes[producer].op.epilogue_mut() else {
                continue;
            };
            *epilogue.bias = true;
            readers.replace_uses(graph, bn, producer);
            restructured = true;
            continue;
        }
        let Some(affine) = Affine::of_batch_norm(graph, weights, bn) else {
            continue;
        };
        let Some(folded) = Folded::compute(graph, weights, producer, &affine) else {
            continue;
        };
        folded.store(graph, weights, producer);
        folded_tensors.extend(affine.tensor_names);
        readers.replace_uses(graph, bn, producer);
    }
    debug_assert!(readers.agrees_with(graph));
    if restructured {
        graph.prune_unreachable();
        return true;
    }
    if folded_tensors.is_empty() {
        return false;
    }
    remove_tensors(weights, &folded_tensors);
    graph.prune_unreachable();
    true
}

/// A batch norm as `y = x·scale + shift` per channel, and the names of its tensors.
struct Affine {
    scale: Vec<f64>,
    shift: Vec<f64>,
    tensor_names: Vec<String>,
}

impl Affine {
    fn of_batch_norm(graph: &Graph, weights: &Weights, bn: NodeId) -> Option<Affine> {
        let Op::BatchNorm { eps } = graph.nodes[bn].op else {
            return None;
        };
        let channels = graph.shape(bn).c;
        let names: Vec<String> = ["weight", "bias", "running_mean", "running_var"]
            .iter()
            .map(|suffix| graph.tensor_name(bn, suffix))
            .collect();
        let mut vectors = Vec::with_capacity(names.len());
        for name in &names {
            let tensor = weights.get(name)?;
            if tensor.shape() != [channels] {
                return None;
            }
            vectors.push(tensor.iter().map(|&v| f64::from(v)).collect::<Vec<f64>>());
        }
        let [gamma, beta, mean, var] = vectors.as_slice() else {
            return None;
        };
        let scale: Vec<f64> = gamma
            .iter()
            .zip(var)
            .map(|(g, v)| g / (v + eps).sqrt())
            .collect();
        let shift = beta
            .iter()
            .zip(mean)
            .zip(&scale)
            .map(|((b, m), s)| b - m * s)
            .collect();
        Some(Affine {
            scale,
            shift,
            tensor_names: names,
        })
    }
}

/// The producer's new weight and bias values, row-major in PyTorch's layout.
struct Folded {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

impl Folded {
    /// Reads the producer's current weight and bias and applies the affine to them; `None`
    /// when the producer cannot absorb it.
    fn compute(
        graph: &Graph,
        weights: &Weights,
        producer: NodeId,
        affine: &Affine,
    ) -> Option<Folded> {
        let epilogue = graph.nodes[producer].op.epilogue()?;
        if epilogue.activation.is_some() || epilogue.residual {
            return None;
        }
        let (channels, literal_weight, literal_bias, has_bias) = (
            epilogue.channels,
            epilogue.weights,
            epilogue.bias_values,
            epilogue.bias,
        );
        if affine.scale.len() != channels || channels == 0 {
            return None;
        }
        let weight = match literal_weight {
            Some(literal) => literal.values.clone(),
            None => {
                let expected = graph
                    .params(producer)
                    .into_iter()
                    .find(|spec| spec.name == "weight")?
                    .shape;
                let tensor = weights.get(&graph.tensor_name(producer, "weight"))?;
                if tensor.shape() != expected.as_slice() {
                    return None;
                }
                tensor.iter().copied().collect()
            }
        };
        let bias: Vec<f32> = match literal_bias {
            Some(literal) => literal.values.clone(),
            None if has_bias => {
                let tensor = weights.get(&graph.tensor_name(producer, "bias"))?;
                if tensor.shape() != [channels] {
                    return None;
                }
                tensor.iter().copied().collect()
            }
            None => vec![0.0; channels],
        };
        if bias.len() != channels || weight.is_empty() || !weight.len().is_multiple_of(channels) {
            return None;
        }
        // The output channel is the leading dimension of both layouts, so filter `k` is the
        // `k`-th contiguous chunk.
        let per_channel = weight.len() / channels;
        let weight = weight
            .chunks(per_channel)
            .zip(&affine.scale)
            .flat_map(|(filter, &scale)| filter.iter().map(move |&w| (f64::from(w) * scale) as f32))
            .collect();
        let bias = bias
            .iter()
            .zip(affine.scale.iter().zip(&affine.shift))
            .map(|(&b, (scale, shift))| (f64::from(b) * scale + shift) as f32)
            .collect();
        Some(Folded { weight, bias })
    }

    /// Writes the values where the producer keeps them: literal values or `Weights`.
    fn store(self, graph: &mut Graph, weights: &mut Weights, producer: NodeId) {
        let weight_name = graph.tensor_name(producer, "weight");
        let bias_name = graph.tensor_name(producer, "bias");
        // `compute` accepted only layers with an epilogue.
        let Some(epilogue) = graph.nodes[producer].op.epilogue_mut() else {
            return;
        };
        let (literal_weight, literal_bias, has_bias) =
            (epilogue.weights, epilogue.bias_values, epilogue.bias);
        match literal_weight {
            Some(literal) => literal.values = self.weight,
            None => {
                // `compute` read this tensor and checked its shape, so the shape fits.
                let shape = weights
                    .get(&weight_name)
                    .map(|t| t.shape().to_vec())
                    .unwrap_or_default();
                if let Ok(tensor) = ArrayD::from_shape_vec(IxDyn(&shape), self.weight) {
                    weights.insert(weight_name, tensor);
                }
            }
        }
        let n_channels = self.bias.len();
        match literal_bias {
            Some(literal) => literal.values = self.bias,
            // A literal layer keeps its numbers in the graph, so its new bias goes there too.
            None if literal_weight.is_some() && !*has_bias => {
                *literal_bias = Some(Literal {
                    shape: vec![n_channels],
                    values: self.bias,
                });
            }
            None => {
                if let Ok(tensor) = ArrayD::from_shape_vec(IxDyn(&[n_channels]), self.bias) {
                    weights.insert(bias_name, tensor);
                }
            }
        }
        *has_bias = true;
    }
}
