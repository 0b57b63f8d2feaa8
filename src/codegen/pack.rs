//! Packing the weights into the layouts the kernels index (`lower::ConstSpec`).
//!
//! Weights arrive in PyTorch's layouts, by full tensor name, or as literal values of the
//! layer; each is checked against the shape the layer needs, and a missing or misshapen
//! tensor is an error naming the layer, never a panic. Batch norm becomes a per-channel
//! `scale, shift` pair computed in f64.

use super::winograd_pack;
use super::CodegenError;
use crate::graph::{Graph, Literal, NodeId, Op};
use crate::lower::ConstSpec;
use crate::runtime::{describe_layer, Dims, Weights};
use std::borrow::Cow;

/// A weight tensor of `node` in row-major order, from its literal or from `weights`.
fn tensor<'a>(
    graph: &Graph,
    weights: &'a Weights,
    node: NodeId,
    suffix: &str,
    expected: &[usize],
    literal: Option<&'a Literal>,
) -> Result<Cow<'a, [f32]>, CodegenError> {
    let name = graph.tensor_name(node, suffix);
    let numel: usize = expected.iter().product();
    let wrong_shape = |found: &[usize]| CodegenError::WeightShape {
        name: name.clone(),
        found: Dims::of(found),
        expected: Dims::of(expected),
        layer: describe_layer(graph, node),
        node,
    };
    if let Some(literal) = literal {
        // A literal may omit leading dimensions of size 1, so only its count must agree.
        if literal.values.len() != numel {
            return Err(wrong_shape(&literal.shape));
        }
        return Ok(Cow::Borrowed(&literal.values));
    }
    let array = weights
        .get(&name)
        .ok_or_else(|| CodegenError::MissingWeight {
            name: name.clone(),
            expected: Dims::of(expected),
            layer: describe_layer(graph, node),
            node,
        })?;
    if array.shape() != expected {
        return Err(wrong_shape(array.shape()));
    }
    Ok(match array.as_slice() {
        Some(values) => Cow::Borrowed(values),
        None => Cow::Owned(array.iter().copied().collect()),
    })
}

fn malformed(node: NodeId, what: &str) -> CodegenError {
    CodegenError::Malformed(format!("{node}: {what}"))
}

/// The data of one constant buffer of `len` elements.
pub(super) fn pack(
    graph: &Graph,
    weights: &Weights,
    spec: &ConstSpec,
    len: usize,
) -> Result<Vec<f32>, CodegenError> {
    let mut out = vec![0.0f32; len];
    match spec {
        &ConstSpec::ConvWeight { node, panel } => {
            let Op::Conv(attrs) = &graph.nodes[node].op else {
                return Err(malformed(
                    node,
                    "conv weights of a layer that is not a conv",
                ));
            };
            let groups = attrs.groups.max(1);
            let in_g = graph.input_shape(node).c / groups;
            let out_g = attrs.filters / groups;
            let n_panels = out_g.div_ceil(panel.max(1));
            let [kh, kw] = attrs.kernel;
            let shape = [attrs.filters, in_g, kh, kw];
            let w = tensor(
                graph,
                weights,
                node,
                "weight",
                &shape,
                attrs.weights.as_ref(),
            )?;
            for f in 0..attrs.filters {
                let (g, oc) = (f / out_g, f % out_g);
                let (p, lane) = (oc / panel, oc % panel);
                for ic in 0..in_g {
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let from = ((f * in_g + ic) * kh + ky) * kw + kx;
                            let tap = (ky * kw + kx) * in_g + ic;
                            let to = (((g * n_panels + p) * kh * kw * in_g) + tap) * panel + lane;
                            *out.get_mut(to).ok_or_else(|| malformed(node, "packing"))? = w[from];
                        }
                    }
                }
            }
        }
        &ConstSpec::WinogradWeight { node, panel } => {
            let Op::Conv(attrs) = &graph.nodes[node].op else {
                return Err(malformed(
                    node,
                    "conv weights of a layer that is not a conv",
                ));
            };
            let in_c = graph.input_shape(node).c;
            let shape = [attrs.filters, in_c, 3, 3];
            let w = tensor(
                graph,
                weights,
                node,
                "weight",
                &shape,
                attrs.weights.as_ref(),
            )?;
            winograd_pack::transform_filters(&w, attrs.filters, in_c, panel, &mut out)
                .ok_or_else(|| malformed(node, "packing"))?;
        }
        &ConstSpec::DepthwiseWeight {
            node,
            channels_padded,
        } => {
            let Op::Conv(attrs) = &graph.nodes[node].op else {
                return Err(malformed(
                    node,
                    "conv weights of a layer that is not a conv",
                ));
            };
            let [kh, kw] = attrs.kernel;
            let shape = [attrs.filters, 1, kh, kw];
            let w = tensor(
                graph,
                weights,
                node,
                "weight",
                &shape,
                attrs.weights.as_ref(),
            )?;
            for c in 0..attrs.filters {
                for ky in 0..kh {
                    for kx in 0..kw {
                        let to = (ky * kw + kx) * channels_padded + c;
                        *out.get_mut(to).ok_or_else(|| malformed(node, "packing"))? =
                            w[(c * kh + ky) * kw + kx];
                    }
                }
            }
        }
        &ConstSpec::ConvBias {
            node,
            group_size,
            group_stride,
        } => {
            let Op::Conv(attrs) = &graph.nodes[node].op else {
                return Err(malformed(node, "a conv bias of a layer that is not a conv"));
            };
            let shape = [attrs.filters];
            let bias = tensor(
                graph,
                weights,
                node,
                "bias",
                &shape,
                attrs.bias_values.as_ref(),
            )?;
            for (f, &value) in bias.iter().enumerate() {
                let to = f / group_size * group_stride + f % group_size;
                *out.get_mut(to).ok_or_else(|| malformed(node, "packing"))? = value;
            }
        }
        &ConstSpec::DenseWeight {
            node,
            panel,
            hwc_input,
        } => {
            let Op::Dense(attrs) = &graph.nodes[node].op else {
                return Err(malformed(
                    node,
                    "dense weights of a layer that is not dense",
                ));
            };
            let features = graph.input_shape(node).c;
            let units = attrs.units;
            let shape = [units, features];
            let w = tensor(
                graph,
                weights,
                node,
                "weight",
                &shape,
                attrs.weights.as_ref(),
            )?;
            let panel = panel.max(1);
            let last_width = (units % panel).next_multiple_of(4);
            for unit in 0..units {
                let (p, lane) = (unit / panel, unit % panel);
                let width = if p < units / panel { panel } else { last_width };
                let start = p * panel * features;
                let row_of_unit = &w[unit * features..][..features];
                for row in 0..features {
                    // PyTorch's column for our memory row: flatten orders features C, H, W.
                    let column = match hwc_input {
                        Some((h, w, c)) => (row % c) * h * w + row / c,
                        None => row,
                    };
                    *out.get_mut(start + row * width + lane)
                        .ok_or_else(|| malformed(node, "packing"))? = row_of_unit[column];
                }
            }
        }
        &ConstSpec::DenseBias { node, .. } => {
            let Op::Dense(attrs) = &graph.nodes[node].op else {
                return Err(malformed(node, "a dense bias of a layer that is not dense"));
            };
            let shape = [attrs.units];
            let bias = tensor(
                graph,
                weights,
                node,
                "bias",
                &shape,
                attrs.bias_values.as_ref(),
            )?;
            out.get_mut(..bias.len())
                .ok_or_else(|| malformed(node, "packing"))?
                .copy_from_slice(&bias);
        }
        &ConstSpec::BatchNormScale { node, .. } | &ConstSpec::BatchNormShift { node, .. } => {
            let Op::BatchNorm { eps } = graph.nodes[node].op else {
                return Err(malformed(node, "batch norm data of another layer"));
            };
            let c = [graph.input_shape(node).c];
            let get = |suffix| tensor(graph, weights, node, suffix, &c, None);
            let (weight, bias) = (get("weight")?, get("bias")?);
            let (mean, var) = (get("running_mean")?, get("running_var")?);
            for ch in 0..c[0] {
                let scale = f64::from(weight[ch]) / (f64::from(var[ch]) + eps).sqrt();
                let value = match spec {
                    ConstSpec::BatchNormScale { .. } => scale,
                    _ => f64::from(bias[ch]) - f64::from(mean[ch]) * scale,
                };
                *out.get_mut(ch).ok_or_else(|| malformed(node, "packing"))? = value as f32;
            }
        }
        ConstSpec::Values(values) => {
            let n = values.len().min(len);
            out[..n].copy_from_slice(&values[..n]);
        }
    }
    Ok(out)
}
