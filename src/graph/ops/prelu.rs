//! PReLU, PyTorch's `nn.PReLU`: `max(0, x) + a · min(0, x)` with a learned slope `a` per
//! channel (`weight` of shape `[C]`), or one slope shared by every channel (`shared: true`,
//! `weight` of shape `[1]`, PyTorch's default `num_parameters=1`). Slopes start at 0.25.

use super::signature::{Layer, Param, ParamDefault, ParamKind, X};
use super::{param, Arity, Category, Op, OpRule};
use crate::graph::{Init, ParamSpec, Shape, ShapeError};
use crate::reference::{Forward, RunError, Tensor};

/// The `Op::PRelu` variant's payload.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct PReluAttrs {
    /// One slope for every channel rather than one per channel.
    pub shared: bool,
    /// Every slope's value in a fresh network.
    pub init: f64,
}

pub(super) const PRELU: Layer<3> = Layer {
    name: "prelu",
    params: [
        X,
        Param::new("shared", ParamKind::Flag, ParamDefault::Flag(false)),
        Param::new("init", ParamKind::Real, ParamDefault::Real(0.25)),
    ],
    build: |[_, shared, init], _| {
        Some(Op::PRelu(PReluAttrs {
            shared: shared.flag()?,
            init: init.real()?,
        }))
    },
};

impl PReluAttrs {
    /// The number of slopes on an input of `channels` channels.
    pub fn slopes(self, channels: usize) -> usize {
        if self.shared {
            1
        } else {
            channels
        }
    }
}

impl OpRule for PReluAttrs {
    fn name(&self) -> &'static str {
        PRELU.name
    }

    fn arity(&self) -> Arity {
        Arity::One
    }

    fn output_shape(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        Ok(inputs[0])
    }

    fn params(&self, input: Shape) -> Vec<ParamSpec> {
        let shape = vec![self.slopes(input.c)];
        vec![param("weight", shape, Init::Constant(self.init as f32))]
    }

    fn macs(&self, _input: Shape, _output: Shape) -> u64 {
        0
    }

    fn dump_attrs(&self) -> String {
        if self.shared {
            "shared".to_string()
        } else {
            String::new()
        }
    }

    fn category(&self) -> Category {
        Category::Other
    }

    fn reference_forward(&self, cx: &Forward, args: &[&Tensor]) -> Result<Tensor, RunError> {
        let n = self.slopes(cx.shape.c);
        let weight = cx.tensor("weight", &[n])?;
        let mut y = cx.arg(args, 0)?.clone();
        for ((_, _, _, c), value) in y.indexed_iter_mut() {
            let slope = weight[[if self.shared { 0 } else { c }]];
            // `x < 0` is false for a NaN, which stays NaN either way.
            if *value < 0.0 {
                *value *= slope;
            }
        }
        Ok(y)
    }
}

impl super::gradient::GradRule for PReluAttrs {
    /// `dx = g` where `x > 0` and `g·a` elsewhere; `da = Σ g·x` over the negative `x` (of
    /// the channel, or of every channel when shared).
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
        let n = self.slopes(cx.shape.c);
        let weight = cx.tensor("weight", &[n])?;
        let slope_index = |c: usize| if self.shared { 0 } else { c };
        let mut dx = grad.clone();
        let mut dweight = vec![0.0f64; n];
        for (((_, _, _, c), d), &v) in dx.indexed_iter_mut().zip(x.iter()) {
            if v <= 0.0 {
                dweight[slope_index(c)] += f64::from(*d) * f64::from(v);
                *d *= weight[[slope_index(c)]];
            }
        }
        let params = if wanted.params {
            let values = dweight.into_iter().map(|v| v as f32);
            vec![("weight", ndarray::Array1::from_iter(values).into_dyn())]
        } else {
            Vec::new()
        };
        Ok(super::gradient::Gradients {
            inputs: vec![wanted.inputs.then_some(dx)],
            params,
        })
    }
}
