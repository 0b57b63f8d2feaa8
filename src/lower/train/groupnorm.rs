//! The backward of group norm (and instance norm, one channel per group): each group of
//! channels was normalized by the mean and variance of all its `n` values in the image,
//! `x̂ = (x − mean)·r`, `y = x̂·γ + β` (or `x̂` without the affine part). Group by group:
//!
//! - the group's mean and `r` again from its input, as the forward computes them;
//! - one pass over its values: `∂β += ∂y`, `∂γ += ∂y·x̂` per channel, and the group's sums
//!   `A = Σ ∂y·γ` and `B = Σ ∂y·γ·x̂`;
//! - one more: `∂x = r·(∂y·γ − A/n − x̂·B/n)`, stored, or added to what other readers gave.
//!
//! A group's channels are read as vectors from any offset, as the forward reads them; full
//! vectors and partial ones are summed apart, so a partial vector's empty lanes never count.

use super::super::elementwise::channel_vectors;
use super::super::ir::{Affine, BinaryOp, BufferId, LoopExpr, ReduceOp, Reg};
use super::super::norm::{moments, ValueMap};
use super::super::{KernelBuilder, LowerError};
use super::layernorm::add_affine_grads;
use super::Backward;
use crate::graph::{GroupNormAttrs, NodeId};

impl Backward<'_> {
    pub(super) fn group_norm_backward(
        &mut self,
        id: NodeId,
        attrs: GroupNormAttrs,
        grad: BufferId,
        trainable: bool,
        wants_input: bool,
    ) -> Result<(), LowerError> {
        let x = self.lowering.plain_arg(id, 0)?;
        let s = x.shape;
        let c = s.c;
        let groups = attrs.groups;
        if groups == 0 || !c.is_multiple_of(groups) {
            return Err(self
                .lowering
                .malformed(id, "the groups do not divide the channels"));
        }
        let (size, pixels) = (c / groups, s.h * s.w);
        let trainable = trainable && attrs.affine;
        let Some((dgamma, dbeta, target)) = self.norm_grads(id, c, trainable, wants_input) else {
            return Ok(());
        };
        let gamma = attrs
            .affine
            .then(|| self.lowering.channel_constant(id, "weight", c));
        let mut b = self.builder(
            id,
            "groupnorm_grad",
            format!("∂groupnorm {s} in {groups} groups of {size}"),
        );
        let rest = (size % 4) as u8;
        b.repeat(groups, |b, g| {
            let first = g * size;
            // Σ f of the group's values: full vectors lane by lane, partial ones apart.
            let group_sum = |b: &mut KernelBuilder, f: &ValueMap| {
                let full = b.constant(0.0);
                let tail = b.constant(0.0);
                b.repeat(pixels, |b, p| {
                    for (c0, lanes) in channel_vectors(size) {
                        let at = p.clone() * c + first.clone() + c0;
                        let value = b.load(x.buffer, at, lanes);
                        let term = f(b, value);
                        let sum = if lanes == 4 { full } else { tail };
                        b.set(sum, LoopExpr::Binary(BinaryOp::Add, term, sum));
                    }
                });
                finish_sum(b, full, tail, rest)
            };
            let (mean, r) = moments(b, pixels * size, attrs.eps, &group_sum);
            // x̂, ∂y and ∂y·γ at pixel `p`, channels `channel + [0, lanes)`.
            let load = |b: &mut KernelBuilder, p: &Affine, channel: &Affine, lanes: u8| {
                let at = p.clone() * c + channel.clone();
                let value = b.load(x.buffer, at.clone(), lanes);
                let deviation = b.binary(BinaryOp::Sub, value, mean);
                let normalized = b.binary(BinaryOp::Mul, deviation, r);
                let dy = b.load(grad, at, lanes);
                let scaled = match gamma {
                    Some(gamma) => {
                        let g = b.load(gamma, channel.clone(), lanes);
                        b.binary(BinaryOp::Mul, dy, g)
                    }
                    None => dy,
                };
                (normalized, dy, scaled)
            };
            let sums: Vec<Reg> = (0..4).map(|_| b.constant(0.0)).collect();
            let (full_a, full_b, tail_a, tail_b) = (sums[0], sums[1], sums[2], sums[3]);
            b.repeat(pixels, |b, p| {
                for (c0, lanes) in channel_vectors(size) {
                    let channel = first.clone() + c0;
                    let (normalized, dy, scaled) = load(b, &p, &channel, lanes);
                    add_affine_grads(b, (dgamma, dbeta), channel, lanes, (dy, normalized));
                    if target.is_some() {
                        let (sa, sb) = if lanes == 4 {
                            (full_a, full_b)
                        } else {
                            (tail_a, tail_b)
                        };
                        b.set(sa, LoopExpr::Binary(BinaryOp::Add, sa, scaled));
                        b.set(sb, LoopExpr::Fma(scaled, normalized, sb));
                    }
                }
            });
            let Some((target, accumulate)) = target else {
                return;
            };
            let sum_a = finish_sum(b, full_a, tail_a, rest);
            let sum_b = finish_sum(b, full_b, tail_b, rest);
            let inverse_count = b.constant(1.0 / (pixels * size) as f32);
            let mean_a = b.binary(BinaryOp::Mul, sum_a, inverse_count);
            let mean_b = b.binary(BinaryOp::Mul, sum_b, inverse_count);
            let zero = b.constant(0.0);
            let minus_b = b.binary(BinaryOp::Sub, zero, mean_b);
            b.repeat(pixels, |b, p| {
                for (c0, lanes) in channel_vectors(size) {
                    let channel = first.clone() + c0;
                    let (normalized, _, scaled) = load(b, &p, &channel, lanes);
                    let centred = b.binary(BinaryOp::Sub, scaled, mean_a);
                    let inner = b.assign(LoopExpr::Fma(normalized, minus_b, centred));
                    let dx = b.binary(BinaryOp::Mul, inner, r);
                    let at = p.clone() * c + channel;
                    b.store_or_add(target, at, lanes, dx, accumulate);
                }
            });
        });
        self.lowering.emit(b);
        Ok(())
    }
}

/// The total of a sum kept as full vectors (`full`, lane by lane) and partial ones of `rest`
/// lanes (`tail`), in every lane of `full`.
fn finish_sum(b: &mut KernelBuilder, full: Reg, tail: Reg, rest: u8) -> Reg {
    b.set(full, LoopExpr::Reduce(ReduceOp::Add, full, 4));
    if rest > 0 {
        let reduced = b.assign(LoopExpr::Reduce(ReduceOp::Add, tail, rest));
        b.set(full, LoopExpr::Binary(BinaryOp::Add, reduced, full));
    }
    full
}
