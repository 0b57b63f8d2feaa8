//! Lowering: a typed graph to loop nests and packed constants (`graph → LoopProgram +
//! PackedConstants`, [`lower_with`] and [`pack_buffer`]): everything code generation consumes, so that
//! `codegen` never reads the graph.
//!
//! This stage chooses layouts and loop structure; code generation (`codegen`) only translates.
//! The choices, and why:
//!
//! - **Tensors are H×W×C, channels innermost, unpadded**: the layout the network's inputs and
//!   outputs already have (N×H×W×C), so nothing is converted at the edges, and the layout in
//!   which f32x4 vectors run over channels. Channel counts that are not a multiple of 4 are
//!   handled by partial loads and stores of the last vector, never by padding tensors.
//! - **Constants are packed for the kernels** (`program.rs`): conv weights as
//!   `[ky][kx][in][out]` with outputs padded to a multiple of 4, so a vector of output
//!   channels is one load; dense weights as `[in][out]`.
//! - **`flatten` is free** when only dense layers read it: the dense weights' columns are
//!   permuted at pack time from PyTorch's C·H·W order to our H·W·C order. Any other reader
//!   gets a reordering copy.
//! - **Padding is a border** of zeros (or −∞, for max pooling) around a window op's input, so
//!   that conv and pool kernels have no conditionals; it also covers `ceil_mode` windows that
//!   run past the input. A conv feeding a single window op writes its output into the
//!   bordered buffer directly; other inputs are copied (`pad.rs`).
//! - **`concat` is free** where it is safe: the producers of its operands write straight into
//!   channel slices of its buffer, with the concat's pixel stride (`concat.rs`).
//! - **Intermediate tensors share one arena** (`plan.rs`), reused as tensors die.
//!
//! Every access of the result is proven in bounds by `verify.rs` before it is returned.
//! `pack.rs` fills the constant buffers from the graph's constants, in parallel.
//! One file per family of layers: `conv.rs`, `dense.rs`, `pool.rs`, `elementwise.rs`,
//! `concat.rs`, `channels.rs` (shuffle, split), `upsample.rs`, `norm.rs` (layer norm,
//! `parameter`), `groupnorm.rs`, `prelu.rs`, and `pad.rs` for the borders window ops read; `winograd.rs` lowers the 3×3
//! stride-1 convolutions it is chosen for (`LowerOptions::winograd`) by Winograd's F(4×4, 3×3) or, at
//! inference, F(2×2, 3×3) (`winograd_transforms.rs` their transforms, `winograd_choice.rs` the choice).

mod builder;
mod channels;
mod concat;
mod conv;
mod conv_pairs;
mod conv_transpose;
mod dense;
mod dump;
mod elementwise;
mod groupnorm;
pub mod ir;
mod norm;
mod pack;
mod pad;
mod pad_layer;
mod plan;
mod pool;
mod prelu;
pub mod program;
mod train;
mod upsample;
mod upsample_sized;
mod verify;
pub mod winograd;
mod winograd_choice;
mod winograd_pack;
mod winograd_transforms;

pub use pack::{pack_buffer, pack_constants, repack_constants, Overrides, PackedConstants};
pub use program::{chw_index, Buffer, ConstSpec, LoopProgram, Storage};
pub use train::{
    lower_training, training_unsupported, BatchSync, DropoutMask, GradLayout, ParamGrad, SyncOp,
    TrainingLowered,
};
pub use winograd::Winograd;

use crate::graph::{Graph, NodeId, Op, Shape};
use builder::KernelBuilder;
use cranelift_entity::{PrimaryMap, SecondaryMap};
use ir::{BufferId, Kernel};
use thiserror::Error;

#[derive(Clone, Debug, Error, PartialEq)]
pub enum LowerError {
    #[error("the graph is malformed: {0}")]
    Malformed(String),
    #[error("kernel `{kernel}` would access {buffer} out of bounds: {detail}")]
    OutOfBounds {
        kernel: String,
        buffer: String,
        detail: String,
    },
    #[error("kernel `{kernel}`: {detail}")]
    Invalid { kernel: String, detail: String },
}

/// Choices of the lowering that change the code but not what it computes.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct LowerOptions {
    /// Which 3×3 stride-1 convolutions use Winograd's algorithm (`--no-winograd`: none).
    pub winograd: Winograd,
}

/// Lowers `graph` to loop nests, with a memory plan, checked for in-bounds accesses.
pub fn lower(graph: &Graph) -> Result<LoopProgram, LowerError> {
    lower_with(graph, &LowerOptions::default())
}

/// [`lower`] with options.
pub fn lower_with(graph: &Graph, options: &LowerOptions) -> Result<LoopProgram, LowerError> {
    let mut phases = crate::phases::Phases::start();
    let mut lowering = Lowering::new(graph, *options)?;
    lowering.winograd_f2 = true;
    for &id in &lowering.order.clone() {
        lowering.lower_node(id)?;
    }
    lowering.finish_output()?;
    phases.mark("lower nodes");
    let (inputs, input_lens) = program_inputs(graph);
    let outputs = graph.outputs();
    let mut program = LoopProgram {
        name: graph.name.clone(),
        inputs,
        output_shape: graph.shape(graph.output()),
        output_node: graph.output(),
        extra_outputs: outputs[1..].iter().map(|&o| (o, graph.shape(o))).collect(),
        flops: 2 * graph.total_macs(),
        buffers: lowering.buffers,
        kernels: lowering.kernels,
        arena_len: 0,
        accumulator_len: 0,
        input_lens,
        output_len: outputs.iter().map(|&o| graph.shape(o).numel()).sum(),
    };
    plan::plan_memory(&mut program);
    phases.mark("memory plan");
    verify::verify(&program)?;
    phases.mark("verify");
    Ok(program)
}

/// The network inputs of `graph` as a program lists them: each one's name and shape, and
/// its elements per image.
fn program_inputs(graph: &Graph) -> (Vec<(String, Shape)>, Vec<usize>) {
    graph
        .inputs
        .iter()
        .map(|&id| {
            let name = graph.nodes[id]
                .op
                .input_name()
                .map_or_else(|| id.to_string(), str::to_string);
            ((name, graph.shape(id)), graph.shape(id).numel())
        })
        .unzip()
}

/// A lowered network and its packed constants: what the code generator consumes.
#[derive(Debug)]
pub struct Lowered {
    pub program: LoopProgram,
    pub constants: PackedConstants,
}

/// The text of `cnnc emit loops`.
pub fn emit_loops(graph: &Graph) -> Result<String, LowerError> {
    Ok(dump::dump(&lower(graph)?))
}

/// [`emit_loops`] with options.
pub fn emit_loops_with(graph: &Graph, options: &LowerOptions) -> Result<String, LowerError> {
    Ok(dump::dump(&lower_with(graph, options)?))
}

impl LoopProgram {
    /// The deterministic text dump.
    pub fn dump(&self) -> String {
        dump::dump(self)
    }
}

/// A node's value: the buffer holding it, and for a flatten stored in H×W×C order (made free
/// for its dense readers) the dimensions it came from.
#[derive(Copy, Clone, Debug)]
struct NodeBuffer {
    buffer: BufferId,
    shape: Shape,
    hwc: Option<(usize, usize, usize)>,
    /// Set when the value was written into the interior of a padded buffer (`pad.rs`).
    padded: Option<pad::PadLayout>,
}

struct Lowering<'g> {
    graph: &'g Graph,
    options: LowerOptions,
    /// The nodes the outputs depend on, in graph (= topological) order.
    order: Vec<NodeId>,
    /// How many reachable nodes read each node (the output counts as one more reader).
    readers: SecondaryMap<NodeId, Vec<NodeId>>,
    /// The node whose kernel writes the network's output buffer directly, if any.
    output_writer: Option<NodeId>,
    buffers: PrimaryMap<BufferId, Buffer>,
    kernels: Vec<Kernel>,
    values: SecondaryMap<NodeId, Option<NodeBuffer>>,
    /// The nodes written in place into a concat's buffer (`concat.rs`).
    slices: SecondaryMap<NodeId, Option<concat::Slice>>,
    /// Each concat's target, once its first producer has made it.
    concat_targets: SecondaryMap<NodeId, Option<concat::Target>>,
    /// The buffer each window op (conv, pool) read its input from, with that buffer's
    /// pixels per row: a training step's backward reads the same padded frame.
    window_inputs: SecondaryMap<NodeId, Option<(BufferId, usize)>>,
    /// Whether Winograd's F(2×2, 3×3) may be chosen (`winograd.rs`): at inference only
    /// (`lower_with`), as a training step's backward differentiates F(4×4) alone.
    winograd_f2: bool,
    /// Whether kernels may loop over the images of a call (`LoopStmt::Images`): a training
    /// step, which runs a thread's images through `CompiledNetwork::run_kernels` with an
    /// arena per image, so that a layer whose weights outweigh one image's work reuses
    /// them over the images.
    batched: bool,
}

impl<'g> Lowering<'g> {
    fn new(graph: &'g Graph, options: LowerOptions) -> Result<Lowering<'g>, LowerError> {
        let output = graph.output();
        let mut live: SecondaryMap<NodeId, bool> = SecondaryMap::new();
        for output in graph.outputs() {
            if graph.nodes.get(output).is_none() {
                return Err(LowerError::Malformed("the output is not a node".into()));
            }
            live[output] = true;
        }
        for id in graph.nodes.keys().rev() {
            if live[id] {
                for &input in &graph.nodes[id].inputs {
                    if input >= id {
                        return Err(LowerError::Malformed(format!(
                            "{id} reads {input}, which comes after it"
                        )));
                    }
                    live[input] = true;
                }
            }
        }
        let order: Vec<NodeId> = graph.nodes.keys().filter(|&id| live[id]).collect();
        let mut readers: SecondaryMap<NodeId, Vec<NodeId>> = SecondaryMap::new();
        for &id in &order {
            for &input in &graph.nodes[id].inputs {
                readers[input].push(id);
            }
        }
        let mut lowering = Lowering {
            batched: false,
            graph,
            options,
            order,
            readers,
            output_writer: None,
            buffers: PrimaryMap::new(),
            kernels: Vec::new(),
            values: SecondaryMap::new(),
            slices: SecondaryMap::new(),
            concat_targets: SecondaryMap::new(),
            window_inputs: SecondaryMap::new(),
            winograd_f2: false,
        };
        // The output is written in place by the node it aliases, unless that is a network
        // input, which is copied at the end instead.
        let mut root = output;
        while let Some(source) = lowering.alias_source(root) {
            root = source;
        }
        if !matches!(graph.nodes[root].op, Op::Input { .. }) {
            lowering.output_writer = Some(root);
        }
        lowering.plan_slices();
        Ok(lowering)
    }

    /// For ops that produce no new values (identity, dropout, a free flatten), the node whose
    /// buffer they share.
    fn alias_source(&self, id: NodeId) -> Option<NodeId> {
        let node = &self.graph.nodes[id];
        let input = *node.inputs.first()?;
        let aliases = matches!(node.op, Op::Identity | Op::Dropout { .. })
            || (matches!(node.op, Op::Flatten) && self.flatten_is_free(id));
        aliases.then_some(input)
    }

    /// A flatten moves no data when its input is 1×1×C, or when every reader (looking
    /// through identities) is a dense layer, whose weights are then permuted instead.
    fn flatten_is_free(&self, id: NodeId) -> bool {
        let shape = self.graph.input_shape(id);
        shape.h * shape.w == 1 || self.only_dense_readers(id)
    }

    fn only_dense_readers(&self, id: NodeId) -> bool {
        if self.is_output(id) {
            return false;
        }
        self.readers[id].iter().all(|&reader| {
            let op = &self.graph.nodes[reader].op;
            if matches!(op, Op::Dense(_)) {
                self.graph.nodes[reader].inputs.first() == Some(&id)
            } else {
                matches!(op, Op::Identity | Op::Dropout { .. }) && self.only_dense_readers(reader)
            }
        })
    }

    /// Whether `id` is one of the network's outputs, which must end up in plain H×W×C
    /// tensors: not written into a concat's slice or a padded frame.
    fn is_output(&self, id: NodeId) -> bool {
        self.graph.outputs.contains(&id) || id == self.graph.output()
    }

    fn add_buffer(&mut self, name: String, len: usize, storage: program::Storage) -> BufferId {
        let id = self.buffers.next_key();
        self.buffers.push(Buffer {
            id,
            name,
            len,
            storage,
        })
    }

    fn add_const(&mut self, name: String, len: usize, spec: ConstSpec) -> BufferId {
        self.add_buffer(name, len, Storage::Const(spec))
    }

    /// A scratch tensor in the arena.
    fn add_temp(&mut self, name: String, len: usize) -> BufferId {
        self.add_buffer(name, len, Storage::Arena { offset: 0 })
    }

    /// The buffer node `id` writes its value to: the output buffer or a new arena tensor.
    fn result_buffer(&mut self, id: NodeId) -> BufferId {
        let name = self.describe(id);
        let len = self.graph.shape(id).numel();
        let storage = if self.output_writer == Some(id) {
            Storage::Output { offset: 0 }
        } else {
            Storage::Arena { offset: 0 }
        };
        self.add_buffer(name, len, storage)
    }

    /// The layer's path, or its op and id when unlabelled.
    fn describe(&self, id: NodeId) -> String {
        let node = &self.graph.nodes[id];
        if node.path.is_empty() {
            format!("{} {id}", node.op.name())
        } else {
            node.path.clone()
        }
    }

    /// A builder for a kernel computing node `id`, named after it.
    fn builder(&self, id: NodeId, what: &str, comment: String) -> KernelBuilder {
        let node = &self.graph.nodes[id];
        let label: String = node
            .path
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let mut name = format!("k{}_{what}", self.kernels.len());
        if !label.is_empty() {
            name.push('_');
            name.push_str(&label);
        }
        // (A pad kernel copies the node's input, not its output; Winograd's first two
        // kernels write scratch buffers.)
        let note = match what {
            "pad" | "winoin" | "winomul" | "double" => String::new(),
            _ => self.slice_note(id).unwrap_or_default(),
        };
        KernelBuilder::new(name, format!("{id} {comment}{note}"))
    }

    fn emit(&mut self, builder: KernelBuilder) {
        self.kernels.push(builder.finish());
    }

    /// The value of input `idx` of node `id`, which must be lowered already. A flatten in
    /// H×W×C order is only given to dense layers (`alias_source` made sure of that).
    fn arg(&self, id: NodeId, idx: usize) -> Result<NodeBuffer, LowerError> {
        let input = self.graph.nodes[id]
            .inputs
            .get(idx)
            .copied()
            .ok_or_else(|| self.malformed(id, "too few inputs"))?;
        if self.slices[input].is_some() {
            return Err(self.malformed(id, &format!("reads {input}, written into a concat")));
        }
        let value = self.values[input]
            .ok_or_else(|| self.malformed(id, &format!("reads {input} before it is computed")))?;
        Ok(value)
    }

    /// `arg`, for a kernel that reads its input as a plain H×W×C tensor: neither inside a
    /// padded buffer nor a flatten in H×W×C order.
    fn plain_arg(&self, id: NodeId, idx: usize) -> Result<NodeBuffer, LowerError> {
        let x = self.arg(id, idx)?;
        if x.padded.is_some() || x.hwc.is_some() {
            return Err(self.malformed(id, "reads a padded or flattened tensor"));
        }
        Ok(x)
    }

    fn malformed(&self, id: NodeId, what: &str) -> LowerError {
        LowerError::Malformed(format!("{id} ({}): {what}", self.graph.nodes[id].op.name()))
    }

    fn set_value(&mut self, id: NodeId, buffer: BufferId) {
        self.values[id] = Some(NodeBuffer {
            buffer,
            shape: self.graph.shape(id),
            hwc: None,
            padded: None,
        });
    }

    fn lower_node(&mut self, id: NodeId) -> Result<(), LowerError> {
        let graph = self.graph;
        let node = &graph.nodes[id];
        if let Some(source) = self.alias_source(id) {
            let mut value = self.values[source]
                .ok_or_else(|| self.malformed(id, "reads a value before it is computed"))?;
            if matches!(node.op, Op::Flatten) {
                let s = value.shape;
                if s.h * s.w > 1 {
                    value.hwc = Some((s.h, s.w, s.c));
                }
            }
            value.shape = graph.shape(id);
            self.values[id] = Some(value);
            return Ok(());
        }
        match &node.op {
            Op::Input { index, name } => {
                let name = format!("input `{name}`");
                let len = graph.shape(id).numel();
                let buffer = self.add_buffer(name, len, Storage::Input(*index));
                self.set_value(id, buffer);
            }
            Op::Conv(attrs) => self.conv(id, attrs)?,
            Op::ConvTranspose(attrs) => self.conv_transpose(id, attrs)?,
            Op::Dense(attrs) => self.dense(id, attrs)?,
            Op::Pool(attrs) => self.pool(id, attrs)?,
            Op::GlobalPool(kind) => self.global_pool(id, *kind)?,
            Op::AdaptiveAvgPool { out } => self.adaptive_avg_pool(id, *out)?,
            Op::Flatten => self.reorder_flatten(id)?,
            Op::BatchNorm { .. } => self.batch_norm(id)?,
            Op::Dropout { .. } | Op::Identity => {
                let value = self.arg(id, 0)?;
                let out = self.result_buffer(id);
                self.copy(id, value, out)?;
            }
            Op::Activation(activation) => self.activation(id, *activation)?,
            Op::Softmax => self.softmax(id)?,
            Op::Add => self.add(id)?,
            Op::Mul => self.mul(id)?,
            Op::Concat => self.concat(id)?,
            Op::ChannelShuffle(attrs) => self.channel_shuffle(id, *attrs)?,
            Op::Split(attrs) => self.split(id, *attrs)?,
            Op::Upsample(attrs) => self.upsample(id, *attrs)?,
            Op::Scalar(attrs) => self.scalar(id, *attrs)?,
            Op::Arithmetic(op) => self.arithmetic(id, *op)?,
            Op::LayerNorm(attrs) => self.layer_norm(id, *attrs)?,
            Op::PointwiseDense(attrs) => self.pointwise_dense(id, *attrs)?,
            Op::Parameter(_) => self.parameter(id)?,
            Op::PRelu(attrs) => self.prelu(id, *attrs)?,
            Op::GroupNorm(attrs) => self.group_norm(id, *attrs)?,
            Op::Pad(attrs) => self.pad_layer(id, *attrs)?,
        }
        Ok(())
    }

    /// Copies the output from a network input when the output is one (`x -> dropout`), and
    /// every output after the first to its place after it in the image's output region.
    fn finish_output(&mut self) -> Result<(), LowerError> {
        let outputs = self.graph.outputs();
        let mut offset = 0;
        for (idx, &output) in outputs.iter().enumerate() {
            let len = self.graph.shape(output).numel();
            if idx > 0 || self.output_writer.is_none() {
                let value = self.values[output]
                    .ok_or_else(|| LowerError::Malformed("the output was not computed".into()))?;
                let name = match idx {
                    0 => "output".to_string(),
                    _ => format!("output {idx}"),
                };
                let out = self.add_buffer(name, len, Storage::Output { offset });
                self.copy(output, value, out)?;
            }
            offset += len;
        }
        Ok(())
    }
}
