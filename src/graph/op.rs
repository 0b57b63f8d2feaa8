//! The closed set of layer operations and their attributes.

use std::fmt;

/// Padding in pixels on each side; asymmetric where a `same` padding of an even kernel needs it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct Padding {
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

impl Padding {
    pub fn uniform(p: usize) -> Padding {
        Padding {
            top: p,
            bottom: p,
            left: p,
            right: p,
        }
    }

    pub fn is_zero(&self) -> bool {
        *self == Padding::default()
    }
}

impl fmt::Display for Padding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Padding {
            top,
            bottom,
            left,
            right,
        } = *self;
        if top == bottom && left == right && top == left {
            write!(f, "{top}")
        } else if top == bottom && left == right {
            write!(f, "[{top}, {left}]")
        } else {
            write!(f, "[{top}, {bottom}, {left}, {right}]")
        }
    }
}

/// Numbers given in the source instead of learned ones, in PyTorch's layout.
#[derive(Clone, Debug, PartialEq)]
pub struct Literal {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    Relu,
    Relu6,
    Sigmoid,
    /// `x * sigmoid(x)`, also called SiLU.
    Swish,
    Tanh,
}

impl Activation {
    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Relu6 => "relu6",
            Activation::Sigmoid => "sigmoid",
            Activation::Swish => "swish",
            Activation::Tanh => "tanh",
        }
    }

    /// The function on one value, in f32 as every backend computes it.
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Relu => x.max(0.0),
            Activation::Relu6 => x.clamp(0.0, 6.0),
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Activation::Swish => x / (1.0 + (-x).exp()),
            Activation::Tanh => x.tanh(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ConvAttrs {
    pub filters: usize,
    /// `[kh, kw]`.
    pub kernel: [usize; 2],
    /// `[sh, sw]`.
    pub stride: [usize; 2],
    /// `[dh, dw]`; 1 is an ordinary convolution.
    pub dilation: [usize; 2],
    pub pad: Padding,
    pub groups: usize,
    pub bias: bool,
    /// Given weights `[out, in/groups, kh, kw]`, instead of a `weight` parameter.
    pub weights: Option<Literal>,
    /// Given bias values `[out]`, instead of a `bias` parameter.
    pub bias_values: Option<Literal>,
    /// An activation fused into the convolution's epilogue by the optimizer.
    pub activation: Option<Activation>,
    /// Set by the optimizer when a following residual `+` is fused into the epilogue: the
    /// conv then takes a second input, the skip tensor of the output's shape, and computes
    /// `activation(acc + bias + skip)`.
    pub residual: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DenseAttrs {
    pub units: usize,
    pub bias: bool,
    pub weights: Option<Literal>,
    pub bias_values: Option<Literal>,
    pub activation: Option<Activation>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Avg,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PoolAttrs {
    pub kind: PoolKind,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub pad: Padding,
    /// Round the output size up, as PyTorch's `ceil_mode=True` (GoogLeNet).
    pub ceil_mode: bool,
    /// Average pooling divides by the full window, padded cells included (PyTorch's default).
    pub count_include_pad: bool,
}

/// A layer operation. Fused forms are ordinary variants with more fields set, so later
/// stages need no special cases.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// The network's `index`-th input.
    Input {
        name: String,
        index: usize,
    },
    Conv(ConvAttrs),
    Dense(DenseAttrs),
    Pool(PoolAttrs),
    /// Pools each channel to 1×1.
    GlobalPool(PoolKind),
    /// Averages into a fixed `[h, w]` output grid, as PyTorch's `AdaptiveAvgPool2d`.
    AdaptiveAvgPool {
        out: [usize; 2],
    },
    /// To a vector in channel-major (C, H, W) order, as `torch.flatten` on NCHW.
    Flatten,
    BatchNorm {
        eps: f64,
    },
    /// Identity at inference.
    Dropout {
        p: f64,
    },
    Identity,
    Activation(Activation),
    /// Over the channels.
    Softmax,
    /// Elementwise sum of two equal shapes.
    Add,
    /// Elementwise product; a 1×1×C operand is broadcast over the other's H×W.
    Mul,
    /// Along the channels.
    Concat,
}

impl Op {
    /// The layer's name as written in the language.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Conv(attrs) if attrs.groups > 1 && attrs.groups == attrs.filters => "dwconv",
            Op::Conv(_) => "conv",
            Op::Dense(_) => "dense",
            Op::Pool(PoolAttrs {
                kind: PoolKind::Max,
                ..
            }) => "maxpool",
            Op::Pool(PoolAttrs {
                kind: PoolKind::Avg,
                ..
            }) => "avgpool",
            Op::GlobalPool(PoolKind::Avg) => "global_avgpool",
            Op::GlobalPool(PoolKind::Max) => "global_maxpool",
            Op::AdaptiveAvgPool { .. } => "adaptive_avgpool",
            Op::Flatten => "flatten",
            Op::BatchNorm { .. } => "batchnorm",
            Op::Dropout { .. } => "dropout",
            Op::Identity => "identity",
            Op::Activation(act) => act.name(),
            Op::Softmax => "softmax",
            Op::Add => "add",
            Op::Mul => "mul",
            Op::Concat => "concat",
        }
    }
}
