//! The backward of tensor arithmetic: `*` (squeeze-and-excitation's gate), `-`, `/` on two
//! tensors, and the scalar ops (`x + 2`, `1 / x`, …).
//!
//! Two tensors have the same shape, or one is a 1×1×C gate broadcast over the other's
//! pixels. Each operand's gradient is the elementwise rule (`∂a = ∂y·b`, `∂b = ∂y·a` for `*`;
//! `∂y`, `−∂y` for `-`; `∂y/b`, `−∂y·a/b²` for `/`), and a gate's is that summed over the
//! pixels: a reduction kernel per gate, four channel vectors at a time.

use super::super::elementwise::channel_vectors;
use super::super::ir::{Affine, BinaryOp, BufferId, LoopExpr, Reg};
use super::super::{KernelBuilder, LowerError};
use super::Backward;
use crate::graph::{ArithmeticOp, NodeId, OpRule, ScalarAttrs, ScalarOp};

/// Channel vectors reduced at once by a gate's gradient kernel.
const GROUP: usize = 4;

/// The three tensor ops, as their gradient rules see them.
#[derive(Copy, Clone, Debug, PartialEq)]
pub(super) enum TensorOp {
    Mul,
    Sub,
    Div,
}

impl From<ArithmeticOp> for TensorOp {
    fn from(op: ArithmeticOp) -> TensorOp {
        match op {
            ArithmeticOp::Sub => TensorOp::Sub,
            ArithmeticOp::Div => TensorOp::Div,
        }
    }
}

/// Operand `k`'s share of `∂y` at one element, given both operands' values there.
fn operand_grad(b: &mut KernelBuilder, op: TensorOp, k: usize, dy: Reg, x: [Reg; 2]) -> Reg {
    match (op, k) {
        (TensorOp::Mul, 0) => b.binary(BinaryOp::Mul, dy, x[1]),
        (TensorOp::Mul, _) => b.binary(BinaryOp::Mul, dy, x[0]),
        (TensorOp::Sub, 0) => dy,
        (TensorOp::Sub, _) => {
            let zero = b.constant(0.0);
            b.binary(BinaryOp::Sub, zero, dy)
        }
        (TensorOp::Div, 0) => b.binary(BinaryOp::Div, dy, x[1]),
        (TensorOp::Div, _) => {
            // `−(∂y·a)/(b·b)`, the reference's order.
            let product = b.binary(BinaryOp::Mul, dy, x[0]);
            let square = b.binary(BinaryOp::Mul, x[1], x[1]);
            let quotient = b.binary(BinaryOp::Div, product, square);
            let zero = b.constant(0.0);
            b.binary(BinaryOp::Sub, zero, quotient)
        }
    }
}

impl Backward<'_> {
    /// The backward of `a ∘ b` (node `id`) for the wanted operands.
    pub(super) fn tensor_op_backward(
        &mut self,
        id: NodeId,
        op: TensorOp,
        grad: BufferId,
        wants_input: &[bool],
    ) -> Result<(), LowerError> {
        let graph = self.graph();
        let shape = graph.shape(id);
        let inputs = graph.nodes[id].inputs.clone();
        let values = [self.lowering.arg(id, 0)?, self.lowering.arg(id, 1)?];
        // Operand k is a gate when it has fewer elements than the output.
        let gate = values.map(|v| v.shape.numel() != shape.numel());
        if gate.iter().any(|&g| g) && values.iter().any(|v| v.padded.is_some() || v.hwc.is_some()) {
            return Err(self
                .lowering
                .malformed(id, "an operand is not a plain tensor"));
        }
        let buffers = values.map(|v| v.buffer);
        let c = shape.c;
        for k in 0..2 {
            if !wants_input[k] {
                continue;
            }
            let (target, accumulate) = self.grad_target(inputs[k]);
            let what = match op {
                TensorOp::Mul => "mul",
                TensorOp::Sub => "sub",
                TensorOp::Div => "div",
            };
            if !gate[k] {
                let mut b = self.builder(
                    id,
                    "arith_grad",
                    format!("∂ of operand {k} of {what} {shape}"),
                );
                if !gate[1 - k] {
                    b.vectors(shape.numel(), true, &mut |b, at, lanes| {
                        let dy = b.load(grad, at.clone(), lanes);
                        let x = buffers.map(|buffer| b.load(buffer, at.clone(), lanes));
                        let dx = operand_grad(b, op, k, dy, x);
                        b.store_or_add(target, at, lanes, dx, accumulate);
                    });
                } else {
                    b.parallel(shape.h * shape.w, |b, p| {
                        for (c0, lanes) in channel_vectors(c) {
                            let at = p.clone() * c + c0;
                            let dy = b.load(grad, at.clone(), lanes);
                            let x = [0, 1].map(|j| {
                                let index = if gate[j] {
                                    Affine::constant(c0)
                                } else {
                                    at.clone()
                                };
                                b.load(buffers[j], index, lanes)
                            });
                            let dx = operand_grad(b, op, k, dy, x);
                            b.store_or_add(target, at, lanes, dx, accumulate);
                        }
                    });
                }
                self.lowering.emit(b);
                continue;
            }
            // The gate's gradient: the elementwise rule summed over the pixels.
            let pixels = shape.h * shape.w;
            let mut b = self.builder(
                id,
                "gate_grad",
                format!("∂ of the 1×1×{c} gate of {what} {shape}: Σ over {pixels} pixels"),
            );
            let vectors: Vec<(usize, u8)> = channel_vectors(c).collect();
            for group in vectors.chunks(GROUP) {
                let sums: Vec<Reg> = group.iter().map(|_| b.constant(0.0)).collect();
                b.repeat(pixels, |b, p| {
                    for (&(c0, lanes), &sum) in group.iter().zip(&sums) {
                        let at = p.clone() * c + c0;
                        let dy = b.load(grad, at.clone(), lanes);
                        let x = [0, 1].map(|j| {
                            let index = if gate[j] {
                                Affine::constant(c0)
                            } else {
                                at.clone()
                            };
                            b.load(buffers[j], index, lanes)
                        });
                        let share = operand_grad(b, op, k, dy, x);
                        b.set(sum, LoopExpr::Binary(BinaryOp::Add, sum, share));
                    }
                });
                for (&(c0, lanes), &sum) in group.iter().zip(&sums) {
                    b.store_or_add(target, Affine::constant(c0), lanes, sum, accumulate);
                }
            }
            self.lowering.emit(b);
        }
        Ok(())
    }

    /// The backward of `x ∘ c` with a number `c`: `∂x (+)= ∂y · ∂(x ∘ c)/∂x`.
    pub(super) fn scalar_backward(
        &mut self,
        id: NodeId,
        attrs: ScalarAttrs,
        grad: BufferId,
    ) -> Result<(), LowerError> {
        let x = self.lowering.arg(id, 0)?;
        let len = x.shape.numel();
        let input = self.graph().nodes[id].inputs[0];
        let (target, accumulate) = self.grad_target(input);
        let c = attrs.value;
        let mut b = self.builder(
            id,
            "scalar_grad",
            format!("∂ through {} on {}", attrs.dump_attrs(), x.shape),
        );
        b.vectors(len, true, &mut |b, at, lanes| {
            let dy = b.load(grad, at.clone(), lanes);
            let dx = match attrs.op {
                ScalarOp::Add | ScalarOp::Sub => dy,
                ScalarOp::SubFrom => {
                    let zero = b.constant(0.0);
                    b.binary(BinaryOp::Sub, zero, dy)
                }
                ScalarOp::Mul => {
                    let factor = b.constant(c);
                    b.binary(BinaryOp::Mul, dy, factor)
                }
                ScalarOp::Div => {
                    let factor = b.constant(1.0 / c);
                    b.binary(BinaryOp::Mul, dy, factor)
                }
                ScalarOp::DivInto => {
                    // `−c / x²`, the reference's derivative.
                    let value = b.load(x.buffer, at.clone(), lanes);
                    let square = b.binary(BinaryOp::Mul, value, value);
                    let minus_c = b.constant(-c);
                    let derivative = b.binary(BinaryOp::Div, minus_c, square);
                    b.binary(BinaryOp::Mul, dy, derivative)
                }
            };
            b.store_or_add(target, at, lanes, dx, accumulate);
        });
        self.lowering.emit(b);
        Ok(())
    }
}
