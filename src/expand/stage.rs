//! Stages of a pipeline: layer and block calls, `[...]` sequences, `repeat`, `( ... )` groups.
//! This is also where block calls are expanded and where weight paths get their segments.

use super::args::ParamDesc;
use super::eval::EvalArg;
use super::iteration::{Iteration, LoopKind};
use super::value::Value;
use super::{CallSite, Expander, Naming, MAX_CALL_DEPTH, MAX_REPEAT};
use crate::diag::{Code, Diagnostic};
use crate::source::Span;
use crate::syntax::ast::{BlockDef, Ident, NetworkDef, SeqItem, Stage, StageKind, TypeName};
use std::collections::HashMap;

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

    pub(super) fn call_block(
        &mut self,
        block: &BlockDef,
        callee: &Ident,
        args: Vec<EvalArg>,
        naming: Naming,
        span: Span,
    ) -> Value {
        if !self.may_call("block", &block.name, callee, span) {
            return Value::Poison;
        }
        let descs: Vec<ParamDesc> = block
            .params
            .iter()
            .map(|p| ParamDesc {
                name: &p.name.name,
                required: p.default.is_none(),
            })
            .collect();
        let what = format!("block `{}`", block.name.name);
        let Some(bound) = self.bind_args(&what, &descs, args, callee.span, Some(block.name.span))
        else {
            return Value::Poison;
        };
        // The block body sees only its parameters: lexical scope, not the caller's variables.
        let saved_frames = std::mem::take(&mut self.frames);
        let segment = self.resolve_name(&naming, &block.name.name);
        self.push_scope(segment, &block.name.name);
        self.calls.push(CallSite {
            block: self.defs.qualified(&block.name),
            span: callee.span,
            is_network: false,
        });
        self.frames.push(Vec::new());
        self.bind_params(&block.params, bound, span);
        let first_new = self.graph.nodes.len();
        let result = self.body_statements(&block.body.stmts, block.body.span);
        self.pop_frame();
        self.calls.pop();
        self.unwrap_thin_block(block, first_new);
        self.pop_scope();
        self.frames = saved_frames;
        result
    }

    fn check_param_type(
        &mut self,
        value: Value,
        ty: TypeName,
        ty_span: Span,
        param: &crate::syntax::ast::Param,
        arg_span: Span,
    ) -> Value {
        let fits = match (&value, ty) {
            (Value::Poison, _) => return Value::Poison,
            (Value::Int(_), TypeName::Int) => true,
            (Value::Int(v), TypeName::Float) => return Value::Float(*v as f64),
            (Value::Float(_), TypeName::Float) => true,
            (Value::Bool(_), TypeName::Bool) => true,
            (Value::Str(_), TypeName::String) => true,
            (Value::List(_), TypeName::List) => true,
            (Value::Tensor(_), TypeName::Tensor) => true,
            _ => false,
        };
        if fits {
            return value;
        }
        let diagnostic = Diagnostic::error(
            Code::ArgumentType,
            arg_span,
            format!(
                "argument `{}` must be {} {}, but this is {}",
                param.name.name,
                article(ty.name()),
                ty.name(),
                value.type_name()
            ),
        )
        .with_label(format!("expected {} {}", article(ty.name()), ty.name()));
        // The call chain already holds the call site; point at the declared type as well.
        let diagnostic =
            diagnostic.with_secondary(ty_span, "the parameter's type is declared here");
        // The argument is written at the call site, which is already the primary span: the
        // innermost call of the chain would only repeat it.
        let innermost = self.calls.pop();
        self.error(diagnostic);
        self.calls.extend(innermost);
        Value::Poison
    }
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

impl Expander<'_> {
    /// A network used as a stage: its layers are expanded in place, under the caller's path
    /// (no segment of its own unless labelled, so its weight names stay those of the original
    /// network), and `until: "layer4"` keeps everything up to that layer.
    pub(super) fn call_network(
        &mut self,
        network: &NetworkDef,
        callee: &Ident,
        args: Vec<EvalArg>,
        naming: Naming,
        span: Span,
    ) -> Value {
        if !self.may_call("network", &network.name, callee, span) {
            return Value::Poison;
        }
        let mut descs: Vec<ParamDesc> = network
            .inputs
            .iter()
            .map(|input| ParamDesc {
                name: &input.name.name,
                required: true,
            })
            .collect();
        descs.extend(network.params.iter().map(|p| ParamDesc {
            name: &p.name.name,
            required: false,
        }));
        descs.push(ParamDesc {
            name: "until",
            required: false,
        });
        let what = format!("network `{}`", network.name.name);
        let Some(mut bound) =
            self.bind_args(&what, &descs, args, callee.span, Some(network.name.span))
        else {
            return Value::Poison;
        };
        let until = match bound.pop().flatten() {
            None => None,
            Some(EvalArg {
                value: Value::Str(path),
                span,
                ..
            }) => Some((path, span)),
            Some(arg) => {
                self.error(
                    Diagnostic::error(
                        Code::ArgumentType,
                        arg.span,
                        format!(
                            "`until` names a layer by its path, as a string, but this is {}",
                            arg.value.type_name()
                        ),
                    )
                    .with_label("expected a string such as \"layer4\""),
                );
                return Value::Poison;
            }
        };
        let saved_frames = std::mem::take(&mut self.frames);
        let scoped = !matches!(naming, Naming::Auto);
        if scoped {
            let segment = self.resolve_name(&naming, &network.name.name);
            self.push_scope(segment, &network.name.name);
        }
        let prefix = self.path_prefix();
        self.calls.push(CallSite {
            block: self.defs.qualified(&network.name),
            span: callee.span,
            is_network: true,
        });
        self.frames.push(Vec::new());
        let hyper_args = bound.split_off(network.inputs.len());
        for (input, arg) in network.inputs.iter().zip(bound) {
            let value = match arg {
                Some(EvalArg {
                    value: value @ (Value::Tensor(_) | Value::Poison),
                    ..
                }) => value,
                Some(arg) => {
                    self.error(
                        Diagnostic::error(
                            Code::ArgumentType,
                            arg.span,
                            format!(
                                "input `{}` of network `{}` must be a tensor, but this is {}",
                                input.name.name,
                                network.name.name,
                                arg.value.type_name()
                            ),
                        )
                        .with_label("expected a tensor"),
                    );
                    Value::Poison
                }
                None => Value::Poison,
            };
            self.bind(&input.name.name, value);
        }
        self.bind_params(&network.params, hyper_args, span);
        let first_new = self.graph.nodes.len();
        let counters_before = self.scopes.last().map(|scope| scope.counters.clone());
        let mut result = self.body_statements(&network.body.stmts, network.body.span);
        self.pop_frame();
        self.calls.pop();
        if let (Some((path, path_span)), false) = (until, result.is_poison()) {
            result = self.cut_network(network, &prefix, &path, path_span, first_new);
            if let (Value::Tensor(cut), Some(before)) = (&result, counters_before) {
                self.release_names(before, &prefix, first_new, *cut);
            }
        }
        if scoped {
            self.pop_scope();
        }
        self.frames = saved_frames;
        result
    }

    /// The last node, among those created since `first_new`, at `path` or inside it.
    fn cut_network(
        &mut self,
        network: &NetworkDef,
        prefix: &str,
        path: &str,
        path_span: Span,
        first_new: usize,
    ) -> Value {
        let full = if prefix.is_empty() {
            path.to_string()
        } else {
            format!("{prefix}.{path}")
        };
        let inside = format!("{full}.");
        let found = self
            .graph
            .nodes
            .iter()
            .skip(first_new)
            .rev()
            .find(|(_, node)| node.path == full || node.path.starts_with(&inside))
            .map(|(id, _)| id);
        if let Some(id) = found {
            return Value::Tensor(id);
        }
        let own_prefix = format!("{prefix}.");
        let paths: Vec<String> = self
            .graph
            .nodes
            .values()
            .skip(first_new)
            .map(|n| {
                n.path
                    .strip_prefix(&own_prefix)
                    .unwrap_or(&n.path)
                    .to_string()
            })
            .collect();
        // Sub-block paths (`classifier`, `layer4.1`) are valid cut points too.
        let mut candidates: Vec<String> = paths
            .iter()
            .flat_map(|p| {
                p.match_indices('.')
                    .map(|(idx, _)| p[..idx].to_string())
                    .chain(std::iter::once(p.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        candidates.sort();
        candidates.dedup();
        let paths = candidates;
        let mut diagnostic = Diagnostic::error(
            Code::UnknownLayer,
            path_span,
            format!("network `{}` has no layer `{path}`", network.name.name),
        )
        .with_label("no such layer path");
        let close = super::suggest::closest_all(path, paths.iter().map(String::as_str));
        if let Some(help) = super::suggest::did_you_mean(&close) {
            diagnostic = diagnostic.with_help(help);
        }
        self.error(diagnostic);
        Value::Poison
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

impl Expander<'_> {
    /// Binds parameters (a block's, or a network's hyperparameters) in order: the given
    /// argument, or else the default, checked against the declared type. Defaults are
    /// evaluated here, after the earlier parameters are bound, so they may refer to them.
    pub(super) fn bind_params(
        &mut self,
        params: &[crate::syntax::ast::Param],
        args: Vec<Option<EvalArg>>,
        call_span: Span,
    ) {
        let mut args = args.into_iter();
        for param in params {
            let (value, arg_span) = match args.next().flatten() {
                Some(arg) => (arg.value, arg.span),
                None => match &param.default {
                    Some(default) => (self.eval(default), default.span),
                    None => (Value::Poison, call_span),
                },
            };
            let value = match param.ty {
                Some((ty, ty_span)) => self.check_param_type(value, ty, ty_span, param, arg_span),
                None => value,
            };
            self.bind(&param.name.name, value);
        }
    }
}

impl Expander<'_> {
    /// Whether a block or network may be expanded here: within the budget, not too deep, and
    /// not already being expanded (blocks are inlined, so recursion would never end).
    fn may_call(&mut self, kind: &str, name: &Ident, callee: &Ident, span: Span) -> bool {
        if !self.step(span) {
            return false;
        }
        if self.calls.len() >= MAX_CALL_DEPTH {
            self.error(
                Diagnostic::error(
                    Code::NestingTooDeep,
                    callee.span,
                    format!("block calls are nested more than {MAX_CALL_DEPTH} deep"),
                )
                .with_label("one call too many")
                .with_help("blocks calling blocks this deep are almost surely a mistake"),
            );
            return false;
        }
        let qualified = self.defs.qualified(name);
        let recursive = self.calls.iter().any(|c| c.block == qualified)
            || (kind == "network" && self.graph.name == name.name);
        if recursive {
            self.error(
                Diagnostic::error(
                    Code::RecursiveBlock,
                    callee.span,
                    format!("{kind} `{}` calls itself", name.name),
                )
                .with_label("recursive call")
                .with_secondary(name.span, format!("the {kind} is defined here"))
                .with_help(format!(
                    "{kind}s are expanded inline, so they cannot be recursive; use `repeat` instead"
                )),
            );
            return false;
        }
        true
    }
}

impl Expander<'_> {
    /// After a network is cut short, the layers past the cut will be pruned: give back the
    /// automatic names they took, so that the caller's next unlabelled `softmax` is `softmax`
    /// and not `softmax_1`. The counters become those from before the call, raised past every
    /// name a surviving layer (up to `cut`) took in this scope.
    fn release_names(
        &mut self,
        before: HashMap<String, usize>,
        prefix: &str,
        first_new: usize,
        cut: crate::graph::NodeId,
    ) {
        let mut counters = before;
        let own = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}.")
        };
        for (id, node) in self.graph.nodes.iter().skip(first_new) {
            if id > cut {
                break;
            }
            let Some(relative) = node.path.strip_prefix(&own) else {
                continue;
            };
            let segment = relative.split('.').next().unwrap_or(relative);
            // `kind` is the first of its kind, `kind_n` the (n+1)-th.
            let (kind, taken) = match segment.rsplit_once('_') {
                Some((kind, n)) if n.chars().all(|c| c.is_ascii_digit()) && !n.is_empty() => {
                    (kind, n.parse::<usize>().map_or(1, |n| n.saturating_add(1)))
                }
                _ => (segment, 1),
            };
            let counter = counters.entry(kind.to_string()).or_insert(0);
            *counter = (*counter).max(taken);
        }
        if let Some(scope) = self.scopes.last_mut() {
            scope.counters = counters;
        }
    }
}
