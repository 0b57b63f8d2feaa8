//! The backward of pooling, scattered into a frame the shape of the padded input the forward
//! read, whose interior is then the input's gradient:
//!
//! - average: each output's gradient, times its window's reciprocal count, is added to every
//!   pixel of its window;
//! - max: each output's gradient goes to the first element of its window (row by row, as
//!   PyTorch scans it) equal to the window's maximum, recomputed from the forward's input:
//!   a lane mask `x == max` selects the gradient, which is then taken out of what is left
//!   to route, so a tie sends it once.
//!
//! A 3×3 max pool of stride 2 (ResNet's and GoogLeNet's) goes its own way
//! (`max_pool_rows.rs`): straight into the gradient, each pixel written once, with no frame.

use super::super::elementwise::channel_vectors;
use super::super::ir::{Affine, BinaryOp, BufferId, LoopExpr};
use super::super::pad::layout_for;
use super::super::pool::{reciprocals, window_loop, UNROLLED_WINDOW};
use super::super::{KernelBuilder, LowerError};
use super::Backward;
use crate::graph::{NodeId, PoolAttrs, PoolKind};

impl Backward<'_> {
    pub(super) fn pool(
        &mut self,
        id: NodeId,
        attrs: &PoolAttrs,
        grad: BufferId,
    ) -> Result<(), LowerError> {
        let graph = self.graph();
        let input = graph.nodes[id].inputs[0];
        let s = graph.shape(input);
        let out = graph.shape(id);
        let ([kh, kw], [sh, sw]) = (attrs.kernel, attrs.stride);
        let (top, left, frame_h, frame_w) = self.frame_geometry(id)?;
        let (x_frame, x_width) = self.lowering.window_inputs[id]
            .ok_or_else(|| self.lowering.malformed(id, "its padded input is unknown"))?;
        if x_width != frame_w {
            return Err(self
                .lowering
                .malformed(id, "its padded input has another width"));
        }
        let max = attrs.kind == PoolKind::Max;
        let stem = attrs.kernel == [3, 3] && attrs.stride == [2, 2] && attrs.dilation == [1, 1];
        if max && stem && top <= 2 && left <= 2 {
            let x = (x_frame, x_width);
            return self.max_pool_3x3_stride_2(id, grad, x, (top, left), s, out);
        }
        let reciprocals = reciprocals(attrs, s, out);
        let uniform = reciprocals.iter().all(|&r| r == reciprocals[0]);
        let table = (!uniform && !max).then(|| {
            let name = format!("{} divisors (backward)", self.lowering.describe(id));
            self.values_const(name, reciprocals.clone())
        });
        let c = s.c;
        let kind = if max { "maxpool" } else { "avgpool" };
        let scatter = self.scatter(input, (top, left, frame_h, frame_w));
        let frame = scatter.frame;
        let mut b = self.builder(
            id,
            "pool_grad",
            format!("∂ of {kind} {kh}×{kw} stride {sh}×{sw}: {out} → {s}"),
        );
        let window_at = |oy: &Affine, ox: &Affine, ky: Affine, kx: Affine, c0: usize| {
            ((oy.clone() * sh + ky) * frame_w + ox.clone() * sw + kx) * c + c0
        };
        // An average window's `1/n` (per window where the counts differ).
        let scale_at = |b: &mut KernelBuilder, oy: &Affine, ox: &Affine| match table {
            Some(table) => b.splat(table, oy.clone() * out.w + ox.clone()),
            None => b.constant(reciprocals[0]),
        };
        // Windows that tile the unpadded input exactly (2×2 stride 2 on an even size): each
        // input pixel has one window, so its gradient is stored (or added) once, with no
        // zeroed frame and no read-modify-write per tap; the taps are written out.
        let tiles_input = !max
            && !scatter.framed
            && kh == sh
            && kw == sw
            && out.h * sh == s.h
            && out.w * sw == s.w
            && kh * kw <= 9;
        if tiles_input {
            b.repeat(out.h, |b, oy| {
                b.repeat(out.w, |b, ox| {
                    let scale = scale_at(b, &oy, &ox);
                    let pixel = oy.clone() * out.w + ox.clone();
                    for (c0, lanes) in channel_vectors(c) {
                        let dy = b.load(grad, pixel.clone() * c + c0, lanes);
                        let share = b.binary(BinaryOp::Mul, dy, scale);
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let at = window_at(
                                    &oy,
                                    &ox,
                                    Affine::constant(ky),
                                    Affine::constant(kx),
                                    c0,
                                );
                                b.store_or_add(frame, at, lanes, share, scatter.accumulate);
                            }
                        }
                    }
                });
            });
            self.lowering.emit(b);
            return Ok(());
        }
        scatter.begin(&mut b);
        // Small windows written out tap by tap, as the forward's: as two loops of three trips
        // per channel vector, ResNet's 3×3 max-pool backward took six times its forward.
        let unroll = kh * kw <= UNROLLED_WINDOW;
        if max {
            b.repeat(out.h, |b, oy| {
                b.repeat(out.w, |b, ox| {
                    let pixel = oy.clone() * out.w + ox.clone();
                    for (c0, lanes) in channel_vectors(c) {
                        let m = b.constant(f32::NEG_INFINITY);
                        window_loop(b, kh, unroll, &mut |b, ky| {
                            window_loop(b, kw, unroll, &mut |b, kx| {
                                let at = window_at(&oy, &ox, ky.clone(), kx, c0);
                                let x = b.load(x_frame, at, lanes);
                                b.set(m, LoopExpr::Binary(BinaryOp::MaxPropagatingNan, x, m));
                            });
                        });
                        let left = b.load(grad, pixel.clone() * c + c0, lanes);
                        window_loop(b, kh, unroll, &mut |b, ky| {
                            window_loop(b, kw, unroll, &mut |b, kx| {
                                let at = window_at(&oy, &ox, ky.clone(), kx, c0);
                                let x = b.load(x_frame, at.clone(), lanes);
                                let is_max = b.binary(BinaryOp::EqualMask, x, m);
                                let hit = b.binary(BinaryOp::And, is_max, left);
                                let sum = b.load(frame, at.clone(), lanes);
                                let sum = b.binary(BinaryOp::Add, sum, hit);
                                b.store(frame, at, lanes, sum);
                                b.set(left, LoopExpr::Binary(BinaryOp::Sub, left, hit));
                            });
                        });
                    }
                });
            });
        }
        b.repeat(if max { 0 } else { out.h }, |b, oy| {
            b.repeat(out.w, |b, ox| {
                let scale = scale_at(b, &oy, &ox);
                let pixel = oy.clone() * out.w + ox.clone();
                for (c0, lanes) in channel_vectors(c) {
                    let dy = b.load(grad, pixel.clone() * c + c0, lanes);
                    let share = b.binary(BinaryOp::Mul, dy, scale);
                    window_loop(b, kh, unroll, &mut |b, ky| {
                        window_loop(b, kw, unroll, &mut |b, kx| {
                            let at = window_at(&oy, &ox, ky.clone(), kx, c0);
                            let sum = b.load(frame, at.clone(), lanes);
                            let sum = b.binary(BinaryOp::Add, sum, share);
                            b.store(frame, at, lanes, sum);
                        });
                    });
                }
            });
        });
        scatter.finish(&mut b);
        self.lowering.emit(b);
        Ok(())
    }
}

/// Where a scatter backward adds its windows: a frame the shape of the padded input the
/// forward read. That is the input's gradient itself when the forward read the input
/// unpadded, else a scratch frame whose interior is added to the gradient after.
pub(super) struct Scatter {
    pub frame: BufferId,
    target: BufferId,
    accumulate: bool,
    framed: bool,
    /// The interior's row and column in the frame, the frame's width and length.
    top: usize,
    left: usize,
    width: usize,
    len: usize,
    input: crate::graph::Shape,
}

impl Backward<'_> {
    /// `(top, left, height, width)`: where window op `id`'s input sat in the padded frame the
    /// forward read it from (the input itself, at (0, 0), when it needed no padding).
    pub(super) fn frame_geometry(
        &self,
        id: NodeId,
    ) -> Result<(usize, usize, usize, usize), LowerError> {
        let s = self.graph().input_shape(id);
        let read = self
            .lowering
            .window_read(id)
            .ok_or_else(|| self.lowering.malformed(id, "not a window op"))?;
        Ok(match layout_for(s, &read) {
            Some(l) => (l.top, l.left, l.height, l.width),
            None => (0, 0, s.h, s.w),
        })
    }

    /// The scatter destination for `input`'s gradient, the forward having read it in a frame
    /// of `height × width` pixels with the input at row `top`, column `left`.
    pub(super) fn scatter(
        &mut self,
        input: NodeId,
        (top, left, height, width): (usize, usize, usize, usize),
    ) -> Scatter {
        let s = self.graph().shape(input);
        let framed = top != 0 || left != 0 || height != s.h || width != s.w;
        let (target, accumulate) = self.grad_target(input);
        let len = height * width * s.c;
        let frame = if framed {
            let name = format!("∂{} padded", self.lowering.describe(input));
            self.lowering.add_temp(name, len)
        } else {
            target
        };
        Scatter {
            frame,
            target,
            accumulate,
            framed,
            top,
            left,
            width,
            len,
            input: s,
        }
    }
}

impl Scatter {
    /// Zeroes the frame, unless it is a gradient that already holds other contributions.
    pub fn begin(&self, b: &mut KernelBuilder) {
        if self.framed || !self.accumulate {
            b.fill_range(self.frame, Affine::constant(0), self.len, 0.0);
        }
    }

    /// Adds a scratch frame's interior to the input's gradient.
    pub fn finish(&self, b: &mut KernelBuilder) {
        if self.framed {
            let origin = (self.top, self.left, self.width);
            crop_into(
                b,
                self.frame,
                origin,
                self.target,
                self.input,
                self.accumulate,
            );
        }
    }
}

/// `target (+)= frame`'s interior: the `s.h × s.w` pixels from row `top`, column `left` of a
/// frame `width` pixels wide.
fn crop_into(
    b: &mut KernelBuilder,
    frame: BufferId,
    (top, left, width): (usize, usize, usize),
    target: BufferId,
    s: crate::graph::Shape,
    accumulate: bool,
) {
    let c = s.c;
    b.repeat(s.h, |b, y| {
        b.repeat(s.w, |b, x| {
            let from = ((y.clone() + top) * width + x.clone() + left) * c;
            let to = (y.clone() * s.w + x) * c;
            for (c0, lanes) in channel_vectors(c) {
                let value = b.load(frame, from.clone() + c0, lanes);
                b.store_or_add(target, to.clone() + c0, lanes, value, accumulate);
            }
        });
    });
}
