//! Global pooling: each channel over the whole image to 1×1 (`global_avgpool`,
//! `global_maxpool`).

use super::signature::{Layer, X};
use super::{Arity, Category, Op, OpRule, PoolKind};
use crate::graph::infer::spatial_input;
use crate::graph::{ParamSpec, Shape, ShapeError};
use crate::reference::{Forward, RunError, Tensor};
use ndarray::Array4;

/// The `Op::GlobalPool` variant's field.
pub struct GlobalPoolAttrs {
    pub kind: PoolKind,
}

pub(super) const GLOBAL_AVGPOOL: Layer<1> = Layer {
    name: "global_avgpool",
    params: [X],
    build: |_, _| Some(Op::GlobalPool(PoolKind::Avg)),
};

pub(super) const GLOBAL_MAXPOOL: Layer<1> = Layer {
    name: "global_maxpool",
    params: [X],
    build: |_, _| Some(Op::GlobalPool(PoolKind::Max)),
};

impl OpRule for GlobalPoolAttrs {
    fn name(&self) -> &'static str {
        match self.kind {
            PoolKind::Avg => GLOBAL_AVGPOOL.name,
            PoolKind::Max => GLOBAL_MAXPOOL.name,
        }
    }

    fn arity(&self) -> Arity {
        Arity::One
    }

    fn output_shape(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        spatial_input(self.name(), inputs[0])?;
        Ok(Shape::spatial(1, 1, inputs[0].c))
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
        Ok(global_pool(cx.arg(args, 0)?, self.kind))
    }
}

/// Pools each channel over the whole image to 1×1.
fn global_pool(x: &Tensor, kind: PoolKind) -> Tensor {
    let (batch, h, w, channels) = x.dim();
    let mut y = Array4::<f32>::zeros((batch, 1, 1, channels));
    for n in 0..batch {
        for c in 0..channels {
            let plane = x.slice(ndarray::s![n, .., .., c]);
            y[[n, 0, 0, c]] = match kind {
                PoolKind::Max => plane
                    .iter()
                    .copied()
                    .fold(f32::NEG_INFINITY, super::pool::max_keeping_nan),
                PoolKind::Avg => {
                    let sum: f64 = plane.iter().map(|&v| f64::from(v)).sum();
                    (sum / (h * w) as f64) as f32
                }
            };
        }
    }
    y
}

impl super::gradient::GradRule for GlobalPoolAttrs {
    /// Average: the gradient spread evenly over the plane. Max: all of it to the first
    /// maximum in row-major order, as PyTorch routes it.
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
        Ok(super::gradient::one_input(wanted, || {
            let mut dx = Tensor::zeros(x.raw_dim());
            for n in 0..batch {
                for c in 0..channels {
                    let g = grad[[n, 0, 0, c]];
                    match self.kind {
                        PoolKind::Avg => {
                            let share = (f64::from(g) / (h * w) as f64) as f32;
                            dx.slice_mut(ndarray::s![n, .., .., c]).fill(share);
                        }
                        PoolKind::Max => {
                            let mut best: Option<(usize, usize, f32)> = None;
                            for iy in 0..h {
                                for ix in 0..w {
                                    let v = x[[n, iy, ix, c]];
                                    if best.is_none_or(|(_, _, b)| v > b) {
                                        best = Some((iy, ix, v));
                                    }
                                }
                            }
                            if let Some((iy, ix, _)) = best {
                                dx[[n, iy, ix, c]] += g;
                            }
                        }
                    }
                }
            }
            dx
        }))
    }
}
