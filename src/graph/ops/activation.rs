//! The elementwise activations: their names, their function on one value (which the reference
//! applies, and which the code generator's epilogues must match), and which of them a conv or
//! dense epilogue may compute.

use super::signature::{ArgValue, Layer, Param, ParamDefault, ParamKind, Surface, X};
use super::{Arity, Category, Op, OpRule};
use crate::graph::{ParamSpec, Shape, ShapeError};
use crate::reference::{Forward, RunError, Tensor};

/// An activation's coefficient (leaky ReLU's slope, ELU's α), compared and hashed by its bits
/// so that activations stay `Eq` and `Hash`.
#[derive(Copy, Clone, Debug)]
pub struct Coefficient(f32);

impl Coefficient {
    pub const fn new(value: f32) -> Coefficient {
        Coefficient(value)
    }

    pub const fn get(self) -> f32 {
        self.0
    }
}

impl PartialEq for Coefficient {
    fn eq(&self, other: &Coefficient) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for Coefficient {}

impl std::hash::Hash for Coefficient {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state);
    }
}

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
    /// `x` for `x > 0`, else `slope · x`: PyTorch's `LeakyReLU(negative_slope)`.
    LeakyRelu(Coefficient),
    /// `x` for `x > 0`, else `α · (exp(x) − 1)`: PyTorch's `ELU(alpha)`.
    Elu(Coefficient),
    /// `x · Φ(x)` with Φ the normal distribution function (by `erf`, not the tanh
    /// approximation): PyTorch's `GELU()`.
    Gelu,
    /// `x/2 · (1 + tanh(√(2/π) · (x + 0.044715 x³)))`: PyTorch's `GELU(approximate='tanh')`.
    GeluTanh,
    /// `relu6(x + 3) / 6`, PyTorch's `Hardsigmoid` (MobileNetV3's squeeze-and-excitation gate).
    Hardsigmoid,
}

/// `erfc(z)` for `z ≥ 0` with a relative error below 1.2e-7 everywhere (Numerical Recipes'
/// `erfcc`, a Chebyshev fit). GELU is `max(x, 0) − |x|/2 · erfc(|x|/√2)`, which needs no
/// subtraction of nearly equal numbers on either side of 0, so this relative accuracy carries
/// over to the result; the code generator evaluates the same polynomial in f32.
pub const ERFC_COEFFICIENTS: [f64; 10] = [
    -1.265_512_23,
    1.000_023_68,
    0.374_091_96,
    0.096_784_18,
    -0.186_288_06,
    0.278_868_07,
    -1.135_203_98,
    1.488_515_87,
    -0.822_152_23,
    0.170_872_77,
];

/// The tanh approximation's constants, as PyTorch writes them: `√(2/π)` and 0.044715.
pub const GELU_TANH_BETA: f32 = 0.797_884_6;
pub const GELU_TANH_KAPPA: f32 = 0.044_715;

/// Beyond this `|x|` GELU's correction term is below f32's smallest number; clamping keeps
/// `|x| · erfc(|x|/√2)` from becoming `∞ · 0` at infinite inputs.
pub const GELU_CLAMP: f64 = 20.0;

fn erfc_nonnegative(z: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = ERFC_COEFFICIENTS
        .iter()
        .rev()
        .fold(0.0, |acc, &c| acc * t + c);
    t * (poly - z * z).exp()
}

fn gelu(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    let x = f64::from(x);
    let a = x.abs().min(GELU_CLAMP);
    (x.max(0.0) - 0.5 * a * erfc_nonnegative(a / std::f64::consts::SQRT_2)) as f32
}

/// Φ(x), the standard normal distribution function.
fn normal_cdf(x: f64) -> f64 {
    let tail = 0.5 * erfc_nonnegative(x.abs() / std::f64::consts::SQRT_2);
    if x >= 0.0 {
        1.0 - tail
    } else {
        tail
    }
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
            Activation::LeakyRelu(_) => "leaky_relu",
            Activation::Elu(_) => "elu",
            Activation::Gelu | Activation::GeluTanh => "gelu",
            Activation::Hardsigmoid => "hardsigmoid",
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
            Activation::LeakyRelu(slope) => {
                if x > 0.0 {
                    x
                } else {
                    x * slope.get()
                }
            }
            Activation::Elu(alpha) => {
                if x > 0.0 {
                    x
                } else {
                    alpha.get() * x.exp_m1()
                }
            }
            Activation::Gelu => gelu(x),
            Activation::GeluTanh => {
                let inner = GELU_TANH_BETA * (x + GELU_TANH_KAPPA * x * x * x);
                0.5 * x * (1.0 + inner.tanh())
            }
            // PyTorch's kernel: `min(max(x + 3, 0), 6) / 6`.
            Activation::Hardsigmoid => (x + 3.0).clamp(0.0, 6.0) / 6.0,
        }
    }

    /// Whether a conv or dense epilogue computes it; the code generator implements exactly
    /// these. `tanh` stays a node of its own: it used to be a libm call per element, and since
    /// it became inline f32x4 code (codegen/vmath.rs) its fusion has not been enabled and
    /// measured yet.
    pub fn fuses_into_epilogue(self) -> bool {
        match self {
            Activation::Relu
            | Activation::Relu6
            | Activation::Sigmoid
            | Activation::Swish
            | Activation::Hardswish
            | Activation::LeakyRelu(_)
            | Activation::Elu(_)
            | Activation::Gelu
            | Activation::Hardsigmoid => true,
            Activation::Tanh | Activation::GeluTanh => false,
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

/// `leaky_relu(slope: 0.01)`, PyTorch's default slope.
pub(super) const LEAKY_RELU: Layer<2> = Layer {
    name: "leaky_relu",
    params: [
        X,
        Param::new("slope", ParamKind::Real, ParamDefault::Real(0.01)),
    ],
    build: |[_, slope], _| {
        let slope = Coefficient::new(slope.real()? as f32);
        Some(Op::Activation(Activation::LeakyRelu(slope)))
    },
};

/// `elu(alpha: 1.0)`, PyTorch's default α.
pub(super) const ELU: Layer<2> = Layer {
    name: "elu",
    params: [
        X,
        Param::new("alpha", ParamKind::Real, ParamDefault::Real(1.0)),
    ],
    build: |[_, alpha], _| {
        let alpha = Coefficient::new(alpha.real()? as f32);
        Some(Op::Activation(Activation::Elu(alpha)))
    },
};

/// `gelu(approximate: "none")`, PyTorch's default; `"tanh"` for the tanh approximation.
pub(super) const GELU: Layer<2> = Layer {
    name: "gelu",
    params: [
        X,
        Param::new(
            "approximate",
            ParamKind::Choice(&["none", "tanh"]),
            ParamDefault::Choice(0),
        ),
    ],
    build: |[_, approximate], _| {
        Some(Op::Activation(match approximate.choice()? {
            0 => Activation::Gelu,
            _ => Activation::GeluTanh,
        }))
    },
};

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
        match self {
            Activation::LeakyRelu(slope) => format!("slope={}", slope.get()),
            Activation::Elu(alpha) => format!("alpha={}", alpha.get()),
            Activation::GeluTanh => "approximate=tanh".to_string(),
            _ => String::new(),
        }
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
    /// 0 and 6; hardswish: `x/3 + 1/2` on [−3, 3]; leaky relu: the slope at 0; elu: α at 0;
    /// hardsigmoid: 0 at ±3).
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
            Activation::LeakyRelu(_) if x > 0.0 => 1.0,
            Activation::LeakyRelu(slope) => slope.get(),
            Activation::Elu(_) if x > 0.0 => 1.0,
            Activation::Elu(alpha) => alpha.get() * x.exp(),
            Activation::Gelu => {
                let x = f64::from(x);
                let density = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
                (normal_cdf(x) + x * density) as f32
            }
            Activation::GeluTanh => {
                let (beta, kappa) = (GELU_TANH_BETA, GELU_TANH_KAPPA);
                let t = (beta * (x + kappa * x * x * x)).tanh();
                0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * beta * (1.0 + 3.0 * kappa * x * x)
            }
            // PyTorch: 1/6 on the open interval (−3, 3), 0 elsewhere.
            Activation::Hardsigmoid if x > -3.0 && x < 3.0 => 1.0 / 6.0,
            Activation::Hardsigmoid => 0.0,
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
