//! The backward of PReLU, `y = max(0, x) + a·min(0, x)` per channel (or one slope shared by
//! all): with `kept = ∂y` where `x > 0`, else 0, and `rest = ∂y − kept` (exactly `∂y` where
//! `x ≤ 0`, as the reference routes the kink), `∂x = kept + a·rest` and `∂a += Σ rest·x`,
//! without a select, as `leaky_relu`'s backward (`activation.rs`). Pixel by pixel over
//! channel vectors; a shared slope's sum is kept in a register over the whole image.

use super::super::elementwise::channel_vectors;
use super::super::ir::{Affine, BinaryOp, BufferId, LoopExpr, ReduceOp};
use super::super::LowerError;
use super::{Backward, GradLayout};
use crate::graph::{NodeId, PReluAttrs};

impl Backward<'_> {
    pub(super) fn prelu_backward(
        &mut self,
        id: NodeId,
        attrs: PReluAttrs,
        grad: BufferId,
        trainable: bool,
        wants_input: bool,
    ) -> Result<(), LowerError> {
        let x = self.lowering.plain_arg(id, 0)?;
        let s = x.shape;
        let c = s.c;
        let n = attrs.slopes(c);
        let learned = trainable && self.learned(id).contains(&"weight");
        let dslopes = learned
            .then(|| self.param_grad(id, "weight", n, n.next_multiple_of(4), GradLayout::Plain));
        let target = if wants_input {
            let input = self.graph().nodes[id].inputs[0];
            Some(self.grad_target(input))
        } else {
            None
        };
        if dslopes.is_none() && target.is_none() {
            return Ok(());
        }
        let slopes = self.lowering.channel_constant(id, "weight", n);
        let mut b = self.builder(id, "prelu_grad", format!("∂prelu {s}"));
        // A shared slope's sum: full vectors lane by lane, partial ones already reduced.
        let shared_sums = attrs.shared.then(|| (b.constant(0.0), b.constant(0.0)));
        b.repeat(s.h * s.w, |b, p| {
            let shared = attrs.shared.then(|| b.splat(slopes, Affine::constant(0)));
            for (c0, lanes) in channel_vectors(c) {
                let at = p.clone() * c + c0;
                let value = b.load(x.buffer, at.clone(), lanes);
                let dy = b.load(grad, at.clone(), lanes);
                let kept = b.binary(BinaryOp::KeepWherePositive, value, dy);
                let rest = b.binary(BinaryOp::Sub, dy, kept);
                if let Some((target, accumulate)) = target {
                    let slope = match shared {
                        Some(slope) => slope,
                        None => b.load(slopes, Affine::constant(c0), 4),
                    };
                    let dx = b.assign(LoopExpr::Fma(rest, slope, kept));
                    b.store_or_add(target, at, lanes, dx, accumulate);
                }
                let Some(dslopes) = dslopes else {
                    continue;
                };
                match shared_sums {
                    Some((vector, _)) if lanes == 4 => {
                        b.set(vector, LoopExpr::Fma(rest, value, vector));
                    }
                    Some((_, partial)) => {
                        let term = b.binary(BinaryOp::Mul, rest, value);
                        let term = b.assign(LoopExpr::Reduce(ReduceOp::Add, term, lanes));
                        b.set(partial, LoopExpr::Binary(BinaryOp::Add, partial, term));
                    }
                    None => {
                        let at = Affine::constant(c0);
                        let sum = b.load(dslopes, at.clone(), lanes);
                        let sum = b.assign(LoopExpr::Fma(rest, value, sum));
                        b.store(dslopes, at, lanes, sum);
                    }
                }
            }
        });
        if let (Some(dslopes), Some((vector, partial))) = (dslopes, shared_sums) {
            let total = b.assign(LoopExpr::Reduce(ReduceOp::Add, vector, 4));
            let total = b.binary(BinaryOp::Add, total, partial);
            let at = Affine::constant(0);
            let sum = b.load(dslopes, at.clone(), 1);
            let sum = b.binary(BinaryOp::Add, sum, total);
            b.store(dslopes, at, 1, sum);
        }
        self.lowering.emit(b);
        Ok(())
    }
}
