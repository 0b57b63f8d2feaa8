//! The op registry: one file per op (or per family sharing a kernel), each holding everything
//! the compiler knows about its op except the lowering — the attribute struct, the surface
//! names and signatures expansion binds calls against, the shape rule, the parameter tensors,
//! the MACs, the dump attributes and the reference forward.
//!
//! [`OpRule`] is what every op provides; it has no default methods, so an attribute struct
//! that forgets one does not compile. [`Op`] is a closed enum and [`Op::with_rule`] is the one
//! exhaustive match from a variant to its rule: a new variant does not compile until it has an
//! arm there, that is, a type implementing all of [`OpRule`]. The lowering has its own
//! exhaustive match (`lower::Lowering::lower_node`). Adding an op therefore touches its file
//! here, its arm in [`Op`] and [`Op::with_rule`], its layers in [`LAYERS`], and its lowering.
//!
//! The variants keep the shapes they had before the registry (`Op::BatchNorm { eps }`,
//! `Op::Flatten`), so code that builds or matches them compiles unchanged; a variant without
//! an attribute struct of its own is given a small view struct (`BatchNormAttrs { eps }`) when
//! it is dispatched.

mod activation;
mod adaptive_avgpool;
mod add;
mod arithmetic;
mod batchnorm;
mod channels;
mod concat;
mod conv;
mod conv_transpose;
mod dense;
mod dropout;
mod flatten;
mod global_pool;
pub mod gradient;
mod groupnorm;
mod identity;
mod input;
mod layernorm;
mod literal;
mod mul;
mod pad;
mod padding;
mod parameter;
mod pointwise_dense;
mod pool;
mod prelu;
mod scalar;
pub mod signature;
mod softmax;
mod upsample;

pub use activation::{
    Activation, Coefficient, ERFC_COEFFICIENTS, GELU_CLAMP, GELU_TANH_BETA, GELU_TANH_KAPPA,
};
pub use adaptive_avgpool::AdaptiveAvgPoolAttrs;
pub use add::AddAttrs;
pub use arithmetic::ArithmeticOp;
pub(crate) use batchnorm::batch_statistics;
pub use batchnorm::BatchNormAttrs;
pub use channels::{ChannelShuffleAttrs, SplitAttrs};
pub use concat::ConcatAttrs;
pub use conv::{ConvAttrs, PAD_MODE};
pub use conv_transpose::{ConvTransposeAttrs, MAX_TRANSPOSE_STRIDE};
pub use dense::DenseAttrs;
pub use dropout::{dropout_scale, DropoutAttrs};
pub use flatten::FlattenAttrs;
pub use global_pool::GlobalPoolAttrs;
pub use groupnorm::GroupNormAttrs;
pub use identity::IdentityAttrs;
pub use input::InputAttrs;
pub use layernorm::LayerNormAttrs;
pub use literal::Literal;
pub use mul::MulAttrs;
pub use pad::{PadAttrs, PadMode, PAD_MODES};
pub use padding::Padding;
pub use parameter::{ParameterAttrs, PARAMETER_SUFFIX};
pub use pointwise_dense::PointwiseDenseAttrs;
pub use pool::{PoolAttrs, PoolKind};
pub use prelu::PReluAttrs;
pub use scalar::{ScalarAttrs, ScalarOp};
pub use softmax::SoftmaxAttrs;
pub use upsample::{bilinear_source, UpsampleAttrs, UpsampleMode};

use super::{Init, ParamSpec, Shape, ShapeError};
use crate::reference::{Forward, RunError, Tensor};
use signature::Surface;

/// How many input tensors an op takes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Arity {
    None,
    One,
    Two,
    OneOrMore,
}

impl Arity {
    fn accepts(self, n: usize) -> bool {
        match self {
            Arity::None => n == 0,
            Arity::One => n == 1,
            Arity::Two => n == 2,
            Arity::OneOrMore => n >= 1,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Arity::None => "no",
            Arity::One => "one",
            Arity::Two => "two",
            Arity::OneOrMore => "one or more",
        }
    }
}

/// The role of an op in a drawing of the graph (`cnnc graph`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Category {
    Input,
    /// Conv and dense: the layers that carry the network's weights and its arithmetic.
    Weighted,
    /// Ops that merge tensors (add, mul, concat).
    Merge,
    Other,
}

/// Everything the compiler knows about an op, but its lowering.
pub trait OpRule {
    /// The layer's name as `cnnc emit graph` prints it and automatic names use it.
    fn name(&self) -> &'static str;
    fn arity(&self) -> Arity;
    /// The output shape for inputs of these shapes; their number is already checked against
    /// [`OpRule::arity`]. All arithmetic is checked.
    fn output_shape(&self, inputs: &[Shape]) -> Result<Shape, ShapeError>;
    /// The parameter and buffer tensors on an input of shape `input`, in `state_dict` order.
    /// Literal weights are constants, not parameters.
    fn params(&self, input: Shape) -> Vec<ParamSpec>;
    /// Multiply-accumulates; by the published convention only conv and dense count.
    fn macs(&self, input: Shape, output: Shape) -> u64;
    /// The attributes after the op's name in `cnnc emit graph`, or nothing.
    fn dump_attrs(&self) -> String;
    fn category(&self) -> Category;
    /// The reference interpreter's definition of the op (see `reference`).
    fn reference_forward(&self, cx: &Forward, args: &[&Tensor]) -> Result<Tensor, RunError>;
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
    /// A transposed convolution (PyTorch's `ConvTranspose2d`).
    ConvTranspose(ConvTransposeAttrs),
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
    /// The channels regrouped, as PyTorch's `ChannelShuffle`.
    ChannelShuffle(ChannelShuffleAttrs),
    /// One of several equal channel groups.
    Split(SplitAttrs),
    /// Nearest or bilinear upsampling by integer factors.
    Upsample(UpsampleAttrs),
    /// Elementwise arithmetic with a number (`x + 3`, `x / 6`).
    Scalar(ScalarAttrs),
    /// Elementwise `x − y` or `x / y` of two tensors, broadcast as `Mul`.
    Arithmetic(ArithmeticOp),
    /// Over the channels of each pixel.
    LayerNorm(LayerNormAttrs),
    /// A dense layer applied at every pixel, with PyTorch's `Linear` weight.
    PointwiseDense(PointwiseDenseAttrs),
    /// A learned 1×1×C tensor named by the layer's path (`layer_scale`).
    Parameter(ParameterAttrs),
    /// A leaky ReLU with learned slopes.
    PRelu(PReluAttrs),
    /// Group norm (instance norm: one channel per group).
    GroupNorm(GroupNormAttrs),
    /// Padding by zeros, reflection or replication, as PyTorch's `F.pad`.
    Pad(PadAttrs),
}

impl Op {
    /// Calls `f` with the op's rule: the one exhaustive dispatch from a variant to its file.
    pub fn with_rule<R>(&self, f: impl FnOnce(&dyn OpRule) -> R) -> R {
        match self {
            Op::Input { name, index } => f(&InputAttrs {
                name,
                index: *index,
            }),
            Op::Conv(attrs) => f(attrs),
            Op::ConvTranspose(attrs) => f(attrs),
            Op::Dense(attrs) => f(attrs),
            Op::Pool(attrs) => f(attrs),
            Op::GlobalPool(kind) => f(&GlobalPoolAttrs { kind: *kind }),
            Op::AdaptiveAvgPool { out } => f(&AdaptiveAvgPoolAttrs { out: *out }),
            Op::Flatten => f(&FlattenAttrs),
            Op::BatchNorm { eps } => f(&BatchNormAttrs { eps: *eps }),
            Op::Dropout { p } => f(&DropoutAttrs { p: *p }),
            Op::Identity => f(&IdentityAttrs),
            Op::Activation(activation) => f(activation),
            Op::Softmax => f(&SoftmaxAttrs),
            Op::Add => f(&AddAttrs),
            Op::Mul => f(&MulAttrs),
            Op::Concat => f(&ConcatAttrs),
            Op::ChannelShuffle(attrs) => f(attrs),
            Op::Split(attrs) => f(attrs),
            Op::Upsample(attrs) => f(attrs),
            Op::Scalar(attrs) => f(attrs),
            Op::Arithmetic(op) => f(op),
            Op::LayerNorm(attrs) => f(attrs),
            Op::PointwiseDense(attrs) => f(attrs),
            Op::Parameter(attrs) => f(attrs),
            Op::PRelu(attrs) => f(attrs),
            Op::GroupNorm(attrs) => f(attrs),
            Op::Pad(attrs) => f(attrs),
        }
    }

    /// The layer's name as written in the language.
    pub fn name(&self) -> &'static str {
        self.with_rule(|rule| rule.name())
    }

    /// The output shape of the op on inputs of these shapes.
    pub fn output_shape(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        self.with_rule(|rule| {
            let arity = rule.arity();
            if !arity.accepts(inputs.len()) {
                return Err(ShapeError::Arity {
                    op: rule.name(),
                    expected: arity.describe(),
                    found: inputs.len(),
                });
            }
            rule.output_shape(inputs)
        })
    }

    pub fn params(&self, input: Shape) -> Vec<ParamSpec> {
        self.with_rule(|rule| rule.params(input))
    }

    pub fn macs(&self, input: Shape, output: Shape) -> u64 {
        self.with_rule(|rule| rule.macs(input, output))
    }

    pub fn dump_attrs(&self) -> String {
        self.with_rule(|rule| rule.dump_attrs())
    }

    pub fn category(&self) -> Category {
        self.with_rule(|rule| rule.category())
    }

    pub fn reference_forward(&self, cx: &Forward, args: &[&Tensor]) -> Result<Tensor, RunError> {
        self.with_rule(|rule| rule.reference_forward(cx, args))
    }
}

/// The weighted layers' epilogue, `activation(W·x + bias (+ skip))`, as the optimizer reads it
/// to fold batch norms and activations into conv and dense layers.
pub struct Epilogue<'a> {
    /// The output channels (conv filters, dense units).
    pub channels: usize,
    pub weights: &'a Option<Literal>,
    pub bias_values: &'a Option<Literal>,
    pub bias: bool,
    pub activation: Option<Activation>,
    /// A residual conv adds its skip tensor before the activation.
    pub residual: bool,
}

/// The writable fields of an [`Epilogue`].
pub struct EpilogueMut<'a> {
    pub weights: &'a mut Option<Literal>,
    pub bias_values: &'a mut Option<Literal>,
    pub bias: &'a mut bool,
    pub activation: &'a mut Option<Activation>,
}

impl Op {
    /// The epilogue of a layer that has one (conv, dense). Exhaustive, so a new op says
    /// whether it has one.
    pub fn epilogue(&self) -> Option<Epilogue<'_>> {
        match self {
            Op::Conv(a) => Some(Epilogue {
                channels: a.filters,
                weights: &a.weights,
                bias_values: &a.bias_values,
                bias: a.bias,
                activation: a.activation,
                residual: a.residual,
            }),
            Op::Dense(a) => Some(Epilogue {
                channels: a.units,
                weights: &a.weights,
                bias_values: &a.bias_values,
                bias: a.bias,
                activation: a.activation,
                residual: false,
            }),
            Op::Input { .. }
            | Op::ConvTranspose(_)
            | Op::Pool(_)
            | Op::GlobalPool(_)
            | Op::AdaptiveAvgPool { .. }
            | Op::Flatten
            | Op::BatchNorm { .. }
            | Op::Dropout { .. }
            | Op::Identity
            | Op::Activation(_)
            | Op::Softmax
            | Op::Add
            | Op::Mul
            | Op::Concat
            | Op::ChannelShuffle(_)
            | Op::Split(_)
            | Op::Upsample(_)
            | Op::Scalar(_)
            | Op::Arithmetic(_)
            | Op::LayerNorm(_)
            | Op::PointwiseDense(_)
            | Op::Parameter(_)
            | Op::PRelu(_)
            | Op::GroupNorm(_)
            | Op::Pad(_) => None,
        }
    }

    /// The writable epilogue of a layer that has one; `Some` exactly when
    /// [`Op::epilogue`] is.
    pub fn epilogue_mut(&mut self) -> Option<EpilogueMut<'_>> {
        match self {
            Op::Conv(a) => Some(EpilogueMut {
                weights: &mut a.weights,
                bias_values: &mut a.bias_values,
                bias: &mut a.bias,
                activation: &mut a.activation,
            }),
            Op::Dense(a) => Some(EpilogueMut {
                weights: &mut a.weights,
                bias_values: &mut a.bias_values,
                bias: &mut a.bias,
                activation: &mut a.activation,
            }),
            Op::Input { .. }
            | Op::ConvTranspose(_)
            | Op::Pool(_)
            | Op::GlobalPool(_)
            | Op::AdaptiveAvgPool { .. }
            | Op::Flatten
            | Op::BatchNorm { .. }
            | Op::Dropout { .. }
            | Op::Identity
            | Op::Activation(_)
            | Op::Softmax
            | Op::Add
            | Op::Mul
            | Op::Concat
            | Op::ChannelShuffle(_)
            | Op::Split(_)
            | Op::Upsample(_)
            | Op::Scalar(_)
            | Op::Arithmetic(_)
            | Op::LayerNorm(_)
            | Op::PointwiseDense(_)
            | Op::Parameter(_)
            | Op::PRelu(_)
            | Op::GroupNorm(_)
            | Op::Pad(_) => None,
        }
    }

    /// The numbers written in the source for a layer's tensors (`weights=`, `bias=` lists),
    /// with the full shape each stands for: they become the node's constants. Exhaustive,
    /// so a new op says whether it has any.
    pub fn literal_tensors(&self, input: Shape) -> Vec<(&'static str, Vec<usize>, &Literal)> {
        let (weight_shape, channels, weights, bias) = match self {
            Op::Conv(a) => (
                a.weight_shape(input.c).to_vec(),
                a.filters,
                &a.weights,
                &a.bias_values,
            ),
            Op::Dense(a) => (vec![a.units, input.c], a.units, &a.weights, &a.bias_values),
            Op::Input { .. }
            | Op::ConvTranspose(_)
            | Op::Pool(_)
            | Op::GlobalPool(_)
            | Op::AdaptiveAvgPool { .. }
            | Op::Flatten
            | Op::BatchNorm { .. }
            | Op::Dropout { .. }
            | Op::Identity
            | Op::Activation(_)
            | Op::Softmax
            | Op::Add
            | Op::Mul
            | Op::Concat
            | Op::ChannelShuffle(_)
            | Op::Split(_)
            | Op::Upsample(_)
            | Op::Scalar(_)
            | Op::Arithmetic(_)
            | Op::LayerNorm(_)
            | Op::PointwiseDense(_)
            | Op::Parameter(_)
            | Op::PRelu(_)
            | Op::GroupNorm(_)
            | Op::Pad(_) => return Vec::new(),
        };
        let mut out = Vec::new();
        if let Some(literal) = weights {
            out.push(("weight", weight_shape, literal));
        }
        if let Some(literal) = bias {
            out.push(("bias", vec![channels], literal));
        }
        out
    }

    /// The name of a network input node.
    pub fn input_name(&self) -> Option<&str> {
        if let Op::Input { name, .. } = self {
            Some(name)
        } else {
            None
        }
    }
}

/// The catalogue: every layer the language knows, one line each, in the order diagnostics
/// list them.
static LAYERS: &[&dyn Surface] = &[
    &conv::CONV,
    &conv::DWCONV,
    &conv_transpose::CONV_TRANSPOSE,
    &dense::DENSE,
    &pointwise_dense::POINTWISE_DENSE,
    &pool::MAXPOOL,
    &pool::AVGPOOL,
    &global_pool::GLOBAL_AVGPOOL,
    &global_pool::GLOBAL_MAXPOOL,
    &adaptive_avgpool::ADAPTIVE_AVGPOOL,
    &pad::PAD,
    &flatten::FLATTEN,
    &batchnorm::BATCHNORM,
    &layernorm::LAYERNORM,
    &groupnorm::GROUPNORM,
    &groupnorm::INSTANCENORM,
    &dropout::DROPOUT,
    &identity::IDENTITY,
    &activation::layer(Activation::Relu),
    &activation::layer(Activation::Relu6),
    &activation::layer(Activation::Sigmoid),
    &activation::layer(Activation::Swish),
    &activation::alias("silu", Activation::Swish),
    &activation::layer(Activation::Tanh),
    &activation::layer(Activation::Hardswish),
    &activation::layer(Activation::Hardsigmoid),
    &activation::LEAKY_RELU,
    &activation::ELU,
    &activation::GELU,
    &prelu::PRELU,
    &softmax::SOFTMAX,
    &add::ADD,
    &mul::MUL,
    &concat::CONCAT,
    &channels::CHANNEL_SHUFFLE,
    &channels::SPLIT,
    &upsample::UPSAMPLE,
    &parameter::PARAMETER,
];

/// Every layer of the language, in catalogue order.
pub fn layers() -> impl Iterator<Item = &'static dyn Surface> {
    LAYERS.iter().copied()
}

/// The layer called `name`, if there is one.
pub fn layer(name: &str) -> Option<&'static dyn Surface> {
    layers().find(|l| l.name() == name)
}

/// A learned parameter tensor.
fn param(name: &'static str, shape: Vec<usize>, init: Init) -> ParamSpec {
    ParamSpec {
        name,
        shape,
        is_buffer: false,
        init,
    }
}

/// A buffer: a tensor of the layer's state that training does not learn.
fn buffer(name: &'static str, shape: Vec<usize>, init: Init) -> ParamSpec {
    ParamSpec {
        name,
        shape,
        is_buffer: true,
        init,
    }
}

#[cfg(test)]
mod tests {
    use super::signature::ArgValue;
    use super::*;

    /// Every builder reads each parameter as the kind it declares: given one value of each
    /// declared kind, every layer builds.
    #[test]
    fn every_layer_builds_from_values_of_its_declared_kinds() {
        let input = Shape::spatial(8, 8, 4);
        for layer in layers() {
            let values = layer
                .params()
                .iter()
                .map(|p| ArgValue::example(p.kind))
                .collect();
            assert!(
                layer.build(values, input).is_some(),
                "`{}` reads a parameter as another kind than it declares",
                layer.name()
            );
        }
    }

    #[test]
    fn layer_names_are_unique() {
        let names: Vec<&str> = layers().map(|l| l.name()).collect();
        for (idx, name) in names.iter().enumerate() {
            assert!(!names[..idx].contains(name), "`{name}` is listed twice");
        }
    }
}
