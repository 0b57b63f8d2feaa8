//! A learned tensor of its own, named by the layer's label alone: `x -> gamma: parameter`
//! is a 1×1×C tensor whose values are the learned tensor `gamma` of PyTorch shape
//! `[C, 1, 1]` (an `nn.Parameter` of a module, such as ConvNeXt's `layer_scale`), where C is
//! the channel count of `x`. The input gives only the channel count; its values are not read.
//! Multiplying by it (`y * gamma`) scales `y` per channel, broadcast over its pixels.
//!
//! The tensor is the node's one parameter, with the empty suffix, so its full name is the
//! layer's path (`features.1.0.layer_scale`), not `<path>.weight`. Because the node reads the
//! block's input, a block can create it before its other layers, which puts it first in the
//! `state_dict` order, as PyTorch lists a module's own parameters before its children's.

use super::signature::{Layer, Param, ParamDefault, ParamKind, X};
use super::{param, Arity, Category, Op, OpRule};
use crate::graph::{Init, ParamSpec, Shape, ShapeError};
use crate::reference::{Forward, RunError, Tensor};

/// The suffix of the parameter's one tensor: none, so its name is the layer's path.
pub const PARAMETER_SUFFIX: &str = "";

/// The `Op::Parameter` variant's payload.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct ParameterAttrs {
    /// Every element's value in a fresh network (seeded weights), as PyTorch's
    /// `nn.Parameter(init * torch.ones(C, 1, 1))`.
    pub init: f64,
}

pub(super) const PARAMETER: Layer<2> = Layer {
    name: "parameter",
    params: [
        X,
        Param::new("init", ParamKind::Real, ParamDefault::Real(1.0)),
    ],
    build: |[_, init], _| Some(Op::Parameter(ParameterAttrs { init: init.real()? })),
};

impl OpRule for ParameterAttrs {
    fn name(&self) -> &'static str {
        PARAMETER.name
    }

    fn arity(&self) -> Arity {
        Arity::One
    }

    fn output_shape(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        Ok(Shape::spatial(1, 1, inputs[0].c))
    }

    fn params(&self, input: Shape) -> Vec<ParamSpec> {
        vec![param(
            PARAMETER_SUFFIX,
            vec![input.c, 1, 1],
            Init::Constant(self.init as f32),
        )]
    }

    fn macs(&self, _input: Shape, _output: Shape) -> u64 {
        0
    }

    fn dump_attrs(&self) -> String {
        format!("init={:e}", self.init)
    }

    fn category(&self) -> Category {
        Category::Other
    }

    fn reference_forward(&self, cx: &Forward, args: &[&Tensor]) -> Result<Tensor, RunError> {
        let c = cx.shape.c;
        let batch = cx.arg(args, 0)?.dim().0;
        let values = cx.tensor(PARAMETER_SUFFIX, &[c, 1, 1])?;
        Ok(Tensor::from_shape_fn((batch, 1, 1, c), |(_, _, _, ch)| {
            values[[ch, 0, 0]]
        }))
    }
}

impl super::gradient::GradRule for ParameterAttrs {
    /// The tensor's gradient is the output's, summed over the batch; the input's values
    /// were not read, so its gradient is zero.
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
        let c = cx.shape.c;
        let mut params = Vec::new();
        if wanted.params {
            let mut sum = ndarray::Array3::<f32>::zeros((c, 1, 1));
            for ((_, _, _, ch), &g) in grad.indexed_iter() {
                sum[[ch, 0, 0]] += g;
            }
            params.push((PARAMETER_SUFFIX, sum.into_dyn()));
        }
        Ok(super::gradient::Gradients {
            inputs: vec![wanted.inputs.then(|| Tensor::zeros(x.raw_dim()))],
            params,
        })
    }
}
