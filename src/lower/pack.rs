//! Packing the graph's constants into the blobs the kernels index (`lower::ConstSpec`): the
//! last step of lowering, after which nothing downstream needs the graph.
//!
//! Weights are the graph's constants, in PyTorch's layouts; a seeded or folded constant's
//! numbers are computed here, on the packing thread that needs them, and not kept. Batch norm becomes
//! its per-channel `scale, shift` pair (`BatchNormConstants::affine`), computed in f64.

use super::program::{chw_index, ConstSpec, LoopProgram, Orientation, Storage};
use super::{winograd_pack, LowerError};
use crate::graph::{Constant, ConvAttrs, DenseAttrs, Graph, NodeId, Op};
use crate::parallel::parallel_map;
use std::borrow::Cow;

/// Numbers to pack in place of the graph's constants of the same names: a training step's
/// current weights, read where they are. (Bound to the graph first, every weight was copied
/// once more each step.)
pub type Overrides<'a> = &'a (dyn Fn(&str) -> Option<&'a [f32]> + Sync + 'a);

/// Where a packer reads a layer's constants: the graph's, unless `overrides` has numbers of
/// a learned constant's name.
#[derive(Copy, Clone)]
struct Reader<'a> {
    graph: &'a Graph,
    overrides: Option<Overrides<'a>>,
}

impl<'a> Reader<'a> {
    /// The constant `suffix` of `node` in row-major order, generated or folded now if it
    /// has not been yet, checked against the number of elements the layer needs.
    fn tensor(
        self,
        node: NodeId,
        suffix: &str,
        expected: &[usize],
    ) -> Result<Cow<'a, [f32]>, LowerError> {
        let n = expected.iter().product::<usize>();
        self.range(node, suffix, expected, 0..n)
    }

    /// Elements `range` of the constant `suffix` of `node`, for a packer that reads a large
    /// one in pieces ([`Constant::read_range`]); the constant is checked against the number of
    /// elements the layer needs.
    fn range(
        self,
        node: NodeId,
        suffix: &str,
        expected: &[usize],
        range: std::ops::Range<usize>,
    ) -> Result<Cow<'a, [f32]>, LowerError> {
        let wrong_size = || malformed(node, &format!("constant `{suffix}` has the wrong size"));
        let constant = self.constant(node, suffix)?;
        let n = expected.iter().product::<usize>();
        if constant.numel() != n || range.end > n {
            return Err(wrong_size());
        }
        let overridden = (self.overrides)
            .filter(|_| constant.learned)
            .and_then(|values| values(&constant.name));
        let values = match overridden {
            Some(values) if values.len() == n => Cow::Borrowed(&values[range.clone()]),
            Some(_) => return Err(wrong_size()),
            None if range == (0..n) => constant.read(),
            None => constant.read_range(range.clone()),
        };
        if values.len() != range.len() {
            return Err(wrong_size());
        }
        Ok(values)
    }

    fn constant(self, node: NodeId, suffix: &str) -> Result<&'a Constant, LowerError> {
        let id = self
            .graph
            .node_const(node, suffix)
            .ok_or_else(|| malformed(node, &format!("no constant `{suffix}`")))?;
        Ok(&self.graph.consts[id])
    }
}

/// The elements a packer reads of a large tensor at once (4 MiB of f32).
const PIECE_ELEMENTS: usize = 1 << 20;

/// The attributes of conv `node`, whose weights a constant is packed from.
fn conv_attrs(graph: &Graph, node: NodeId) -> Result<&ConvAttrs, LowerError> {
    match &graph.nodes[node].op {
        Op::Conv(attrs) => Ok(attrs),
        _ => Err(malformed(
            node,
            "conv weights of a layer that is not a conv",
        )),
    }
}

/// The attributes of dense layer `node`.
fn dense_attrs(graph: &Graph, node: NodeId) -> Result<&DenseAttrs, LowerError> {
    match &graph.nodes[node].op {
        Op::Dense(attrs) => Ok(attrs),
        _ => Err(malformed(
            node,
            "dense weights of a layer that is not dense",
        )),
    }
}

/// The units of dense layer `node`, applied to a vector or at every pixel: both pack their
/// `[units, features]` weight the same way.
fn dense_units(graph: &Graph, node: NodeId) -> Result<usize, LowerError> {
    match &graph.nodes[node].op {
        Op::Dense(attrs) => Ok(attrs.units),
        Op::PointwiseDense(attrs) => Ok(attrs.units),
        _ => Err(malformed(
            node,
            "dense weights of a layer that is not dense",
        )),
    }
}

fn malformed(node: NodeId, what: &str) -> LowerError {
    LowerError::Malformed(format!("{node}: {what}"))
}

/// Conv weights `w` of `shape` (`[out, in, kh, kw]`) as `orientation` holds them, with their
/// shape: as they are, or those of a transposed convolution computing the input gradient
/// (`[in, out, nh, nw]`, see [`Orientation`]).
fn oriented(
    w: Cow<'_, [f32]>,
    shape: [usize; 4],
    orientation: Orientation,
) -> (Cow<'_, [f32]>, [usize; 4]) {
    let [filters, in_c, kh, kw] = shape;
    let ([sh, sw], [py, px]) = match orientation {
        Orientation::Forward => return (w, shape),
        Orientation::Flipped => ([1, 1], [0, 0]),
        Orientation::Phase { stride, phase } => (stride, phase),
    };
    let [nh, nw] = orientation.kernel([kh, kw]);
    let mut out = vec![0.0f32; in_c * filters * nh * nw];
    for (i, row) in out.chunks_exact_mut(filters * nh * nw).enumerate() {
        for (o, to) in row.chunks_exact_mut(nh * nw).enumerate() {
            let from = &w[(o * in_c + i) * kh * kw..][..kh * kw];
            for (t, to) in to.chunks_exact_mut(nw).enumerate() {
                let ky = py + sh * (nh - 1 - t);
                for (u, value) in to.iter_mut().enumerate() {
                    *value = from[ky * kw + px + sw * (nw - 1 - u)];
                }
            }
        }
    }
    (Cow::Owned(out), [in_c, filters, nh, nw])
}

/// PyTorch's weight column of each of a dense layer's `features` memory rows: flatten orders
/// features C, H, W where the memory is H, W, C. Computed once per tensor, not per unit
/// (the weights are repacked at every training step).
fn pytorch_columns(features: usize, hwc_input: Option<(usize, usize, usize)>) -> Vec<usize> {
    (0..features)
        .map(|row| match hwc_input {
            Some(hwc) => chw_index(row, hwc),
            None => row,
        })
        .collect()
}

/// The data of one constant buffer of `len` elements.
/// The layer's constants are released once packed ([`Constant::release`]): the pages of a
/// mapped weights file then leave the process, and only the packed copy counts.
fn pack(reader: Reader<'_>, spec: &ConstSpec, len: usize) -> Result<Vec<f32>, LowerError> {
    let mut out = vec![0.0f32; len];
    pack_into(reader, spec, &mut out)?;
    if let Some(node) = spec.node() {
        for &(_, id) in &reader.graph.nodes[node].consts {
            reader.graph.consts[id].release();
        }
    }
    Ok(out)
}

/// Writes the data of a constant buffer into `out`. Every layout writes the same elements
/// whatever the values, and leaves its padding alone: a buffer packed before, from the same
/// program, keeps its zero padding when packed again.
fn pack_into(reader: Reader<'_>, spec: &ConstSpec, out: &mut [f32]) -> Result<(), LowerError> {
    let graph = reader.graph;
    let len = out.len();
    match spec {
        &ConstSpec::ConvWeight {
            node,
            panel,
            orientation,
        } => {
            let flipped = orientation == Orientation::Flipped;
            let (groups, shape, orientation) = match &graph.nodes[node].op {
                // The convolution computing a transposed convolution's input gradient reads
                // its weights `[in, out/groups, kh, kw]` as they are: as conv weights, `in`
                // filters over `out/groups` channels per group.
                Op::ConvTranspose(attrs) if flipped => {
                    let shape = attrs.weight_shape(graph.input_shape(node).c);
                    (attrs.groups.max(1), shape, Orientation::Forward)
                }
                // Position-wise dense is a 1×1 convolution of `[units, features]` weights;
                // its input gradient's, of their transpose (`lower/train/pointwise_dense.rs`).
                Op::PointwiseDense(attrs) if flipped => (
                    1,
                    [attrs.units, graph.input_shape(node).c, 1, 1],
                    Orientation::Flipped,
                ),
                _ => {
                    let attrs = conv_attrs(graph, node)?;
                    let groups = attrs.groups.max(1);
                    let [kh, kw] = attrs.kernel;
                    let c = graph.input_shape(node).c;
                    (groups, [attrs.filters, c / groups, kh, kw], orientation)
                }
            };
            let w = reader.tensor(node, "weight", &shape)?;
            let (w, [filters, in_g, kh, kw]) = oriented(w, shape, orientation);
            let out_g = filters / groups;
            let panel = panel.max(1);
            let n_panels = out_g.div_ceil(panel);
            let taps = kh * kw;
            // In the order of `out`, one panel-wide run per tap and input channel: the
            // writes are sequential, the reads `panel` streams through the panel's filters.
            // (Filter by filter, every write went to another cache line.)
            let run_len = taps * in_g * panel;
            for g in 0..groups {
                for p in 0..n_panels {
                    let first = g * out_g + p * panel;
                    let lanes = panel.min(out_g - p * panel);
                    let block = out
                        .get_mut((g * n_panels + p) * run_len..)
                        .and_then(|rest| rest.get_mut(..run_len))
                        .ok_or_else(|| malformed(node, "packing"))?;
                    let mut runs = block.chunks_exact_mut(panel);
                    for tap in 0..taps {
                        for ic in 0..in_g {
                            let run = runs.next().ok_or_else(|| malformed(node, "packing"))?;
                            for (lane, value) in run[..lanes].iter_mut().enumerate() {
                                *value = w[((first + lane) * in_g + ic) * taps + tap];
                            }
                        }
                    }
                }
            }
        }
        &ConstSpec::WinogradWeight {
            node,
            size,
            panel,
            flipped,
        } => {
            let attrs = conv_attrs(graph, node)?;
            let shape = [attrs.filters, graph.input_shape(node).c, 3, 3];
            let w = reader.tensor(node, "weight", &shape)?;
            winograd_pack::transform_filters(size, &w, [shape[0], shape[1]], flipped, panel, out)
                .ok_or_else(|| malformed(node, "packing"))?;
        }
        &ConstSpec::DepthwiseWeight {
            node,
            channels_padded,
        } => {
            let attrs = conv_attrs(graph, node)?;
            let [kh, kw] = attrs.kernel;
            let shape = [attrs.filters, 1, kh, kw];
            let w = reader.tensor(node, "weight", &shape)?;
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
        &ConstSpec::ConvTransposeWeight { node, out_padded } => {
            let Op::ConvTranspose(attrs) = &graph.nodes[node].op else {
                return Err(malformed(node, "transposed conv weights of another layer"));
            };
            let shape = attrs.weight_shape(graph.input_shape(node).c);
            let [in_c, out_g, kh, kw] = shape;
            let w = reader.tensor(node, "weight", &shape)?;
            for (i, taps) in w.chunks_exact(kh * kw).enumerate() {
                let (c, o) = (i / out_g, i % out_g);
                for (tap, &value) in taps.iter().enumerate() {
                    let (ky, kx) = (tap / kw, tap % kw);
                    let flipped = (kh - 1 - ky) * kw + (kw - 1 - kx);
                    let to = (flipped * in_c + c) * out_padded + o;
                    *out.get_mut(to).ok_or_else(|| malformed(node, "packing"))? = value;
                }
            }
        }
        &ConstSpec::ConvBias {
            node,
            group_size,
            group_stride,
        } => {
            let filters = match &graph.nodes[node].op {
                Op::Conv(attrs) => attrs.filters,
                Op::ConvTranspose(attrs) => attrs.filters,
                _ => return Err(malformed(node, "a conv bias of a layer that is not a conv")),
            };
            let shape = [filters];
            let bias = reader.tensor(node, "bias", &shape)?;
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
            let features = graph.input_shape(node).c;
            let units = dense_units(graph, node)?;
            let panel = panel.max(1);
            let last_width = (units % panel).next_multiple_of(4);
            let columns = pytorch_columns(features, hwc_input);
            // A piece of units at a time, each read (generated, folded) alone and let go once
            // packed: VGG-16's first dense weight is 392 MiB, which a whole read would hold
            // beside its packed copy.
            let piece = (PIECE_ELEMENTS / features.max(1)).max(1);
            for first in (0..units).step_by(piece) {
                let last = (first + piece).min(units);
                let elements = first * features..last * features;
                let rows = reader.range(node, "weight", &[units, features], elements.clone())?;
                for unit in first..last {
                    let (p, lane) = (unit / panel, unit % panel);
                    let width = if p < units / panel { panel } else { last_width };
                    let start = p * panel * features;
                    let row_of_unit = rows
                        .get((unit - first) * features..)
                        .and_then(|rest| rest.get(..features))
                        .ok_or_else(|| malformed(node, "packing"))?;
                    for (row, &column) in columns.iter().enumerate() {
                        *out.get_mut(start + row * width + lane)
                            .ok_or_else(|| malformed(node, "packing"))? = row_of_unit[column];
                    }
                }
                reader.constant(node, "weight")?.release_range(elements);
            }
        }
        &ConstSpec::DenseBias { node, .. } => {
            let shape = [dense_units(graph, node)?];
            let bias = reader.tensor(node, "bias", &shape)?;
            out.get_mut(..bias.len())
                .ok_or_else(|| malformed(node, "packing"))?
                .copy_from_slice(&bias);
        }
        &ConstSpec::BatchNormScale { node, .. } | &ConstSpec::BatchNormShift { node, .. } => {
            let batch_norm = crate::opt::batch_norm_constants(graph, node)
                .ok_or_else(|| malformed(node, "batch norm data of another layer"))?;
            let affine = batch_norm.affine();
            let values = match spec {
                ConstSpec::BatchNormScale { .. } => affine.scale,
                _ => affine.shift,
            };
            for (ch, value) in values.into_iter().enumerate() {
                *out.get_mut(ch).ok_or_else(|| malformed(node, "packing"))? = value as f32;
            }
        }
        &ConstSpec::ConvWeightTransposed { node, in_padded } => {
            let attrs = conv_attrs(graph, node)?;
            let in_c = graph.input_shape(node).c;
            let [kh, kw] = attrs.kernel;
            let shape = [attrs.filters, in_c, kh, kw];
            let w = reader.tensor(node, "weight", &shape)?;
            // Filter by filter: its taps (in L1) gathered into one contiguous run per tap.
            let taps = kh * kw;
            for (f, filter) in w.chunks_exact(in_c * taps).enumerate() {
                for tap in 0..taps {
                    let to = (tap * attrs.filters + f) * in_padded;
                    let run = out
                        .get_mut(to..to + in_c)
                        .ok_or_else(|| malformed(node, "packing"))?;
                    for (o, &value) in run.iter_mut().zip(filter.iter().skip(tap).step_by(taps)) {
                        *o = value;
                    }
                }
            }
        }
        &ConstSpec::DenseWeightTransposed {
            node,
            features_padded,
            hwc_input,
        } => {
            let attrs = dense_attrs(graph, node)?;
            let features = graph.input_shape(node).c;
            let shape = [attrs.units, features];
            let w = reader.tensor(node, "weight", &shape)?;
            let columns = pytorch_columns(features, hwc_input);
            for unit in 0..attrs.units {
                let run = out
                    .get_mut(unit * features_padded..unit * features_padded + features)
                    .ok_or_else(|| malformed(node, "packing"))?;
                let row_of_unit = &w[unit * features..][..features];
                for (value, &column) in run.iter_mut().zip(&columns) {
                    *value = row_of_unit[column];
                }
            }
        }
        &ConstSpec::Channels {
            node,
            suffix,
            channels,
        } => {
            let values = reader.tensor(node, suffix, &[channels])?;
            out.get_mut(..values.len())
                .ok_or_else(|| malformed(node, "packing"))?
                .copy_from_slice(&values);
        }
        &ConstSpec::PairedConvWeight { node } => {
            let attrs = conv_attrs(graph, node)?;
            let [kh, kw] = attrs.kernel;
            let (filters, taps) = (attrs.filters, kh * kw);
            let w = reader.tensor(node, "weight", &[filters, 1, kh, kw])?;
            for (tap, run) in out.chunks_exact_mut(2 * filters).take(taps).enumerate() {
                for (lane, value) in run.iter_mut().enumerate() {
                    *value = w[(lane % filters) * taps + tap];
                }
            }
        }
        &ConstSpec::PairedConvBias { node } => {
            let filters = conv_attrs(graph, node)?.filters;
            let bias = reader.tensor(node, "bias", &[filters])?;
            for (lane, value) in out.iter_mut().take(2 * filters).enumerate() {
                *value = bias[lane % filters];
            }
        }
        ConstSpec::Values(values) => {
            let n = values.len().min(len);
            out[..n].copy_from_slice(&values[..n]);
        }
    }
    Ok(())
}

/// The packed data of a program's constant buffers, in buffer order: what the code
/// generator fills the table's constant slots with.
#[derive(Debug, Default)]
pub struct PackedConstants {
    pub blobs: Vec<(super::ir::BufferId, Box<[f32]>)>,
}

impl PackedConstants {
    pub fn bytes(&self) -> usize {
        self.blobs
            .iter()
            .map(|(_, blob)| blob.len() * std::mem::size_of::<f32>())
            .sum()
    }
}

/// The data of constant buffer `buffer` of a program lowered from `graph`.
pub fn pack_buffer(graph: &Graph, buffer: &super::Buffer) -> Result<Box<[f32]>, LowerError> {
    match &buffer.storage {
        Storage::Const(spec) => {
            let reader = Reader {
                graph,
                overrides: None,
            };
            Ok(pack(reader, spec, buffer.len)?.into_boxed_slice())
        }
        _ => Err(LowerError::Malformed(format!(
            "{} is not a constant buffer",
            buffer.name
        ))),
    }
}

/// Packs every constant buffer of `program` from `graph`'s constants, on up to `threads`
/// threads: seeded and folded constants are computed here, so this is most of a large
/// network's compile time.
pub fn pack_constants(
    graph: &Graph,
    program: &LoopProgram,
    threads: usize,
) -> Result<PackedConstants, LowerError> {
    let const_buffers: Vec<_> = program
        .buffers
        .values()
        .filter_map(|buffer| match &buffer.storage {
            Storage::Const(spec) => Some((buffer, spec)),
            _ => None,
        })
        .collect();
    let reader = Reader {
        graph,
        overrides: None,
    };
    let packed = parallel_map(
        &const_buffers,
        threads,
        || (),
        |(), &(buffer, spec)| pack(reader, spec, buffer.len),
    );
    let mut blobs = Vec::with_capacity(packed.len());
    for (&(buffer, _), data) in const_buffers.iter().zip(packed) {
        blobs.push((buffer.id, data?.into_boxed_slice()));
    }
    Ok(PackedConstants { blobs })
}

/// Packs `program`'s constant buffers again, from `graph`'s current constants or the numbers
/// `overrides` has for them, into `blobs`: each a buffer's data as [`pack_constants`] made it
/// (same program, so same lengths and padding), overwritten in place on up to `threads`
/// threads. A training step's way to run on updated weights without allocating (and
/// page-faulting) the blobs anew.
pub fn repack_constants<'a>(
    graph: &'a Graph,
    overrides: Option<Overrides<'a>>,
    program: &LoopProgram,
    threads: usize,
    blobs: Vec<(super::ir::BufferId, &mut [f32])>,
) -> Result<(), LowerError> {
    // Largest first, so that the threads finish together; a small network's packing on one
    // thread (starting a thread costs more than packing LeNet-5).
    let total: usize = blobs.iter().map(|(_, blob)| blob.len()).sum();
    let threads = if total < 1 << 20 { 1 } else { threads };
    let mut blobs = blobs;
    blobs.sort_by_key(|(_, blob)| std::cmp::Reverse(blob.len()));
    let blobs: Vec<_> = blobs.into_iter().map(std::sync::Mutex::new).collect();
    let reader = Reader { graph, overrides };
    let results = parallel_map(
        &blobs,
        threads,
        || (),
        |(), blob| {
            let mut blob = blob
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let (id, ref mut data) = *blob;
            let buffer = program.buffer(id);
            match &buffer.storage {
                Storage::Const(spec) if buffer.len == data.len() => pack_into(reader, spec, data),
                _ => Err(LowerError::Malformed(format!(
                    "{id:?} is not a constant buffer of this program"
                ))),
            }
        },
    );
    results.into_iter().collect()
}
