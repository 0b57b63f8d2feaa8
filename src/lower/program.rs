//! A lowered network: its buffers, the constant tensors to pack into them, and its kernels
//! in execution order.
//!
//! Buffers are sized per image. The network's inputs and output live outside the arena (the
//! caller's tensors, one image after another); intermediate tensors live in one arena at
//! offsets given by the memory plan (`plan.rs`); constants are packed from the graph's
//! constants by `pack.rs`, in the layouts the kernels index them by (described by
//! [`ConstSpec`], whose node ids only say where a blob came from), as the last step of
//! lowering, so that `emit loops` needs no weights and code generation needs no graph.

use super::ir::{BufferId, Kernel};
use crate::graph::{NodeId, Shape};
use cranelift_entity::PrimaryMap;

/// Where a buffer's memory comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Storage {
    /// The network's `k`-th input tensor.
    Input(usize),
    /// One of the network's outputs, at `offset` elements into each image's output region
    /// (0 for the first; the outputs of `return (a, b)` follow one another).
    Output { offset: usize },
    /// An intermediate tensor at `offset` elements into the arena.
    Arena { offset: usize },
    /// A constant packed at compile time.
    Const(ConstSpec),
    /// A sum over the images of a run, at `offset` elements into the accumulator region:
    /// a training step's parameter gradients, which every image adds to and the caller
    /// zeroes before and reads after (`lower/train`). Never reused by the memory plan.
    Accumulator { offset: usize },
}

/// Which taps of a conv's filters a packed copy holds, and how they are arranged.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Orientation {
    /// As the forward convolution reads them.
    Forward,
    /// The filters of the transposed convolution that computes a stride-1 ungrouped conv's
    /// input gradient in training, `W'[in][out][ky][kx] = W[out][in][kh−1−ky][kw−1−kx]`.
    Flipped,
    /// One phase of a strided ungrouped conv's input gradient (`lower/train/conv.rs`): the
    /// taps `phase + stride·j` of each axis, transposed and flipped like `Flipped`,
    /// `W'[in][out][t][u] = W[out][in][py + sh·(nh−1−t)][px + sw·(nw−1−u)]` with `nh × nw`
    /// the phase's taps.
    Phase {
        stride: [usize; 2],
        phase: [usize; 2],
    },
}

impl Orientation {
    /// The taps of a `[kh, kw]` kernel this orientation holds, per axis.
    pub fn kernel(self, [kh, kw]: [usize; 2]) -> [usize; 2] {
        match self {
            Orientation::Forward | Orientation::Flipped => [kh, kw],
            Orientation::Phase {
                stride: [sh, sw],
                phase: [py, px],
            } => [
                kh.saturating_sub(py).div_ceil(sh),
                kw.saturating_sub(px).div_ceil(sw),
            ],
        }
    }
}

/// How to build a constant buffer from the network's weights. Channel counts are padded
/// with zeros to multiples of 4 so that every vector load of a constant is in bounds.
#[derive(Clone, Debug, PartialEq)]
pub enum ConstSpec {
    /// Conv weights `[out, in/groups, kh, kw]` packed in panels of `panel` output channels,
    /// `[group][panel][ky][kx][in][panel]`: a tile's weights are one contiguous stream.
    /// Each group's outputs are padded to a multiple of `panel`; `orientation` says which
    /// taps, and whether transposed for an input gradient. For a transposed convolution,
    /// `Flipped` gives the convolution computing its input gradient, whose weights are the
    /// layer's own as they are (`lower/train/conv_transpose.rs`); for a position-wise dense
    /// layer, the transpose of its `[units, features]` weights as a 1×1 conv's.
    ConvWeight {
        node: NodeId,
        panel: usize,
        orientation: Orientation,
    },
    /// Winograd-transformed conv weights `G g Gᵀ` (`lower/winograd.rs`), 6×6 (F(4×4)) or 4×4
    /// (F(2×2)) per filter and input channel, packed `[point][panel][in][panel]` with the
    /// outputs padded to a multiple of `panel`; `flipped` as for [`ConstSpec::ConvWeight`].
    WinogradWeight {
        node: NodeId,
        size: super::winograd::TileSize,
        panel: usize,
        flipped: bool,
    },
    /// Transposed-conv weights `[in, out/groups, kh, kw]` packed flipped as
    /// `[kh−1−ky][kw−1−kx][in][out_padded]` (`lower/conv_transpose.rs`): each group's outputs
    /// padded to `out_padded`, a multiple of 4, or `out_padded = 1` for one output per group
    /// (depthwise), where a tap's weights are a vector run over the channels.
    ConvTransposeWeight {
        node: NodeId,
        out_padded: usize,
    },
    /// Depthwise weights `[channels, 1, kh, kw]` packed as `[ky][kx][channels_padded]`.
    DepthwiseWeight {
        node: NodeId,
        channels_padded: usize,
    },
    /// A conv's (or a transposed conv's) bias, each group's `group_size` values padded to `group_stride`.
    ConvBias {
        node: NodeId,
        group_size: usize,
        group_stride: usize,
    },
    /// Dense weights `[units, features]` packed in panels of `panel` units,
    /// `[panel][feature][panel]`; the last panel holds the remaining units padded to a
    /// multiple of 4. With `hwc_input = Some((h, w, c))` the input is a flatten stored in
    /// H×W×C order, so memory row `(y·w + x)·c + ch` takes PyTorch's column `ch·h·w + y·w + x`:
    /// flatten is free.
    DenseWeight {
        node: NodeId,
        panel: usize,
        hwc_input: Option<(usize, usize, usize)>,
    },
    DenseBias {
        node: NodeId,
        units_padded: usize,
    },
    /// Batch norm as `x · scale + shift`, per channel.
    BatchNormScale {
        node: NodeId,
        channels_padded: usize,
    },
    BatchNormShift {
        node: NodeId,
        channels_padded: usize,
    },
    /// Conv weights for the input gradient of training (`lower/train/conv.rs`),
    /// `[ky][kx][out][in_padded]`: a tap's weights for one output channel are a vector run
    /// over the input channels. Groups of one only.
    ConvWeightTransposed {
        node: NodeId,
        in_padded: usize,
    },
    /// Dense weights for the input gradient of training, `[unit][features_padded]`, the
    /// features in memory order (H×W×C for a free flatten, as [`ConstSpec::DenseWeight`]).
    DenseWeightTransposed {
        node: NodeId,
        features_padded: usize,
        hwc_input: Option<(usize, usize, usize)>,
    },
    /// A node's per-channel tensor (`suffix`: a layer norm's `weight` or `bias`, a
    /// `parameter`'s tensor) of `channels` values, padded with zeros to the buffer's length.
    Channels {
        node: NodeId,
        suffix: &'static str,
        channels: usize,
    },
    /// The weights `[out, 1, kh, kw]` of a convolution of one input channel computed in
    /// pairs of pixels (`lower/conv_pairs.rs`), `[ky][kx][2·out]`: each tap's `out` weights
    /// twice over.
    PairedConvWeight {
        node: NodeId,
    },
    /// Its bias, twice over.
    PairedConvBias {
        node: NodeId,
    },
    /// Numbers computed by the lowering (pooling divisors).
    Values(Vec<f32>),
}

impl ConstSpec {
    /// The node whose constants the buffer is packed from (`None` for numbers the lowering
    /// computed).
    pub fn node(&self) -> Option<NodeId> {
        match *self {
            ConstSpec::ConvWeight { node, .. }
            | ConstSpec::WinogradWeight { node, .. }
            | ConstSpec::ConvTransposeWeight { node, .. }
            | ConstSpec::DepthwiseWeight { node, .. }
            | ConstSpec::ConvBias { node, .. }
            | ConstSpec::DenseWeight { node, .. }
            | ConstSpec::DenseBias { node, .. }
            | ConstSpec::BatchNormScale { node, .. }
            | ConstSpec::BatchNormShift { node, .. }
            | ConstSpec::ConvWeightTransposed { node, .. }
            | ConstSpec::DenseWeightTransposed { node, .. }
            | ConstSpec::Channels { node, .. }
            | ConstSpec::PairedConvWeight { node }
            | ConstSpec::PairedConvBias { node } => Some(node),
            ConstSpec::Values(_) => None,
        }
    }
}

/// PyTorch's flatten index (C, H, W order) of memory element `row` of a tensor of `hwc`
/// stored H×W×C: how a free flatten's dense weights, their gradients and dropout masks are
/// permuted.
pub fn chw_index(row: usize, (h, w, c): (usize, usize, usize)) -> usize {
    (row % c) * h * w + row / c
}

#[derive(Clone, Debug, PartialEq)]
pub struct Buffer {
    pub id: BufferId,
    /// What the buffer holds, for the dump: a layer path or a description.
    pub name: String,
    /// Elements per image.
    pub len: usize,
    pub storage: Storage,
}

/// A network ready for code generation: with its packed constants
/// (`pack::PackedConstants`), everything the code generator needs, and all it sees.
#[derive(Clone, Debug, PartialEq)]
pub struct LoopProgram {
    pub name: String,
    /// Each network input's name and shape, in order.
    pub inputs: Vec<(String, Shape)>,
    pub output_shape: Shape,
    /// The graph's output node, which a run's errors about the output point at.
    pub output_node: NodeId,
    /// The outputs after the first (`return (a, b)`), with their shapes: each image's output
    /// region holds the first output, then these, in order, each H×W×C.
    pub extra_outputs: Vec<(NodeId, Shape)>,
    /// Floating-point operations per image (2 per multiply-accumulate).
    pub flops: u64,
    pub buffers: PrimaryMap<BufferId, Buffer>,
    pub kernels: Vec<Kernel>,
    /// Elements of the arena, per image (images run one after another and reuse it).
    pub arena_len: usize,
    /// Elements of the accumulator region (0 but for a training step).
    pub accumulator_len: usize,
    /// Elements per image of each input, and of the output region (every output).
    pub input_lens: Vec<usize>,
    pub output_len: usize,
}

impl LoopProgram {
    pub fn buffer(&self, id: BufferId) -> &Buffer {
        &self.buffers[id]
    }

    pub fn arena_bytes(&self) -> usize {
        self.arena_len * std::mem::size_of::<f32>()
    }
}
