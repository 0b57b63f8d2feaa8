//! Labels as weight-path segments: a quoted label (`"block2-0":`) is checked, a computed one
//! (`"denselayer{i + 1}":`) is evaluated in each iteration and may not repeat in its scope;
//! a thin wrapper block's one layer takes the block call's name.

use super::value::Value;
use super::Expander;
use crate::diag::{Code, Diagnostic};
use crate::source::Span;
use crate::syntax::ast::{BlockDef, ExprKind, Ident, LabelPart, Stage, Stmt};

impl Expander<'_> {
    /// The path segment a stage's label gives, or `None` once the reason it gives none is
    /// reported.
    pub(super) fn label_of(&mut self, stage: &Stage, label: &Ident) -> Option<String> {
        if stage.label_parts.is_empty() {
            return self.valid_segment(label.name.clone(), label.span, false);
        }
        let mut text = String::new();
        for part in &stage.label_parts {
            match part {
                LabelPart::Text(piece) => text.push_str(piece),
                LabelPart::Hole(expr) => match self.eval(expr) {
                    Value::Int(v) => text.push_str(&v.to_string()),
                    Value::Str(piece) => text.push_str(&piece),
                    Value::Poison => return None,
                    other => {
                        self.error(
                            Diagnostic::error(
                                Code::TypeMismatch,
                                expr.span,
                                format!(
                                    "a label can hold an int or a string, but this is {}",
                                    other.type_name()
                                ),
                            )
                            .with_label("expected an int or a string"),
                        );
                        return None;
                    }
                },
            }
        }
        let name = self.valid_segment(text, label.span, true)?;
        let here = self
            .iteration_notes()
            .into_iter()
            .next()
            .unwrap_or_else(|| "outside any loop".to_string());
        let scope_path = self.path_prefix();
        let first = self
            .scopes
            .last()
            .and_then(|scope| scope.computed_labels.get(&name))
            .cloned();
        if let Some(first) = first {
            let scope = if scope_path.is_empty() {
                "the network".to_string()
            } else {
                format!("`{scope_path}`")
            };
            self.error(
                Diagnostic::error(
                    Code::LabelCollision,
                    label.span,
                    format!("the computed label `{name}` is given twice in {scope}"),
                )
                .with_label(format!("gives `{name}` again"))
                .with_note(format!("it was first given {first}"))
                .with_help(
                    "make the label differ in every iteration, e.g. with the loop variable: \
                     `\"layer{i}\"`",
                ),
            );
            return None;
        }
        if let Some(scope) = self.scopes.last_mut() {
            scope.computed_labels.insert(name.clone(), here);
        }
        Some(name)
    }

    /// `text` if it can be one segment of a weight path: letters, digits, `_` and `-`, as
    /// PyTorch module names are (`layer1`, `block2-0`, `0`).
    fn valid_segment(&mut self, text: String, span: Span, computed: bool) -> Option<String> {
        let bad = text
            .chars()
            .find(|&c| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'));
        if !text.is_empty() && bad.is_none() {
            return Some(text);
        }
        // A computed label's text goes in the label, so that every iteration giving a bad
        // name is one error, not one per iteration.
        let (message, label) = if computed {
            (
                "this computed label is not a valid weight-path segment".to_string(),
                format!("gives `{text}`, but a label names one segment of the weight path"),
            )
        } else {
            (
                format!("the label `{text}` is not a valid weight-path segment"),
                "a label names one segment of the weight path".to_string(),
            )
        };
        let mut diagnostic = Diagnostic::error(Code::InvalidLabel, span, message).with_label(label);
        diagnostic = match bad {
            None => diagnostic.with_note("the label is empty"),
            Some('.') => diagnostic
                .with_note("a `.` separates the segments of a path")
                .with_help("nest the stage in a labelled sequence instead: `outer: [inner: …]`"),
            Some(c) => diagnostic
                .with_note(format!("it holds {c:?}"))
                .with_help("a label may hold letters, digits, `_` and `-`"),
        };
        self.error(diagnostic);
        None
    }
}

impl Expander<'_> {
    /// A block whose body is one unlabelled layer applied to its input (`wrap(x) { x ->
    /// conv(4, 1) }`) stands for that layer, as torchvision's `conv3x3(…)` helpers return the
    /// `Conv2d` itself: `a: wrap` names its weights `a.weight`, not `a.conv.weight`. Called
    /// with the block's scope still open, after its body made the nodes from `first_new` on.
    pub(super) fn unwrap_thin_block(&mut self, block: &BlockDef, first_new: usize) {
        if !is_thin(block) || self.graph.nodes.len() != first_new + 1 {
            return;
        }
        let path = self.path_prefix();
        let Some((id, node)) = self.graph.nodes.iter_mut().next_back() else {
            return;
        };
        let auto_named = node
            .path
            .strip_prefix(path.as_str())
            .and_then(|rest| rest.strip_prefix('.'))
            .is_some_and(|name| name == node.op.name());
        if !auto_named {
            return;
        }
        node.path.clone_from(&path);
        let consts = node.consts.clone();
        for (suffix, constant) in consts {
            self.graph.consts[constant].name = self.graph.tensor_name(id, suffix);
        }
        // The block made no scope of its own in the end.
        self.graph.meta.scopes.remove(&path);
    }
}

/// One statement, `x -> layer(…)` or `return x -> layer(…)`, with one stage and no label.
fn is_thin(block: &BlockDef) -> bool {
    let [stmt] = block.body.stmts.as_slice() else {
        return false;
    };
    let expr = match stmt {
        Stmt::Expr(expr) => expr,
        Stmt::Return { values, .. } => match values.as_slice() {
            [expr] => expr,
            _ => return false,
        },
        Stmt::Let { .. } => return false,
    };
    match &expr.kind {
        ExprKind::Pipeline { head, stages } => {
            matches!(head.kind, ExprKind::Name(_))
                && matches!(stages.as_slice(), [stage] if stage.label.is_none())
        }
        _ => false,
    }
}
