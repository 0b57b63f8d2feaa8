//! Shape inference's errors and the checked arithmetic every op's shape rule (in `ops/`) is
//! built from.
//!
//! All arithmetic is checked. A tensor may hold at most [`MAX_ELEMENTS`] elements; anything
//! larger is an error rather than an overflow or an allocation that cannot succeed.

use super::{ArithmeticOp, Op, Padding, ParamSpec, Shape};
use crate::diag::{Code, Diagnostic};
use crate::source::Span;
use thiserror::Error;

/// The most elements one tensor may have (8 GiB of f32).
pub const MAX_ELEMENTS: u64 = 1 << 31;

#[derive(Clone, Debug, Error, PartialEq)]
pub enum ShapeError {
    /// `elements` is `None` when the count overflowed: printing a saturated number would
    /// state a wrong count.
    #[error("{what} {}", element_count_phrase(.elements.as_deref()))]
    TooLarge {
        what: String,
        elements: Option<String>,
    },
    /// A size is `None` when computing it overflowed.
    #[error(
        "{} is larger than {}",
        sized_phrase("the", *.kernel_h, *.kernel_w, "window"),
        sized_phrase("the padded", *.padded_h, *.padded_w, "input")
    )]
    KernelTooLarge {
        kernel_h: Option<usize>,
        kernel_w: Option<usize>,
        padded_h: Option<usize>,
        padded_w: Option<usize>,
        input: Shape,
    },
    #[error(
        "a padding of {pad} is more than half of the {}×{} pooling window, so a window could hold only padding",
        kernel[0],
        kernel[1]
    )]
    PoolPaddingTooLarge {
        pad: usize,
        kernel: [usize; 2],
        limit: usize,
    },
    #[error(
        "a reflect padding of {pad} needs an input larger than {pad} along its {axis}, but the {axis} is {size}"
    )]
    ReflectPadding {
        pad: usize,
        axis: &'static str,
        size: usize,
    },
    #[error("a padding of {pad} is more than {limit}, {what}")]
    PaddingTooLarge {
        pad: usize,
        limit: usize,
        what: &'static str,
    },
    #[error(
        "an output_padding of {output_padding} is not smaller than the stride ({stride}) or the dilation ({dilation})"
    )]
    OutputPadding {
        output_padding: usize,
        stride: usize,
        dilation: usize,
    },
    #[error(
        "the padding removes the whole output: the transposed convolution gives {}×{} before padding, and the padding takes {}×{} away",
        full[0], full[1], pad[0], pad[1]
    )]
    TransposePaddingTooLarge { full: [usize; 2], pad: [usize; 2] },
    #[error("`pad: same` is not defined for a transposed convolution")]
    TransposeSamePadding,
    #[error("a stride of {stride} is more than {limit}")]
    StrideTooLarge { stride: usize, limit: usize },
    #[error("{what} must be at least 1")]
    NotPositive { what: &'static str },
    #[error("groups = {groups} does not divide {which} = {channels}")]
    GroupsDontDivide {
        groups: usize,
        which: &'static str,
        channels: usize,
    },
    #[error("{op} divides the channels into {groups} equal groups, but {groups} does not divide {channels}")]
    ChannelGroups {
        op: &'static str,
        groups: usize,
        channels: usize,
    },
    #[error("{}", upsample_size_phrase(*.input, *.size, *.scale))]
    UpsampleSize {
        input: [usize; 2],
        size: [usize; 2],
        scale: [usize; 2],
    },
    #[error("an upsampling scale of {scale} is more than {limit}")]
    ScaleTooLarge { scale: usize, limit: usize },
    #[error("a split into {parts} parts has no part {index}: they are numbered 0 to {}", .parts - 1)]
    SplitIndex { index: usize, parts: usize },
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
    #[error("cannot {}: the shapes differ and neither is 1×1×C with the other's channels", operands_phrase(*.op, *.left, *.right))]
    BroadcastMismatch {
        op: ArithmeticOp,
        left: Shape,
        right: Shape,
    },
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
            ShapeError::ReflectPadding { size, .. } => Some(format!(
                "a reflection mirrors the input without repeating its edge, so it can add at most {} (as PyTorch requires); pad less, or pad with \"replicate\", which repeats the edge",
                size.saturating_sub(1)
            )),
            ShapeError::PoolPaddingTooLarge { limit, .. } => Some(format!(
                "pad by at most {limit} (half the window, as PyTorch requires), or use `pad: same`"
            )),
            ShapeError::PaddingTooLarge { limit, .. } => Some(format!(
                "pad by at most {limit}: more only adds windows that see little or no input"
            )),
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
            ShapeError::ChannelGroups { channels, .. } => Some(format!(
                "choose a number of groups that divides {channels}{}",
                divisors_phrase(*channels)
            )),
            ShapeError::OutputPadding {
                stride, dilation, ..
            } => Some(format!(
                "use an output_padding below {}: it only picks among the output sizes the stride makes possible (PyTorch's rule)",
                stride.max(dilation)
            )),
            ShapeError::TransposePaddingTooLarge { full, .. } => Some(format!(
                "keep each side's padding at most {} on the height and {} on the width, or use a larger kernel or stride",
                (full[0] - 1) / 2,
                (full[1] - 1) / 2
            )),
            ShapeError::TransposeSamePadding => Some(
                "give the padding in pixels: `stride: s, kernel: k, pad: (k - s) / 2` upsamples by s for an even k - s (e.g. kernel 4, stride 2, pad 1)"
                    .into(),
            ),
            ShapeError::StrideTooLarge { limit, .. } => Some(format!(
                "upsample in several layers, each with a stride of at most {limit}"
            )),
            ShapeError::ScaleTooLarge { limit, .. } => Some(format!(
                "upsample in several layers, each by at most {limit}"
            )),
            ShapeError::SplitIndex { parts, .. } => Some(format!(
                "the index counts from 0: `split({parts}, 0)` is the first part, `split({parts}, {})` the last",
                parts - 1
            )),
            _ => None,
        }
    }
}

/// `" (2, 3, 4 or 6)"`: the divisors of `n` between 2 and `n` − 1, when there are a few.
fn divisors_phrase(n: usize) -> String {
    let divisors: Vec<String> = (2..n.min(1 << 20))
        .filter(|d| n.is_multiple_of(*d))
        .map(|d| d.to_string())
        .collect();
    match divisors.as_slice() {
        [] => String::new(),
        [one] => format!(" ({one})"),
        [init @ .., last] if init.len() < 8 => format!(" ({} or {last})", init.join(", ")),
        _ => String::new(),
    }
}

/// The diagnostic of a shape error, here beside the error so that a new variant gets its code
/// and labels where it is defined.
impl ShapeError {
    /// Explains a shape error of a layer call: the primary span is the call (or the literal
    /// weights), secondary labels show where each operand came from and its shape.
    pub fn to_diagnostic(
        &self,
        op_name: &str,
        span: Span,
        operands: &[Span],
        shapes: &[Shape],
        literal_span: Option<Span>,
    ) -> Diagnostic {
        let (code, primary, label) = match self {
            ShapeError::AddMismatch { .. } => {
                (Code::ShapeMismatch, span, "cannot add these".to_string())
            }
            ShapeError::MulMismatch { .. } => (
                Code::ShapeMismatch,
                span,
                "cannot multiply these".to_string(),
            ),
            ShapeError::BroadcastMismatch { op, .. } => {
                let verb = match op {
                    ArithmeticOp::Sub => "subtract",
                    ArithmeticOp::Div => "divide",
                };
                (Code::ShapeMismatch, span, format!("cannot {verb} these"))
            }
            ShapeError::ConcatMismatch { .. } => (
                Code::ConcatMismatch,
                span,
                "cannot concatenate these".to_string(),
            ),
            ShapeError::KernelTooLarge { .. } => (
                Code::KernelTooLarge,
                span,
                format!("`{op_name}`'s window does not fit"),
            ),
            ShapeError::PoolPaddingTooLarge { .. } => (
                Code::PoolPadding,
                span,
                "too much padding for this window".to_string(),
            ),
            ShapeError::PaddingTooLarge { .. } => {
                (Code::PaddingTooLarge, span, "too much padding".to_string())
            }
            ShapeError::ReflectPadding { .. } => (
                Code::PaddingTooLarge,
                span,
                "too much padding to reflect".to_string(),
            ),
            ShapeError::TransposePaddingTooLarge { .. } => {
                (Code::PaddingTooLarge, span, "no output left".to_string())
            }
            ShapeError::OutputPadding { .. } => (
                Code::OutputPadding,
                span,
                "output_padding too large".to_string(),
            ),
            ShapeError::TransposeSamePadding => (
                Code::ArgumentRange,
                span,
                "no `same` padding here".to_string(),
            ),
            ShapeError::StrideTooLarge { .. } => {
                (Code::ArgumentRange, span, "stride too large".to_string())
            }
            ShapeError::LiteralShape { expected, .. } => (
                Code::LiteralShape,
                literal_span.unwrap_or(span),
                format!("expected {expected}"),
            ),
            ShapeError::GroupsDontDivide { .. } => {
                (Code::Groups, span, "invalid groups".to_string())
            }
            ShapeError::ChannelGroups { .. } => (Code::Groups, span, "invalid groups".to_string()),
            ShapeError::SplitIndex { .. } => {
                (Code::ArgumentRange, span, "no such part".to_string())
            }
            ShapeError::ScaleTooLarge { .. } => {
                (Code::ArgumentRange, span, "scale too large".to_string())
            }
            ShapeError::UpsampleSize { .. } => (
                Code::ArgumentRange,
                span,
                "`scale` and `size` disagree".to_string(),
            ),
            ShapeError::TooLarge { .. } => (Code::TooLarge, span, "too large".to_string()),
            ShapeError::NotPositive { .. } => {
                (Code::ArgumentRange, span, "out of range".to_string())
            }
            ShapeError::NeedsFlat { .. } => {
                (Code::NeedsFlat, span, "needs a flat input".to_string())
            }
            ShapeError::NeedsSpatial { .. } => {
                (Code::NeedsImage, span, "needs an image".to_string())
            }
            ShapeError::Arity { .. } => (Code::Arity, span, "wrong number of inputs".to_string()),
        };
        let mut diagnostic = Diagnostic::error(code, primary, self.to_string()).with_label(label);
        let describe =
            |idx: usize| format!("this is {}", shapes.get(idx).copied().unwrap_or_default());
        match self {
            ShapeError::AddMismatch { .. }
            | ShapeError::MulMismatch { .. }
            | ShapeError::BroadcastMismatch { .. } => {
                for (idx, operand) in operands.iter().enumerate().take(2) {
                    diagnostic = diagnostic.with_secondary(*operand, describe(idx));
                }
            }
            ShapeError::ConcatMismatch { other_idx, .. } => {
                if let (Some(first), Some(other)) = (operands.first(), operands.get(*other_idx)) {
                    diagnostic = diagnostic
                        .with_secondary(*first, describe(0))
                        .with_secondary(*other, describe(*other_idx));
                }
            }
            ShapeError::LiteralShape { .. }
            | ShapeError::TooLarge { .. }
            | ShapeError::Arity { .. } => {}
            _ => {
                if let Some(operand) = operands.first() {
                    if *operand != span {
                        diagnostic = diagnostic.with_secondary(
                            *operand,
                            format!(
                                "the input is {}",
                                describe(0).trim_start_matches("this is ")
                            ),
                        );
                    }
                }
            }
        }
        if let Some(help) = self.help() {
            diagnostic = diagnostic.with_help(help);
        }
        diagnostic
    }
}

/// Whether `size` is `input` times whole factors of at least 1.
fn upsample_size_phrase(input: [usize; 2], size: [usize; 2], scale: [usize; 2]) -> String {
    let [h, w] = input;
    let [sh, sw] = size;
    format!(
        "`scale: [{}, {}]` upsamples {h}×{w} to {}×{}, not to the `size` {sh}×{sw}",
        scale[0],
        scale[1],
        h.saturating_mul(scale[0]),
        w.saturating_mul(scale[1])
    )
}

/// "subtract 4×4×4 from 8×8×4", "divide 8×8×4 by 8×8×8".
fn operands_phrase(op: ArithmeticOp, left: Shape, right: Shape) -> String {
    match op {
        ArithmeticOp::Sub => format!("subtract {right} from {left}"),
        ArithmeticOp::Div => format!("divide {left} by {right}"),
    }
}

fn element_count_phrase(elements: Option<&str>) -> String {
    match elements {
        Some(elements) => format!(
            "of {elements} elements is larger than cnnc's limit of 2^31 elements per tensor"
        ),
        None => "has a number of elements too large to represent, far beyond cnnc's limit of 2^31 elements per tensor".into(),
    }
}

/// "the 3×5 window", or "the window (of a size too large to represent)".
fn sized_phrase(article: &str, h: Option<usize>, w: Option<usize>, noun: &str) -> String {
    match (h, w) {
        (Some(h), Some(w)) => format!("{article} {h}×{w} {noun}"),
        _ => format!("{article} {noun} (of a size too large to represent)"),
    }
}

pub(crate) fn checked_numel(dims: &[usize], what: &str) -> Result<usize, ShapeError> {
    let mut total: u128 = 1;
    for &d in dims {
        total = total.saturating_mul(d as u128);
    }
    if total > MAX_ELEMENTS as u128 {
        // A dimension that saturated upstream is `usize::MAX`, so a product at or beyond
        // `u64::MAX` is not a count to print.
        let elements = u64::try_from(total)
            .ok()
            .filter(|&n| n < u64::MAX)
            .map(crate::diag::thousands);
        return Err(ShapeError::TooLarge {
            what: what.to_string(),
            elements,
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

pub(crate) fn positive(value: usize, what: &'static str) -> Result<(), ShapeError> {
    if value == 0 {
        Err(ShapeError::NotPositive { what })
    } else {
        Ok(())
    }
}

pub(crate) fn spatial_input(op: &'static str, shape: Shape) -> Result<(), ShapeError> {
    if shape.flat {
        Err(ShapeError::NeedsSpatial { op, shape })
    } else {
        Ok(())
    }
}

/// Rejects padding beyond `limit` (per axis, height then width) on any side. The limits keep
/// every padded extent and index within a few times the input and kernel sizes, so no backend's
/// index arithmetic can overflow, whatever numbers a program writes.
pub(crate) fn check_padding(
    pad: Padding,
    limit: [usize; 2],
    what: &'static str,
) -> Result<(), ShapeError> {
    let sides = [
        (pad.top, limit[0]),
        (pad.bottom, limit[0]),
        (pad.left, limit[1]),
        (pad.right, limit[1]),
    ];
    match sides.iter().find(|&&(pad, limit)| pad > limit) {
        Some(&(pad, limit)) => Err(ShapeError::PaddingTooLarge { pad, limit, what }),
        None => Ok(()),
    }
}

pub(crate) fn window(
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
        _ => {
            let extent = |d: usize, k: usize| d.checked_mul(k.checked_sub(1)?)?.checked_add(1);
            let padded =
                |n: usize, before: usize, after: usize| n.checked_add(before)?.checked_add(after);
            Err(ShapeError::KernelTooLarge {
                kernel_h: extent(dilation[0], kernel[0]),
                kernel_w: extent(dilation[1], kernel[1]),
                padded_h: padded(input.h, pad.top, pad.bottom),
                padded_w: padded(input.w, pad.left, pad.right),
                input,
            })
        }
    }
}

/// The output shape of `op` applied to inputs of these shapes.
pub fn output_shape(op: &Op, inputs: &[Shape]) -> Result<Shape, ShapeError> {
    op.output_shape(inputs)
}

/// The parameter and buffer tensors of `op` on an input of shape `input`, in `state_dict`
/// order. Literal weights are constants, not parameters.
pub fn params(op: &Op, input: Shape) -> Vec<ParamSpec> {
    op.params(input)
}

/// Multiply-accumulates of `op`: conv and dense only, as the published counts do.
pub fn macs(op: &Op, input: Shape, output: Shape) -> u64 {
    op.macs(input, output)
}
