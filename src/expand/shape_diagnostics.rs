//! How a layer call's shape error is explained: which code, where the primary label goes (the
//! call, or the literal weights), and secondary labels showing each operand's shape.

use super::Expander;
use crate::diag::Diagnostic;
use crate::graph::{Shape, ShapeError};
use crate::source::Span;

impl Expander<'_> {
    /// Explains a shape error of a layer call: the primary span is the call (or the literal
    /// weights), secondary labels show where each operand came from and its shape.
    pub(super) fn shape_diagnostic(
        &self,
        op_name: &str,
        error: &ShapeError,
        span: Span,
        operands: &[Span],
        shapes: &[Shape],
        literal_span: Option<Span>,
    ) -> Diagnostic {
        let (code, primary, label) = match error {
            ShapeError::AddMismatch { .. } => {
                ("shape-mismatch", span, "cannot add these".to_string())
            }
            ShapeError::MulMismatch { .. } => {
                ("shape-mismatch", span, "cannot multiply these".to_string())
            }
            ShapeError::ConcatMismatch { .. } => (
                "concat-mismatch",
                span,
                "cannot concatenate these".to_string(),
            ),
            ShapeError::KernelTooLarge { .. } => (
                "kernel-too-large",
                span,
                format!("`{op_name}`'s window does not fit"),
            ),
            ShapeError::PoolPaddingTooLarge { .. } => (
                "pool-padding",
                span,
                "too much padding for this window".to_string(),
            ),
            ShapeError::PaddingTooLarge { .. } => {
                ("padding-too-large", span, "too much padding".to_string())
            }
            ShapeError::LiteralShape { expected, .. } => (
                "literal-shape",
                literal_span.unwrap_or(span),
                format!("expected {expected}"),
            ),
            ShapeError::GroupsDontDivide { .. } => ("groups", span, "invalid groups".to_string()),
            ShapeError::TooLarge { .. } => ("too-large", span, "too large".to_string()),
            ShapeError::NotPositive { .. } => ("argument-range", span, "out of range".to_string()),
            ShapeError::NeedsFlat { .. } => ("needs-flat", span, "needs a flat input".to_string()),
            ShapeError::NeedsSpatial { .. } => ("needs-image", span, "needs an image".to_string()),
            ShapeError::Arity { .. } => ("arity", span, "wrong number of inputs".to_string()),
        };
        let mut diagnostic = Diagnostic::error(code, primary, error.to_string()).with_label(label);
        let describe =
            |idx: usize| format!("this is {}", shapes.get(idx).copied().unwrap_or_default());
        match error {
            ShapeError::AddMismatch { .. } | ShapeError::MulMismatch { .. } => {
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
        if let Some(help) = error.help() {
            diagnostic = diagnostic.with_help(help);
        }
        diagnostic
    }
}
