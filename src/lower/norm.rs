//! Layer norm over each pixel's channels, and the learned 1×1×C tensors of `parameter`
//! layers.
//!
//! Layer norm runs pixel by pixel (the pixels split over threads) in three passes over the
//! pixel's channels, vectorized over them: the sum, the sum of squared deviations from the
//! mean (two passes, as the reference computes it, rather than `E[x²] − mean²`, which loses
//! digits when the mean is large against the spread), then `(x − mean) · r · γ + β` with
//! `r = 1/√(var + eps)`. Lanes past the channels never enter a reduction.

use super::elementwise::channel_vectors;
use super::ir::{Affine, BinaryOp, LoopExpr, ReduceOp, Reg, UnaryOp};
use super::{ConstSpec, KernelBuilder, LowerError, Lowering};
use crate::graph::{LayerNormAttrs, NodeId, PARAMETER_SUFFIX};

impl Lowering<'_> {
    /// A `[channels]` tensor of node `id` (or a `parameter`'s `[C, 1, 1]`) padded with zeros
    /// to a multiple of 4, so that every vector load of it is in bounds.
    pub(super) fn channel_constant(
        &mut self,
        id: NodeId,
        suffix: &'static str,
        channels: usize,
    ) -> super::ir::BufferId {
        let channels_padded = channels.next_multiple_of(4);
        let name = self.graph.tensor_name(id, suffix);
        self.add_const(
            name,
            channels_padded,
            ConstSpec::Channels {
                node: id,
                suffix,
                channels,
            },
        )
    }

    pub(super) fn layer_norm(
        &mut self,
        id: NodeId,
        attrs: LayerNormAttrs,
    ) -> Result<(), LowerError> {
        let x = self.arg(id, 0)?;
        let s = x.shape;
        let c = s.c;
        if c == 0 || self.graph.shape(id).numel() != s.numel() {
            return Err(self.malformed(id, "the output's shape differs from the input's"));
        }
        let weight = self.channel_constant(id, "weight", c);
        let bias = self.channel_constant(id, "bias", c);
        let out = self.target(id);
        let full = c / 4;
        let rest = (c % 4) as u8;
        let comment = format!("layernorm over the channels of {s}, eps {:e}", attrs.eps);
        let mut b = self.builder(id, "layernorm", comment);
        b.parallel(s.h * s.w, |b, p| {
            let base = p.clone() * c;
            let tail_index = base.clone() + full * 4;
            // Σ f(x) over the pixel's channels, in every lane.
            let channel_sum = |b: &mut KernelBuilder, f: &ValueMap| {
                let sum = b.constant(0.0);
                b.repeat(full, |b, v| {
                    let value = b.load(x.buffer, base.clone() + v * 4, 4);
                    let term = f(b, value);
                    b.set(sum, LoopExpr::Binary(BinaryOp::Add, term, sum));
                });
                b.set(sum, LoopExpr::Reduce(ReduceOp::Add, sum, 4));
                if rest > 0 {
                    let value = b.load(x.buffer, tail_index.clone(), rest);
                    let term = f(b, value);
                    let tail = b.assign(LoopExpr::Reduce(ReduceOp::Add, term, rest));
                    b.set(sum, LoopExpr::Binary(BinaryOp::Add, tail, sum));
                }
                sum
            };
            let (mean, inverse_std) = moments(b, c, attrs.eps, &channel_sum);
            let normalize = |b: &mut KernelBuilder, c0: Affine, lanes: u8| {
                let value = b.load(x.buffer, base.clone() + c0.clone(), lanes);
                let deviation = b.binary(BinaryOp::Sub, value, mean);
                let normalized = b.binary(BinaryOp::Mul, deviation, inverse_std);
                let gamma = b.load(weight, c0.clone(), 4);
                let beta = b.load(bias, c0.clone(), 4);
                let y = b.assign(LoopExpr::Fma(normalized, gamma, beta));
                b.store(out.buffer, out.index(p.clone(), c0), lanes, y);
            };
            b.repeat(full, |b, v| normalize(b, v * 4, 4));
            if rest > 0 {
                normalize(b, Affine::constant(full * 4), rest);
            }
        });
        self.emit(b);
        self.set_target_value(id, out);
        Ok(())
    }

    /// The learned tensor, copied into the node's 1×1×C value for each image.
    pub(super) fn parameter(&mut self, id: NodeId) -> Result<(), LowerError> {
        let c = self.graph.shape(id).c;
        let values = self.channel_constant(id, PARAMETER_SUFFIX, c);
        let out = self.target(id);
        let mut b = self.builder(id, "parameter", format!("parameter 1×1×{c}"));
        for (c0, lanes) in channel_vectors(c) {
            let value = b.load(values, Affine::constant(c0), lanes);
            b.store(
                out.buffer,
                out.index(Affine::constant(0), Affine::constant(c0)),
                lanes,
                value,
            );
        }
        self.emit(b);
        self.set_target_value(id, out);
        Ok(())
    }
}

/// A function of each value summed by [`moments`].
pub(super) type ValueMap = dyn Fn(&mut KernelBuilder, Reg) -> Reg;

/// `(mean, 1/√(variance + eps))` of `count` values, `sum(b, f)` being the sum of `f` of them:
/// the variance from the deviations, in a second pass (not `E[x²] − mean²`, which cancels).
pub(super) fn moments(
    b: &mut KernelBuilder,
    count: usize,
    eps: f64,
    sum: &dyn Fn(&mut KernelBuilder, &ValueMap) -> Reg,
) -> (Reg, Reg) {
    let inverse_count = b.constant(1.0 / count as f32);
    let total = sum(b, &|_, value| value);
    let mean = b.binary(BinaryOp::Mul, total, inverse_count);
    let squares = sum(b, &move |b, value| {
        let deviation = b.binary(BinaryOp::Sub, value, mean);
        b.binary(BinaryOp::Mul, deviation, deviation)
    });
    let eps = b.constant(eps as f32);
    let variance = b.assign(LoopExpr::Fma(squares, inverse_count, eps));
    let root = b.unary(UnaryOp::Sqrt, variance);
    let one = b.constant(1.0);
    (mean, b.binary(BinaryOp::Div, one, root))
}
