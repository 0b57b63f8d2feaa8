//! The identity: a named point in the network that computes nothing.

use super::signature::{Layer, X};
use super::{Arity, Category, Op, OpRule};
use crate::graph::{ParamSpec, Shape, ShapeError};
use crate::reference::{Forward, RunError, Tensor};

/// `Op::Identity`, which has no attributes.
pub struct IdentityAttrs;

pub(super) const IDENTITY: Layer<1> = Layer {
    name: "identity",
    params: [X],
    build: |_, _| Some(Op::Identity),
};

impl OpRule for IdentityAttrs {
    fn name(&self) -> &'static str {
        IDENTITY.name
    }

    fn arity(&self) -> Arity {
        Arity::One
    }

    fn output_shape(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        Ok(inputs[0])
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
        Category::Other
    }

    fn reference_forward(&self, cx: &Forward, args: &[&Tensor]) -> Result<Tensor, RunError> {
        Ok(cx.arg(args, 0)?.clone())
    }
}

impl super::gradient::GradRule for IdentityAttrs {
    fn reference_backward(
        &self,
        _cx: &Forward,
        _mode: super::gradient::TrainingMode,
        _args: &[&Tensor],
        _output: &Tensor,
        grad: &Tensor,
        wanted: super::gradient::Wanted,
    ) -> Result<super::gradient::Gradients, RunError> {
        Ok(super::gradient::pass_through(1, grad, wanted))
    }
}
