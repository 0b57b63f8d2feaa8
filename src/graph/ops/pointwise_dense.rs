//! A dense layer applied at every pixel: `pointwise_dense(units)` maps each pixel's C
//! channels to `units` channels by `y = W·x + b`, with PyTorch's `Linear` weight `[units, C]`
//! and bias `[units]`, as `nn.Linear` does on an N×H×W×C tensor (ConvNeXt's blocks). It
//! computes what a 1×1 convolution computes, but its weight has the `Linear` shape, so a
//! PyTorch checkpoint loads as it is.
//!
//! It is a layer of its own rather than `dense` on an image so that `dense` keeps rejecting
//! an image (`needs-flat`): a forgotten `flatten` before a classifier stays an error.

use super::dense::{dense, DenseAttrs};
use super::gradient::GradRule;
use super::signature::{Layer, Param, ParamDefault, ParamKind, X};
use super::{param, Arity, Category, Op, OpRule};
use crate::graph::infer::{checked_numel, positive};
use crate::graph::{Init, ParamSpec, Shape, ShapeError};
use crate::reference::{Forward, RunError, Tensor};

/// The `Op::PointwiseDense` variant's payload.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PointwiseDenseAttrs {
    pub units: usize,
    pub bias: bool,
}

pub(super) const POINTWISE_DENSE: Layer<3> = Layer {
    name: "pointwise_dense",
    params: [
        X,
        Param::new("units", ParamKind::Count { min: 1 }, ParamDefault::Required),
        Param::new("bias", ParamKind::Flag, ParamDefault::Flag(true)),
    ],
    build: |[_, units, bias], _| {
        Some(Op::PointwiseDense(PointwiseDenseAttrs {
            units: units.count()?,
            bias: bias.flag()?,
        }))
    },
};

impl PointwiseDenseAttrs {
    /// The same layer on one pixel: an ordinary dense layer.
    fn as_dense(self) -> DenseAttrs {
        DenseAttrs {
            units: self.units,
            bias: self.bias,
            weights: None,
            bias_values: None,
            activation: None,
        }
    }
}

/// `x` as a batch of pixels, N·H·W×1×1×C, the shape the dense layer's reference reads.
fn pixels(x: &Tensor) -> Result<Tensor, RunError> {
    let (n, h, w, c) = x.dim();
    x.as_standard_layout()
        .into_owned()
        .into_shape_with_order((n * h * w, 1, 1, c))
        .map_err(|e| RunError::Malformed(format!("pointwise dense: {e}")))
}

/// A batch of pixels back to N×H×W×C.
fn image(x: Tensor, (n, h, w): (usize, usize, usize)) -> Result<Tensor, RunError> {
    let c = x.dim().3;
    x.into_shape_with_order((n, h, w, c))
        .map_err(|e| RunError::Malformed(format!("pointwise dense: {e}")))
}

impl OpRule for PointwiseDenseAttrs {
    fn name(&self) -> &'static str {
        POINTWISE_DENSE.name
    }

    fn arity(&self) -> Arity {
        Arity::One
    }

    fn output_shape(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let input = inputs[0];
        positive(self.units, "the number of units")?;
        checked_numel(&[self.units, input.c], "the weight tensor")?;
        checked_numel(&[input.h, input.w, self.units], "the output")?;
        Ok(Shape {
            c: self.units,
            ..input
        })
    }

    fn params(&self, input: Shape) -> Vec<ParamSpec> {
        let init = Init::Uniform { fan_in: input.c };
        let mut out = vec![param("weight", vec![self.units, input.c], init)];
        if self.bias {
            out.push(param("bias", vec![self.units], init));
        }
        out
    }

    fn macs(&self, input: Shape, _output: Shape) -> u64 {
        (input.h * input.w) as u64 * input.c as u64 * self.units as u64
    }

    fn dump_attrs(&self) -> String {
        let mut s = format!("units={}", self.units);
        if !self.bias {
            s.push_str(" bias=false");
        }
        s
    }

    fn category(&self) -> Category {
        Category::Weighted
    }

    fn reference_forward(&self, cx: &Forward, args: &[&Tensor]) -> Result<Tensor, RunError> {
        let x = cx.arg(args, 0)?;
        let (n, h, w, _) = x.dim();
        let weight = cx.tensor("weight", &[self.units, cx.input_shape().c])?;
        let bias = cx.bias(self.units)?;
        let y = dense(&pixels(x)?, &weight, bias.as_ref(), None);
        image(y, (n, h, w))
    }
}

impl GradRule for PointwiseDenseAttrs {
    /// The dense layer's gradients on the batch of pixels.
    fn reference_backward(
        &self,
        cx: &Forward,
        mode: super::gradient::TrainingMode,
        args: &[&Tensor],
        output: &Tensor,
        grad: &Tensor,
        wanted: super::gradient::Wanted,
    ) -> Result<super::gradient::Gradients, RunError> {
        let x = cx.arg(args, 0)?;
        let (n, h, w, _) = x.dim();
        let (flat_x, flat_grad) = (pixels(x)?, pixels(grad)?);
        let mut gradients = self.as_dense().reference_backward(
            cx,
            mode,
            &[&flat_x],
            &pixels(output)?,
            &flat_grad,
            wanted,
        )?;
        if let Some(dx) = gradients.inputs.first_mut() {
            if let Some(flat) = dx.take() {
                *dx = Some(image(flat, (n, h, w))?);
            }
        }
        Ok(gradients)
    }
}
