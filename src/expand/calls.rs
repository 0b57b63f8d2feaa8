//! Calls of blocks and of networks used as stages: binding their arguments and parameters,
//! the scope each call opens (a weight-path segment), the recursion and budget checks, and
//! cutting a network short with `until:`.

use super::args::ParamDesc;
use super::eval::EvalArg;
use super::value::Value;
use super::{CallSite, Expander, Naming, MAX_CALL_DEPTH};
use crate::diag::{Code, Diagnostic};
use crate::source::Span;
use crate::syntax::ast::{BlockDef, Ident, NetworkDef, TypeName};
use std::collections::HashMap;

impl Expander<'_> {
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
        let mut diagnostic =
            diagnostic.with_secondary(ty_span, "the parameter's type is declared here");
        if matches!((&value, ty), (Value::Float(_), TypeName::Int)) {
            diagnostic = diagnostic
                .with_help("for a whole number write `floor(…)` (or `ceil`, `round`, `int`)");
        }
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
