//! The elementwise activations: their names, their function on one value (which the reference
//! applies, and which the code generator's epilogues must match), and which of them a conv or
//! dense epilogue may compute.

use super::signature::{ArgValue, Param, Surface, X};
use super::{Arity, Category, Op, OpRule};
use crate::graph::{ParamSpec, Shape, ShapeError};
use crate::reference::{Forward, RunError, Tensor};

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    Relu,
    Relu6,
    Sigmoid,
    /// `x * sigmoid(x)`, also called SiLU.
    Swish,
    Tanh,
    /// `x · relu6(x + 3) / 6`, PyTorch's `Hardswish` (MobileNetV3).
    Hardswish,
}

impl Activation {
    pub const fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Relu6 => "relu6",
            Activation::Sigmoid => "sigmoid",
            Activation::Swish => "swish",
            Activation::Tanh => "tanh",
            Activation::Hardswish => "hardswish",
        }
    }

    /// The function on one value, in f32 as every backend computes it. NaN gives NaN, as in
    /// PyTorch (`clamp` keeps it; `f32::max` would not).
    pub fn apply(self, x: f32) -> f32 {
        match self {
            // Not `x.max(0.0)`, which returns 0 for NaN: PyTorch's ReLU keeps NaN.
            Activation::Relu => {
                if x < 0.0 {
                    0.0
                } else {
                    x
                }
            }
            Activation::Relu6 => x.clamp(0.0, 6.0),
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Activation::Swish => x / (1.0 + (-x).exp()),
            Activation::Tanh => x.tanh(),
            // In the order PyTorch's kernel computes it: the product, then the division.
            Activation::Hardswish => x * (x + 3.0).clamp(0.0, 6.0) / 6.0,
        }
    }

    /// Whether a conv or dense epilogue computes it; the code generator implements exactly
    /// these, so `tanh` stays a node of its own.
    pub fn fuses_into_epilogue(self) -> bool {
        match self {
            Activation::Relu
            | Activation::Relu6
            | Activation::Sigmoid
            | Activation::Swish
            | Activation::Hardswish => true,
            Activation::Tanh => false,
        }
    }
}

/// An activation as a layer of the language, under its own name or an alias.
pub(super) struct ActivationLayer {
    name: &'static str,
    activation: Activation,
}

/// The layer named after `activation`.
pub(super) const fn layer(activation: Activation) -> ActivationLayer {
    ActivationLayer {
        name: activation.name(),
        activation,
    }
}

/// `activation` under another name (`silu` for swish).
pub(super) const fn alias(name: &'static str, activation: Activation) -> ActivationLayer {
    ActivationLayer { name, activation }
}

impl Surface for ActivationLayer {
    fn name(&self) -> &'static str {
        self.name
    }

    fn params(&self) -> &[Param] {
        &[X]
    }

    fn build(&self, _values: Vec<ArgValue>, _input: Shape) -> Option<Op> {
        Some(Op::Activation(self.activation))
    }
}

impl OpRule for Activation {
    fn name(&self) -> &'static str {
        Activation::name(*self)
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
        String::new()
    }

    fn category(&self) -> Category {
        Category::Other
    }

    fn reference_forward(&self, cx: &Forward, args: &[&Tensor]) -> Result<Tensor, RunError> {
        Ok(cx.arg(args, 0)?.mapv(|x| self.apply(x)))
    }
}

impl Activation {
    /// The derivative at `x`, with PyTorch's choice at the kinks (relu: 0 at 0; relu6: 0 at
    /// 0 and 6; hardswish: `x/3 + 1/2` on [−3, 3]).
    pub fn derivative(self, x: f32) -> f32 {
        match self {
            Activation::Relu => f32::from(u8::from(x > 0.0)),
            Activation::Relu6 => f32::from(u8::from(x > 0.0 && x < 6.0)),
            Activation::Sigmoid => {
                let s = 1.0 / (1.0 + (-x).exp());
                s * (1.0 - s)
            }
            Activation::Swish => {
                let s = 1.0 / (1.0 + (-x).exp());
                s + x * s * (1.0 - s)
            }
            Activation::Tanh => 1.0 - x.tanh() * x.tanh(),
            Activation::Hardswish if x < -3.0 => 0.0,
            Activation::Hardswish if x <= 3.0 => x / 3.0 + 0.5,
            Activation::Hardswish => 1.0,
        }
    }
}

impl super::gradient::GradRule for Activation {
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
        Ok(super::gradient::one_input(wanted, || {
            let mut dx = grad.clone();
            dx.zip_mut_with(x, |g, &x| *g *= self.derivative(x));
            dx
        }))
    }
}
