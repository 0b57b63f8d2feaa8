//! The backward of a `parameter` layer (a learned `[C, 1, 1]` tensor named by its label,
//! ConvNeXt's `layer_scale`): its value is the tensor itself, so `∂param += ∂y`; the input
//! only gave the channel count and receives no gradient.

use super::super::elementwise::channel_vectors;
use super::super::ir::{Affine, BinaryOp, BufferId};
use super::super::LowerError;
use super::{Backward, GradLayout};
use crate::graph::{NodeId, PARAMETER_SUFFIX};

impl Backward<'_> {
    pub(super) fn parameter_backward(
        &mut self,
        id: NodeId,
        grad: BufferId,
        trainable: bool,
    ) -> Result<(), LowerError> {
        if !trainable || !self.learned(id).contains(&PARAMETER_SUFFIX) {
            return Ok(());
        }
        let c = self.graph().shape(id).c;
        let padded = c.next_multiple_of(4);
        let acc = self.param_grad(id, PARAMETER_SUFFIX, c, padded, GradLayout::Plain);
        let mut b = self.builder(id, "parameter_grad", format!("∂parameter 1×1×{c}"));
        for (c0, lanes) in channel_vectors(c) {
            let at = Affine::constant(c0);
            let dy = b.load(grad, at.clone(), lanes);
            let sum = b.load(acc, at.clone(), lanes);
            let sum = b.binary(BinaryOp::Add, sum, dy);
            b.store(acc, at, lanes, sum);
        }
        self.lowering.emit(b);
        Ok(())
    }
}
