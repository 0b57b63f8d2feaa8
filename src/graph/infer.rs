//! The shape rule, parameter list and cost of every op: the single place that knows them.
//!
//! All arithmetic is checked. A tensor may hold at most [`MAX_ELEMENTS`] elements; anything
//! larger is an error rather than an overflow or an allocation that cannot succeed.

use super::op::{ConvAttrs, Op, Padding, PoolAttrs};
use super::{ParamSpec, Shape};
use thiserror::Error;

/// The most elements one tensor may have (8 GiB of f32).
pub const MAX_ELEMENTS: u64 = 1 << 31;

#[derive(Clone, Debug, Error, PartialEq)]
pub enum ShapeError {
    #[error(
        "{what} of {elements} elements is larger than cnnc's limit of 2^31 elements per tensor"
    )]
    TooLarge { what: String, elements: String },
    #[error(
        "the {kernel_h}×{kernel_w} window is larger than the padded {padded_h}×{padded_w} input"
    )]
    KernelTooLarge {
        kernel_h: usize,
        kernel_w: usize,
        padded_h: usize,
        padded_w: usize,
        input: Shape,
    },
    #[error("{what} must be at least 1")]
    NotPositive { what: &'static str },
    #[error("groups = {groups} does not divide {which} = {channels}")]
    GroupsDontDivide {
        groups: usize,
        which: &'static str,
        channels: usize,
    },
    #[error(
        "{op} needs an image (height × width × channels), but its input is the flat vector {shape}"
    )]
    NeedsSpatial { op: &'static str, shape: Shape },
    #[error("dense needs a flat input, but its input is {shape}")]
    NeedsFlat { shape: Shape },
    #[error("cannot add {left} and {right}: the shapes differ")]
    AddMismatch { left: Shape, right: Shape },
    #[error("cannot multiply {left} and {right}: the shapes differ and neither is 1×1×C with the other's channels")]
    MulMismatch { left: Shape, right: Shape },
    #[error("cannot concatenate {first} and {other}: height and width must agree")]
    ConcatMismatch {
        other_idx: usize,
        first: Shape,
        other: Shape,
    },
    #[error("{op} takes {expected} input tensor(s), not {found}")]
    Arity {
        op: &'static str,
        expected: &'static str,
        found: usize,
    },
    #[error("the literal {what} have shape {found} but this layer needs {expected}")]
    LiteralShape {
        what: &'static str,
        expected: String,
        found: String,
    },
}

impl ShapeError {
    /// A fix, where one is known.
    pub fn help(&self) -> Option<String> {
        match self {
            ShapeError::KernelTooLarge { .. } => Some(
                "use a smaller kernel, pad the input, or remove an earlier downsampling layer"
                    .into(),
            ),
            ShapeError::NeedsFlat { .. } => Some(
                "insert `flatten` (or `global_avgpool -> flatten`) before the dense layer".into(),
            ),
            ShapeError::NeedsSpatial { .. } => Some("apply spatial layers before `flatten`".into()),
            ShapeError::AddMismatch { left, right } => {
                if left.flat || right.flat {
                    None
                } else if left.c != right.c || left.h != right.h || left.w != right.w {
                    let stride = if right.h > left.h && right.h % left.h.max(1) == 0 {
                        right.h / left.h.max(1)
                    } else if left.h > right.h && left.h % right.h.max(1) == 0 {
                        left.h / right.h.max(1)
                    } else {
                        1
                    };
                    let target = left.c.max(right.c);
                    if stride > 1 {
                        Some(format!(
                            "project the shortcut with a 1×1 conv of {target} filters and stride {stride} (and batchnorm) so both sides have the same shape"
                        ))
                    } else {
                        Some(format!(
                            "project the shortcut with a 1×1 conv of {target} filters so both sides have the same channels"
                        ))
                    }
                } else {
                    None
                }
            }
            ShapeError::ConcatMismatch { .. } => Some(
                "give every branch the same stride, and `pad: same` to convolutions and pools"
                    .into(),
            ),
            ShapeError::GroupsDontDivide { .. } => {
                Some("choose groups that divide both the input channels and the filters".into())
            }
            _ => None,
        }
    }
}

fn checked_numel(dims: &[usize], what: &str) -> Result<usize, ShapeError> {
    let mut total: u128 = 1;
    for &d in dims {
        total = total.saturating_mul(d as u128);
    }
    if total > MAX_ELEMENTS as u128 {
        return Err(ShapeError::TooLarge {
            what: what.to_string(),
            elements: crate::diag::thousands(total.min(u64::MAX as u128) as u64),
        });
    }
    Ok(total as usize)
}

/// Checks that a shape (e.g. a declared input) is within the limits.
pub fn check_shape(shape: Shape, what: &str) -> Result<(), ShapeError> {
    if shape.h == 0 || shape.w == 0 || shape.c == 0 {
        return Err(ShapeError::NotPositive {
            what: "every dimension of a shape",
        });
    }
    checked_numel(&[shape.h, shape.w, shape.c], what).map(|_| ())
}

/// Output size of a sliding window along one axis, PyTorch's formula:
/// `floor((n + pad - dilation·(k−1) − 1) / s) + 1`, or with `ceil` rounding, dropping a last
/// window that would start in the right padding. `None` when the window does not fit.
pub fn window_output(
    n: usize,
    kernel: usize,
    stride: usize,
    pad_before: usize,
    pad_after: usize,
    dilation: usize,
    ceil_mode: bool,
) -> Option<usize> {
    let padded = n.checked_add(pad_before)?.checked_add(pad_after)?;
    let span = dilation
        .checked_mul(kernel.checked_sub(1)?)?
        .checked_add(1)?;
    let room = padded.checked_sub(span)?;
    if stride == 0 {
        return None;
    }
    let mut out = if ceil_mode {
        room.div_ceil(stride) + 1
    } else {
        room / stride + 1
    };
    if ceil_mode && (out - 1) * stride >= n + pad_before {
        out -= 1;
    }
    Some(out)
}

/// Padding for `same`: the output is `ceil(n / s)`; an odd total puts the extra pixel after, as
/// TensorFlow does.
pub fn same_padding(n: usize, kernel: usize, stride: usize, dilation: usize) -> (usize, usize) {
    let stride = stride.max(1);
    let out = n.div_ceil(stride);
    let span = dilation * (kernel.saturating_sub(1)) + 1;
    let needed = ((out.saturating_sub(1)) * stride + span).saturating_sub(n);
    (needed / 2, needed - needed / 2)
}

fn positive(value: usize, what: &'static str) -> Result<(), ShapeError> {
    if value == 0 {
        Err(ShapeError::NotPositive { what })
    } else {
        Ok(())
    }
}

fn spatial_input(op: &'static str, shape: Shape) -> Result<(), ShapeError> {
    if shape.flat {
        Err(ShapeError::NeedsSpatial { op, shape })
    } else {
        Ok(())
    }
}

fn window(
    input: Shape,
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    pad: Padding,
    ceil_mode: bool,
) -> Result<(usize, usize), ShapeError> {
    positive(kernel[0].min(kernel[1]), "the kernel size")?;
    positive(stride[0].min(stride[1]), "the stride")?;
    positive(dilation[0].min(dilation[1]), "the dilation")?;
    let h = window_output(
        input.h,
        kernel[0],
        stride[0],
        pad.top,
        pad.bottom,
        dilation[0],
        ceil_mode,
    );
    let w = window_output(
        input.w,
        kernel[1],
        stride[1],
        pad.left,
        pad.right,
        dilation[1],
        ceil_mode,
    );
    match (h, w) {
        (Some(h), Some(w)) => Ok((h, w)),
        _ => Err(ShapeError::KernelTooLarge {
            kernel_h: dilation[0]
                .saturating_mul(kernel[0].saturating_sub(1))
                .saturating_add(1),
            kernel_w: dilation[1]
                .saturating_mul(kernel[1].saturating_sub(1))
                .saturating_add(1),
            padded_h: input.h.saturating_add(pad.top).saturating_add(pad.bottom),
            padded_w: input.w.saturating_add(pad.left).saturating_add(pad.right),
            input,
        }),
    }
}

fn conv_shape(attrs: &ConvAttrs, input: Shape) -> Result<Shape, ShapeError> {
    spatial_input("conv", input)?;
    positive(attrs.filters, "the number of filters")?;
    positive(attrs.groups, "groups")?;
    if !input.c.is_multiple_of(attrs.groups) {
        return Err(ShapeError::GroupsDontDivide {
            groups: attrs.groups,
            which: "the input channels",
            channels: input.c,
        });
    }
    if !attrs.filters.is_multiple_of(attrs.groups) {
        return Err(ShapeError::GroupsDontDivide {
            groups: attrs.groups,
            which: "the filters",
            channels: attrs.filters,
        });
    }
    let (h, w) = window(
        input,
        attrs.kernel,
        attrs.stride,
        attrs.dilation,
        attrs.pad,
        false,
    )?;
    let expected = conv_weight_shape(attrs, input);
    checked_numel(&expected, "the weight tensor")?;
    check_literal("weights", attrs.weights.as_ref(), &expected)?;
    check_literal("bias values", attrs.bias_values.as_ref(), &[attrs.filters])?;
    checked_numel(&[h, w, attrs.filters], "the output")?;
    Ok(Shape::spatial(h, w, attrs.filters))
}

fn conv_weight_shape(attrs: &ConvAttrs, input: Shape) -> Vec<usize> {
    vec![
        attrs.filters,
        input.c / attrs.groups.max(1),
        attrs.kernel[0],
        attrs.kernel[1],
    ]
}

fn dims_text(dims: &[usize]) -> String {
    dims.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("×")
}

fn check_literal(
    what: &'static str,
    literal: Option<&super::Literal>,
    expected: &[usize],
) -> Result<(), ShapeError> {
    let Some(literal) = literal else {
        return Ok(());
    };
    // A literal may leave out leading dimensions of size 1: a single 3×3 filter on one
    // channel is written as a 3×3 list.
    let rank = literal.shape.len();
    let fits = rank <= expected.len()
        && expected[..expected.len() - rank].iter().all(|&d| d == 1)
        && expected[expected.len() - rank..] == literal.shape[..];
    if fits {
        Ok(())
    } else {
        Err(ShapeError::LiteralShape {
            what,
            expected: dims_text(expected),
            found: dims_text(&literal.shape),
        })
    }
}

fn pool_shape(attrs: &PoolAttrs, input: Shape, name: &'static str) -> Result<Shape, ShapeError> {
    spatial_input(name, input)?;
    let (h, w) = window(
        input,
        attrs.kernel,
        attrs.stride,
        [1, 1],
        attrs.pad,
        attrs.ceil_mode,
    )?;
    Ok(Shape::spatial(h, w, input.c))
}

fn arity(op: &Op, inputs: &[Shape]) -> Result<(), ShapeError> {
    let (ok, expected) = match op {
        Op::Input { .. } => (inputs.is_empty(), "no"),
        Op::Add | Op::Mul => (inputs.len() == 2, "two"),
        // A fused residual conv reads the skip tensor as its second input.
        Op::Conv(attrs) if attrs.residual => (inputs.len() == 2, "two"),
        Op::Concat => (!inputs.is_empty(), "one or more"),
        _ => (inputs.len() == 1, "one"),
    };
    if ok {
        Ok(())
    } else {
        Err(ShapeError::Arity {
            op: op.name(),
            expected,
            found: inputs.len(),
        })
    }
}

/// The output shape of `op` applied to inputs of these shapes.
pub fn output_shape(op: &Op, inputs: &[Shape]) -> Result<Shape, ShapeError> {
    arity(op, inputs)?;
    let first = inputs.first().copied().unwrap_or_default();
    match op {
        Op::Input { .. } => Ok(first),
        Op::Conv(attrs) => {
            let out = conv_shape(attrs, first)?;
            // The skip tensor is added elementwise to the output, so it must have its shape.
            match inputs.get(1) {
                Some(&skip) if attrs.residual && skip != out => Err(ShapeError::AddMismatch {
                    left: out,
                    right: skip,
                }),
                _ => Ok(out),
            }
        }
        Op::Dense(attrs) => {
            if !first.flat {
                return Err(ShapeError::NeedsFlat { shape: first });
            }
            positive(attrs.units, "the number of units")?;
            checked_numel(&[attrs.units, first.c], "the weight tensor")?;
            check_literal("weights", attrs.weights.as_ref(), &[attrs.units, first.c])?;
            check_literal("bias values", attrs.bias_values.as_ref(), &[attrs.units])?;
            Ok(Shape::flat(attrs.units))
        }
        Op::Pool(attrs) => pool_shape(attrs, first, op.name()),
        Op::GlobalPool(_) => {
            spatial_input(op.name(), first)?;
            Ok(Shape::spatial(1, 1, first.c))
        }
        Op::AdaptiveAvgPool { out } => {
            spatial_input(op.name(), first)?;
            positive(out[0].min(out[1]), "the output size")?;
            checked_numel(&[out[0], out[1], first.c], "the output")?;
            Ok(Shape::spatial(out[0], out[1], first.c))
        }
        Op::Flatten => Ok(Shape::flat(first.numel())),
        Op::BatchNorm { .. }
        | Op::Dropout { .. }
        | Op::Identity
        | Op::Activation(_)
        | Op::Softmax => Ok(first),
        Op::Add => {
            let (left, right) = (inputs[0], inputs[1]);
            if left == right {
                Ok(left)
            } else {
                Err(ShapeError::AddMismatch { left, right })
            }
        }
        Op::Mul => {
            let (left, right) = (inputs[0], inputs[1]);
            let broadcasts = |small: Shape, big: Shape| {
                !small.flat && small.h == 1 && small.w == 1 && small.c == big.c
            };
            if left == right || broadcasts(right, left) {
                Ok(left)
            } else if broadcasts(left, right) {
                Ok(right)
            } else {
                Err(ShapeError::MulMismatch { left, right })
            }
        }
        Op::Concat => {
            let mut channels = 0usize;
            for (idx, shape) in inputs.iter().enumerate() {
                if shape.h != first.h || shape.w != first.w || shape.flat != first.flat {
                    return Err(ShapeError::ConcatMismatch {
                        other_idx: idx,
                        first,
                        other: *shape,
                    });
                }
                channels = channels.saturating_add(shape.c);
            }
            checked_numel(&[first.h, first.w, channels], "the output")?;
            Ok(Shape {
                c: channels,
                ..first
            })
        }
    }
}

/// The parameter and buffer tensors of `op` on an input of shape `input`, in `state_dict`
/// order. Literal weights are constants, not parameters.
pub fn params(op: &Op, input: Shape) -> Vec<ParamSpec> {
    let param = |name, shape| ParamSpec {
        name,
        shape,
        is_buffer: false,
    };
    let buffer = |name, shape| ParamSpec {
        name,
        shape,
        is_buffer: true,
    };
    match op {
        Op::Conv(attrs) => {
            let mut out = Vec::new();
            if attrs.weights.is_none() {
                out.push(param("weight", conv_weight_shape(attrs, input)));
            }
            if attrs.bias && attrs.bias_values.is_none() {
                out.push(param("bias", vec![attrs.filters]));
            }
            out
        }
        Op::Dense(attrs) => {
            let mut out = Vec::new();
            if attrs.weights.is_none() {
                out.push(param("weight", vec![attrs.units, input.c]));
            }
            if attrs.bias && attrs.bias_values.is_none() {
                out.push(param("bias", vec![attrs.units]));
            }
            out
        }
        Op::BatchNorm { .. } => vec![
            param("weight", vec![input.c]),
            param("bias", vec![input.c]),
            buffer("running_mean", vec![input.c]),
            buffer("running_var", vec![input.c]),
        ],
        _ => Vec::new(),
    }
}

/// Multiply-accumulates of `op`: conv and dense only, as the published counts do.
pub fn macs(op: &Op, input: Shape, output: Shape) -> u64 {
    match op {
        Op::Conv(attrs) => {
            let per_output = (input.c / attrs.groups.max(1)) as u64
                * attrs.kernel[0] as u64
                * attrs.kernel[1] as u64;
            output.numel() as u64 * per_output
        }
        Op::Dense(attrs) => input.c as u64 * attrs.units as u64,
        _ => 0,
    }
}
