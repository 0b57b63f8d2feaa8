//! Elementwise difference and quotient of two tensors (`x - y`, `x / y`), as PyTorch's
//! tensor–tensor operators, with `*`'s broadcasting: the shapes are equal, or one operand is
//! 1×1×C with the other's channels and is broadcast over its pixels (`x - mean`,
//! `x / scale`). Written as an expression, not called as a layer. `+` and `*` are `Op::Add`
//! and `Op::Mul`, which the optimizer knows how to fuse.

use super::gradient::{GradRule, Gradients, TrainingMode, Wanted};
use super::mul::{broadcast_shape, sum_to_shape_of};
use super::{Arity, Category, OpRule};
use crate::graph::{ParamSpec, Shape, ShapeError};
use crate::reference::{Forward, RunError, Tensor};

/// `Op::Arithmetic`: which operator; the left operand is the node's first input.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ArithmeticOp {
    /// `x − y`.
    Sub,
    /// `x / y`.
    Div,
}

impl OpRule for ArithmeticOp {
    fn name(&self) -> &'static str {
        match self {
            ArithmeticOp::Sub => "sub",
            ArithmeticOp::Div => "div",
        }
    }

    fn arity(&self) -> Arity {
        Arity::Two
    }

    fn output_shape(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let (left, right) = (inputs[0], inputs[1]);
        broadcast_shape(left, right).ok_or(ShapeError::BroadcastMismatch {
            op: *self,
            left,
            right,
        })
    }

    fn params(&self, _input: Shape) -> Vec<ParamSpec> {
        Vec::new()
    }

    fn macs(&self, _input: Shape, _output: Shape) -> u64 {
        0
    }

    fn dump_attrs(&self) -> String {
        String::new()
    }

    fn category(&self) -> Category {
        Category::Merge
    }

    fn reference_forward(&self, cx: &Forward, args: &[&Tensor]) -> Result<Tensor, RunError> {
        let (a, b) = (cx.arg(args, 0)?, cx.arg(args, 1)?);
        if !super::mul::tensors_broadcast(a, b) {
            return Err(cx.malformed("shapes do not broadcast"));
        }
        // ndarray's arithmetic on references broadcasts both ways, as for `Op::Mul`.
        Ok(match self {
            ArithmeticOp::Sub => a - b,
            ArithmeticOp::Div => a / b,
        })
    }
}

impl GradRule for ArithmeticOp {
    /// `x − y`: `dx = g`, `dy = −g`; `x / y`: `dx = g / y`, `dy = −g·x / y²`; each summed back
    /// over the pixels a 1×1×C operand was broadcast across.
    fn reference_backward(
        &self,
        cx: &Forward,
        _mode: TrainingMode,
        args: &[&Tensor],
        _output: &Tensor,
        grad: &Tensor,
        wanted: Wanted,
    ) -> Result<Gradients, RunError> {
        let (a, b) = (cx.arg(args, 0)?, cx.arg(args, 1)?);
        let (da, db) = match self {
            ArithmeticOp::Sub => (
                wanted.inputs.then(|| sum_to_shape_of(grad.clone(), a)),
                wanted.inputs.then(|| sum_to_shape_of(-grad, b)),
            ),
            ArithmeticOp::Div => (
                wanted.inputs.then(|| sum_to_shape_of(grad / b, a)),
                wanted
                    .inputs
                    .then(|| sum_to_shape_of(-(grad * a) / &(b * b), b)),
            ),
        };
        Ok(Gradients {
            inputs: vec![da, db],
            params: Vec::new(),
        })
    }
}
