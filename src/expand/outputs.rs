//! A network's several outputs, `return (a, b)`: where they may stand and what they must be.

use super::{Expander, Value};
use crate::diag::{Code, Diagnostic};
use crate::graph::NodeId;
use crate::source::Span;
use crate::syntax::ast::Expr;

impl Expander<'_> {
    /// `return (a, b)`: each value must be a distinct tensor, and only the network's own
    /// body may return several. Records the outputs and evaluates to the first one.
    pub(super) fn several_outputs(&mut self, values: &[Expr], span: Span, allowed: bool) -> Value {
        if !allowed {
            let returned = match (values.first(), values.last()) {
                (Some(first), Some(last)) => first.span.to(last.span),
                _ => span,
            };
            self.error(
                Diagnostic::error(
                    Code::OutputsOutsideNetwork,
                    returned,
                    "only a network compiled on its own can return several values",
                )
                .with_label("several values returned here")
                .with_help(
                    "return one tensor here, and list the network's outputs in its own `return (a, b)`",
                ),
            );
            return Value::Poison;
        }
        let mut outputs: Vec<(NodeId, Span)> = Vec::new();
        let mut failed = false;
        for (idx, expr) in values.iter().enumerate() {
            match self.eval(expr) {
                Value::Tensor(id) => {
                    let earlier = outputs.iter().position(|&(other, _)| other == id);
                    if let Some(first_idx) = earlier {
                        let first = outputs[first_idx].1;
                        self.error(
                            Diagnostic::error(
                                Code::DuplicateOutput,
                                expr.span,
                                format!("output {idx} is the same tensor as output {first_idx}"),
                            )
                            .with_label("returned a second time")
                            .with_secondary(first, "first returned here")
                            .with_help("return each tensor once"),
                        );
                        failed = true;
                    }
                    outputs.push((id, expr.span));
                }
                Value::Poison => failed = true,
                other => {
                    self.error(
                        Diagnostic::error(
                            Code::NetworkOutput,
                            expr.span,
                            format!(
                                "a network's outputs must be tensors, but output {idx} is {}",
                                other.type_name()
                            ),
                        )
                        .with_label("not a tensor"),
                    );
                    failed = true;
                }
            }
        }
        if failed {
            return Value::Poison;
        }
        self.returned_outputs = outputs.iter().map(|&(id, _)| id).collect();
        Value::Tensor(outputs[0].0)
    }
}
