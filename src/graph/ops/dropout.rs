//! Dropout: the identity at inference; `p` is kept for training and the dump.

use super::signature::{Layer, Param, ParamDefault, ParamKind, X};
use super::{Arity, Category, Op, OpRule};
use crate::graph::{ParamSpec, Shape, ShapeError};
use crate::reference::{Forward, RunError, Tensor};

/// The `Op::Dropout` variant's field.
pub struct DropoutAttrs {
    pub p: f64,
}

pub(super) const DROPOUT: Layer<2> = Layer {
    name: "dropout",
    params: [
        X,
        Param::new("p", ParamKind::Probability, ParamDefault::Real(0.5)),
    ],
    build: |[_, p], _| Some(Op::Dropout { p: p.real()? }),
};

impl OpRule for DropoutAttrs {
    fn name(&self) -> &'static str {
        DROPOUT.name
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
        format!("p={}", self.p)
    }

    fn category(&self) -> Category {
        Category::Other
    }

    fn reference_forward(&self, cx: &Forward, args: &[&Tensor]) -> Result<Tensor, RunError> {
        Ok(cx.arg(args, 0)?.clone())
    }
}

/// Inverted dropout's multiplier for element `idx` of node `node`: 0 with probability `p`,
/// else `1/(1−p)`, from a hash of the seed, the node and the element, so the backward
/// regenerates the forward's mask without storing it. `idx` counts over the whole batch
/// tensor in its row-major order (N×H×W×C, or N×C when flat); the JIT's training step makes
/// the same masks from it (`train::jit`).
pub fn dropout_scale(p: f64, seed: u64, node: usize, idx: usize) -> f32 {
    if p >= 1.0 {
        return 0.0;
    }
    let mut z = seed
        ^ (node as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (idx as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
    if unit < p {
        0.0
    } else {
        (1.0 / (1.0 - p)) as f32
    }
}

impl DropoutAttrs {
    /// `x` times the mask, or `x` itself at inference or when `p` is 0.
    fn masked(&self, cx: &Forward, mode: super::gradient::TrainingMode, x: &Tensor) -> Tensor {
        if !mode.training || self.p <= 0.0 {
            return x.clone();
        }
        let node = cx.node_index();
        let mut y = x.as_standard_layout().into_owned();
        for (idx, value) in y.iter_mut().enumerate() {
            *value *= dropout_scale(self.p, mode.seed, node, idx);
        }
        y
    }
}

impl super::gradient::GradRule for DropoutAttrs {
    fn training_forward(
        &self,
        cx: &Forward,
        mode: super::gradient::TrainingMode,
        args: &[&Tensor],
    ) -> Result<Tensor, RunError> {
        Ok(self.masked(cx, mode, cx.arg(args, 0)?))
    }

    /// The forward is linear in `x`: the gradient goes through the same mask.
    fn reference_backward(
        &self,
        cx: &Forward,
        mode: super::gradient::TrainingMode,
        _args: &[&Tensor],
        _output: &Tensor,
        grad: &Tensor,
        wanted: super::gradient::Wanted,
    ) -> Result<super::gradient::Gradients, RunError> {
        Ok(super::gradient::one_input(wanted, || {
            self.masked(cx, mode, grad)
        }))
    }
}
