//! Upsampling to a `size` that is not the input's times whole factors (or is smaller than
//! the input): PyTorch's general rule (`graph::ops::upsample`), in two separable kernels.
//!
//! Each output column and row reads input indices no affine expression gives, so the taps are
//! written out: along the width, one loop over the input rows whose body computes every
//! output column of the row from its two taps (nearest: copies one pixel) into a scratch
//! tensor; along the height, one loop over the output columns whose body computes every
//! output row from two rows of the scratch tensor. The code is as long as the output's width
//! plus its height (the shape rule bounds the ratio by `MAX_SCALE`). The operations are the
//! reference's, in its order: `w0·a + w1·b` along the width, then along the height.

use super::builder::KernelBuilder;
use super::elementwise::channel_vectors;
use super::ir::{Affine, BinaryOp, BufferId, Reg};
use super::{LowerError, Lowering, NodeBuffer};
use crate::graph::{NodeId, UpsampleAttrs, UpsampleMode};

/// `w0 · src[first] + w1 · src[second]`, or `src[first]` for nearest.
fn blend(
    b: &mut KernelBuilder,
    mode: UpsampleMode,
    src: BufferId,
    first: Affine,
    second: Affine,
    weights: (f32, f32),
    lanes: u8,
) -> Reg {
    let a = b.load(src, first, lanes);
    if mode == UpsampleMode::Nearest {
        return a;
    }
    let other = b.load(src, second, lanes);
    let (w0, w1) = (b.constant(weights.0), b.constant(weights.1));
    let a = b.binary(BinaryOp::Mul, w0, a);
    let other = b.binary(BinaryOp::Mul, w1, other);
    b.binary(BinaryOp::Add, a, other)
}

impl Lowering<'_> {
    pub(super) fn upsample_sized(
        &mut self,
        id: NodeId,
        attrs: UpsampleAttrs,
        x: NodeBuffer,
    ) -> Result<(), LowerError> {
        let s = x.shape;
        let (h, w, c) = (s.h, s.w, s.c);
        let [oh, ow] = attrs.output_size(s);
        if h == 0 || w == 0 || oh == 0 || ow == 0 {
            return Err(self.malformed(id, "an empty upsampling"));
        }
        let mode = attrs.mode;
        let (row_taps, column_taps) = (attrs.taps(h, oh), attrs.taps(w, ow));
        let rows = self.add_temp(format!("{} rows", self.describe(id)), h * ow * c);
        let comment = format!("upsample {s} to {h}×{ow} along the width, {mode:?}");
        let mut b = self.builder(id, "upsample_w", comment);
        b.parallel(h, |b, iy| {
            let src = iy.clone() * (w * c);
            let dst = iy * (ow * c);
            for (ox, &(x0, x1, w0, w1)) in column_taps.iter().enumerate() {
                for (c0, lanes) in channel_vectors(c) {
                    let first = src.clone() + (x0 * c + c0);
                    let second = src.clone() + (x1 * c + c0);
                    let v = blend(b, mode, x.buffer, first, second, (w0, w1), lanes);
                    b.store(rows, dst.clone() + (ox * c + c0), lanes, v);
                }
            }
        });
        self.emit(b);
        let out = self.target(id);
        let comment = format!("upsample {s} to {oh}×{ow} along the height, {mode:?}");
        let mut b = self.builder(id, "upsample_h", comment);
        b.parallel(ow, |b, ox| {
            for (oy, &(y0, y1, h0, h1)) in row_taps.iter().enumerate() {
                for (c0, lanes) in channel_vectors(c) {
                    let first = ox.clone() * c + (y0 * ow * c + c0);
                    let second = ox.clone() * c + (y1 * ow * c + c0);
                    let v = blend(b, mode, rows, first, second, (h0, h1), lanes);
                    let to = out.index(ox.clone() + oy * ow, Affine::constant(c0));
                    b.store(out.buffer, to, lanes, v);
                }
            }
        });
        self.emit(b);
        self.set_target_value(id, out);
        Ok(())
    }
}
