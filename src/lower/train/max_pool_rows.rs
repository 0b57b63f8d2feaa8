//! The backward of a 3×3 max pool of stride 2 (the stem of ResNet and GoogLeNet), written
//! straight into the input's gradient, each pixel once.
//!
//! The general scatter (`window.rs`) zeroes a frame the size of the padded input, adds each
//! window's taps into it (overlapping windows read, add and store the same pixels again) and
//! then copies the frame's interior out: three passes over a tensor larger than the cache.
//! Here a window of stride 2 overlaps the next window of its row in one column and the window
//! below in one row, so:
//!
//! - a window's last column of shares is kept, per channel, in a scratch column that the
//!   next window's first column starts from;
//! - a row of windows keeps its bottom row's shares in a scratch row that the next row of
//!   windows' top row starts from;
//!
//! and every other pixel's sum is final when it is formed, so it is stored (or added, when
//! the gradient already holds another reader's contribution) once. A pixel's shares are added
//! in the general scatter's order (window rows, then window columns), so the sums are the
//! same. The window's maximum is read from the forward's output rather than recomputed: the
//! forward took it over the same taps in the same order, so it is the same bits (a NaN
//! matches no tap either way), and the nine maxima were most of the work.
//!
//! Windows run pixel by pixel with the channels innermost, as the forward does. With the
//! channels outermost and each row's windows inside (the last column carried in registers),
//! every channel vector went again through lines of the input and the gradient that had left
//! the L1 cache since the vector before: a 112×112×64 pool at batch 16 took 16 ms a step
//! against this order's 5.7.
//!
//! Windows whose taps may fall outside the input (the first row and column of windows, and
//! those reaching into the bottom or right padding) are written out, their taps in the
//! padding left out; the others run as loops. Input pixels no window covers (the last row or
//! column of an even size without padding) get zeros.

use super::super::ir::{Affine, BinaryOp, BufferId, LoopExpr, Reg};
use super::super::{KernelBuilder, LowerError};
use super::Backward;
use crate::graph::{NodeId, Shape};

/// The window's size, and its stride; a window overlaps its neighbour in `WINDOW - STRIDE`
/// = one row or column.
const WINDOW: usize = 3;
const STRIDE: usize = 2;

/// One axis of the windows: the input's `len` cells start at `start` in the padded frame,
/// and `windows` windows start every [`STRIDE`] cells from the frame's first.
#[derive(Copy, Clone)]
struct Axis {
    start: usize,
    len: usize,
    windows: usize,
}

/// A window's position along an axis, as code: its index, whether it is the first window
/// (nothing carried into it), and which of its first two cells are input cells (the third
/// is carried on to the next window).
struct Place {
    index: Affine,
    first: bool,
    inside: [bool; 2],
}

impl Axis {
    /// The input cell at frame cell `p`, if it is one.
    fn input_cell(self, p: usize) -> Option<usize> {
        (self.start..self.start + self.len)
            .contains(&p)
            .then(|| p - self.start)
    }

    /// Whether window `o`'s code is that of every window of a loop: not the first, and its
    /// first two cells in the input.
    fn is_plain(self, o: usize) -> bool {
        o > 0 && (0..2).all(|k| self.input_cell(STRIDE * o + k).is_some())
    }

    /// The frame cell of the last window's last cell, whose share is carried out of the loop.
    fn last_cell(self) -> usize {
        STRIDE * (self.windows - 1) + WINDOW - 1
    }

    /// How many input cells, from the first, some window covers.
    fn covered(self) -> usize {
        (self.last_cell() + 1)
            .saturating_sub(self.start)
            .min(self.len)
    }

    /// Runs `body` for every window: the plain ones as one loop, the others written out.
    fn each(self, b: &mut KernelBuilder, body: &mut dyn FnMut(&mut KernelBuilder, Place)) {
        let written =
            |b: &mut KernelBuilder, body: &mut dyn FnMut(&mut KernelBuilder, Place), o| {
                let inside = [0, 1].map(|k| self.input_cell(STRIDE * o + k).is_some());
                let place = Place {
                    index: Affine::constant(o),
                    first: o == 0,
                    inside,
                };
                body(b, place);
            };
        let lo = (0..self.windows)
            .find(|&o| self.is_plain(o))
            .unwrap_or(self.windows);
        let hi = (lo..self.windows)
            .find(|&o| !self.is_plain(o))
            .unwrap_or(self.windows);
        for o in 0..lo {
            written(b, body, o);
        }
        b.repeat(hi - lo, |b, i| {
            let place = Place {
                index: i + lo,
                first: false,
                inside: [true, true],
            };
            body(b, place);
        });
        for o in hi..self.windows {
            written(b, body, o);
        }
    }

    /// The input index of cell `k` of the window at `place`, which must be an input cell.
    fn input_index(self, place: &Place, k: usize) -> Affine {
        let mut at = place.index.clone() * STRIDE + k;
        at.constant -= self.start;
        at
    }
}

impl Backward<'_> {
    /// The backward of a 3×3 max pool of stride 2 whose input sits at row `top`, column
    /// `left` of the `frame_w`-wide padded input `x_frame` it read: both at most
    /// [`STRIDE`], so that the first window covers the input's first row and column.
    pub(super) fn max_pool_3x3_stride_2(
        &mut self,
        id: NodeId,
        grad: BufferId,
        (x_frame, frame_w): (BufferId, usize),
        (top, left): (usize, usize),
        s: Shape,
        out: Shape,
    ) -> Result<(), LowerError> {
        let input = self.graph().nodes[id].inputs[0];
        let c = s.c;
        let rows = Axis {
            start: top,
            len: s.h,
            windows: out.h,
        };
        let cols = Axis {
            start: left,
            len: s.w,
            windows: out.w,
        };
        let pooled = self.stored(id)?;
        let (target, accumulate) = self.grad_target(input);
        let name = format!(
            "∂{} row shared by two windows",
            self.lowering.describe(input)
        );
        let shared_row = self.lowering.add_temp(name, frame_w * c);
        let name = format!(
            "∂{} column shared by two windows",
            self.lowering.describe(input)
        );
        let carried = self.lowering.add_temp(name, WINDOW * c);
        let mut b = self.builder(
            id,
            "pool_grad",
            format!("∂ of maxpool 3×3 stride 2×2: {out} → {s}"),
        );
        let to_target = |b: &mut KernelBuilder, y: Affine, x: Affine, c0: &Affine, lanes, v| {
            let at = (y * s.w + x) * c + c0.clone();
            b.store_or_add(target, at, lanes, v, accumulate);
        };
        rows.each(&mut b, &mut |b, oy| {
            cols.each(b, &mut |b, ox| {
                channel_vectors(b, c, &mut |b, c0, lanes| {
                    let tap = |ky: usize, kx: usize| {
                        ((oy.index.clone() * STRIDE + ky) * frame_w
                            + ox.index.clone() * STRIDE
                            + kx)
                            * c
                            + c0.clone()
                    };
                    let shared_at = |kx: usize| (ox.index.clone() * STRIDE + kx) * c + c0.clone();
                    let carried_at = |ky: usize| Affine::constant(ky * c) + c0.clone();
                    let pixel = oy.index.clone() * pooled.row + ox.index.clone();
                    let at = pixel * pooled.pixel + pooled.origin + c0.clone();
                    let m = b.load(pooled.buffer, at, lanes);
                    let dy_at = (oy.index.clone() * out.w + ox.index.clone()) * c + c0.clone();
                    let left_over = b.load(grad, dy_at, lanes);
                    // The top row starts from what the row of windows above sent it, read
                    // before this window's bottom row overwrites the shared row.
                    let above: [Option<Reg>; WINDOW] = std::array::from_fn(|kx| {
                        let carried = kx == 0 && !ox.first;
                        (!oy.first && !carried).then(|| b.load(shared_row, shared_at(kx), lanes))
                    });
                    for ky in 0..WINDOW {
                        let hits: [Reg; WINDOW] = std::array::from_fn(|kx| {
                            let x = b.load(x_frame, tap(ky, kx), lanes);
                            let is_max = b.binary(BinaryOp::EqualMask, x, m);
                            let hit = b.binary(BinaryOp::And, is_max, left_over);
                            b.set(left_over, LoopExpr::Binary(BinaryOp::Sub, left_over, hit));
                            hit
                        });
                        let start = |kx: usize| if ky == 0 { above[kx] } else { None };
                        let sum = |b: &mut KernelBuilder, base: Option<Reg>, hit| match base {
                            Some(base) => b.binary(BinaryOp::Add, base, hit),
                            None => hit,
                        };
                        let first = if ox.first {
                            start(0)
                        } else {
                            Some(b.load(carried, carried_at(ky), lanes))
                        };
                        let sums = [sum(b, first, hits[0]), sum(b, start(1), hits[1])];
                        let last = sum(b, start(2), hits[2]);
                        b.store(carried, carried_at(ky), lanes, last);
                        for (kx, &v) in sums.iter().enumerate() {
                            if ky == WINDOW - 1 {
                                b.store(shared_row, shared_at(kx), lanes, v);
                            } else if oy.inside[ky] && ox.inside[kx] {
                                let y = rows.input_index(&oy, ky);
                                let x = cols.input_index(&ox, kx);
                                to_target(b, y, x, &c0, lanes, v);
                            }
                        }
                    }
                });
            });
            // The last window's last column.
            channel_vectors(b, c, &mut |b, c0, lanes| {
                let carry: [Reg; WINDOW] = std::array::from_fn(|ky| {
                    b.load(carried, Affine::constant(ky * c) + c0.clone(), lanes)
                });
                let p = cols.last_cell();
                let at = Affine::constant(p * c) + c0.clone();
                b.store(shared_row, at, lanes, carry[WINDOW - 1]);
                if let Some(x) = cols.input_cell(p) {
                    for (ky, (&inside, &v)) in oy.inside.iter().zip(&carry).enumerate() {
                        if inside {
                            let y = rows.input_index(&oy, ky);
                            to_target(b, y, Affine::constant(x), &c0, lanes, v);
                        }
                    }
                }
            });
        });
        // The last row of windows' bottom row.
        let (covered_h, covered_w) = (rows.covered(), cols.covered());
        if let Some(y) = rows.input_cell(rows.last_cell()) {
            let from = Affine::constant(left * c);
            let to = Affine::constant(y * s.w * c);
            b.vectors(covered_w * c, false, &mut |b, offset, lanes| {
                let v = b.load(shared_row, from.clone() + offset.clone(), lanes);
                b.store_or_add(target, to.clone() + offset, lanes, v, accumulate);
            });
        }
        if !accumulate {
            let tail = (s.w - covered_w) * c;
            if tail > 0 {
                b.repeat(covered_h, |b, y| {
                    b.fill_range(target, (y * s.w + covered_w) * c, tail, 0.0);
                });
            }
            let start = Affine::constant(covered_h * s.w * c);
            b.fill_range(target, start, (s.h - covered_h) * s.w * c, 0.0);
        }
        self.lowering.emit(b);
        Ok(())
    }
}

/// Runs `body` for each vector of `c` channels: `(first channel, lanes)`, the whole vectors
/// as one loop.
fn channel_vectors(
    b: &mut KernelBuilder,
    c: usize,
    body: &mut dyn FnMut(&mut KernelBuilder, Affine, u8),
) {
    b.repeat(c / 4, |b, v| body(b, v * 4, 4));
    if !c.is_multiple_of(4) {
        body(b, Affine::constant(c / 4 * 4), (c % 4) as u8);
    }
}
