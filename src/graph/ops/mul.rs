//! Elementwise product (`mul`, and `*` on tensors), where a 1×1×C operand is broadcast over
//! the other's H×W: the channel gates of squeeze-and-excitation.

use super::signature::{Layer, Param, X};
use super::{Arity, Category, Op, OpRule};
use crate::graph::{ParamSpec, Shape, ShapeError};
use crate::reference::{Forward, RunError, Tensor};

/// `Op::Mul`, which has no attributes.
pub struct MulAttrs;

pub(super) const MUL: Layer<2> = Layer {
    name: "mul",
    params: [X, Param::tensor("y")],
    build: |_, _| Some(Op::Mul),
};

impl OpRule for MulAttrs {
    fn name(&self) -> &'static str {
        MUL.name
    }

    fn arity(&self) -> Arity {
        Arity::Two
    }

    fn output_shape(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let (left, right) = (inputs[0], inputs[1]);
        broadcast_shape(left, right).ok_or(ShapeError::MulMismatch { left, right })
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
        Category::Merge
    }

    fn reference_forward(&self, cx: &Forward, args: &[&Tensor]) -> Result<Tensor, RunError> {
        let (a, b) = (cx.arg(args, 0)?, cx.arg(args, 1)?);
        if !tensors_broadcast(a, b) {
            return Err(cx.malformed("shapes do not broadcast"));
        }
        // ndarray's arithmetic on references broadcasts both ways, so one product covers both
        // the equal-shape and the gate cases.
        Ok(a * b)
    }
}

impl super::gradient::GradRule for MulAttrs {
    /// `da = g·b`, `db = g·a`, each summed back over the H×W it was broadcast across.
    fn reference_backward(
        &self,
        cx: &Forward,
        _mode: super::gradient::TrainingMode,
        args: &[&Tensor],
        _output: &Tensor,
        grad: &Tensor,
        wanted: super::gradient::Wanted,
    ) -> Result<super::gradient::Gradients, RunError> {
        let (a, b) = (cx.arg(args, 0)?, cx.arg(args, 1)?);
        Ok(super::gradient::Gradients {
            inputs: vec![
                wanted.inputs.then(|| sum_to_shape_of(grad * b, a)),
                wanted.inputs.then(|| sum_to_shape_of(grad * a, b)),
            ],
            params: Vec::new(),
        })
    }
}

/// The shape of `*`, `-` or `/` on tensors of these shapes: equal shapes, or a 1×1×C operand
/// broadcast over the other's pixels; `None` when they do not broadcast.
pub(super) fn broadcast_shape(left: Shape, right: Shape) -> Option<Shape> {
    let broadcasts =
        |small: Shape, big: Shape| !small.flat && small.h == 1 && small.w == 1 && small.c == big.c;
    if left == right || broadcasts(right, left) {
        Some(left)
    } else if broadcasts(left, right) {
        Some(right)
    } else {
        None
    }
}

/// Whether two N×H×W×C tensors are equal in shape, or one is an N×1×1×C gate of the other.
pub(super) fn tensors_broadcast(a: &Tensor, b: &Tensor) -> bool {
    let gate = |small: &Tensor, big: &Tensor| {
        let (sn, sh, sw, sc) = small.dim();
        let (bn, _, _, bc) = big.dim();
        sn == bn && sh == 1 && sw == 1 && sc == bc
    };
    a.dim() == b.dim() || gate(b, a) || gate(a, b)
}

/// A gradient of the output's shape, summed over the pixels `like` was broadcast across
/// (unchanged when `like` has the output's shape).
pub(super) fn sum_to_shape_of(full: Tensor, like: &Tensor) -> Tensor {
    if full.dim() == like.dim() {
        return full;
    }
    let mut sum = Tensor::zeros(like.raw_dim());
    for ((n, _, _, c), &value) in full.indexed_iter() {
        sum[[n, 0, 0, c]] += value;
    }
    sum
}
