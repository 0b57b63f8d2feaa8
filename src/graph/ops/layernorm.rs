//! Layer norm over the channels of each pixel: PyTorch's `nn.LayerNorm(C)` on an N×H×W×C
//! tensor, which is also torchvision's `LayerNorm2d` on N×C×H×W (ConvNeXt). Each pixel's C
//! values are normalized by their own mean and biased variance, then scaled and shifted per
//! channel by the learned `weight` and `bias` of shape `[C]`. On a flat vector the features
//! are the channels.

use super::signature::{Layer, Param, ParamDefault, ParamKind, X};
use super::{param, Arity, Category, Op, OpRule};
use crate::graph::{Init, ParamSpec, Shape, ShapeError};
use crate::reference::{Forward, RunError, Tensor};
use ndarray::{Axis, CowArray, IxDyn};

/// The `Op::LayerNorm` variant's payload.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct LayerNormAttrs {
    pub eps: f64,
}

/// PyTorch's default; ConvNeXt writes `eps: 1e-6`, as torchvision builds it.
pub(super) const LAYERNORM: Layer<2> = Layer {
    name: "layernorm",
    params: [
        X,
        Param::new("eps", ParamKind::Real, ParamDefault::Real(1e-5)),
    ],
    build: |[_, eps], _| Some(Op::LayerNorm(LayerNormAttrs { eps: eps.real()? })),
};

impl OpRule for LayerNormAttrs {
    fn name(&self) -> &'static str {
        LAYERNORM.name
    }

    fn arity(&self) -> Arity {
        Arity::One
    }

    fn output_shape(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        Ok(inputs[0])
    }

    fn params(&self, input: Shape) -> Vec<ParamSpec> {
        // PyTorch starts a layer norm as the identity affine map.
        vec![
            param("weight", vec![input.c], Init::Constant(1.0)),
            param("bias", vec![input.c], Init::Constant(0.0)),
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
        let (weight, bias) = (cx.tensor("weight", &c)?, cx.tensor("bias", &c)?);
        Ok(layer_norm(cx.arg(args, 0)?, &weight, &bias, self.eps))
    }
}

/// Each pixel's mean and `1/√(biased variance + eps)`, in f64.
fn pixel_statistics(values: impl Iterator<Item = f32> + Clone, eps: f64) -> (f64, f64) {
    let count = values.clone().count().max(1) as f64;
    let mean = values.clone().map(f64::from).sum::<f64>() / count;
    let var = values.map(|v| (f64::from(v) - mean).powi(2)).sum::<f64>() / count;
    (mean, 1.0 / (var + eps).sqrt())
}

/// `(x − mean) / √(var + eps) · weight + bias` over the channels of each pixel.
fn layer_norm(
    x: &Tensor,
    weight: &CowArray<f32, IxDyn>,
    bias: &CowArray<f32, IxDyn>,
    eps: f64,
) -> Tensor {
    let mut y = x.clone();
    for mut lane in y.lanes_mut(Axis(3)) {
        let (mean, inv_std) = pixel_statistics(lane.iter().copied(), eps);
        for (c, value) in lane.iter_mut().enumerate() {
            let normalized = (f64::from(*value) - mean) * inv_std;
            *value = (normalized * f64::from(weight[[c]]) + f64::from(bias[[c]])) as f32;
        }
    }
    y
}

impl super::gradient::GradRule for LayerNormAttrs {
    /// With `x̂ = (x − μ)/σ` over a pixel's C channels and `ĝ = g·γ`: `dγ = Σ g·x̂` and
    /// `dβ = Σ g` over the batch and pixels, and per pixel
    /// `dx = (ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)) / σ`.
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
        let channels = cx.shape.c;
        let weight = cx.tensor("weight", &[channels])?;
        let mut dx = Tensor::zeros(x.raw_dim());
        let mut dweight = vec![0.0f64; channels];
        let mut dbias = vec![0.0f64; channels];
        let lanes = x.lanes(Axis(3)).into_iter();
        let grads = grad.lanes(Axis(3)).into_iter();
        for ((lane, g), mut d) in lanes.zip(grads).zip(dx.lanes_mut(Axis(3))) {
            let (mean, inv_std) = pixel_statistics(lane.iter().copied(), self.eps);
            let x_hat: Vec<f64> = lane
                .iter()
                .map(|&v| (f64::from(v) - mean) * inv_std)
                .collect();
            let g_hat: Vec<f64> = g
                .iter()
                .zip(weight.iter())
                .map(|(&g, &w)| f64::from(g) * f64::from(w))
                .collect();
            let n = channels.max(1) as f64;
            let mean_g = g_hat.iter().sum::<f64>() / n;
            let mean_gx = g_hat.iter().zip(&x_hat).map(|(a, b)| a * b).sum::<f64>() / n;
            for c in 0..channels {
                d[c] = ((g_hat[c] - mean_g - x_hat[c] * mean_gx) * inv_std) as f32;
                dweight[c] += f64::from(g[c]) * x_hat[c];
                dbias[c] += f64::from(g[c]);
            }
        }
        let to_array = |values: Vec<f64>| {
            ndarray::Array1::from_iter(values.into_iter().map(|v| v as f32)).into_dyn()
        };
        let params = if wanted.params {
            vec![("weight", to_array(dweight)), ("bias", to_array(dbias))]
        } else {
            Vec::new()
        };
        Ok(super::gradient::Gradients {
            inputs: vec![wanted.inputs.then_some(dx)],
            params,
        })
    }
}
