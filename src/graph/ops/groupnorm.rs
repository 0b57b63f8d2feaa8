//! Group norm and instance norm, PyTorch's `nn.GroupNorm(groups, C)` and
//! `nn.InstanceNorm2d(C)`: each image's channels are split into `groups` equal groups, and each
//! group is normalized by the mean and biased variance of all its values (its channels at every
//! pixel), then scaled and shifted per channel by `weight` and `bias` (`[C]`) when the layer is
//! affine. Instance norm is group norm with one channel per group, not affine by default
//! (PyTorch's `affine=False`), and without running statistics (`track_running_stats=False`).

use super::signature::{Layer, Param, ParamDefault, ParamKind, X};
use super::{param, Arity, Category, Op, OpRule};
use crate::graph::{Init, ParamSpec, Shape, ShapeError};
use crate::reference::{Forward, RunError, Tensor};

/// The `Op::GroupNorm` variant's payload.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct GroupNormAttrs {
    pub groups: usize,
    pub eps: f64,
    /// Learned per-channel `weight` and `bias`.
    pub affine: bool,
    /// Written as `instancenorm` (one channel per group), which is how it is named.
    pub instance: bool,
}

const EPS: Param = Param::new("eps", ParamKind::Real, ParamDefault::Real(1e-5));

pub(super) const GROUPNORM: Layer<4> = Layer {
    name: "groupnorm",
    params: [
        X,
        Param::new(
            "groups",
            ParamKind::Count { min: 1 },
            ParamDefault::Required,
        ),
        EPS,
        Param::new("affine", ParamKind::Flag, ParamDefault::Flag(true)),
    ],
    build: |[_, groups, eps, affine], _| {
        Some(Op::GroupNorm(GroupNormAttrs {
            groups: groups.count()?,
            eps: eps.real()?,
            affine: affine.flag()?,
            instance: false,
        }))
    },
};

pub(super) const INSTANCENORM: Layer<3> = Layer {
    name: "instancenorm",
    params: [
        X,
        EPS,
        Param::new("affine", ParamKind::Flag, ParamDefault::Flag(false)),
    ],
    build: |[_, eps, affine], input| {
        Some(Op::GroupNorm(GroupNormAttrs {
            groups: input.c.max(1),
            eps: eps.real()?,
            affine: affine.flag()?,
            instance: true,
        }))
    },
};

impl OpRule for GroupNormAttrs {
    fn name(&self) -> &'static str {
        if self.instance {
            INSTANCENORM.name
        } else {
            GROUPNORM.name
        }
    }

    fn arity(&self) -> Arity {
        Arity::One
    }

    fn output_shape(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let input = inputs[0];
        if self.groups == 0 || !input.c.is_multiple_of(self.groups) {
            return Err(ShapeError::ChannelGroups {
                op: self.name(),
                groups: self.groups,
                channels: input.c,
            });
        }
        Ok(input)
    }

    fn params(&self, input: Shape) -> Vec<ParamSpec> {
        if !self.affine {
            return Vec::new();
        }
        vec![
            param("weight", vec![input.c], Init::Constant(1.0)),
            param("bias", vec![input.c], Init::Constant(0.0)),
        ]
    }

    fn macs(&self, _input: Shape, _output: Shape) -> u64 {
        0
    }

    fn dump_attrs(&self) -> String {
        let mut s = format!("groups={} eps={:e}", self.groups, self.eps);
        // Shown when it differs from the layer's default (group norm affine, instance not).
        let default_affine = !self.instance;
        if self.affine != default_affine {
            s.push_str(if self.affine {
                " affine"
            } else {
                " affine=false"
            });
        }
        s
    }

    fn category(&self) -> Category {
        Category::Other
    }

    fn reference_forward(&self, cx: &Forward, args: &[&Tensor]) -> Result<Tensor, RunError> {
        let x = cx.arg(args, 0)?;
        let (n, h, w, c) = x.dim();
        let affine = if self.affine {
            Some((cx.tensor("weight", &[c])?, cx.tensor("bias", &[c])?))
        } else {
            None
        };
        let size = c / self.groups.max(1);
        let count = (h * w * size).max(1) as f64;
        let mut y = x.clone();
        for image in 0..n {
            for g in 0..self.groups {
                let (start, end) = (g * size, (g + 1) * size);
                let values = || {
                    (0..h).flat_map(move |i| {
                        (0..w).flat_map(move |j| {
                            (start..end).map(move |ch| f64::from(x[[image, i, j, ch]]))
                        })
                    })
                };
                let mean = values().sum::<f64>() / count;
                let var = values().map(|v| (v - mean).powi(2)).sum::<f64>() / count;
                let inv_std = 1.0 / (var + self.eps).sqrt();
                for i in 0..h {
                    for j in 0..w {
                        for ch in g * size..(g + 1) * size {
                            let v = y[[image, i, j, ch]];
                            let mut out = (f64::from(v) - mean) * inv_std;
                            if let Some((weight, bias)) = &affine {
                                out = out * f64::from(weight[[ch]]) + f64::from(bias[[ch]]);
                            }
                            y[[image, i, j, ch]] = out as f32;
                        }
                    }
                }
            }
        }
        Ok(y)
    }
}

impl super::gradient::GradRule for GroupNormAttrs {
    /// Layer norm's gradient (`layernorm.rs`) over each group's values: with `x̂ = (x − μ)/σ`
    /// and `ĝ = g·γ` (γ = 1 without an affine map), `dx = (ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)) / σ`
    /// over the group, and `dγ = Σ g·x̂`, `dβ = Σ g` per channel over the batch and pixels.
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
        let (n, h, w, c) = x.dim();
        let gamma = if self.affine {
            Some(cx.tensor("weight", &[c])?)
        } else {
            None
        };
        let size = c / self.groups.max(1);
        let count = (h * w * size).max(1) as f64;
        let mut dx = Tensor::zeros(x.raw_dim());
        let mut dweight = vec![0.0f64; c];
        let mut dbias = vec![0.0f64; c];
        for image in 0..n {
            for g in 0..self.groups {
                let index: Vec<[usize; 4]> = (0..h)
                    .flat_map(|i| (0..w).map(move |j| (i, j)))
                    .flat_map(|(i, j)| (g * size..(g + 1) * size).map(move |ch| [image, i, j, ch]))
                    .collect();
                let mean = index.iter().map(|&at| f64::from(x[at])).sum::<f64>() / count;
                let var = index
                    .iter()
                    .map(|&at| (f64::from(x[at]) - mean).powi(2))
                    .sum::<f64>()
                    / count;
                let inv_std = 1.0 / (var + self.eps).sqrt();
                let x_hat: Vec<f64> = index
                    .iter()
                    .map(|&at| (f64::from(x[at]) - mean) * inv_std)
                    .collect();
                let g_hat: Vec<f64> = index
                    .iter()
                    .map(|&at| {
                        let scale = gamma.as_ref().map_or(1.0, |w| f64::from(w[[at[3]]]));
                        f64::from(grad[at]) * scale
                    })
                    .collect();
                let mean_g = g_hat.iter().sum::<f64>() / count;
                let mean_gx = g_hat.iter().zip(&x_hat).map(|(a, b)| a * b).sum::<f64>() / count;
                for (k, &at) in index.iter().enumerate() {
                    dx[at] = ((g_hat[k] - mean_g - x_hat[k] * mean_gx) * inv_std) as f32;
                    dweight[at[3]] += f64::from(grad[at]) * x_hat[k];
                    dbias[at[3]] += f64::from(grad[at]);
                }
            }
        }
        let to_array = |values: Vec<f64>| {
            ndarray::Array1::from_iter(values.into_iter().map(|v| v as f32)).into_dyn()
        };
        let params = if wanted.params && self.affine {
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
