//! Flatten: an image to a vector, in channel-major (C, H, W) order as `torch.flatten` on NCHW.

use super::signature::{Layer, X};
use super::{Arity, Category, Op, OpRule};
use crate::graph::{ParamSpec, Shape, ShapeError};
use crate::reference::{Forward, RunError, Tensor};
use ndarray::Array4;

/// `Op::Flatten`, which has no attributes.
pub struct FlattenAttrs;

pub(super) const FLATTEN: Layer<1> = Layer {
    name: "flatten",
    params: [X],
    build: |_, _| Some(Op::Flatten),
};

impl OpRule for FlattenAttrs {
    fn name(&self) -> &'static str {
        FLATTEN.name
    }

    fn arity(&self) -> Arity {
        Arity::One
    }

    fn output_shape(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        Ok(Shape::flat(inputs[0].numel()))
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
        Ok(flatten(cx.arg(args, 0)?))
    }
}

/// To N×1×1×(C·H·W) in channel-major order — element `(h, w, c)` goes to `c·H·W + h·W + w` —
/// which is what `torch.flatten` does to an NCHW tensor, so a following dense layer's PyTorch
/// weights apply unchanged.
fn flatten(x: &Tensor) -> Tensor {
    let (batch, h, w, c) = x.dim();
    let mut y = Array4::<f32>::zeros((batch, 1, 1, c * h * w));
    for ((n, iy, ix, ch), &value) in x.indexed_iter() {
        y[[n, 0, 0, ch * h * w + iy * w + ix]] = value;
    }
    y
}

impl super::gradient::GradRule for FlattenAttrs {
    /// The inverse permutation of the forward's channel-major order.
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
        let (_, h, w, _) = x.dim();
        Ok(super::gradient::one_input(wanted, || {
            let mut dx = Array4::<f32>::zeros(x.raw_dim());
            for ((n, iy, ix, ch), value) in dx.indexed_iter_mut() {
                *value = grad[[n, 0, 0, ch * h * w + iy * w + ix]];
            }
            dx
        }))
    }
}
