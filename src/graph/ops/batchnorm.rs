//! Inference batch norm with running statistics, per channel.

use super::signature::{Layer, Param, ParamDefault, ParamKind, X};
use super::{buffer, param, Arity, Category, Op, OpRule};
use crate::graph::{Init, ParamSpec, Shape, ShapeError};
use crate::reference::{Forward, RunError, Tensor};
use ndarray::{CowArray, IxDyn};

/// The `Op::BatchNorm` variant's field.
pub struct BatchNormAttrs {
    pub eps: f64,
}

pub(super) const BATCHNORM: Layer<2> = Layer {
    name: "batchnorm",
    params: [
        X,
        Param::new("eps", ParamKind::Real, ParamDefault::Real(1e-5)),
    ],
    build: |[_, eps], _| Some(Op::BatchNorm { eps: eps.real()? }),
};

impl OpRule for BatchNormAttrs {
    fn name(&self) -> &'static str {
        BATCHNORM.name
    }

    fn arity(&self) -> Arity {
        Arity::One
    }

    fn output_shape(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        Ok(inputs[0])
    }

    fn params(&self, input: Shape) -> Vec<ParamSpec> {
        // PyTorch initializes a fresh batch norm to the identity: weight and running
        // variance 1, bias and running mean 0.
        let c = vec![input.c];
        vec![
            param("weight", c.clone(), Init::Constant(1.0)),
            param("bias", c.clone(), Init::Constant(0.0)),
            buffer("running_mean", c.clone(), Init::Constant(0.0)),
            buffer("running_var", c, Init::Constant(1.0)),
        ]
    }

    fn macs(&self, _input: Shape, _output: Shape) -> u64 {
        0
    }

    fn dump_attrs(&self) -> String {
        format!("eps={:e}", self.eps)
    }

    fn category(&self) -> Category {
        Category::Other
    }

    fn reference_forward(&self, cx: &Forward, args: &[&Tensor]) -> Result<Tensor, RunError> {
        let c = [cx.shape.c];
        let get = |suffix| cx.tensor(suffix, &c, None);
        let (weight, bias) = (get("weight")?, get("bias")?);
        let (mean, var) = (get("running_mean")?, get("running_var")?);
        Ok(batch_norm(
            cx.arg(args, 0)?,
            &weight,
            &bias,
            &mean,
            &var,
            self.eps,
        ))
    }
}

/// Inference batch norm with running statistics:
/// `(x − running_mean) / sqrt(running_var + eps) · weight + bias`, per channel.
fn batch_norm(
    x: &Tensor,
    weight: &CowArray<f32, IxDyn>,
    bias: &CowArray<f32, IxDyn>,
    mean: &CowArray<f32, IxDyn>,
    var: &CowArray<f32, IxDyn>,
    eps: f64,
) -> Tensor {
    let mut y = x.clone();
    for ((_, _, _, c), value) in y.indexed_iter_mut() {
        let normalized =
            (f64::from(*value) - f64::from(mean[[c]])) / (f64::from(var[[c]]) + eps).sqrt();
        *value = (normalized * f64::from(weight[[c]]) + f64::from(bias[[c]])) as f32;
    }
    y
}
