//! Softmax over the channels of each pixel (the features of a flat vector).

use super::signature::{Layer, X};
use super::{Arity, Category, Op, OpRule};
use crate::graph::{ParamSpec, Shape, ShapeError};
use crate::reference::{Forward, RunError, Tensor};
use ndarray::Axis;

/// `Op::Softmax`, which has no attributes.
pub struct SoftmaxAttrs;

pub(super) const SOFTMAX: Layer<1> = Layer {
    name: "softmax",
    params: [X],
    build: |_, _| Some(Op::Softmax),
};

impl OpRule for SoftmaxAttrs {
    fn name(&self) -> &'static str {
        SOFTMAX.name
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
        Ok(softmax(cx.arg(args, 0)?))
    }
}

/// Softmax over the channels of each pixel (over the features of a flat vector), with the
/// maximum subtracted first so large logits cannot overflow `exp`.
fn softmax(x: &Tensor) -> Tensor {
    let mut y = x.clone();
    for mut lane in y.lanes_mut(Axis(3)) {
        let max = lane.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<f64> = lane.iter().map(|&v| f64::from(v - max).exp()).collect();
        let total: f64 = exps.iter().sum();
        for (value, e) in lane.iter_mut().zip(exps) {
            *value = (e / total) as f32;
        }
    }
    y
}

impl super::gradient::GradRule for SoftmaxAttrs {
    /// `dx = y ⊙ (g − Σ g·y)` over each pixel's channels.
    fn reference_backward(
        &self,
        _cx: &Forward,
        _mode: super::gradient::TrainingMode,
        _args: &[&Tensor],
        output: &Tensor,
        grad: &Tensor,
        wanted: super::gradient::Wanted,
    ) -> Result<super::gradient::Gradients, RunError> {
        Ok(super::gradient::one_input(wanted, || {
            let mut dx = grad.clone();
            for (mut d, y) in dx.lanes_mut(Axis(3)).into_iter().zip(output.lanes(Axis(3))) {
                let dot: f64 = d
                    .iter()
                    .zip(y.iter())
                    .map(|(&g, &y)| f64::from(g) * f64::from(y))
                    .sum();
                for (d, &y) in d.iter_mut().zip(y.iter()) {
                    *d = (f64::from(y) * (f64::from(*d) - dot)) as f32;
                }
            }
            dx
        }))
    }
}
