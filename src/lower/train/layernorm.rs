//! The backward of layer norm over each pixel's channels, `y = x̂·γ + β` with
//! `x̂ = (x − mean)·r`, `r = 1/√(var + eps)`, one pixel at a time:
//!
//! - the pixel's mean and `r` again from its input (two passes, as the forward computes them:
//!   cheaper than keeping them, and the same numbers);
//! - one pass over its channels: `∂β += ∂y`, `∂γ += ∂y·x̂`, and the sums `A = Σ ∂y·γ` and
//!   `B = Σ ∂y·γ·x̂`;
//! - one more: `∂x = r·(∂y·γ − A/C − x̂·B/C)`, stored, or added to what other readers gave.
//!
//! Vectorized over the channels; the last, partial vector's lanes past the channels enter no
//! sum and are not written.

use super::super::ir::{Affine, BinaryOp, BufferId, LoopExpr, ReduceOp, Reg};
use super::super::norm::{moments, ValueMap};
use super::super::{KernelBuilder, LowerError};
use super::{Backward, GradLayout};
use crate::graph::{LayerNormAttrs, NodeId};

/// What a norm's backward writes: the accumulators of `∂γ` and `∂β` (those learned) and
/// the input's gradient target with whether it adds to it (if wanted).
type NormGrads = (Option<BufferId>, Option<BufferId>, Option<(BufferId, bool)>);

impl Backward<'_> {
    /// The gradients the backward of norm `id` over `c` channels writes, or `None` when it
    /// has nothing to write (frozen, and its input needs no gradient).
    pub(super) fn norm_grads(
        &mut self,
        id: NodeId,
        c: usize,
        trainable: bool,
        wants_input: bool,
    ) -> Option<NormGrads> {
        let learned = if trainable {
            self.learned(id)
        } else {
            Vec::new()
        };
        let padded = c.next_multiple_of(4);
        let dgamma = learned
            .contains(&"weight")
            .then(|| self.param_grad(id, "weight", c, padded, GradLayout::Plain));
        let dbeta = learned
            .contains(&"bias")
            .then(|| self.param_grad(id, "bias", c, padded, GradLayout::Plain));
        let target = if wants_input {
            let input = self.graph().nodes[id].inputs[0];
            Some(self.grad_target(input))
        } else {
            None
        };
        (dgamma.is_some() || dbeta.is_some() || target.is_some()).then_some((dgamma, dbeta, target))
    }

    pub(super) fn layer_norm_backward(
        &mut self,
        id: NodeId,
        attrs: LayerNormAttrs,
        grad: BufferId,
        trainable: bool,
        wants_input: bool,
    ) -> Result<(), LowerError> {
        let x = self.lowering.plain_arg(id, 0)?;
        let s = x.shape;
        let c = s.c;
        if c == 0 {
            return Err(self.lowering.malformed(id, "has no channels"));
        }
        let Some((dgamma, dbeta, target)) = self.norm_grads(id, c, trainable, wants_input) else {
            return Ok(());
        };
        let gamma = self.lowering.channel_constant(id, "weight", c);
        let full = c / 4;
        let rest = (c % 4) as u8;
        let mut b = self.builder(
            id,
            "layernorm_grad",
            format!("∂layernorm over the channels of {s}"),
        );
        b.repeat(s.h * s.w, |b, p| {
            let base = p.clone() * c;
            let channel_sum = |b: &mut KernelBuilder, f: &ValueMap| {
                let sum = b.constant(0.0);
                b.repeat(full, |b, v| {
                    let value = b.load(x.buffer, base.clone() + v * 4, 4);
                    let term = f(b, value);
                    b.set(sum, LoopExpr::Binary(BinaryOp::Add, term, sum));
                });
                b.set(sum, LoopExpr::Reduce(ReduceOp::Add, sum, 4));
                if rest > 0 {
                    let value = b.load(x.buffer, base.clone() + full * 4, rest);
                    let term = f(b, value);
                    let tail = b.assign(LoopExpr::Reduce(ReduceOp::Add, term, rest));
                    b.set(sum, LoopExpr::Binary(BinaryOp::Add, tail, sum));
                }
                sum
            };
            let (mean, r) = moments(b, c, attrs.eps, &channel_sum);
            // x̂, ∂y and ∂y·γ of channels `c0 + [0, lanes)`.
            let load = |b: &mut KernelBuilder, c0: &Affine, lanes: u8| {
                let at = base.clone() + c0.clone();
                let value = b.load(x.buffer, at.clone(), lanes);
                let deviation = b.binary(BinaryOp::Sub, value, mean);
                let normalized = b.binary(BinaryOp::Mul, deviation, r);
                let dy = b.load(grad, at, lanes);
                let g = b.load(gamma, c0.clone(), 4);
                let scaled = b.binary(BinaryOp::Mul, dy, g);
                (normalized, dy, scaled)
            };
            let sum_a = b.constant(0.0);
            let sum_b = b.constant(0.0);
            // The parameters' gradients of channels `c0 + [0, lanes)`; returns their
            // `(∂y·γ, ∂y·γ·x̂)`.
            let first = |b: &mut KernelBuilder, c0: Affine, lanes: u8| {
                let (normalized, dy, scaled) = load(b, &c0, lanes);
                add_affine_grads(b, (dgamma, dbeta), c0, lanes, (dy, normalized));
                (scaled, b.binary(BinaryOp::Mul, scaled, normalized))
            };
            b.repeat(full, |b, v| {
                let (a, w) = first(b, v * 4, 4);
                b.set(sum_a, LoopExpr::Binary(BinaryOp::Add, sum_a, a));
                b.set(sum_b, LoopExpr::Binary(BinaryOp::Add, sum_b, w));
            });
            b.set(sum_a, LoopExpr::Reduce(ReduceOp::Add, sum_a, 4));
            b.set(sum_b, LoopExpr::Reduce(ReduceOp::Add, sum_b, 4));
            if rest > 0 {
                let (a, w) = first(b, Affine::constant(full * 4), rest);
                let a = b.assign(LoopExpr::Reduce(ReduceOp::Add, a, rest));
                let w = b.assign(LoopExpr::Reduce(ReduceOp::Add, w, rest));
                b.set(sum_a, LoopExpr::Binary(BinaryOp::Add, sum_a, a));
                b.set(sum_b, LoopExpr::Binary(BinaryOp::Add, sum_b, w));
            }
            let Some((target, accumulate)) = target else {
                return;
            };
            let inverse_count = b.constant(1.0 / c as f32);
            let mean_a = b.binary(BinaryOp::Mul, sum_a, inverse_count);
            let mean_b = b.binary(BinaryOp::Mul, sum_b, inverse_count);
            let zero = b.constant(0.0);
            let minus_b = b.binary(BinaryOp::Sub, zero, mean_b);
            let second = |b: &mut KernelBuilder, c0: Affine, lanes: u8| {
                let (normalized, _, scaled) = load(b, &c0, lanes);
                let centred = b.binary(BinaryOp::Sub, scaled, mean_a);
                let inner = b.assign(LoopExpr::Fma(normalized, minus_b, centred));
                let dx = b.binary(BinaryOp::Mul, inner, r);
                b.store_or_add(target, base.clone() + c0, lanes, dx, accumulate);
            };
            b.repeat(full, |b, v| second(b, v * 4, 4));
            if rest > 0 {
                second(b, Affine::constant(full * 4), rest);
            }
        });
        self.lowering.emit(b);
        Ok(())
    }
}

/// `∂β += ∂y` and `∂γ += ∂y·x̂` for channels `channel + [0, lanes)`, those learned.
pub(super) fn add_affine_grads(
    b: &mut KernelBuilder,
    (dgamma, dbeta): (Option<BufferId>, Option<BufferId>),
    channel: Affine,
    lanes: u8,
    (dy, normalized): (Reg, Reg),
) {
    if let Some(dbeta) = dbeta {
        let acc = b.load(dbeta, channel.clone(), lanes);
        let acc = b.binary(BinaryOp::Add, acc, dy);
        b.store(dbeta, channel.clone(), lanes, acc);
    }
    if let Some(dgamma) = dgamma {
        let acc = b.load(dgamma, channel.clone(), lanes);
        let acc = b.assign(LoopExpr::Fma(dy, normalized, acc));
        b.store(dgamma, channel, lanes, acc);
    }
}
