//! The backward of the ops that move channels or pixels without arithmetic: `concat` (each
//! operand's gradient is its channel slice of the output's), `split` (the part's gradient
//! goes to its channels, the others get zero), `channel_shuffle` (the inverse permutation),
//! and adaptive average pooling (each output's gradient spread over its region).
//!
//! Gradients are plain tensors, so a concat's backward copies each slice out (a strided
//! gradient that its readers' kernels would read in place is a possible saving: the copies
//! are small next to the convolutions around them).

use super::super::elementwise::channel_vectors;
use super::super::ir::{Affine, BinaryOp, BufferId};
use super::super::LowerError;
use super::Backward;
use crate::graph::{ChannelShuffleAttrs, NodeId, SplitAttrs};

impl Backward<'_> {
    /// `∂operand_k (+)= ∂y[:, :, offset_k .. offset_k + c_k]` for each wanted operand.
    pub(super) fn concat_backward(
        &mut self,
        id: NodeId,
        grad: BufferId,
        wants_input: &[bool],
    ) -> Result<(), LowerError> {
        let graph = self.graph();
        let shape = graph.shape(id);
        let inputs = graph.nodes[id].inputs.clone();
        let mut parts = Vec::new();
        let mut offset = 0;
        for (&input, &wanted) in inputs.iter().zip(wants_input) {
            let c = graph.shape(input).c;
            if wanted {
                let (target, accumulate) = self.grad_target(input);
                parts.push((offset, c, target, accumulate));
            }
            offset += c;
        }
        if offset != shape.c {
            return Err(self.lowering.malformed(id, "the inputs do not add up"));
        }
        let mut b = self.builder(
            id,
            "concat_grad",
            format!("∂ of concat {shape}: {} slices", parts.len()),
        );
        let c = shape.c;
        b.parallel(shape.h * shape.w, |b, p| {
            for &(offset, width, target, accumulate) in &parts {
                for (c0, lanes) in channel_vectors(width) {
                    let dy = b.load(grad, p.clone() * c + offset + c0, lanes);
                    b.store_or_add(target, p.clone() * width + c0, lanes, dy, accumulate);
                }
            }
        });
        self.lowering.emit(b);
        Ok(())
    }

    /// `∂x[:, :, first .. first + part] (+)= ∂y`, and zeros in the rest of `∂x` when this is
    /// its first contribution.
    pub(super) fn split_backward(
        &mut self,
        id: NodeId,
        attrs: SplitAttrs,
        grad: BufferId,
    ) -> Result<(), LowerError> {
        let graph = self.graph();
        let input = graph.nodes[id].inputs[0];
        let s = graph.shape(input);
        let part = graph.shape(id).c;
        let first = attrs.first_channel(s.c);
        if first + part > s.c {
            return Err(self
                .lowering
                .malformed(id, "the part is not within the channels"));
        }
        let (target, accumulate) = self.grad_target(input);
        let c = s.c;
        let mut b = self.builder(
            id,
            "split_grad",
            format!("∂ of split {s}: channels {first}..{}", first + part),
        );
        b.parallel(s.h * s.w, |b, p| {
            if !accumulate {
                b.fill_range(target, p.clone() * c, first, 0.0);
                b.fill_range(target, p.clone() * c + first + part, c - first - part, 0.0);
            }
            for (c0, lanes) in channel_vectors(part) {
                let dy = b.load(grad, p.clone() * part + c0, lanes);
                b.store_or_add(target, p.clone() * c + first + c0, lanes, dy, accumulate);
            }
        });
        self.lowering.emit(b);
        Ok(())
    }

    /// The shuffle's inverse: output channel `i·g + k` came from input channel `k·(C/g) + i`.
    pub(super) fn shuffle_backward(
        &mut self,
        id: NodeId,
        attrs: ChannelShuffleAttrs,
        grad: BufferId,
    ) -> Result<(), LowerError> {
        let graph = self.graph();
        let input = graph.nodes[id].inputs[0];
        let s = graph.shape(input);
        let (c, groups) = (s.c, attrs.groups);
        if groups == 0 || !c.is_multiple_of(groups) {
            return Err(self
                .lowering
                .malformed(id, "the groups do not divide the channels"));
        }
        let per_group = c / groups;
        let (target, accumulate) = self.grad_target(input);
        let mut b = self.builder(
            id,
            "shuffle_grad",
            format!("∂ of channel_shuffle {s} in {groups} groups"),
        );
        b.parallel(s.h * s.w, |b, p| {
            b.repeat(groups, |b, k| {
                b.repeat(per_group, |b, i| {
                    let from = p.clone() * c + i.clone() * groups + k.clone();
                    let dy = b.load(grad, from, 1);
                    let to = p.clone() * c + k * per_group + i;
                    b.store_or_add(target, to, 1, dy, accumulate);
                });
            });
        });
        self.lowering.emit(b);
        Ok(())
    }

    /// Adaptive average pooling's backward: output `(oy, ox)` covers rows
    /// `⌊oy·H/out⌋ .. ⌈(oy + 1)·H/out⌉` (and the same for columns), as PyTorch's regions, and
    /// each of their pixels gets `∂y / count`. When the grid divides the input the regions
    /// tile it and each pixel is written once; otherwise they overlap, so the gradient is
    /// zeroed first (on its first contribution) and every region adds.
    pub(super) fn adaptive_avg_pool_backward(
        &mut self,
        id: NodeId,
        out: [usize; 2],
        grad: BufferId,
    ) -> Result<(), LowerError> {
        let graph = self.graph();
        let input = graph.nodes[id].inputs[0];
        let s = graph.shape(input);
        let [oh, ow] = out;
        if oh == 0 || ow == 0 {
            return Err(self.lowering.malformed(id, "an empty output grid"));
        }
        let (target, accumulate) = self.grad_target(input);
        let c = s.c;
        let mut b = self.builder(
            id,
            "apool_grad",
            format!("∂ of adaptive average pool {s} → {oh}×{ow}×{c}"),
        );
        if s.h.is_multiple_of(oh) && s.w.is_multiple_of(ow) {
            let (kh, kw) = (s.h / oh, s.w / ow);
            let scale = b.constant(1.0 / (kh * kw) as f32);
            b.parallel(oh, |b, oy| {
                b.repeat(ow, |b, ox| {
                    for (c0, lanes) in channel_vectors(c) {
                        let dy = b.load(grad, (oy.clone() * ow + ox.clone()) * c + c0, lanes);
                        let share = b.binary(BinaryOp::Mul, dy, scale);
                        b.repeat(kh, |b, ky| {
                            b.repeat(kw, |b, kx| {
                                let row = oy.clone() * kh + ky;
                                let at = (row * s.w + ox.clone() * kw + kx) * c + c0;
                                b.store_or_add(target, at, lanes, share, accumulate);
                            });
                        });
                    }
                });
            });
            self.lowering.emit(b);
            return Ok(());
        }
        if !accumulate {
            b.fill_range(target, Affine::constant(0), s.numel(), 0.0);
        }
        let bounds = |i: usize, n: usize, o: usize| ((i * n) / o, ((i + 1) * n).div_ceil(o));
        for oy in 0..oh {
            let (y0, y1) = bounds(oy, s.h, oh);
            for ox in 0..ow {
                let (x0, x1) = bounds(ox, s.w, ow);
                let scale = b.constant(1.0 / ((y1 - y0) * (x1 - x0)) as f32);
                for (c0, lanes) in channel_vectors(c) {
                    let dy = b.load(grad, Affine::constant((oy * ow + ox) * c + c0), lanes);
                    let share = b.binary(BinaryOp::Mul, dy, scale);
                    b.repeat(y1 - y0, |b, iy| {
                        b.repeat(x1 - x0, |b, ix| {
                            let at = ((iy + y0) * s.w + ix + x0) * c + c0;
                            b.store_or_add(target, at, lanes, share, true);
                        });
                    });
                }
            }
        }
        self.lowering.emit(b);
        Ok(())
    }
}
