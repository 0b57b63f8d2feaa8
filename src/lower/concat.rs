//! Concatenation along the channels, made free where it is safe.
//!
//! In H×W×C layout, a concat's operand is a channel slice of its output: pixel `p`, channel
//! `ch` of operand `k` is element `p·C + offset_k + ch` of the concat's buffer, where `C` is
//! the total channel count. A producer that can store with a row stride (conv, depthwise
//! conv, pooling, the elementwise kernels, another concat) writes its output there directly,
//! and the concat moves no data for that operand. This is safe when the operand is produced
//! by a kernel (not a network input), the concat is its only reader and reads it once, and it
//! is not the network's output; every other operand is copied into its slice by the concat's
//! kernel, which copies only those (and does not exist when there are none).
//!
//! A slice is not a buffer of its own: the producer's stores name the concat's buffer, at
//! the slice's offset with the concat's stride. So the memory plan sees the concat's buffer
//! alive from its first producer to its last reader, and the verifier proves the strided
//! stores inside that buffer and disjoint across threads, with no special case. Nested
//! concats compose: an inner concat that is a slice of an outer one has its own operands
//! write into the outer buffer, at the sum of the offsets. A concat that is the network's
//! output has its producers write into the output tensor.

use super::ir::{Affine, BufferId};
use super::{LowerError, Lowering, NodeBuffer};
use crate::graph::{NodeId, Op};

/// Where a node's value is stored: pixel `p`, channel `ch` at element `origin + p·stride +
/// ch` of `buffer`. A plain tensor has origin 0 and a stride of its channel count.
#[derive(Copy, Clone, Debug, PartialEq)]
pub(super) struct Target {
    pub buffer: BufferId,
    pub origin: usize,
    /// Elements per pixel.
    pub stride: usize,
}

impl Target {
    /// The element of pixel `pixel`, channel `channel`.
    pub fn index(&self, pixel: Affine, channel: Affine) -> Affine {
        pixel * self.stride + channel + self.origin
    }

    /// Whether the value is a plain tensor of `channels` channels (not a slice).
    pub fn is_plain(&self, channels: usize) -> bool {
        self.origin == 0 && self.stride == channels
    }
}

/// A node whose value is written in place into a concat's buffer, from channel `channel`.
#[derive(Copy, Clone, Debug, PartialEq)]
pub(super) struct Slice {
    pub concat: NodeId,
    pub channel: usize,
}

impl Lowering<'_> {
    /// Which kernels can store their output with a channel offset and a pixel stride.
    fn writes_strided(&self, id: NodeId) -> bool {
        if self.alias_source(id).is_some() {
            return false;
        }
        matches!(
            self.graph.nodes[id].op,
            Op::Conv(_)
                | Op::ConvTranspose(_)
                | Op::Pool(_)
                | Op::GlobalPool(_)
                | Op::AdaptiveAvgPool { .. }
                | Op::Activation(_)
                | Op::BatchNorm { .. }
                | Op::Add
                | Op::Mul
                | Op::Arithmetic(_)
                | Op::Concat
                | Op::ChannelShuffle(_)
                | Op::Split(_)
                | Op::Upsample(_)
                | Op::Scalar(_)
        )
    }

    /// Decides, for every concat, which operands its producers write in place (see the module
    /// documentation for when that is safe).
    pub(super) fn plan_slices(&mut self) {
        for &id in &self.order {
            let node = &self.graph.nodes[id];
            if !matches!(node.op, Op::Concat) || self.alias_source(id).is_some() {
                continue;
            }
            let shape = self.graph.shape(id);
            let mut channel = 0;
            for &input in &node.inputs {
                let s = self.graph.shape(input);
                let safe = self.readers[input].as_slice() == [id]
                    && !self.is_output(input)
                    && self.output_writer != Some(input)
                    && s.h == shape.h
                    && s.w == shape.w
                    && self.writes_strided(input);
                if safe {
                    self.slices[input] = Some(Slice {
                        concat: id,
                        channel,
                    });
                }
                channel += s.c;
            }
        }
    }

    /// Where node `id` stores its value: a slice of a concat's buffer, or a buffer of its
    /// own (the output buffer or a new arena tensor).
    pub(super) fn target(&mut self, id: NodeId) -> Target {
        if let Some(slice) = self.slices[id] {
            let whole = self.concat_target(slice.concat);
            return Target {
                origin: whole.origin + slice.channel,
                ..whole
            };
        }
        Target {
            buffer: self.result_buffer(id),
            origin: 0,
            stride: self.graph.shape(id).c,
        }
    }

    /// The target of concat `id`, made by its first producer and shared by all of them.
    fn concat_target(&mut self, id: NodeId) -> Target {
        if let Some(target) = self.concat_targets[id] {
            return target;
        }
        let target = self.target(id);
        self.concat_targets[id] = Some(target);
        target
    }

    /// Records node `id`'s value as stored at `target`. A slice's value is never read (the
    /// concat is its only reader and does not read it), so only the buffer is recorded.
    pub(super) fn set_target_value(&mut self, id: NodeId, target: Target) {
        self.set_value(id, target.buffer);
    }

    /// The note a producer's kernel comment gets when it writes into a concat's buffer.
    pub(super) fn slice_note(&self, id: NodeId) -> Option<String> {
        let slice = self.slices[id]?;
        let c = self.graph.shape(id).c;
        Some(format!(
            " (in place: channels {}..{} of {})",
            slice.channel,
            slice.channel + c,
            self.describe(slice.concat)
        ))
    }

    /// Concatenation along the channels: the operands not written in place are copied into
    /// their slices, pixel by pixel; when there are none, there is no kernel.
    pub(super) fn concat(&mut self, id: NodeId) -> Result<(), LowerError> {
        let inputs = self.graph.nodes[id].inputs.clone();
        let shape = self.graph.shape(id);
        let pixels = shape.h * shape.w;
        let shapes: Vec<_> = inputs.iter().map(|&i| self.graph.shape(i)).collect();
        if shapes.iter().map(|s| s.c).sum::<usize>() != shape.c
            || shapes.iter().any(|s| s.numel() != pixels * s.c)
        {
            return Err(self.malformed(id, "the inputs do not add up to the output"));
        }
        let mut copies: Vec<(usize, NodeBuffer)> = Vec::new();
        let mut offset = 0;
        for (idx, &input) in inputs.iter().enumerate() {
            let in_place = self.slices[input].is_some_and(|s| s.concat == id);
            if !in_place {
                copies.push((offset, self.arg(id, idx)?));
            }
            offset += shapes[idx].c;
        }
        let target = self.concat_target(id);
        if !copies.is_empty() {
            let n_inputs = inputs.len();
            let comment = if copies.len() == n_inputs {
                format!("concat {n_inputs} inputs → {shape}")
            } else {
                format!(
                    "concat: copy {} of {n_inputs} inputs → {shape} (the others are written in place)",
                    copies.len()
                )
            };
            let mut b = self.builder(id, "concat", comment);
            b.parallel(pixels, |b, p| {
                for (offset, arg) in &copies {
                    let c = arg.shape.c;
                    let dst = target.index(p.clone(), Affine::constant(*offset));
                    b.copy_range(target.buffer, dst, arg.buffer, p.clone() * c, c);
                }
            });
            self.emit(b);
        }
        self.set_target_value(id, target);
        Ok(())
    }
}
