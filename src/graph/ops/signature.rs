//! How a layer is called in the language: its parameters, declared once per op with their
//! type and default, and the typed values expansion hands to the op's builder.
//!
//! A [`Layer`] ties its parameter list and its builder together through the array length `N`:
//! the builder receives exactly one [`ArgValue`] per declared parameter, in declaration order,
//! and destructures the array. A parameter added to the list without being read by the
//! builder, or read under the wrong position, does not compile; an argument the user spells
//! wrong is rejected by expansion's binder, which only knows the declared names.

use super::{Literal, Op, Padding};
use crate::graph::Shape;

/// The type of a parameter, which decides how expansion converts its argument.
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum ParamKind {
    /// An input tensor; expansion turns these into the node's inputs.
    Tensor,
    /// An int of at least `min`.
    Count {
        min: usize,
    },
    /// An int `n` (meaning `[n, n]`) or a list `[a, b]`, each at least `min`.
    Pair {
        min: usize,
    },
    Flag,
    /// A non-negative number.
    Real,
    /// A probability of dropping a value: a number in [0, 1).
    Probability,
    /// `1`, `[ph, pw]`, `[top, bottom, left, right]`, `same` or `valid`.
    Pad,
    /// `true`, `false`, or literal bias values.
    Bias,
    /// A nested list of numbers.
    Literal,
    /// One of these strings (`mode: "bilinear"`); the builder gets its position.
    Choice(&'static [&'static str]),
}

/// The value a parameter takes when its argument is left out.
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum ParamDefault {
    /// The argument must be given.
    Required,
    /// Left out, the builder sees [`ArgValue::Absent`] and decides (pool `stride` defaults
    /// to its kernel).
    Absent,
    Count(usize),
    Pair([usize; 2]),
    Flag(bool),
    Real(f64),
    /// The position of the default among the choices.
    Choice(usize),
}

#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Param {
    pub name: &'static str,
    pub kind: ParamKind,
    pub default: ParamDefault,
}

impl Param {
    pub const fn tensor(name: &'static str) -> Param {
        Param {
            name,
            kind: ParamKind::Tensor,
            default: ParamDefault::Required,
        }
    }

    pub const fn new(name: &'static str, kind: ParamKind, default: ParamDefault) -> Param {
        Param {
            name,
            kind,
            default,
        }
    }

    pub fn required(&self) -> bool {
        self.default == ParamDefault::Required
    }
}

/// Padding as written, before `same` is resolved against the input, kernel and stride.
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum PadSpec {
    Same,
    Explicit(Padding),
}

impl PadSpec {
    /// The padding in pixels for a window of this kernel, stride and dilation on `input`.
    pub fn resolve(
        self,
        input: Shape,
        kernel: [usize; 2],
        stride: [usize; 2],
        dilation: [usize; 2],
    ) -> Padding {
        match self {
            PadSpec::Explicit(pad) => pad,
            PadSpec::Same => {
                let same = crate::graph::infer::same_padding;
                let (top, bottom) = same(input.h, kernel[0], stride[0], dilation[0]);
                let (left, right) = same(input.w, kernel[1], stride[1], dilation[1]);
                Padding {
                    top,
                    bottom,
                    left,
                    right,
                }
            }
        }
    }
}

/// One converted argument, of its parameter's [`ParamKind`].
#[derive(Clone, Debug, PartialEq)]
pub enum ArgValue {
    /// An optional argument left out, whose parameter has no fixed default.
    Absent,
    /// A tensor argument; the tensor itself has become an input of the node.
    Tensor,
    Count(usize),
    Pair([usize; 2]),
    Flag(bool),
    Real(f64),
    Pad(PadSpec),
    /// Whether the layer has a bias, and its literal values if they were given.
    Bias(bool, Option<Literal>),
    Literal(Literal),
    /// The position of the chosen string among the parameter's choices.
    Choice(usize),
}

// The accessors return `None` when the value is not of the kind asked for. Expansion converts
// every argument by its parameter's declared kind, so that only happens when a builder reads
// a parameter as a different kind than it declares, which the catalogue's tests catch.
impl ArgValue {
    pub fn count(self) -> Option<usize> {
        match self {
            ArgValue::Count(n) => Some(n),
            _ => None,
        }
    }

    pub fn pair(self) -> Option<[usize; 2]> {
        match self {
            ArgValue::Pair(p) => Some(p),
            _ => None,
        }
    }

    /// A pair, or `fallback` when the argument was left out.
    pub fn pair_or(self, fallback: [usize; 2]) -> Option<[usize; 2]> {
        match self {
            ArgValue::Absent => Some(fallback),
            other => other.pair(),
        }
    }

    pub fn flag(self) -> Option<bool> {
        match self {
            ArgValue::Flag(b) => Some(b),
            _ => None,
        }
    }

    pub fn real(self) -> Option<f64> {
        match self {
            ArgValue::Real(x) => Some(x),
            _ => None,
        }
    }

    pub fn choice(self) -> Option<usize> {
        match self {
            ArgValue::Choice(idx) => Some(idx),
            _ => None,
        }
    }

    /// Padding as written; left out, no padding.
    pub fn pad(self) -> Option<PadSpec> {
        match self {
            ArgValue::Pad(p) => Some(p),
            ArgValue::Absent => Some(PadSpec::Explicit(Padding::default())),
            _ => None,
        }
    }

    /// Whether there is a bias and its literal values; left out, a learned bias.
    pub fn bias(self) -> Option<(bool, Option<Literal>)> {
        match self {
            ArgValue::Bias(b, literal) => Some((b, literal)),
            ArgValue::Absent => Some((true, None)),
            _ => None,
        }
    }

    /// Literal values, or `None` inside `Some` when left out.
    pub fn literal(self) -> Option<Option<Literal>> {
        match self {
            ArgValue::Literal(literal) => Some(Some(literal)),
            ArgValue::Absent => Some(None),
            _ => None,
        }
    }

    /// A value of `kind`, for tests that call every builder.
    pub fn example(kind: ParamKind) -> ArgValue {
        match kind {
            ParamKind::Tensor => ArgValue::Tensor,
            ParamKind::Count { min } => ArgValue::Count(min.max(1)),
            ParamKind::Pair { min } => ArgValue::Pair([min.max(1); 2]),
            ParamKind::Flag => ArgValue::Flag(false),
            ParamKind::Real | ParamKind::Probability => ArgValue::Real(0.5),
            ParamKind::Pad => ArgValue::Pad(PadSpec::Same),
            ParamKind::Bias => ArgValue::Bias(true, None),
            ParamKind::Literal => ArgValue::Absent,
            ParamKind::Choice(_) => ArgValue::Choice(0),
        }
    }
}

/// A layer as the language sees it: a name, a signature and a builder. One op may have
/// several (`maxpool` and `avgpool` build `Op::Pool`).
pub struct Layer<const N: usize> {
    pub name: &'static str,
    pub params: [Param; N],
    /// Builds the op from one value per parameter, in order, for an input of this shape.
    /// `None` only when a parameter is read as another kind than it declares.
    pub build: fn([ArgValue; N], Shape) -> Option<Op>,
}

/// A [`Layer`] of any arity, as the catalogue lists it.
pub trait Surface: Sync {
    fn name(&self) -> &'static str;
    fn params(&self) -> &[Param];
    /// `values` holds one value per parameter of [`Surface::params`].
    fn build(&self, values: Vec<ArgValue>, input: Shape) -> Option<Op>;
    /// Takes any number of tensors and nothing else (`concat`).
    fn variadic(&self) -> bool {
        false
    }
}

impl<const N: usize> Surface for Layer<N> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn params(&self) -> &[Param] {
        &self.params
    }

    fn build(&self, values: Vec<ArgValue>, input: Shape) -> Option<Op> {
        let values: [ArgValue; N] = values.try_into().ok()?;
        (self.build)(values, input)
    }
}

/// The one parameter of a layer that takes only its input tensor.
pub const X: Param = Param::tensor("x");
