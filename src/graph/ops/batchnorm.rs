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
        let get = |suffix| cx.tensor(suffix, &c);
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

/// Per-channel mean and biased variance over batch × pixels, in f64, as PyTorch's training
/// mode normalizes with. The trainer's running-statistics update reads them too.
pub(crate) fn batch_statistics(x: &Tensor) -> (Vec<f64>, Vec<f64>) {
    let channels = x.dim().3;
    let count = (x.len() / channels.max(1)) as f64;
    let mut mean = vec![0.0f64; channels];
    for ((_, _, _, c), &v) in x.indexed_iter() {
        mean[c] += f64::from(v);
    }
    mean.iter_mut().for_each(|m| *m /= count);
    let mut var = vec![0.0f64; channels];
    for ((_, _, _, c), &v) in x.indexed_iter() {
        var[c] += (f64::from(v) - mean[c]).powi(2);
    }
    var.iter_mut().for_each(|v| *v /= count);
    (mean, var)
}

impl super::gradient::GradRule for BatchNormAttrs {
    /// In training, normalizes with the batch's statistics (biased variance); the running
    /// statistics' update is the trainer's (it needs the unbiased variance, PyTorch's rule).
    fn training_forward(
        &self,
        cx: &Forward,
        mode: super::gradient::TrainingMode,
        args: &[&Tensor],
    ) -> Result<Tensor, RunError> {
        if !mode.training {
            return self.reference_forward(cx, args);
        }
        let c = [cx.shape.c];
        let (weight, bias) = (cx.tensor("weight", &c)?, cx.tensor("bias", &c)?);
        let x = cx.arg(args, 0)?;
        let (mean, var) = batch_statistics(x);
        let mut y = x.clone();
        for ((_, _, _, c), value) in y.indexed_iter_mut() {
            let normalized = (f64::from(*value) - mean[c]) / (var[c] + self.eps).sqrt();
            *value = (normalized * f64::from(weight[[c]]) + f64::from(bias[[c]])) as f32;
        }
        Ok(y)
    }

    /// With `x̂ = (x − μ)/σ` over M = batch × pixels values per channel: `dβ = Σ g`,
    /// `dγ = Σ g·x̂`, and in training `dx = γ/σ · (g − dβ/M − x̂·dγ/M)` (the statistics
    /// depend on `x`); at inference `dx = γ/σ · g` with the running statistics.
    fn reference_backward(
        &self,
        cx: &Forward,
        mode: super::gradient::TrainingMode,
        args: &[&Tensor],
        _output: &Tensor,
        grad: &Tensor,
        wanted: super::gradient::Wanted,
    ) -> Result<super::gradient::Gradients, RunError> {
        let channels = cx.shape.c;
        let c = [channels];
        let weight = cx.tensor("weight", &c)?;
        let x = cx.arg(args, 0)?;
        let (mean, var) = if mode.training {
            batch_statistics(x)
        } else {
            let get = |suffix| cx.tensor(suffix, &c);
            let (mean, var) = (get("running_mean")?, get("running_var")?);
            (
                mean.iter().map(|&v| f64::from(v)).collect(),
                var.iter().map(|&v| f64::from(v)).collect(),
            )
        };
        let sigma: Vec<f64> = var.iter().map(|v| (v + self.eps).sqrt()).collect();
        let mut d_beta = vec![0.0f64; channels];
        let mut d_gamma = vec![0.0f64; channels];
        for (((_, _, _, c), &g), &v) in grad.indexed_iter().zip(x.iter()) {
            let x_hat = (f64::from(v) - mean[c]) / sigma[c];
            d_beta[c] += f64::from(g);
            d_gamma[c] += f64::from(g) * x_hat;
        }
        let count = (x.len() / channels.max(1)) as f64;
        let dx = wanted.inputs.then(|| {
            let mut dx = grad.clone();
            for (((_, _, _, c), d), &v) in dx.indexed_iter_mut().zip(x.iter()) {
                let scale = f64::from(weight[[c]]) / sigma[c];
                let g = f64::from(*d);
                *d = if mode.training {
                    let x_hat = (f64::from(v) - mean[c]) / sigma[c];
                    scale * (g - d_beta[c] / count - x_hat * d_gamma[c] / count)
                } else {
                    scale * g
                } as f32;
            }
            dx
        });
        let to_tensor = |values: Vec<f64>| {
            ndarray::Array1::from_iter(values.into_iter().map(|v| v as f32)).into_dyn()
        };
        let params = if wanted.params {
            vec![("weight", to_tensor(d_gamma)), ("bias", to_tensor(d_beta))]
        } else {
            Vec::new()
        };
        Ok(super::gradient::Gradients {
            inputs: vec![dx],
            params,
        })
    }
}
