//! PReLU, `max(0, x) + a · min(0, x)` per channel: pixel by pixel over channel vectors, with
//! the slopes packed as a constant (one slope splatted to every lane when it is shared).
//! Both pieces are computed without a select, as `leaky_relu`'s are (`builder.rs`), so a NaN
//! propagates.

use super::elementwise::channel_vectors;
use super::ir::{Affine, BinaryOp, LoopExpr};
use super::{LowerError, Lowering};
use crate::graph::{NodeId, PReluAttrs};

impl Lowering<'_> {
    pub(super) fn prelu(&mut self, id: NodeId, attrs: PReluAttrs) -> Result<(), LowerError> {
        let x = self.arg(id, 0)?;
        let s = x.shape;
        let c = s.c;
        let slopes = self.channel_constant(id, "weight", attrs.slopes(c));
        let out = self.target(id);
        let mut b = self.builder(id, "prelu", format!("prelu {s}"));
        b.parallel(s.h * s.w, |b, p| {
            let shared = attrs.shared.then(|| b.splat(slopes, Affine::constant(0)));
            for (c0, lanes) in channel_vectors(c) {
                let value = b.load(x.buffer, p.clone() * c + c0, lanes);
                let zero = b.constant(0.0);
                let positive = b.binary(BinaryOp::Max, zero, value);
                let negative = b.binary(BinaryOp::Min, zero, value);
                let slope = match shared {
                    Some(slope) => slope,
                    None => b.load(slopes, Affine::constant(c0), 4),
                };
                let y = b.assign(LoopExpr::Fma(negative, slope, positive));
                b.store(
                    out.buffer,
                    out.index(p.clone(), Affine::constant(c0)),
                    lanes,
                    y,
                );
            }
        });
        self.emit(b);
        self.set_target_value(id, out);
        Ok(())
    }
}
