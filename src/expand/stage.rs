//! Stages of a pipeline: layer and block calls, `[...]` sequences, `repeat`, `( ... )` groups.
//! Block and network calls are in `calls.rs`.

use super::iteration::{Iteration, LoopKind};
use super::value::Value;
use super::{Expander, Naming, MAX_REPEAT};
use crate::diag::{Code, Diagnostic};
use crate::source::Span;
use crate::syntax::ast::{Ident, SeqItem, Stage, StageKind};

/// The tensor flowing into a stage and the span of the expression that produced it.
pub struct StageInput {
    pub value: Value,
    pub span: Span,
}

impl Expander<'_> {
    pub(super) fn apply_stage(
        &mut self,
        stage: &Stage,
        input: StageInput,
        naming: Naming,
    ) -> Value {
        let first_new = self.graph.nodes.len();
        let value = self.apply_stage_kind(stage, input, naming);
        if stage.frozen {
            for node in self.graph.nodes.values_mut().skip(first_new) {
                node.frozen = true;
            }
        }
        value
    }

    fn apply_stage_kind(&mut self, stage: &Stage, input: StageInput, naming: Naming) -> Value {
        let naming = match &stage.label {
            Some(label) => match self.label_of(stage, label) {
                Some(name) => Naming::Label(name),
                None => return Value::Poison,
            },
            None => naming,
        };
        match &stage.kind {
            StageKind::Call { callee, args } => {
                let args = self.eval_args(args);
                self.call(callee, args, Some(input), naming, stage.span)
            }
            StageKind::Name(ident) => self.call(ident, Vec::new(), Some(input), naming, stage.span),
            StageKind::Repeat { count, var, body } => {
                let Some(n) = self.repeat_count(count) else {
                    return Value::Poison;
                };
                let segment = self.resolve_name(&naming, "repeat");
                self.push_scope(segment, "repeat");
                let mut value = input.value;
                let mut span = input.span;
                for idx in 0..n {
                    if !self.step(stage.span) {
                        value = Value::Poison;
                        break;
                    }
                    self.frames.push(Vec::new());
                    let mut bindings = Vec::new();
                    if let Some(var) = var {
                        self.bind(&var.name, Value::Int(idx as i64));
                        bindings.push((var.name.clone(), Value::Int(idx as i64)));
                    }
                    self.enter_iteration(Iteration {
                        kind: LoopKind::Repeat { count: n },
                        idx,
                        bindings,
                    });
                    let input = StageInput { value, span };
                    // A computed label differs in each iteration: it names the iteration
                    // itself (`denseblock1.denselayer1`), in place of its index.
                    value = if body.label.is_some() && body.label_parts.is_empty() {
                        // A label on the repeated stage names the layer inside the iteration,
                        // as `repeat 2 [c: conv(…)]` does: `tower.0.c`, not `tower.c` twice.
                        self.push_scope(idx.to_string(), "iteration");
                        let value = self.apply_stage(body, input, Naming::Auto);
                        self.pop_scope();
                        value
                    } else {
                        self.apply_stage(body, input, Naming::Index(idx))
                    };
                    self.leave_iteration();
                    self.pop_frame();
                    span = body.span;
                }
                self.pop_scope();
                value
            }
            StageKind::Sequence(items) => {
                let segment = self.resolve_name(&naming, "sequence");
                self.push_scope(segment, "sequence");
                let mut next_idx = 0;
                let value = self.seq_items(items, input, &mut next_idx);
                self.pop_scope();
                value
            }
            StageKind::Group(stages) => {
                let scoped = stage.label.is_some() || matches!(naming, Naming::Index(_));
                if scoped {
                    let segment = self.resolve_name(&naming, "group");
                    self.push_scope(segment, "group");
                }
                let mut input = input;
                for inner in stages {
                    let value = self.apply_stage(inner, input, Naming::Auto);
                    input = StageInput {
                        value,
                        span: inner.span,
                    };
                }
                if scoped {
                    self.pop_scope();
                }
                input.value
            }
        }
    }

    fn repeat_count(&mut self, count: &crate::syntax::ast::Expr) -> Option<usize> {
        match self.eval(count) {
            Value::Int(n) if (1..=MAX_REPEAT).contains(&n) => Some(n as usize),
            Value::Int(n) => {
                let message = if n < 1 {
                    format!("a repeat count must be at least 1, but this is {n}")
                } else {
                    format!("a repeat count may be at most {MAX_REPEAT}, but this is {n}")
                };
                self.error(
                    Diagnostic::error(Code::RepeatCount, count.span, message)
                        .with_label("invalid repeat count")
                        .with_help("to leave the stage out, use `if` in a sequence instead"),
                );
                None
            }
            Value::Poison => None,
            other => {
                self.error(
                    Diagnostic::error(
                        Code::TypeMismatch,
                        count.span,
                        format!(
                            "a repeat count must be an int, but this is {}",
                            other.type_name()
                        ),
                    )
                    .with_label("expected an int"),
                );
                None
            }
        }
    }

    /// Applies sequence items in order, numbering them from `next_idx`; `for` and `if` items
    /// splice their items into the same numbering.
    fn seq_items(&mut self, items: &[SeqItem], input: StageInput, next_idx: &mut usize) -> Value {
        let mut input = input;
        for item in items {
            match item {
                SeqItem::Stage(stage) => {
                    let value = self.apply_stage(stage, input, Naming::Index(*next_idx));
                    *next_idx += 1;
                    input = StageInput {
                        value,
                        span: stage.span,
                    };
                }
                SeqItem::For {
                    vars,
                    destructure,
                    iter,
                    items,
                    span,
                } => {
                    let elements = match self.eval(iter) {
                        Value::List(elements) => elements.items.clone(),
                        Value::Poison => return Value::Poison,
                        other => {
                            self.error(
                                Diagnostic::error(
                                    Code::TypeMismatch,
                                    iter.span,
                                    format!(
                                        "`for` needs a list, but this is {}",
                                        other.type_name()
                                    ),
                                )
                                .with_label("expected a list"),
                            );
                            return Value::Poison;
                        }
                    };
                    let n_elements = elements.len();
                    for (idx, element) in elements.into_iter().enumerate() {
                        if !self.step(*span) {
                            return Value::Poison;
                        }
                        self.frames.push(Vec::new());
                        if !self.bind_for(vars, *destructure, element, iter.span) {
                            self.pop_frame();
                            return Value::Poison;
                        }
                        let bindings = vars
                            .iter()
                            .filter_map(|var| Some((var.name.clone(), self.lookup(&var.name)?)))
                            .collect();
                        self.enter_iteration(Iteration {
                            kind: LoopKind::For { n_elements },
                            idx,
                            bindings,
                        });
                        let value = self.seq_items(items, input, next_idx);
                        self.leave_iteration();
                        self.pop_frame();
                        input = StageInput { value, span: *span };
                    }
                }
                SeqItem::If {
                    cond,
                    then,
                    otherwise,
                    ..
                } => {
                    let Some(choice) = self.condition(cond) else {
                        return Value::Poison;
                    };
                    let chosen = if choice {
                        Some(then)
                    } else {
                        otherwise.as_ref()
                    };
                    if let Some(chosen) = chosen {
                        let span = input.span;
                        let value = self.seq_items(chosen, input, next_idx);
                        input = StageInput { value, span };
                    }
                }
            }
        }
        input.value
    }
}

impl Expander<'_> {
    /// Binds a `for` loop's names to one element: the element itself, or, for
    /// `for [a, b] in rows`, the items of a row of exactly that length.
    fn bind_for(
        &mut self,
        vars: &[Ident],
        destructure: bool,
        element: Value,
        iter_span: Span,
    ) -> bool {
        if !destructure {
            if let Some(var) = vars.first() {
                self.bind(&var.name, element);
            }
            return true;
        }
        let pattern_span = match (vars.first(), vars.last()) {
            (Some(first), Some(last)) => first.span.to(last.span),
            _ => iter_span,
        };
        match element {
            Value::List(items) if items.len() == vars.len() => {
                for (var, item) in vars.iter().zip(items.iter().cloned()) {
                    self.bind(&var.name, item);
                }
                true
            }
            Value::Poison => false,
            other => {
                let found = match &other {
                    Value::List(items) => format!("a list of {}", items.len()),
                    other => other.type_name().to_string(),
                };
                self.error(
                    Diagnostic::error(
                        Code::TypeMismatch,
                        pattern_span,
                        format!(
                            "each element must be a list of {} to take apart, but one is {found}",
                            vars.len()
                        ),
                    )
                    .with_label(format!("takes {} values apart", vars.len()))
                    .with_secondary(iter_span, "the elements come from here"),
                );
                false
            }
        }
    }
}
