//! Dropout: the identity at inference; `p` is kept for training and the dump.

use super::signature::{Layer, Param, ParamDefault, ParamKind, X};
use super::{Arity, Category, Op, OpRule};
use crate::graph::{ParamSpec, Shape, ShapeError};
use crate::reference::{Forward, RunError, Tensor};

/// The `Op::Dropout` variant's field.
pub struct DropoutAttrs {
    pub p: f64,
}

pub(super) const DROPOUT: Layer<2> = Layer {
    name: "dropout",
    params: [X, Param::new("p", ParamKind::Real, ParamDefault::Real(0.5))],
    build: |[_, p], _| Some(Op::Dropout { p: p.real()? }),
};

impl OpRule for DropoutAttrs {
    fn name(&self) -> &'static str {
        DROPOUT.name
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
        format!("p={}", self.p)
    }

    fn category(&self) -> Category {
        Category::Other
    }

    fn reference_forward(&self, cx: &Forward, args: &[&Tensor]) -> Result<Tensor, RunError> {
        Ok(cx.arg(args, 0)?.clone())
    }
}
