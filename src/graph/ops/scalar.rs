//! Arithmetic between a tensor and a number (`x + 3`, `x / 6`, `1 - x`), elementwise, as
//! PyTorch's tensor–scalar operators. Written as an expression, not called as a layer.

use super::{Arity, Category, OpRule};
use crate::graph::{ParamSpec, Shape, ShapeError};
use crate::reference::{Forward, RunError, Tensor};

/// Which operator, and on which side the number stands.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ScalarOp {
    /// `x + c` (or `c + x`).
    Add,
    /// `x − c`.
    Sub,
    /// `c − x`.
    SubFrom,
    /// `x · c` (or `c · x`).
    Mul,
    /// `x / c`.
    Div,
    /// `c / x`.
    DivInto,
}

/// `Op::Scalar`: the operator and the number, compared by its bits.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct ScalarAttrs {
    pub op: ScalarOp,
    pub value: f32,
}

impl ScalarAttrs {
    /// The result on one element, in f32 as every backend computes it.
    pub fn apply(&self, x: f32) -> f32 {
        let c = self.value;
        match self.op {
            ScalarOp::Add => x + c,
            ScalarOp::Sub => x - c,
            ScalarOp::SubFrom => c - x,
            ScalarOp::Mul => x * c,
            ScalarOp::Div => x / c,
            ScalarOp::DivInto => c / x,
        }
    }

    /// The derivative with respect to the tensor at `x`.
    fn derivative(&self, x: f32) -> f32 {
        let c = self.value;
        match self.op {
            ScalarOp::Add | ScalarOp::Sub => 1.0,
            ScalarOp::SubFrom => -1.0,
            ScalarOp::Mul => c,
            ScalarOp::Div => 1.0 / c,
            ScalarOp::DivInto => -c / (x * x),
        }
    }

    pub fn symbol(&self) -> &'static str {
        match self.op {
            ScalarOp::Add => "+",
            ScalarOp::Sub | ScalarOp::SubFrom => "-",
            ScalarOp::Mul => "*",
            ScalarOp::Div | ScalarOp::DivInto => "/",
        }
    }
}

impl OpRule for ScalarAttrs {
    fn name(&self) -> &'static str {
        "scalar"
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
        match self.op {
            ScalarOp::SubFrom | ScalarOp::DivInto => format!("{} {} x", self.value, self.symbol()),
            _ => format!("x {} {}", self.symbol(), self.value),
        }
    }

    fn category(&self) -> Category {
        Category::Other
    }

    fn reference_forward(&self, cx: &Forward, args: &[&Tensor]) -> Result<Tensor, RunError> {
        Ok(cx.arg(args, 0)?.mapv(|x| self.apply(x)))
    }
}

impl super::gradient::GradRule for ScalarAttrs {
    fn reference_backward(
        &self,
        cx: &Forward,
        _mode: super::gradient::TrainingMode,
        args: &[&Tensor],
        _output: &Tensor,
        grad: &Tensor,
        wanted: super::gradient::Wanted,
    ) -> Result<super::gradient::Gradients, RunError> {
        let x = cx.arg(args, 0)?;
        Ok(super::gradient::one_input(wanted, || {
            let mut dx = grad.clone();
            dx.zip_mut_with(x, |g, &x| *g *= self.derivative(x));
            dx
        }))
    }
}
