//! Dense (fully connected) layers on a flat input: `y = W·x + b`, PyTorch's `Linear`.

use super::conv::{dot, finish};
use super::literal::check_literal;
use super::signature::{Layer, Param, ParamDefault, ParamKind, X};
use super::{param, Activation, Arity, Category, Literal, Op, OpRule};
use crate::graph::infer::{checked_numel, positive};
use crate::graph::{Init, ParamSpec, Shape, ShapeError};
use crate::reference::{Forward, RunError, Tensor};
use ndarray::{Array4, CowArray, Ix1, IxDyn};
use std::fmt::Write;

#[derive(Clone, Debug, PartialEq)]
pub struct DenseAttrs {
    pub units: usize,
    pub bias: bool,
    pub weights: Option<Literal>,
    pub bias_values: Option<Literal>,
    pub activation: Option<Activation>,
}

pub(super) const DENSE: Layer<4> = Layer {
    name: "dense",
    params: [
        X,
        Param::new("units", ParamKind::Count { min: 1 }, ParamDefault::Required),
        Param::new("bias", ParamKind::Bias, ParamDefault::Absent),
        Param::new("weights", ParamKind::Literal, ParamDefault::Absent),
    ],
    build: |[_, units, bias, weights], _input| {
        let (bias, bias_values) = bias.bias()?;
        Some(Op::Dense(DenseAttrs {
            units: units.count()?,
            bias,
            weights: weights.literal()?,
            bias_values,
            activation: None,
        }))
    },
};

impl OpRule for DenseAttrs {
    fn name(&self) -> &'static str {
        DENSE.name
    }

    fn arity(&self) -> Arity {
        Arity::One
    }

    fn output_shape(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let input = inputs[0];
        if !input.flat {
            return Err(ShapeError::NeedsFlat { shape: input });
        }
        positive(self.units, "the number of units")?;
        checked_numel(&[self.units, input.c], "the weight tensor")?;
        check_literal("weights", self.weights.as_ref(), &[self.units, input.c])?;
        check_literal("bias values", self.bias_values.as_ref(), &[self.units])?;
        Ok(Shape::flat(self.units))
    }

    fn params(&self, input: Shape) -> Vec<ParamSpec> {
        let init = Init::Uniform { fan_in: input.c };
        let mut out = Vec::new();
        if self.weights.is_none() {
            out.push(param("weight", vec![self.units, input.c], init));
        }
        if self.bias && self.bias_values.is_none() {
            out.push(param("bias", vec![self.units], init));
        }
        out
    }

    fn macs(&self, input: Shape, _output: Shape) -> u64 {
        input.c as u64 * self.units as u64
    }

    fn dump_attrs(&self) -> String {
        let mut s = format!("units={}", self.units);
        if !self.bias {
            s.push_str(" bias=false");
        }
        if self.weights.is_some() {
            s.push_str(" weights=literal");
        }
        if let Some(act) = self.activation {
            let _ = write!(s, " activation={}", act.name());
        }
        s
    }

    fn category(&self) -> Category {
        Category::Weighted
    }

    fn reference_forward(&self, cx: &Forward, args: &[&Tensor]) -> Result<Tensor, RunError> {
        let in_features = cx.input_shape().c;
        let weight = cx.tensor("weight", &[self.units, in_features])?;
        let bias = cx.bias(self.units)?;
        Ok(dense(
            cx.arg(args, 0)?,
            &weight,
            bias.as_ref(),
            self.activation,
        ))
    }
}

/// `x` is N×1×1×C; `weight` is `[units, C]`, PyTorch's `Linear` layout.
pub(super) fn dense(
    x: &Tensor,
    weight: &CowArray<f32, IxDyn>,
    bias: Option<&CowArray<f32, IxDyn>>,
    activation: Option<Activation>,
) -> Tensor {
    let batch = x.dim().0;
    let (units, features) = (weight.shape()[0], weight.shape()[1]);
    let weight = weight.as_standard_layout();
    let weight = weight.as_slice().unwrap_or(&[]);
    let bias = bias.and_then(|b| b.view().into_dimensionality::<Ix1>().ok());
    let x = x.as_standard_layout();
    let x = x.as_slice().unwrap_or(&[]);

    let mut y = Array4::<f32>::zeros((batch, 1, 1, units));
    for n in 0..batch {
        let row = &x[n * features..][..features];
        for unit in 0..units {
            let sum = dot(row, &weight[unit * features..][..features]);
            y[[n, 0, 0, unit]] = finish(sum, bias.as_ref(), unit, None, activation);
        }
    }
    y
}

impl super::gradient::GradRule for DenseAttrs {
    /// Through a fused activation first (at the recomputed pre-activation), then
    /// `dx = g·W`, `dW = gᵀ·x` and `db = Σ g` over the batch. Literal weights are constants
    /// and get no gradient.
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
        let features = cx.input_shape().c;
        let weight = cx.tensor("weight", &[self.units, features])?;
        let bias = cx.bias(self.units)?;
        let batch = x.dim().0;
        let grad = match self.activation {
            Some(act) => {
                let pre = dense(x, &weight, bias.as_ref(), None);
                let mut g = grad.clone();
                g.zip_mut_with(&pre, |g, &p| *g *= act.derivative(p));
                g
            }
            None => grad.clone(),
        };
        // Flat row-major slices: x is batch × features, g batch × units, W units × features.
        let weight = weight.as_standard_layout();
        let ws = weight.as_slice().unwrap_or(&[]);
        let x_std = x.as_standard_layout();
        let xs = x_std.as_slice().unwrap_or(&[]);
        let grad_std = grad.as_standard_layout();
        let gs = grad_std.as_slice().unwrap_or(&[]);
        let dx = wanted.inputs.then(|| {
            let mut dx = vec![0.0f64; batch * features];
            for n in 0..batch {
                let row = &mut dx[n * features..][..features];
                for unit in 0..self.units {
                    let g = f64::from(gs[n * self.units + unit]);
                    for (d, &w) in row.iter_mut().zip(&ws[unit * features..][..features]) {
                        *d += g * f64::from(w);
                    }
                }
            }
            let values = dx.iter().map(|&v| v as f32).collect();
            Tensor::from_shape_vec(x.raw_dim(), values).unwrap_or_default()
        });
        let mut params = Vec::new();
        if wanted.params && self.weights.is_none() {
            let mut dw = vec![0.0f64; self.units * features];
            for n in 0..batch {
                let row = &xs[n * features..][..features];
                for unit in 0..self.units {
                    let g = f64::from(gs[n * self.units + unit]);
                    for (d, &v) in dw[unit * features..][..features].iter_mut().zip(row) {
                        *d += g * f64::from(v);
                    }
                }
            }
            let values = dw.iter().map(|&v| v as f32).collect();
            let dw = ndarray::Array2::from_shape_vec((self.units, features), values);
            params.push(("weight", dw.unwrap_or_default().into_dyn()));
        }
        if wanted.params && self.bias && self.bias_values.is_none() {
            let db = ndarray::Array1::from_shape_fn(self.units, |u| {
                (0..batch)
                    .map(|n| f64::from(grad[[n, 0, 0, u]]))
                    .sum::<f64>() as f32
            });
            params.push(("bias", db.into_dyn()));
        }
        Ok(super::gradient::Gradients {
            inputs: vec![dx],
            params,
        })
    }
}
