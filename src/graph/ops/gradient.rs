//! The gradient rules' contract: [`GradRule`] is what every op provides for training, beside its
//! [`OpRule`](super::OpRule), and [`Op::with_grad_rule`] is its one exhaustive dispatch, so a new
//! variant does not compile until its file has a gradient rule. Each op implements it in its own
//! file, next to its reference forward; `reference::backward` drives them over a graph.
//!
//! A rule sees the node's inputs, its output in training mode and the gradient of the loss
//! with respect to that output, and returns the gradients with respect to the inputs and the
//! learned parameters (by their suffix, `weight`, `bias`). It computes only what [`Wanted`]
//! asks for, so a frozen layer costs no weight gradient and a layer with nothing trainable
//! upstream no input gradient.

use super::{Op, OpRule};
use crate::reference::{Forward, RunError, Tensor};
use ndarray::ArrayD;

/// How the training forward runs: PyTorch's `model.train()` or `model.eval()`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TrainingMode {
    /// Batch norm on batch statistics and dropout active; otherwise both as at inference.
    pub training: bool,
    /// Seeds the dropout masks (one per node, from the node's index).
    pub seed: u64,
}

/// Which gradients the driver needs from a node.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    /// Gradients for the inputs (one flag per input).
    pub inputs: bool,
    /// Gradients for the learned parameters (not for a frozen layer).
    pub params: bool,
}

/// What a rule returns: `inputs[i]` is the gradient for input `i` (`None` when not wanted),
/// `params` the gradients of the learned parameters it was asked for, by suffix.
#[derive(Debug, Default)]
pub struct Gradients {
    pub inputs: Vec<Option<Tensor>>,
    pub params: Vec<(&'static str, ArrayD<f32>)>,
}

/// The training side of an op.
pub trait GradRule: OpRule {
    /// The forward in `mode`. It is the reference forward for every op whose training
    /// behaviour is its inference behaviour; batch norm (batch statistics) and dropout (an
    /// inverted-dropout mask) override it.
    fn training_forward(
        &self,
        cx: &Forward,
        _mode: TrainingMode,
        args: &[&Tensor],
    ) -> Result<Tensor, RunError> {
        self.reference_forward(cx, args)
    }

    /// The gradients of the loss with respect to the inputs and parameters, given `output`
    /// (the training forward's result) and `grad`, the gradient with respect to it.
    fn reference_backward(
        &self,
        cx: &Forward,
        mode: TrainingMode,
        args: &[&Tensor],
        output: &Tensor,
        grad: &Tensor,
        wanted: Wanted,
    ) -> Result<Gradients, RunError>;
}

impl Op {
    /// Calls `f` with the op's gradient rule: the one exhaustive dispatch for training.
    pub fn with_grad_rule<R>(&self, f: impl FnOnce(&dyn GradRule) -> R) -> R {
        use super::*;
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
}

/// The gradients of an op whose inputs pass the output gradient through unchanged.
pub(super) fn pass_through(n_inputs: usize, grad: &Tensor, wanted: Wanted) -> Gradients {
    Gradients {
        inputs: (0..n_inputs)
            .map(|_| wanted.inputs.then(|| grad.clone()))
            .collect(),
        params: Vec::new(),
    }
}

/// The gradients of a one-input op without parameters.
pub(super) fn one_input(wanted: Wanted, input_grad: impl FnOnce() -> Tensor) -> Gradients {
    Gradients {
        inputs: vec![wanted.inputs.then(input_grad)],
        params: Vec::new(),
    }
}
