//! Pooling: windowed max and average pooling with PyTorch's semantics, global pooling, and
//! adaptive average pooling, all vectorized over channels.
//!
//! Windowed pools read a copy of the input bordered by −∞ (max) or 0 (average) wherever a
//! window reaches past the input, so the kernel has no conditionals. Max pooling then never
//! picks a border cell unless the whole window is border, which is what PyTorch does. Average
//! pooling multiplies the window's sum by the reciprocal of PyTorch's divisor for that output
//! position: the clipped window's size with `count_include_pad`, the number of real cells
//! without it. Where every position has the same divisor it is a constant; otherwise the
//! reciprocals are a table indexed by output position.

use super::ir::{Affine, BinaryOp, LoopExpr, Reg};
use super::pad::WindowRead;
use super::{ConstSpec, KernelBuilder, LowerError, Lowering};
use crate::graph::{NodeId, Padding, PoolAttrs, PoolKind, Shape};

/// Channel vectors per tile: 4 independent accumulators.
const TILE_VECTORS: usize = 4;

/// The largest window (kh·kw) written out tap by tap rather than as two loops: a loop of
/// two trips costs more in branches and loop-carried moves than the loads and adds it runs
/// (LeNet's 2×2 average pool over 28×28×6 took 22 cycles per output pixel as loops).
pub(super) const UNROLLED_WINDOW: usize = 9;

/// Runs `body` for `0..count`: as a loop, or written out `count` times if `unroll`.
pub(super) fn window_loop(
    b: &mut KernelBuilder,
    count: usize,
    unroll: bool,
    body: &mut dyn FnMut(&mut KernelBuilder, Affine),
) {
    if unroll {
        for i in 0..count {
            body(b, Affine::constant(i));
        }
    } else {
        b.repeat(count, |b, i| body(b, i));
    }
}

/// The window of output `o` along an axis of length `n`, as PyTorch's `avg_pool2d` clips it:
/// its length within the padded input, and the number of real input cells it covers.
pub(super) fn window(
    o: usize,
    stride: usize,
    kernel: usize,
    pad: (usize, usize),
    n: usize,
) -> (usize, usize) {
    let start = (o * stride) as isize - pad.0 as isize;
    let end = (start + kernel as isize).min((n + pad.1) as isize);
    let padded_len = (end - start).max(0) as usize;
    let real_start = start.max(0) as usize;
    let real_end = (end.max(0) as usize).min(n);
    (padded_len, real_end.saturating_sub(real_start))
}

/// Calls `tile` for blocks of [`TILE_VECTORS`] channel vectors, then one of the rest.
fn channel_tiles(
    b: &mut KernelBuilder,
    channels: usize,
    parallel: bool,
    tile: &mut impl FnMut(&mut KernelBuilder, Affine, usize, u8),
) {
    let block = 4 * TILE_VECTORS;
    let body = |b: &mut KernelBuilder, i: Affine| tile(b, i * block, TILE_VECTORS, 4);
    if parallel {
        b.parallel(channels / block, body);
    } else {
        b.repeat(channels / block, body);
    }
    let rest = channels % block;
    if rest > 0 {
        let vectors = rest.div_ceil(4);
        tile(
            b,
            Affine::constant(channels - rest),
            vectors,
            (rest - 4 * (vectors - 1)) as u8,
        );
    }
}

fn lanes(v: usize, vectors: usize, last: u8) -> u8 {
    if v + 1 == vectors {
        last
    } else {
        4
    }
}

fn combine(kind: PoolKind) -> BinaryOp {
    match kind {
        PoolKind::Max => BinaryOp::MaxPropagatingNan,
        PoolKind::Avg => BinaryOp::Add,
    }
}

pub(super) fn initial(kind: PoolKind) -> f32 {
    match kind {
        PoolKind::Max => f32::NEG_INFINITY,
        PoolKind::Avg => 0.0,
    }
}

/// Each output pixel's `1 / window count` for average pooling (0 for a window wholly in
/// padding): the forward's divisors, and the backward's shares.
pub(super) fn reciprocals(attrs: &PoolAttrs, s: Shape, out: Shape) -> Vec<f32> {
    let ([kh, kw], [sh, sw], pad) = (attrs.kernel, attrs.stride, attrs.pad);
    let mut reciprocals = Vec::with_capacity(out.h * out.w);
    for oy in 0..out.h {
        let (rows, real_rows) = window(oy, sh, kh, (pad.top, pad.bottom), s.h);
        for ox in 0..out.w {
            let (cols, real_cols) = window(ox, sw, kw, (pad.left, pad.right), s.w);
            let divisor = if attrs.count_include_pad {
                rows * cols
            } else {
                real_rows * real_cols
            };
            reciprocals.push(if divisor == 0 {
                0.0
            } else {
                1.0 / divisor as f32
            });
        }
    }
    reciprocals
}

impl Lowering<'_> {
    pub(super) fn pool(&mut self, id: NodeId, attrs: &PoolAttrs) -> Result<(), LowerError> {
        let x = self.arg(id, 0)?;
        let out = self.graph.shape(id);
        let (s, [kh, kw], [sh, sw], pad) = (x.shape, attrs.kernel, attrs.stride, attrs.pad);
        // Only max pooling is dilated, so the average's divisors never see a dilation.
        let [dh, dw] = attrs.dilation;
        let reciprocals = reciprocals(attrs, s, out);
        let read = WindowRead {
            kernel: attrs.kernel,
            stride: attrs.stride,
            dilation: attrs.dilation,
            pad,
            out: (out.h, out.w),
            fill: initial(attrs.kind),
        };
        let padded = self.pad_input(id, x, &read);
        self.window_inputs[id] = Some((padded.buffer, padded.width));
        let uniform = reciprocals.iter().all(|&r| r == reciprocals[0]);
        let table = (attrs.kind == PoolKind::Avg && !uniform).then(|| {
            let name = format!("{} divisors", self.describe(id));
            let len = reciprocals.len();
            self.add_const(name, len, ConstSpec::Values(reciprocals.clone()))
        });
        let result = self.target(id);
        let c = s.c;
        let kind = attrs.kind;
        let mut b = self.builder(
            id,
            "pool",
            format!(
                "{} {kh}×{kw} stride {sh}×{sw}: {s} → {out}",
                self.graph.nodes[id].op.name()
            ),
        );
        b.parallel(out.h, |b, oy| {
            b.repeat(out.w, |b, ox| {
                channel_tiles(b, c, false, &mut |b, c0, vectors, last| {
                    let acc: Vec<Reg> = (0..vectors).map(|_| b.constant(initial(kind))).collect();
                    let unroll = kh * kw <= UNROLLED_WINDOW;
                    window_loop(b, kh, unroll, &mut |b, ky| {
                        window_loop(b, kw, unroll, &mut |b, kx| {
                            let pixel = (oy.clone() * sh + ky.clone() * dh) * padded.width
                                + ox.clone() * sw
                                + kx * dw;
                            for (v, &a) in acc.iter().enumerate() {
                                let index = pixel.clone() * c + c0.clone() + 4 * v;
                                let value = b.load(padded.buffer, index, lanes(v, vectors, last));
                                b.set(a, LoopExpr::Binary(combine(kind), value, a));
                            }
                        });
                    });
                    let scale = match (kind, table) {
                        (PoolKind::Max, _) => None,
                        (PoolKind::Avg, Some(table)) => {
                            Some(b.splat(table, oy.clone() * out.w + ox.clone()))
                        }
                        (PoolKind::Avg, None) => Some(b.constant(reciprocals[0])),
                    };
                    for (v, &a) in acc.iter().enumerate() {
                        let value = match scale {
                            Some(scale) => b.binary(BinaryOp::Mul, a, scale),
                            None => a,
                        };
                        let pixel = oy.clone() * out.w + ox.clone();
                        let index = result.index(pixel, c0.clone() + 4 * v);
                        b.store(result.buffer, index, lanes(v, vectors, last), value);
                    }
                });
            });
        });
        self.emit(b);
        self.set_target_value(id, result);
        Ok(())
    }

    pub(super) fn global_pool(&mut self, id: NodeId, kind: PoolKind) -> Result<(), LowerError> {
        let x = self.arg(id, 0)?;
        let s = x.shape;
        let pixels = s.h * s.w;
        let result = self.target(id);
        let mut b = self.builder(id, "gpool", format!("global {kind:?} pool of {s}"));
        channel_tiles(&mut b, s.c, true, &mut |b, c0, vectors, last| {
            let acc: Vec<Reg> = (0..vectors).map(|_| b.constant(initial(kind))).collect();
            b.repeat(pixels, |b, p| {
                for (v, &a) in acc.iter().enumerate() {
                    let index = p.clone() * s.c + c0.clone() + 4 * v;
                    let value = b.load(x.buffer, index, lanes(v, vectors, last));
                    b.set(a, LoopExpr::Binary(combine(kind), value, a));
                }
            });
            let scale = (kind == PoolKind::Avg).then(|| b.constant(1.0 / pixels as f32));
            for (v, &a) in acc.iter().enumerate() {
                let value = match scale {
                    Some(scale) => b.binary(BinaryOp::Mul, a, scale),
                    None => a,
                };
                let index = result.index(Affine::default(), c0.clone() + 4 * v);
                b.store(result.buffer, index, lanes(v, vectors, last), value);
            }
        });
        self.emit(b);
        self.set_target_value(id, result);
        Ok(())
    }

    /// PyTorch's `AdaptiveAvgPool2d`. When the output divides the input it is an ordinary
    /// average pool; otherwise each output cell's window is written out with its own bounds.
    pub(super) fn adaptive_avg_pool(
        &mut self,
        id: NodeId,
        out: [usize; 2],
    ) -> Result<(), LowerError> {
        let x = self.arg(id, 0)?;
        let s = x.shape;
        if out[0] == 0 || out[1] == 0 {
            return Err(self.malformed(id, "an empty output grid"));
        }
        if s.h % out[0] == 0 && s.w % out[1] == 0 {
            let kernel = [s.h / out[0], s.w / out[1]];
            let attrs = PoolAttrs {
                kind: PoolKind::Avg,
                kernel,
                stride: kernel,
                pad: Padding::default(),
                ceil_mode: false,
                count_include_pad: true,
                dilation: [1, 1],
            };
            return self.pool(id, &attrs);
        }
        let result = self.target(id);
        let c = s.c;
        let bounds = |i: usize, n: usize, o: usize| ((i * n) / o, ((i + 1) * n).div_ceil(o));
        let mut b = self.builder(
            id,
            "apool",
            format!("adaptive average pool {s} → {}×{}×{c}", out[0], out[1]),
        );
        for oy in 0..out[0] {
            let (y0, y1) = bounds(oy, s.h, out[0]);
            for ox in 0..out[1] {
                let (x0, x1) = bounds(ox, s.w, out[1]);
                let count = (y1 - y0) * (x1 - x0);
                channel_tiles(&mut b, c, false, &mut |b, c0, vectors, last| {
                    let acc: Vec<Reg> = (0..vectors).map(|_| b.constant(0.0)).collect();
                    b.repeat(y1 - y0, |b, iy| {
                        b.repeat(x1 - x0, |b, ix| {
                            let pixel = (iy.clone() + y0) * s.w + ix + x0;
                            for (v, &a) in acc.iter().enumerate() {
                                let index = pixel.clone() * c + c0.clone() + 4 * v;
                                let value = b.load(x.buffer, index, lanes(v, vectors, last));
                                b.set(a, LoopExpr::Binary(BinaryOp::Add, value, a));
                            }
                        });
                    });
                    let scale = b.constant(1.0 / count as f32);
                    for (v, &a) in acc.iter().enumerate() {
                        let value = b.binary(BinaryOp::Mul, a, scale);
                        let pixel = Affine::constant(oy * out[1] + ox);
                        let index = result.index(pixel, c0.clone() + 4 * v);
                        b.store(result.buffer, index, lanes(v, vectors, last), value);
                    }
                });
            }
        }
        self.emit(b);
        self.set_target_value(id, result);
        Ok(())
    }
}
