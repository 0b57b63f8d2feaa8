//! Lowering a training step: the forward of a classifier's logits graph, the gradient of
//! softmax cross-entropy, and the reverse pass, as one loop program that runs image by image.
//!
//! The program has two inputs, the image and its one-hot target, and writes the logits as
//! its output. After the forward kernels (the inference lowering's, unchanged) come:
//!
//! 1. the loss kernel, `∂L/∂logits = softmax(logits) − target`;
//! 2. for each node the loss differentiates, last first, its backward kernels: the gradient
//!    through its fused activation, then its parameters' gradients and its inputs'.
//!
//! Parameter gradients are **accumulated** into buffers of the accumulator region
//! (`Storage::Accumulator`), which outlive every image: each image adds its share, so the
//! caller zeroes them before a batch, runs the batch's images, and reads the sums (one
//! region per thread, summed in a fixed order). The mean over the batch, `1/N`, is applied
//! by the caller: every gradient is linear in `∂L/∂logits`. Input gradients are ordinary
//! arena tensors, alive from the kernel that makes them to the last that reads them, and
//! forward tensors stay alive until their backward kernels have read them: the plan sees
//! every kernel.
//!
//! **Batch norm in training** needs the whole batch's statistics, forward and backward, so
//! the program is cut into phases at [`BatchSync`] points: the caller runs a phase's kernels
//! for every image (each image in its own arena), then the sync's batch-wide arithmetic
//! (`train::jit`), then the next phase (`batchnorm.rs` says what each side computes).
//!
//! Some ops have no backward kernel yet: [`training_unsupported`] says which, and the trainer
//! then uses the reference engine. The op families' backward kernels: `conv.rs` (conv,
//! dense; `weight_grad.rs` conv weights, `winograd.rs` those of a Winograd convolution),
//! `depthwise.rs`, `batchnorm.rs`, `window.rs` (pooling), `elementwise.rs` (adds, dropout,
//! the loss), `activation.rs` (every activation, standalone or fused), `conv_transpose.rs`, `pointwise_dense.rs`, `layernorm.rs`, `groupnorm.rs` (and instance norm), `parameter.rs`, `prelu.rs`, `arithmetic.rs` (`*`,
//! tensor `-` and `/`, scalar ops), `channels.rs` (concat, split, channel shuffle, adaptive
//! average pooling), `upsample.rs` (upsample, global max pooling).

mod activation;
mod arithmetic;
mod batchnorm;
mod channels;
mod conv;
mod conv_transpose;
mod depthwise;
mod elementwise;
mod groupnorm;
mod layernorm;
mod max_pool_rows;
mod parameter;
mod pointwise_dense;
mod prelu;
mod upsample;
mod weight_grad;
mod weight_grad_images;
mod window;
mod winograd;

use super::ir::BufferId;
use super::program::{chw_index, ConstSpec, LoopProgram, Storage};
use super::{
    pack_constants, plan, verify, KernelBuilder, LowerError, LowerOptions, Lowered, Lowering,
    NodeBuffer, Winograd,
};
use crate::graph::{Activation, Graph, NodeId, Op, PoolKind, Shape};
use crate::reference::backward::{is_trainable, live_nodes};
use arithmetic::TensorOp;
use cranelift_entity::SecondaryMap;

/// How a parameter's gradient is laid out in its pinned buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GradLayout {
    /// PyTorch's own layout (biases).
    Plain,
    /// Conv weights as `[ky][kx][in][out_padded]`.
    ConvWeight {
        filters: usize,
        in_c: usize,
        kernel: [usize; 2],
        out_padded: usize,
    },
    /// Depthwise weights as `[ky][kx][channels_padded]`.
    Depthwise {
        channels: usize,
        kernel: [usize; 2],
        channels_padded: usize,
    },
    /// Dense weights as `[feature][units_padded]`, features in memory order (H×W×C when
    /// the input is a free flatten of `hwc`).
    DenseWeight {
        units: usize,
        features: usize,
        units_padded: usize,
        hwc: Option<(usize, usize, usize)>,
    },
}

/// Where one learned tensor's gradient accumulates.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamGrad {
    /// The tensor's full name (`conv1.weight`).
    pub name: String,
    /// Elements in PyTorch's layout.
    pub numel: usize,
    /// The accumulator's offset in the accumulator region, and its length.
    pub offset: usize,
    pub len: usize,
    pub layout: GradLayout,
}

impl ParamGrad {
    /// This gradient's accumulator in `arena`, in the accumulator's layout.
    pub fn region<'a>(&self, arena: &'a [f32]) -> Option<&'a [f32]> {
        arena.get(self.offset..self.offset + self.len)
    }

    /// Writes the sum of `buffers`, accumulators as [`region`](Self::region) gives them (the
    /// threads', added in thread order), times `scale` into `out`, in PyTorch's layout.
    /// (Adding into a zeroed `out` and scaling it after were two more passes over ResNet-18's
    /// 45 MiB of gradients, and summing the threads' regions first one more.)
    pub fn write_scaled(&self, buffers: &[&[f32]], scale: f32, out: &mut [f32]) {
        let Some((&buffer, others)) = buffers.split_first() else {
            return;
        };
        let len = buffers.iter().map(|b| b.len()).min().unwrap_or(0);
        let buffer = &buffer[..len];
        let value = |i: usize, first: f32| others.iter().fold(first, |sum, other| sum + other[i]);
        match self.layout {
            GradLayout::Plain => {
                for (i, (o, &g)) in out.iter_mut().zip(buffer).enumerate() {
                    *o = value(i, g) * scale;
                }
            }
            GradLayout::ConvWeight {
                filters,
                in_c,
                kernel: [kh, kw],
                out_padded,
            } => {
                // A transpose, `BLOCK` filters at a time: each accumulator row is read as
                // one contiguous run, and the block's filters' gradients (written in
                // `taps`-strided order) stay in cache. Filter by filter, the strided reads
                // made this a twentieth of a ResNet-18 training step.
                const BLOCK: usize = 16;
                let taps = kh * kw;
                for first in (0..filters).step_by(BLOCK) {
                    let block = BLOCK.min(filters - first);
                    for tap in 0..taps {
                        for ic in 0..in_c {
                            let from = (tap * in_c + ic) * out_padded + first;
                            let Some(row) = buffer.get(from..from + block) else {
                                return;
                            };
                            for (f, (&g, i)) in (first..).zip(row.iter().zip(from..)) {
                                if let Some(o) = out.get_mut((f * in_c + ic) * taps + tap) {
                                    *o = value(i, g) * scale;
                                }
                            }
                        }
                    }
                }
            }
            GradLayout::Depthwise {
                channels,
                kernel: [kh, kw],
                channels_padded,
            } => {
                for ch in 0..channels {
                    for tap in 0..kh * kw {
                        let from = tap * channels_padded + ch;
                        if let (Some(o), Some(&g)) =
                            (out.get_mut(ch * kh * kw + tap), buffer.get(from))
                        {
                            *o = value(from, g) * scale;
                        }
                    }
                }
            }
            GradLayout::DenseWeight {
                units,
                features,
                units_padded,
                hwc,
            } => {
                for row in 0..features {
                    // PyTorch's column for our memory row, as `pack.rs` permutes it.
                    let column = match hwc {
                        Some(hwc) => chw_index(row, hwc),
                        None => row,
                    };
                    for unit in 0..units {
                        let from = row * units_padded + unit;
                        if let (Some(o), Some(&g)) =
                            (out.get_mut(unit * features + column), buffer.get(from))
                        {
                            *o = value(from, g) * scale;
                        }
                    }
                }
            }
        }
    }
}

/// A lowered training step: the program with its packed constants (the current weights, to
/// be repacked before each step), the gradients it accumulates, the batch-wide work between
/// its phases, and the number of classes.
#[derive(Debug)]
pub struct TrainingLowered {
    pub lowered: Lowered,
    pub grads: Vec<ParamGrad>,
    pub syncs: Vec<BatchSync>,
    /// The dropout masks the step's third input holds, in order, when there are any.
    pub dropouts: Vec<DropoutMask>,
    pub classes: usize,
}

/// Where one dropout's mask sits in the step's mask input (per image: each dropout's
/// multipliers, 0 or `1/(1 − p)`, one after another).
#[derive(Clone, Debug, PartialEq)]
pub struct DropoutMask {
    pub node: NodeId,
    pub p: f64,
    pub offset: usize,
    /// Elements per image.
    pub len: usize,
    /// Set when the dropout's input is a flatten kept in H×W×C order: memory element `r`
    /// is then PyTorch's element `(r mod c)·h·w + r div c`.
    pub hwc: Option<(usize, usize, usize)>,
}

/// Work over the whole batch, done by the caller once every image has run the kernels
/// before `before_kernel`; buffers are per-image arena tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchSync {
    pub before_kernel: usize,
    pub op: SyncOp,
}

/// The batch-wide halves of training batch norm (`batchnorm.rs`).
#[derive(Clone, Debug, PartialEq)]
pub enum SyncOp {
    /// Each image's `stats` holds, per channel (padded to `channels_padded`), its mean and
    /// then its sum of squared deviations over `pixels` values; the sync combines them into
    /// the batch's mean and biased variance and writes every image's `affine`:
    /// `scale = γ/√(var + eps)`, `shift = β − mean·scale`, then `mean`, then `1/√(var + eps)`.
    BatchNormForward {
        /// The full names of γ, β, the running mean and variance.
        names: [String; 4],
        eps: f64,
        channels: usize,
        channels_padded: usize,
        pixels: usize,
        stats: BufferId,
        affine: BufferId,
    },
    /// Each image's `sums` holds `Σ ∂y` then `Σ ∂y·x̂` per channel; the sync totals them
    /// (the gradients of β and γ) and writes every image's `coefficients` `a, k1, k0` with
    /// `∂x = a·∂y + k1·x + k0`, when the input's gradient is wanted. `affine` is the
    /// forward's.
    BatchNormBackward {
        names: [String; 2],
        channels: usize,
        channels_padded: usize,
        pixels: usize,
        affine: BufferId,
        sums: BufferId,
        coefficients: Option<BufferId>,
    },
}

/// Why `graph` (a logits graph, bound and optimized for training) cannot be trained by
/// [`lower_training`], or `None` when it can.
pub fn training_unsupported(graph: &Graph) -> Option<String> {
    let out = graph.shape(graph.output());
    if !out.flat {
        return Some(format!("the logits are {out}, not a flat vector"));
    }
    if graph.inputs.len() != 1 {
        return Some("the network has several inputs".into());
    }
    if graph.outputs().len() != 1 {
        return Some("the network has several outputs".into());
    }
    let live = live_nodes(graph, false);
    for (id, node) in graph.nodes.iter() {
        if !live[id] {
            continue;
        }
        let ok = match &node.op {
            Op::Input { .. } | Op::Identity | Op::Dropout { .. } => true,
            Op::Conv(a) => {
                let in_c = graph.input_shape(id).c;
                let groups = a.groups.max(1);
                let depthwise = groups == in_c && a.filters == in_c;
                (groups == 1 || depthwise) && !a.residual
            }
            Op::Dense(_) | Op::Activation(_) => true,
            // The backward kernels read undilated windows.
            Op::Pool(a) => a.dilation == [1, 1],
            Op::GlobalPool(_) | Op::AdaptiveAvgPool { .. } => true,
            // A size that is not a whole multiple trains on the reference.
            Op::Upsample(a) => a.factors(graph.input_shape(id)).is_some(),
            Op::BatchNorm { .. } => true,
            Op::Mul | Op::Arithmetic(_) | Op::Scalar(_) => true,
            Op::Concat | Op::Split(_) | Op::ChannelShuffle(_) => true,
            Op::Softmax => true,
            // The weight gradient's tiles run over all the input channels at once.
            Op::ConvTranspose(a) => a.groups.max(1) == 1,
            Op::LayerNorm(_) | Op::GroupNorm(_) | Op::PRelu(_) => true,
            Op::PointwiseDense(_) | Op::Parameter(_) => true,
            Op::Pad(_) => false,
            Op::Add => graph.nodes[id]
                .inputs
                .iter()
                .all(|&i| graph.shape(i).numel() == graph.shape(id).numel()),
            // Only a flatten that moves no data: its gradient is its reader's, in H×W×C.
            Op::Flatten => {
                let s = graph.input_shape(id);
                s.h * s.w == 1 || readers_all_dense(graph, id)
            }
        };
        if !ok {
            return Some(format!(
                "{id} ({} {}) has no compiled backward yet",
                node.op.name(),
                node.path
            ));
        }
    }
    None
}

/// Whether every reader of `id` is a dense layer, looking through identities and dropouts:
/// `Lowering::only_dense_readers`, for which a flatten moves no data.
fn readers_all_dense(graph: &Graph, id: NodeId) -> bool {
    id != graph.output()
        && graph.nodes.iter().all(|(reader, node)| {
            !node.inputs.contains(&id)
                || match node.op {
                    Op::Dense(_) => node.inputs.first() == Some(&id),
                    Op::Identity | Op::Dropout { .. } => readers_all_dense(graph, reader),
                    _ => false,
                }
        })
}

/// Lowers one training step of `graph`: a logits graph accepted by [`training_unsupported`];
/// packs its constants (which must hold the current weights) on `threads` threads, or not at
/// all with `None` (for the memory plan alone: `cnnc summary --train`).
/// `winograd` chooses the forward's 3×3 convolutions as at inference: the backward reads the
/// padded input they read (Winograd's reaches past the output, which the backward ignores).
pub fn lower_training(
    graph: &Graph,
    threads: Option<usize>,
    winograd: Winograd,
) -> Result<TrainingLowered, LowerError> {
    if let Some(why) = training_unsupported(graph) {
        return Err(LowerError::Malformed(format!(
            "cannot train on the JIT: {why}"
        )));
    }
    let options = LowerOptions { winograd };
    let mut lowering = Lowering::new(graph, options)?;
    lowering.batched = true;
    let classes = graph.shape(graph.output()).c;
    let mut backward = Backward {
        lowering,
        grads: SecondaryMap::new(),
        params: Vec::new(),
        target: BufferId::from_u32(0),
        syncs: Vec::new(),
        affines: SecondaryMap::new(),
        dropouts: Vec::new(),
        masks: BufferId::from_u32(0),
        pre_activations: SecondaryMap::new(),
        applied_activations: SecondaryMap::new(),
        activation_of: SecondaryMap::new(),
    };
    let mask_len = plan_dropouts(graph, &backward.lowering, &mut backward.dropouts);
    if mask_len > 0 {
        backward.masks = backward.lowering.add_buffer(
            "input `dropout masks`".into(),
            mask_len,
            Storage::Input(2),
        );
    }
    for &id in &backward.lowering.order.clone() {
        let node = &graph.nodes[id];
        if matches!(node.op, Op::BatchNorm { .. }) && !node.frozen {
            backward.batch_norm_forward(id)?;
        } else if backward.activation_of[id].is_some() {
            // Applied by its input's kernel.
        } else if let Some(activation) = backward.add_fusing_activation(id) {
            backward.add_activation_forward(id, activation)?;
        } else if let Some(k) = backward.dropouts.iter().position(|d| d.node == id) {
            backward.dropout_forward(id, k)?;
        } else if let Some(activation) = activation::fused_activation_needing_input(&node.op) {
            backward.forward_keeping_pre_activation(id, activation)?;
        } else {
            backward.lowering.lower_node(id)?;
        }
    }
    backward.lowering.finish_output()?;
    backward.target = backward.lowering.add_buffer(
        "input `target` (one-hot)".into(),
        classes,
        Storage::Input(1),
    );
    backward.run()?;
    let Backward {
        lowering,
        params,
        syncs,
        dropouts,
        ..
    } = backward;
    let (mut inputs, mut input_lens) = super::program_inputs(graph);
    inputs.push(("target".into(), Shape::flat(classes)));
    if mask_len > 0 {
        inputs.push(("dropout masks".into(), Shape::flat(mask_len)));
    }
    input_lens.push(classes);
    if mask_len > 0 {
        input_lens.push(mask_len);
    }
    let mut program = LoopProgram {
        name: format!("{} (training step)", graph.name),
        inputs,
        output_shape: graph.shape(graph.output()),
        output_node: graph.output(),
        extra_outputs: Vec::new(),
        // Forward, and about twice that backward: what `images_per_s` is measured against.
        flops: 6 * graph.total_macs(),
        buffers: lowering.buffers,
        kernels: lowering.kernels,
        arena_len: 0,
        accumulator_len: 0,
        input_lens,
        output_len: classes,
    };
    plan::plan_memory(&mut program);
    verify::verify(&program)?;
    let grads = params
        .into_iter()
        .map(|(name, numel, buffer, layout)| {
            let b = program.buffer(buffer);
            let offset = match b.storage {
                Storage::Accumulator { offset } => offset,
                _ => 0,
            };
            ParamGrad {
                name,
                numel,
                offset,
                len: b.len,
                layout,
            }
        })
        .collect();
    let constants = match threads {
        Some(threads) => pack_constants(graph, &program, threads)?,
        None => super::PackedConstants::default(),
    };
    Ok(TrainingLowered {
        lowered: Lowered { program, constants },
        grads,
        syncs,
        dropouts,
        classes,
    })
}

/// The reverse pass's state over the forward's lowering.
struct Backward<'g> {
    lowering: Lowering<'g>,
    /// `∂L/∂value` of each node, once some reader has contributed to it: a plain tensor
    /// (H×W×C, unpadded) in the arena.
    grads: SecondaryMap<NodeId, Option<BufferId>>,
    /// Each parameter gradient: full name, PyTorch element count, pinned buffer, layout.
    params: Vec<(String, usize, BufferId, GradLayout)>,
    /// The one-hot target input.
    target: BufferId,
    syncs: Vec<BatchSync>,
    /// Each training batch norm's per-image `affine` buffer (see [`SyncOp`]).
    affines: SecondaryMap<NodeId, Option<BufferId>>,
    /// The dropouts that mask in training, and the input holding their masks.
    dropouts: Vec<DropoutMask>,
    masks: BufferId,
    /// The input of each conv or dense layer's fused activation, for the layers whose
    /// activation's derivative needs it (`activation.rs`).
    pre_activations: SecondaryMap<NodeId, Option<BufferId>>,
    /// The activation each training batch norm's or add's kernels apply and differentiate
    /// themselves (`batchnorm.rs`, `elementwise.rs`), and for that activation's node, that
    /// batch norm or add.
    applied_activations: SecondaryMap<NodeId, Option<Activation>>,
    activation_of: SecondaryMap<NodeId, Option<NodeId>>,
}

/// The dropouts that mask in training (not frozen, `p > 0`), in graph order, each given its
/// place in the mask input; returns the mask input's length per image.
fn plan_dropouts(graph: &Graph, lowering: &Lowering, out: &mut Vec<DropoutMask>) -> usize {
    let mut offset = 0;
    for &id in &lowering.order {
        let node = &graph.nodes[id];
        let Op::Dropout { p } = node.op else {
            continue;
        };
        if node.frozen || p <= 0.0 {
            continue;
        }
        let len = graph.shape(id).numel();
        // Set by the forward, which knows the order its input is stored in.
        let hwc = None;
        out.push(DropoutMask {
            node: id,
            p,
            offset,
            len,
            hwc,
        });
        offset += len.next_multiple_of(4);
    }
    offset
}

impl<'g> Backward<'g> {
    fn graph(&self) -> &'g Graph {
        self.lowering.graph
    }

    fn run(&mut self) -> Result<(), LowerError> {
        let graph = self.graph();
        let output = graph.output();
        let logits = self.value(output)?;
        let seed = self.loss(output, logits)?;
        self.grads[output] = Some(seed);
        let live = live_nodes(graph, false);
        let order = self.lowering.order.clone();
        for &id in order.iter().rev() {
            if !live[id] {
                continue;
            }
            let Some(grad) = self.grads[id] else {
                continue;
            };
            let wants_input: Vec<bool> = graph.nodes[id].inputs.iter().map(|&i| live[i]).collect();
            let trainable = is_trainable(graph, id);
            match &graph.nodes[id].op {
                Op::Input { .. } => {}
                Op::Dropout { .. } if self.dropouts.iter().any(|d| d.node == id) => {
                    if wants_input[0] {
                        self.dropout_backward(id, grad)?;
                    }
                }
                Op::Identity | Op::Flatten | Op::Dropout { .. } => {
                    if wants_input[0] {
                        let input = graph.nodes[id].inputs[0];
                        self.pass_through(id, input, grad);
                    }
                }
                Op::Conv(attrs) => self.conv(id, attrs, grad, trainable, wants_input[0])?,
                Op::ConvTranspose(attrs) => {
                    self.conv_transpose(id, attrs, grad, trainable, wants_input[0])?
                }
                Op::Dense(attrs) => self.dense(id, attrs, grad, trainable, wants_input[0])?,
                Op::Pool(attrs) => {
                    if wants_input[0] {
                        self.pool(id, attrs, grad)?;
                    }
                }
                Op::GlobalPool(kind) => {
                    if wants_input[0] {
                        match kind {
                            PoolKind::Avg => self.global_avg_pool(id, grad)?,
                            PoolKind::Max => self.global_max_pool(id, grad)?,
                        }
                    }
                }
                Op::Upsample(attrs) if wants_input[0] => {
                    self.upsample_backward(id, *attrs, grad)?
                }
                Op::Activation(_) if self.activation_of[id].is_some() => {
                    // The input's backward multiplies by the derivative; its only reader is
                    // this activation, so this is its whole gradient.
                    if wants_input[0] {
                        let input = graph.nodes[id].inputs[0];
                        self.grads[input] = Some(grad);
                    }
                }
                Op::Activation(activation) => {
                    if wants_input[0] {
                        self.activation(id, *activation, grad)?;
                    }
                }
                Op::BatchNorm { .. } => {
                    if graph.nodes[id].frozen {
                        if wants_input[0] {
                            self.frozen_batch_norm_backward(id, grad)?;
                        }
                    } else {
                        self.batch_norm_backward(id, grad, wants_input[0])?;
                    }
                }
                Op::Add if self.applied_activations[id].is_some() => {
                    self.add_activation_backward(id, grad, &wants_input)?
                }
                Op::Add => {
                    let inputs = graph.nodes[id].inputs.clone();
                    for (&input, &wanted) in inputs.iter().zip(&wants_input) {
                        if wanted {
                            self.contribute(id, input, grad)?;
                        }
                    }
                }
                Op::Mul => self.tensor_op_backward(id, TensorOp::Mul, grad, &wants_input)?,
                Op::Arithmetic(op) => {
                    self.tensor_op_backward(id, TensorOp::from(*op), grad, &wants_input)?
                }
                Op::Scalar(attrs) if wants_input[0] => self.scalar_backward(id, *attrs, grad)?,
                Op::Concat => self.concat_backward(id, grad, &wants_input)?,
                Op::Softmax if wants_input[0] => self.softmax_backward(id, grad)?,
                Op::Split(attrs) if wants_input[0] => self.split_backward(id, *attrs, grad)?,
                Op::ChannelShuffle(attrs) if wants_input[0] => {
                    self.shuffle_backward(id, *attrs, grad)?
                }
                Op::AdaptiveAvgPool { out } if wants_input[0] => {
                    self.adaptive_avg_pool_backward(id, *out, grad)?
                }
                Op::Scalar(_)
                | Op::Split(_)
                | Op::ChannelShuffle(_)
                | Op::AdaptiveAvgPool { .. }
                | Op::Upsample(_)
                | Op::Softmax => {}
                Op::Pad(_) => {
                    return Err(self.lowering.malformed(id, "no compiled backward"));
                }
                Op::LayerNorm(attrs) => {
                    self.layer_norm_backward(id, *attrs, grad, trainable, wants_input[0])?
                }
                Op::PointwiseDense(attrs) => {
                    self.pointwise_dense(id, *attrs, grad, trainable, wants_input[0])?
                }
                Op::Parameter(_) => self.parameter_backward(id, grad, trainable)?,
                Op::PRelu(attrs) => {
                    self.prelu_backward(id, *attrs, grad, trainable, wants_input[0])?
                }
                Op::GroupNorm(attrs) => {
                    self.group_norm_backward(id, *attrs, grad, trainable, wants_input[0])?
                }
            }
        }
        Ok(())
    }

    /// The forward value of `id`.
    fn value(&self, id: NodeId) -> Result<NodeBuffer, LowerError> {
        self.lowering.values[id]
            .ok_or_else(|| self.lowering.malformed(id, "its value was not computed"))
    }

    /// A kernel builder for the backward of node `id`.
    fn builder(&self, id: NodeId, what: &str, comment: String) -> KernelBuilder {
        self.lowering.builder(id, what, comment)
    }

    /// A fresh gradient tensor of node `id`'s shape.
    fn new_grad(&mut self, id: NodeId, what: &str) -> BufferId {
        let len = self.graph().shape(id).numel();
        let name = format!("∂{} {what}", self.lowering.describe(id));
        self.lowering.add_temp(name, len)
    }

    /// A pinned accumulator for parameter `suffix` of `id`.
    fn param_grad(
        &mut self,
        id: NodeId,
        suffix: &str,
        numel: usize,
        len: usize,
        layout: GradLayout,
    ) -> BufferId {
        let name = self.graph().tensor_name(id, suffix);
        let storage = Storage::Accumulator { offset: 0 };
        let buffer = self.lowering.add_buffer(format!("∂{name}"), len, storage);
        self.params.push((name, numel, buffer, layout));
        buffer
    }

    /// Where node `input`'s gradient goes: `(buffer, accumulate)`, a new tensor (to be
    /// stored into) when no reader has contributed yet, else the sum so far (to be added to).
    fn grad_target(&mut self, input: NodeId) -> (BufferId, bool) {
        match self.grads[input] {
            Some(buffer) => (buffer, true),
            None => {
                let buffer = self.new_grad(input, "");
                self.grads[input] = Some(buffer);
                (buffer, false)
            }
        }
    }

    /// `∂input += ∂id` for an op that passes its gradient through unchanged (identity, a
    /// free flatten): shared when nothing else contributes, else added.
    fn pass_through(&mut self, _id: NodeId, input: NodeId, grad: BufferId) {
        if self.grads[input].is_none() && self.lowering.readers[input].len() == 1 {
            self.grads[input] = Some(grad);
            return;
        }
        let _ = self.contribute(_id, input, grad);
    }

    /// `∂input += grad` elementwise (or `=` for the first contribution).
    fn contribute(&mut self, id: NodeId, input: NodeId, grad: BufferId) -> Result<(), LowerError> {
        let len = self.graph().shape(input).numel();
        let (target, accumulate) = self.grad_target(input);
        let mut b = self.builder(id, "grad_sum", format!("∂{input} += ∂{id}"));
        b.vectors(len, true, &mut |b, at, lanes| {
            let value = b.load(grad, at.clone(), lanes);
            b.store_or_add(target, at, lanes, value, accumulate);
        });
        self.lowering.emit(b);
        Ok(())
    }

    /// The gradient before node `id`'s fused activation: `grad` itself without one, else a
    /// new tensor `grad · activation′`, computed from the node's output.
    fn through_activation(
        &mut self,
        id: NodeId,
        activation: Option<Activation>,
        grad: BufferId,
    ) -> Result<BufferId, LowerError> {
        let Some(activation) = activation else {
            return Ok(grad);
        };
        let out = self.new_grad(id, "before its activation");
        self.activation_kernel(id, activation, grad, out, false)?;
        Ok(out)
    }

    /// A constant buffer of numbers computed here.
    fn values_const(&mut self, name: String, values: Vec<f32>) -> BufferId {
        let len = values.len();
        self.lowering
            .add_const(name, len, ConstSpec::Values(values))
    }
}
