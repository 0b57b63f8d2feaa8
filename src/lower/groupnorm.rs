//! Group norm (and instance norm, one channel per group): each group of channels is
//! normalized by the mean and variance of all its values in the image. The groups are split
//! over threads; for each, one pass over the image sums its values, a second sums the squared
//! deviations from the mean (as layer norm does, `norm.rs`), and a third writes
//! `(x − mean) · r (· γ + β)` with `r = 1/√(var + eps)`. A group's channels are read as vectors
//! from any offset; a vector of fewer than 4 channels (the group's last, or every one of an
//! instance norm) is reduced over its lanes only.

use super::elementwise::channel_vectors;
use super::ir::{BinaryOp, LoopExpr, ReduceOp};
use super::norm::{moments, ValueMap};
use super::{KernelBuilder, LowerError, Lowering};
use crate::graph::{GroupNormAttrs, NodeId};

impl Lowering<'_> {
    pub(super) fn group_norm(
        &mut self,
        id: NodeId,
        attrs: GroupNormAttrs,
    ) -> Result<(), LowerError> {
        let x = self.arg(id, 0)?;
        let s = x.shape;
        let c = s.c;
        let groups = attrs.groups;
        if groups == 0 || !c.is_multiple_of(groups) || self.graph.shape(id).numel() != s.numel() {
            return Err(self.malformed(id, "the groups do not divide the channels"));
        }
        let size = c / groups;
        let pixels = s.h * s.w;
        let affine = attrs.affine.then(|| {
            (
                self.channel_constant(id, "weight", c),
                self.channel_constant(id, "bias", c),
            )
        });
        let out = self.target(id);
        let comment = format!("{} {s} in {groups} groups of {size}", attrs_name(attrs));
        let mut b = self.builder(id, "groupnorm", comment);
        b.parallel(groups, |b, g| {
            let first = g * size;
            // Σ f(x) over the group's values, in every lane: full vectors and partial ones
            // are reduced apart, so that a partial vector's empty lanes never count.
            let group_sum = |b: &mut KernelBuilder, f: &ValueMap| {
                let full = b.constant(0.0);
                let rest = (size % 4) as u8;
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
                b.set(full, LoopExpr::Reduce(ReduceOp::Add, full, 4));
                if rest > 0 {
                    let reduced = b.assign(LoopExpr::Reduce(ReduceOp::Add, tail, rest));
                    b.set(full, LoopExpr::Binary(BinaryOp::Add, reduced, full));
                }
                full
            };
            let (mean, inverse_std) = moments(b, pixels * size, attrs.eps, &group_sum);
            b.repeat(pixels, |b, p| {
                for (c0, lanes) in channel_vectors(size) {
                    let channel = first.clone() + c0;
                    let value = b.load(x.buffer, p.clone() * c + channel.clone(), lanes);
                    let deviation = b.binary(BinaryOp::Sub, value, mean);
                    let mut y = b.binary(BinaryOp::Mul, deviation, inverse_std);
                    if let Some((weight, bias)) = affine {
                        let gamma = b.load(weight, channel.clone(), lanes);
                        let beta = b.load(bias, channel.clone(), lanes);
                        y = b.assign(LoopExpr::Fma(y, gamma, beta));
                    }
                    b.store(out.buffer, out.index(p.clone(), channel), lanes, y);
                }
            });
        });
        self.emit(b);
        self.set_target_value(id, out);
        Ok(())
    }
}

fn attrs_name(attrs: GroupNormAttrs) -> &'static str {
    if attrs.instance {
        "instancenorm"
    } else {
        "groupnorm"
    }
}
