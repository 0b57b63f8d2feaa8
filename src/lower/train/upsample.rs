//! The backward of `upsample` and of global max pooling, both gathers into the input's
//! gradient.
//!
//! Nearest: each input pixel's gradient is the sum of its `sh × sw` copies'. Bilinear is the
//! transpose of the forward's two separable passes, in reverse order: along the height, each
//! input row gathers the output rows that read it, with their weights (`bilinear_source`,
//! which the forward and the reference use), into an `h × (w·sw)` scratch tensor; then along
//! the width the same, into the gradient. Which outputs read an input is worked out here, so
//! each axis is written out input by input: code proportional to the axis, not its square.
//! Global max pooling sends each channel's gradient to its first maximum in row-major order
//! (the reference's, PyTorch's), recomputed from the input as max pooling's backward does.

use super::super::elementwise::channel_vectors;
use super::super::ir::{Affine, BinaryOp, BufferId, LoopExpr};
use super::super::{KernelBuilder, LowerError};
use super::Backward;
use crate::graph::ops::bilinear_source;
use crate::graph::{NodeId, UpsampleAttrs, UpsampleMode};

/// For each of `n` inputs along an axis upsampled `s` times, the outputs that read it and
/// with what weight.
fn readers_along_axis(n: usize, s: usize) -> Vec<Vec<(usize, f32)>> {
    let mut readers = vec![Vec::new(); n];
    for o in 0..n * s {
        let (first, second, l0, l1) = bilinear_source(n, s, o);
        readers[first].push((o, l0));
        readers[second].push((o, l1));
    }
    readers
}

/// `Σ weight · src[pixel(o)]` over `readers`, for one channel vector.
fn gather(
    b: &mut KernelBuilder,
    src: BufferId,
    readers: &[(usize, f32)],
    pixel: &dyn Fn(usize) -> Affine,
    c0: usize,
    lanes: u8,
) -> super::super::ir::Reg {
    let sum = b.constant(0.0);
    for &(o, weight) in readers {
        let value = b.load(src, pixel(o) + c0, lanes);
        let weight = b.constant(weight);
        b.set(sum, LoopExpr::Fma(weight, value, sum));
    }
    sum
}

impl Backward<'_> {
    pub(super) fn upsample_backward(
        &mut self,
        id: NodeId,
        attrs: UpsampleAttrs,
        grad: BufferId,
    ) -> Result<(), LowerError> {
        let graph = self.graph();
        let input = graph.nodes[id].inputs[0];
        let s = graph.shape(input);
        let [sh, sw] = attrs.factors(s).unwrap_or_default();
        if sh == 0 || sw == 0 || s.flat {
            return Err(self
                .lowering
                .malformed(id, "needs an image and non-zero scales"));
        }
        let (h, w, c) = (s.h, s.w, s.c);
        let out_w = w * sw;
        let (target, accumulate) = self.grad_target(input);
        match attrs.mode {
            UpsampleMode::Nearest => {
                let comment = format!("∂ of upsample {s} by {sh}×{sw}, nearest");
                let mut b = self.builder(id, "upsample_grad", comment);
                b.parallel(h, |b, iy| {
                    b.repeat(w, |b, ix| {
                        for (c0, lanes) in channel_vectors(c) {
                            let sum = b.constant(0.0);
                            b.repeat(sh, |b, dy| {
                                b.repeat(sw, |b, dx| {
                                    let row = iy.clone() * sh + dy;
                                    let pixel = row * out_w + ix.clone() * sw + dx;
                                    let g = b.load(grad, pixel * c + c0, lanes);
                                    b.set(sum, LoopExpr::Binary(BinaryOp::Add, sum, g));
                                });
                            });
                            let at = (iy.clone() * w + ix.clone()) * c + c0;
                            b.store_or_add(target, at, lanes, sum, accumulate);
                        }
                    });
                });
                self.lowering.emit(b);
            }
            UpsampleMode::Bilinear => {
                let name = format!("∂{} rows", self.lowering.describe(id));
                let rows = self.lowering.add_temp(name, h * out_w * c);
                let comment = format!("∂ of upsample {s} by {sh} along the height, bilinear");
                let mut b = self.builder(id, "upsample_grad_h", comment);
                let by_row = readers_along_axis(h, sh);
                b.parallel(out_w, |b, column| {
                    for (y, readers) in by_row.iter().enumerate() {
                        let pixel = |o: usize| (column.clone() + o * out_w) * c;
                        for (c0, lanes) in channel_vectors(c) {
                            let sum = gather(b, grad, readers, &pixel, c0, lanes);
                            let at = (column.clone() + y * out_w) * c + c0;
                            b.store(rows, at, lanes, sum);
                        }
                    }
                });
                self.lowering.emit(b);
                let comment = format!("∂ of upsample {s} by {sw} along the width, bilinear");
                let mut b = self.builder(id, "upsample_grad_w", comment);
                let by_column = readers_along_axis(w, sw);
                b.parallel(h, |b, y| {
                    for (x, readers) in by_column.iter().enumerate() {
                        let pixel = |o: usize| (y.clone() * out_w + o) * c;
                        for (c0, lanes) in channel_vectors(c) {
                            let sum = gather(b, rows, readers, &pixel, c0, lanes);
                            let at = (y.clone() * w + x) * c + c0;
                            b.store_or_add(target, at, lanes, sum, accumulate);
                        }
                    }
                });
                self.lowering.emit(b);
            }
        }
        Ok(())
    }

    /// Global max pooling: each channel's gradient to the first pixel equal to its maximum.
    pub(super) fn global_max_pool(&mut self, id: NodeId, grad: BufferId) -> Result<(), LowerError> {
        let x = self.lowering.arg(id, 0)?;
        let input = self.graph().nodes[id].inputs[0];
        let s = x.shape;
        let (pixels, c) = (s.h * s.w, s.c);
        let (target, accumulate) = self.grad_target(input);
        let mut b = self.builder(
            id,
            "gmaxpool_grad",
            format!("∂ of global max pooling over {s}"),
        );
        for (c0, lanes) in channel_vectors(c) {
            let max = b.constant(f32::NEG_INFINITY);
            b.repeat(pixels, |b, p| {
                let value = b.load(x.buffer, p * c + c0, lanes);
                b.set(
                    max,
                    LoopExpr::Binary(BinaryOp::MaxPropagatingNan, value, max),
                );
            });
            let left = b.load(grad, Affine::constant(c0), lanes);
            b.repeat(pixels, |b, p| {
                let at = p * c + c0;
                let value = b.load(x.buffer, at.clone(), lanes);
                let is_max = b.binary(BinaryOp::EqualMask, value, max);
                let hit = b.binary(BinaryOp::And, is_max, left);
                b.store_or_add(target, at, lanes, hit, accumulate);
                b.set(left, LoopExpr::Binary(BinaryOp::Sub, left, hit));
            });
        }
        self.lowering.emit(b);
        Ok(())
    }
}
