//! Elementwise sum of two tensors of one shape (`add`, and `+` on tensors).

use super::signature::{Layer, Param, X};
use super::{Arity, Category, Op, OpRule};
use crate::graph::{ParamSpec, Shape, ShapeError};
use crate::reference::{Forward, RunError, Tensor};

/// `Op::Add`, which has no attributes.
pub struct AddAttrs;

pub(super) const ADD: Layer<2> = Layer {
    name: "add",
    params: [X, Param::tensor("y")],
    build: |_, _| Some(Op::Add),
};

impl OpRule for AddAttrs {
    fn name(&self) -> &'static str {
        ADD.name
    }

    fn arity(&self) -> Arity {
        Arity::Two
    }

    fn output_shape(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let (left, right) = (inputs[0], inputs[1]);
        if left == right {
            Ok(left)
        } else {
            Err(ShapeError::AddMismatch { left, right })
        }
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
        if a.dim() != b.dim() {
            return Err(cx.malformed("shapes differ"));
        }
        Ok(a + b)
    }
}

impl super::gradient::GradRule for AddAttrs {
    fn reference_backward(
        &self,
        _cx: &Forward,
        _mode: super::gradient::TrainingMode,
        _args: &[&Tensor],
        _output: &Tensor,
        grad: &Tensor,
        wanted: super::gradient::Wanted,
    ) -> Result<super::gradient::Gradients, RunError> {
        Ok(super::gradient::pass_through(2, grad, wanted))
    }
}
