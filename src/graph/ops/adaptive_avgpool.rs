//! Adaptive average pooling into a fixed output grid, as PyTorch's `AdaptiveAvgPool2d`.

use super::conv::pair;
use super::signature::{Layer, Param, ParamDefault, ParamKind, X};
use super::{Arity, Category, Op, OpRule};
use crate::graph::infer::{checked_numel, positive, spatial_input};
use crate::graph::{ParamSpec, Shape, ShapeError};
use crate::reference::{Forward, RunError, Tensor};
use ndarray::Array4;

/// The `Op::AdaptiveAvgPool` variant's field.
pub struct AdaptiveAvgPoolAttrs {
    /// The output `[h, w]`.
    pub out: [usize; 2],
}

pub(super) const ADAPTIVE_AVGPOOL: Layer<2> = Layer {
    name: "adaptive_avgpool",
    params: [
        X,
        Param::new("size", ParamKind::Pair { min: 1 }, ParamDefault::Required),
    ],
    build: |[_, size], _| Some(Op::AdaptiveAvgPool { out: size.pair()? }),
};

impl OpRule for AdaptiveAvgPoolAttrs {
    fn name(&self) -> &'static str {
        ADAPTIVE_AVGPOOL.name
    }

    fn arity(&self) -> Arity {
        Arity::One
    }

    fn output_shape(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let (input, out) = (inputs[0], self.out);
        spatial_input(self.name(), input)?;
        positive(out[0].min(out[1]), "the output size")?;
        checked_numel(&[out[0], out[1], input.c], "the output")?;
        Ok(Shape::spatial(out[0], out[1], input.c))
    }

    fn params(&self, _input: Shape) -> Vec<ParamSpec> {
        Vec::new()
    }

    fn macs(&self, _input: Shape, _output: Shape) -> u64 {
        0
    }

    fn dump_attrs(&self) -> String {
        format!("out={}", pair(self.out))
    }

    fn category(&self) -> Category {
        Category::Other
    }

    fn reference_forward(&self, cx: &Forward, args: &[&Tensor]) -> Result<Tensor, RunError> {
        Ok(adaptive_avg_pool(cx.arg(args, 0)?, self.out))
    }
}

/// PyTorch's `AdaptiveAvgPool2d`: output cell `i` of `out` along an axis of length `n`
/// averages input cells `floor(i·n/out) .. ceil((i+1)·n/out)`.
fn adaptive_avg_pool(x: &Tensor, out: [usize; 2]) -> Tensor {
    let (batch, h, w, channels) = x.dim();
    let bounds = |i: usize, n: usize, out: usize| ((i * n) / out, ((i + 1) * n).div_ceil(out));
    let mut y = Array4::<f32>::zeros((batch, out[0], out[1], channels));
    for oy in 0..out[0] {
        let (y0, y1) = bounds(oy, h, out[0]);
        for ox in 0..out[1] {
            let (x0, x1) = bounds(ox, w, out[1]);
            let count = ((y1 - y0) * (x1 - x0)) as f64;
            for n in 0..batch {
                for c in 0..channels {
                    let window = x.slice(ndarray::s![n, y0..y1, x0..x1, c]);
                    let sum: f64 = window.iter().map(|&v| f64::from(v)).sum();
                    y[[n, oy, ox, c]] = (sum / count) as f32;
                }
            }
        }
    }
    y
}

impl super::gradient::GradRule for AdaptiveAvgPoolAttrs {
    /// Each output cell's gradient spread evenly over its (possibly overlapping) window.
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
        let (batch, h, w, channels) = x.dim();
        let out = self.out;
        let bounds = |i: usize, n: usize, out: usize| ((i * n) / out, ((i + 1) * n).div_ceil(out));
        Ok(super::gradient::one_input(wanted, || {
            let mut dx = Tensor::zeros(x.raw_dim());
            for oy in 0..out[0] {
                let (y0, y1) = bounds(oy, h, out[0]);
                for ox in 0..out[1] {
                    let (x0, x1) = bounds(ox, w, out[1]);
                    let count = ((y1 - y0) * (x1 - x0)) as f64;
                    for n in 0..batch {
                        for c in 0..channels {
                            let share = (f64::from(grad[[n, oy, ox, c]]) / count) as f32;
                            dx.slice_mut(ndarray::s![n, y0..y1, x0..x1, c])
                                .mapv_inplace(|v| v + share);
                        }
                    }
                }
            }
            dx
        }))
    }
}
