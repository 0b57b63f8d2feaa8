//! The `pad` layer (`graph::ops::pad` defines it): zeros, reflection or replication around
//! the input, in two kernels.
//!
//! The first copies each input row to its place and writes the row's left and right borders
//! from the same input row (one loop over the rows, all indices affine). The second writes the
//! top and bottom rows as copies of whole output rows the first one wrote, since a border row
//! is the padded copy of the input row it mirrors or repeats. Reflection reverses the order of
//! the border, which no affine index can express, so its border columns and rows are written
//! out one by one; there are fewer of them than the input has pixels along the axis. Zeros
//! and replication are loops.
//!
//! A window op's own zero padding does not come here: `lower/pad.rs` handles it without a
//! layer (the producer writes into a padded buffer, or a copy pads it).

use super::builder::KernelBuilder;
use super::ir::{Affine, BufferId};
use super::{LowerError, Lowering};
use crate::graph::{NodeId, PadAttrs, PadMode};

impl Lowering<'_> {
    pub(super) fn pad_layer(&mut self, id: NodeId, attrs: PadAttrs) -> Result<(), LowerError> {
        let x = self.arg(id, 0)?;
        let s = x.shape;
        let (h, w, c) = (s.h, s.w, s.c);
        let p = attrs.pad;
        let mode = attrs.mode;
        let too_much = p.top.max(p.bottom) >= h || p.left.max(p.right) >= w;
        if h == 0 || w == 0 || (mode == PadMode::Reflect && too_much) {
            return Err(self.malformed(id, "a reflect padding not smaller than the input"));
        }
        let (oh, ow) = (h + p.top + p.bottom, w + p.left + p.right);
        let row = ow * c;
        let out = self.result_buffer(id);
        let name = mode.name();
        let columns = Columns {
            mode,
            before: p.left,
            after: p.right,
            width: w,
            channels: c,
            out,
            input: x.buffer,
        };
        let comment = format!("pad {s} to {oh}×{ow}×{c} ({name}): rows and side borders");
        let mut b = self.builder(id, "pad", comment);
        b.parallel(h, |b, iy| {
            let dst = (iy.clone() + p.top) * row;
            let src = iy * (w * c);
            b.copy_range(out, dst.clone() + p.left * c, x.buffer, src.clone(), w * c);
            columns.write(b, dst, src);
        });
        self.emit(b);
        if p.top + p.bottom > 0 {
            let comment = format!("pad {s} to {oh}×{ow}×{c} ({name}): top and bottom rows");
            let mut b = self.builder(id, "pad_rows", comment);
            let first = Affine::constant(p.top * row);
            let last = Affine::constant((p.top + h - 1) * row);
            let below = (p.top + h) * row;
            match mode {
                PadMode::Zeros => {
                    b.fill_range(out, Affine::constant(0), p.top * row, 0.0);
                    b.fill_range(out, Affine::constant(below), p.bottom * row, 0.0);
                }
                PadMode::Replicate => {
                    b.repeat(p.top, |b, k| b.copy_range(out, k * row, out, first, row));
                    b.repeat(p.bottom, |b, k| {
                        b.copy_range(out, k * row + below, out, last, row)
                    });
                }
                PadMode::Reflect => {
                    for oy in (0..p.top).chain(p.top + h..oh) {
                        let Some(sy) = mode.source(oy, p.top, h) else {
                            continue;
                        };
                        let from = Affine::constant((sy + p.top) * row);
                        b.copy_range(out, Affine::constant(oy * row), out, from, row);
                    }
                }
            }
            self.emit(b);
        }
        self.set_value(id, out);
        Ok(())
    }
}

/// The left and right borders of one padded row.
struct Columns {
    mode: PadMode,
    before: usize,
    after: usize,
    width: usize,
    channels: usize,
    out: BufferId,
    input: BufferId,
}

impl Columns {
    /// Writes the borders of the output row starting at element `dst`, padding the input row
    /// starting at element `src`.
    fn write(&self, b: &mut KernelBuilder, dst: Affine, src: Affine) {
        let (c, w) = (self.channels, self.width);
        let right = dst.clone() + (self.before + w) * c;
        match self.mode {
            PadMode::Zeros => {
                b.fill_range(self.out, dst, self.before * c, 0.0);
                b.fill_range(self.out, right, self.after * c, 0.0);
            }
            PadMode::Replicate => {
                let last = src.clone() + (w - 1) * c;
                b.repeat(self.before, |b, k| {
                    b.copy_range(self.out, dst + k * c, self.input, src, c)
                });
                b.repeat(self.after, |b, k| {
                    b.copy_range(self.out, right + k * c, self.input, last, c)
                });
            }
            PadMode::Reflect => {
                let outside = (0..self.before).chain(self.before + w..self.before + w + self.after);
                for ox in outside {
                    let Some(sx) = self.mode.source(ox, self.before, w) else {
                        continue;
                    };
                    let to = dst.clone() + ox * c;
                    b.copy_range(self.out, to, self.input, src.clone() + sx * c, c);
                }
            }
        }
    }
}
