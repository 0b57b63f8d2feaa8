//! Calls of the language's layers: looking a name up in the op catalogue
//! (`graph::ops::layers`), binding the call's arguments against the layer's signature,
//! converting them by their declared kinds, and inserting the node the layer's builder makes.

use super::args::ParamDesc;
use super::builtins::{is_builtin, BUILTINS};
use super::eval::EvalArg;
use super::value::Value;
use super::{Expander, Naming};
use crate::diag::{Code, Diagnostic};
use crate::graph::ops::signature::{ParamKind, Surface};
use crate::graph::ops::PAD_MODE;
use crate::graph::{ops, Op, PadAttrs, PadMode};
use crate::source::Span;
use crate::syntax::ast::Ident;

/// A conv whose `pad_mode` is not zeros gives its padding to a `pad` layer before it: PyTorch's
/// `Conv2d(padding_mode=…)` pads with `F.pad` and convolves without padding, and so does the
/// graph. Returns the `pad` layer's attributes and leaves the conv unpadded.
fn split_padding(op: &mut Op, mode: PadMode) -> Option<PadAttrs> {
    let Op::Conv(attrs) = op else {
        return None;
    };
    if mode == PadMode::Zeros || attrs.pad.is_zero() {
        return None;
    }
    let pad = std::mem::take(&mut attrs.pad);
    Some(PadAttrs { pad, mode })
}

/// The layer called `name`, if the language has one.
pub fn signature(name: &str) -> Option<&'static dyn Surface> {
    ops::layer(name)
}

pub fn is_callable(name: &str) -> bool {
    signature(name).is_some() || is_builtin(name)
}

pub fn callable_names() -> impl Iterator<Item = &'static str> {
    ops::layers()
        .map(|layer| layer.name())
        .chain(BUILTINS.iter().copied())
}

impl Expander<'_> {
    pub(super) fn layer(
        &mut self,
        sig: &'static dyn Surface,
        callee: &Ident,
        args: Vec<EvalArg>,
        naming: Naming,
        span: Span,
    ) -> Value {
        if sig.variadic() {
            return self.concat(args, naming, span);
        }
        let name = sig.name();
        let first_is_tensor = matches!(
            args.first(),
            Some(EvalArg {
                keyword: None,
                value: Value::Tensor(_) | Value::Poison,
                ..
            })
        );
        if !first_is_tensor {
            let found = args.first().map_or("nothing", |a| a.value.type_name());
            self.error(
                Diagnostic::error(
                    Code::MissingInput,
                    callee.span,
                    format!("`{name}` needs an input tensor, but its first argument is {found}"),
                )
                .with_label("no input tensor")
                .with_help(format!(
                    "apply it in a pipeline (`x -> {name}(...)`), or pass the tensor first (`{name}(x, ...)`)"
                )),
            );
            return Value::Poison;
        }
        let params = sig.params();
        let descs: Vec<ParamDesc> = params
            .iter()
            .map(|param| ParamDesc {
                name: param.name,
                required: param.required(),
            })
            .collect();
        let what = format!("`{name}`");
        let Some(bound) = self.bind_args(&what, &descs, args, callee.span, None) else {
            return Value::Poison;
        };
        // The tensors first: they become the node's inputs, and the first one's shape is what
        // the other arguments (`pad: same`, `dwconv`'s filters) are resolved against.
        let mut inputs = Vec::new();
        let mut operand_spans = Vec::new();
        let mut poisoned = false;
        for (param, arg) in params.iter().zip(&bound) {
            let (ParamKind::Tensor, Some(arg)) = (param.kind, arg) else {
                continue;
            };
            match &arg.value {
                Value::Tensor(id) => {
                    inputs.push(*id);
                    operand_spans.push(arg.span);
                }
                Value::Poison => poisoned = true,
                other => {
                    self.error(
                        Diagnostic::error(
                            Code::ArgumentType,
                            arg.span,
                            format!(
                                "`{name}` needs a tensor here, but this is {}",
                                other.type_name()
                            ),
                        )
                        .with_label("expected a tensor"),
                    );
                    poisoned = true;
                }
            }
        }
        let input_shape = inputs
            .first()
            .map(|&id| self.graph.shape(id))
            .unwrap_or_default();
        let mut literal_span = None;
        let mut values = Vec::with_capacity(params.len());
        for (param, arg) in params.iter().zip(bound) {
            match self.convert(param, arg, &mut literal_span) {
                Some(value) => values.push(value),
                None => return Value::Poison,
            }
        }
        let pad_mode = params
            .iter()
            .zip(&values)
            .find(|(param, _)| param.name == PAD_MODE.name)
            .and_then(|(_, value)| value.clone().choice())
            .map_or(PadMode::Zeros, PadMode::from_choice);
        match sig.build(values, input_shape) {
            Some(mut op) if !poisoned => match split_padding(&mut op, pad_mode) {
                Some(pad) => {
                    // Both nodes are the layer the user wrote: one path, one span.
                    let naming = Naming::Label(self.resolve_name(&naming, op.name()));
                    let padded =
                        self.add_node(Op::Pad(pad), inputs, &operand_spans, &naming, span, None);
                    let Value::Tensor(padded) = padded else {
                        return Value::Poison;
                    };
                    self.add_node(
                        op,
                        vec![padded],
                        &operand_spans,
                        &naming,
                        span,
                        literal_span,
                    )
                }
                None => self.add_node(op, inputs, &operand_spans, &naming, span, literal_span),
            },
            _ => Value::Poison,
        }
    }

    fn concat(&mut self, args: Vec<EvalArg>, naming: Naming, span: Span) -> Value {
        let mut inputs = Vec::new();
        let mut spans = Vec::new();
        let mut poisoned = false;
        for arg in args {
            if let Some(keyword) = &arg.keyword {
                self.error(
                    Diagnostic::error(
                        Code::UnknownArgument,
                        keyword.span,
                        format!("`concat` has no argument named `{}`", keyword.name),
                    )
                    .with_label("unknown argument")
                    .with_help("`concat` takes only tensors: `concat(a, b, c)`"),
                );
                poisoned = true;
                continue;
            }
            match arg.value {
                Value::Tensor(id) => {
                    inputs.push(id);
                    spans.push(arg.span);
                }
                Value::Poison => poisoned = true,
                Value::List(items) => {
                    // `concat([a, b])` reads naturally too.
                    for item in items.iter().cloned() {
                        match item {
                            Value::Tensor(id) => {
                                inputs.push(id);
                                spans.push(arg.span);
                            }
                            _ => poisoned = true,
                        }
                    }
                }
                other => {
                    self.error(
                        Diagnostic::error(
                            Code::ArgumentType,
                            arg.span,
                            format!("`concat` joins tensors, but this is {}", other.type_name()),
                        )
                        .with_label("expected a tensor"),
                    );
                    poisoned = true;
                }
            }
        }
        if poisoned {
            return Value::Poison;
        }
        self.add_node(Op::Concat, inputs, &spans, &naming, span, None)
    }
}
