//! The built-in layers and functions: their signatures, how their arguments become op
//! attributes, and how a shape error of theirs is explained.

use super::args::ParamDesc;
use super::eval::EvalArg;
use super::value::Value;
use super::{Expander, Naming};
use crate::diag::Diagnostic;
use crate::graph::{
    infer, Activation, ConvAttrs, DenseAttrs, Literal, Op, Padding, PoolAttrs, PoolKind,
    Preprocess, Shape, ShapeError,
};
use crate::source::Span;
use crate::syntax::ast::{Ident, PadMode};

#[derive(Copy, Clone, Debug, PartialEq)]
pub enum LayerKind {
    Conv,
    DwConv,
    Dense,
    Pool(PoolKind),
    GlobalPool(PoolKind),
    AdaptiveAvgPool,
    Flatten,
    BatchNorm,
    Dropout,
    Identity,
    Act(Activation),
    Softmax,
    Add,
    Mul,
    Concat,
}

pub struct LayerSig {
    pub name: &'static str,
    /// Parameter names; the first `required` must be given. The first is the input tensor.
    pub params: &'static [&'static str],
    pub required: usize,
    pub kind: LayerKind,
}

const fn sig(
    name: &'static str,
    params: &'static [&'static str],
    required: usize,
    kind: LayerKind,
) -> LayerSig {
    LayerSig {
        name,
        params,
        required,
        kind,
    }
}

const X: &[&str] = &["x"];

static LAYERS: &[LayerSig] = &[
    sig(
        "conv",
        &[
            "x", "filters", "kernel", "stride", "pad", "groups", "bias", "weights", "dilation",
        ],
        3,
        LayerKind::Conv,
    ),
    sig(
        "dwconv",
        &[
            "x",
            "kernel",
            "stride",
            "pad",
            "multiplier",
            "bias",
            "weights",
            "dilation",
        ],
        2,
        LayerKind::DwConv,
    ),
    sig(
        "dense",
        &["x", "units", "bias", "weights"],
        2,
        LayerKind::Dense,
    ),
    sig(
        "maxpool",
        &["x", "kernel", "stride", "pad", "ceil_mode"],
        2,
        LayerKind::Pool(PoolKind::Max),
    ),
    sig(
        "avgpool",
        &[
            "x",
            "kernel",
            "stride",
            "pad",
            "ceil_mode",
            "count_include_pad",
        ],
        2,
        LayerKind::Pool(PoolKind::Avg),
    ),
    sig("global_avgpool", X, 1, LayerKind::GlobalPool(PoolKind::Avg)),
    sig("global_maxpool", X, 1, LayerKind::GlobalPool(PoolKind::Max)),
    sig(
        "adaptive_avgpool",
        &["x", "size"],
        2,
        LayerKind::AdaptiveAvgPool,
    ),
    sig("flatten", X, 1, LayerKind::Flatten),
    sig("batchnorm", &["x", "eps"], 1, LayerKind::BatchNorm),
    sig("dropout", &["x", "p"], 1, LayerKind::Dropout),
    sig("identity", X, 1, LayerKind::Identity),
    sig("relu", X, 1, LayerKind::Act(Activation::Relu)),
    sig("relu6", X, 1, LayerKind::Act(Activation::Relu6)),
    sig("sigmoid", X, 1, LayerKind::Act(Activation::Sigmoid)),
    sig("swish", X, 1, LayerKind::Act(Activation::Swish)),
    sig("silu", X, 1, LayerKind::Act(Activation::Swish)),
    sig("tanh", X, 1, LayerKind::Act(Activation::Tanh)),
    sig("softmax", X, 1, LayerKind::Softmax),
    sig("add", &["x", "y"], 2, LayerKind::Add),
    sig("mul", &["x", "y"], 2, LayerKind::Mul),
    sig("concat", &[], 0, LayerKind::Concat),
];

/// Functions on values rather than tensors.
static BUILTINS: &[&str] = &[
    "floor",
    "ceil",
    "round",
    "min",
    "max",
    "abs",
    "int",
    "float",
    "len",
    "make_divisible",
    "range",
    "channels",
    "height",
    "width",
    "preprocess",
    "labels",
];

pub fn signature(name: &str) -> Option<&'static LayerSig> {
    LAYERS.iter().find(|s| s.name == name)
}

pub fn is_builtin(name: &str) -> bool {
    BUILTINS.contains(&name)
}

pub fn is_callable(name: &str) -> bool {
    signature(name).is_some() || is_builtin(name)
}

pub fn callable_names() -> impl Iterator<Item = &'static str> {
    LAYERS
        .iter()
        .map(|s| s.name)
        .chain(BUILTINS.iter().copied())
}

/// The arguments of one layer call, taken out by name as the op is built.
struct LayerArgs {
    names: &'static [&'static str],
    values: Vec<Option<EvalArg>>,
}

impl LayerArgs {
    fn take(&mut self, name: &str) -> Option<EvalArg> {
        let idx = self.names.iter().position(|n| *n == name)?;
        self.values[idx].take()
    }
}

impl Expander<'_> {
    pub(super) fn layer(
        &mut self,
        sig: &'static LayerSig,
        callee: &Ident,
        args: Vec<EvalArg>,
        naming: Naming,
        span: Span,
    ) -> Value {
        if sig.kind == LayerKind::Concat {
            return self.concat(args, naming, span);
        }
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
                    "missing-input",
                    callee.span,
                    format!("`{}` needs an input tensor, but its first argument is {found}", sig.name),
                )
                .with_label("no input tensor")
                .with_help(format!(
                    "apply it in a pipeline (`x -> {}(...)`), or pass the tensor first (`{}(x, ...)`)",
                    sig.name, sig.name
                )),
            );
            return Value::Poison;
        }
        let descs: Vec<ParamDesc> = sig
            .params
            .iter()
            .enumerate()
            .map(|(idx, name)| ParamDesc {
                name,
                required: idx < sig.required,
            })
            .collect();
        let what = format!("`{}`", sig.name);
        let Some(values) = self.bind_args(&what, &descs, args, callee.span, None) else {
            return Value::Poison;
        };
        let mut args = LayerArgs {
            names: sig.params,
            values,
        };
        let mut inputs = Vec::new();
        let mut operand_spans = Vec::new();
        let mut poisoned = false;
        for name in ["x", "y"] {
            if let Some(arg) = args.take(name) {
                match arg.value {
                    Value::Tensor(id) => {
                        inputs.push(id);
                        operand_spans.push(arg.span);
                    }
                    Value::Poison => poisoned = true,
                    other => {
                        self.error(
                            Diagnostic::error(
                                "argument-type",
                                arg.span,
                                format!(
                                    "`{}` needs a tensor here, but this is {}",
                                    sig.name,
                                    other.type_name()
                                ),
                            )
                            .with_label("expected a tensor"),
                        );
                        poisoned = true;
                    }
                }
            }
        }
        let input_shape = inputs.first().map(|&id| self.graph.shape(id));
        let mut literal_span = None;
        let op = self.build_op(sig, &mut args, input_shape, &mut literal_span);
        match op {
            Some(op) if !poisoned => {
                self.add_node(op, inputs, &operand_spans, &naming, span, literal_span)
            }
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
                        "unknown-argument",
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
                            "argument-type",
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

    fn build_op(
        &mut self,
        sig: &LayerSig,
        args: &mut LayerArgs,
        input: Option<Shape>,
        literal_span: &mut Option<Span>,
    ) -> Option<Op> {
        let input = input.unwrap_or_default();
        match sig.kind {
            LayerKind::Conv | LayerKind::DwConv => {
                let depthwise = sig.kind == LayerKind::DwConv;
                let filters = if depthwise {
                    let multiplier = self.opt_usize(args.take("multiplier"), "multiplier", 1, 1)?;
                    input.c.saturating_mul(multiplier)
                } else {
                    self.req_usize(args.take("filters"), "filters", 1)?
                };
                let kernel = self.opt_pair(args.take("kernel"), "kernel", 1, [1, 1])?;
                let stride = self.opt_pair(args.take("stride"), "stride", 1, [1, 1])?;
                let dilation = self.opt_pair(args.take("dilation"), "dilation", 1, [1, 1])?;
                let groups = if depthwise {
                    input.c
                } else {
                    self.opt_usize(args.take("groups"), "groups", 1, 1)?
                };
                let pad = self.pad(args.take("pad"), input, kernel, stride, dilation)?;
                let (bias, bias_values) = self.bias(args.take("bias"), literal_span)?;
                let weights = match args.take("weights") {
                    Some(arg) => {
                        *literal_span = Some(arg.span);
                        Some(self.literal(arg)?)
                    }
                    None => None,
                };
                Some(Op::Conv(ConvAttrs {
                    filters,
                    kernel,
                    stride,
                    dilation,
                    pad,
                    groups,
                    bias,
                    weights,
                    bias_values,
                    activation: None,
                    residual: false,
                }))
            }
            LayerKind::Dense => {
                let units = self.req_usize(args.take("units"), "units", 1)?;
                let (bias, bias_values) = self.bias(args.take("bias"), literal_span)?;
                let weights = match args.take("weights") {
                    Some(arg) => {
                        *literal_span = Some(arg.span);
                        Some(self.literal(arg)?)
                    }
                    None => None,
                };
                Some(Op::Dense(DenseAttrs {
                    units,
                    bias,
                    weights,
                    bias_values,
                    activation: None,
                }))
            }
            LayerKind::Pool(kind) => {
                let kernel = self.opt_pair(args.take("kernel"), "kernel", 1, [1, 1])?;
                let stride = self.opt_pair(args.take("stride"), "stride", 1, kernel)?;
                let pad = self.pad(args.take("pad"), input, kernel, stride, [1, 1])?;
                let ceil_mode = self.opt_bool(args.take("ceil_mode"), "ceil_mode", false)?;
                let count_include_pad =
                    self.opt_bool(args.take("count_include_pad"), "count_include_pad", true)?;
                Some(Op::Pool(PoolAttrs {
                    kind,
                    kernel,
                    stride,
                    pad,
                    ceil_mode,
                    count_include_pad,
                }))
            }
            LayerKind::GlobalPool(kind) => Some(Op::GlobalPool(kind)),
            LayerKind::AdaptiveAvgPool => {
                let out = self.opt_pair(args.take("size"), "size", 1, [1, 1])?;
                Some(Op::AdaptiveAvgPool { out })
            }
            LayerKind::Flatten => Some(Op::Flatten),
            LayerKind::BatchNorm => {
                let eps = self.opt_f64(args.take("eps"), "eps", 1e-5)?;
                Some(Op::BatchNorm { eps })
            }
            LayerKind::Dropout => {
                let p = self.opt_f64(args.take("p"), "p", 0.5)?;
                Some(Op::Dropout { p })
            }
            LayerKind::Identity => Some(Op::Identity),
            LayerKind::Act(act) => Some(Op::Activation(act)),
            LayerKind::Softmax => Some(Op::Softmax),
            LayerKind::Add => Some(Op::Add),
            LayerKind::Mul => Some(Op::Mul),
            LayerKind::Concat => Some(Op::Concat),
        }
    }

    fn type_error(&mut self, arg: &EvalArg, name: &str, wants: &str) {
        if arg.value.is_poison() {
            return;
        }
        self.error(
            Diagnostic::error(
                "argument-type",
                arg.span,
                format!(
                    "`{name}` must be {wants}, but this is {}",
                    arg.value.type_name()
                ),
            )
            .with_label(format!("expected {wants}")),
        );
    }

    fn int_to_usize(
        &mut self,
        arg: &EvalArg,
        value: &Value,
        name: &str,
        min: usize,
    ) -> Option<usize> {
        match value {
            Value::Int(v) if *v >= min as i64 => usize::try_from(*v).ok(),
            Value::Int(v) => {
                self.error(
                    Diagnostic::error(
                        "argument-range",
                        arg.span,
                        format!("`{name}` must be at least {min}, but this is {v}"),
                    )
                    .with_label("out of range"),
                );
                None
            }
            _ => {
                self.type_error(arg, name, "an int");
                None
            }
        }
    }

    fn req_usize(&mut self, arg: Option<EvalArg>, name: &str, min: usize) -> Option<usize> {
        let arg = arg?;
        let value = arg.value.clone();
        self.int_to_usize(&arg, &value, name, min)
    }

    fn opt_usize(
        &mut self,
        arg: Option<EvalArg>,
        name: &str,
        min: usize,
        default: usize,
    ) -> Option<usize> {
        match arg {
            Some(arg) => {
                let value = arg.value.clone();
                self.int_to_usize(&arg, &value, name, min)
            }
            None => Some(default),
        }
    }

    /// An int `n` (meaning `[n, n]`) or a list `[a, b]`.
    fn opt_pair(
        &mut self,
        arg: Option<EvalArg>,
        name: &str,
        min: usize,
        default: [usize; 2],
    ) -> Option<[usize; 2]> {
        let Some(arg) = arg else {
            return Some(default);
        };
        match &arg.value {
            Value::List(items) if items.len() == 2 => {
                let (a, b) = (items[0].clone(), items[1].clone());
                Some([
                    self.int_to_usize(&arg, &a, name, min)?,
                    self.int_to_usize(&arg, &b, name, min)?,
                ])
            }
            Value::List(_) => {
                self.type_error(&arg, name, "an int or a list of two ints");
                None
            }
            value => {
                let value = value.clone();
                let n = self.int_to_usize(&arg, &value, name, min)?;
                Some([n, n])
            }
        }
    }

    fn opt_bool(&mut self, arg: Option<EvalArg>, name: &str, default: bool) -> Option<bool> {
        match arg {
            None => Some(default),
            Some(EvalArg {
                value: Value::Bool(b),
                ..
            }) => Some(b),
            Some(arg) => {
                self.type_error(&arg, name, "a bool");
                None
            }
        }
    }

    fn opt_f64(&mut self, arg: Option<EvalArg>, name: &str, default: f64) -> Option<f64> {
        match arg {
            None => Some(default),
            Some(arg) => match arg.value.as_f64() {
                Some(v) if v >= 0.0 => Some(v),
                _ => {
                    self.type_error(&arg, name, "a non-negative number");
                    None
                }
            },
        }
    }

    /// `pad: 1`, `pad: [ph, pw]`, `pad: [top, bottom, left, right]`, `pad: same`, `pad: valid`.
    fn pad(
        &mut self,
        arg: Option<EvalArg>,
        input: Shape,
        kernel: [usize; 2],
        stride: [usize; 2],
        dilation: [usize; 2],
    ) -> Option<Padding> {
        let Some(arg) = arg else {
            return Some(Padding::default());
        };
        let value = arg.value.clone();
        match value {
            Value::Pad(PadMode::Valid) => Some(Padding::default()),
            Value::Pad(PadMode::Same) => {
                let (top, bottom) = infer::same_padding(input.h, kernel[0], stride[0], dilation[0]);
                let (left, right) = infer::same_padding(input.w, kernel[1], stride[1], dilation[1]);
                Some(Padding {
                    top,
                    bottom,
                    left,
                    right,
                })
            }
            Value::Int(_) => Some(Padding::uniform(self.int_to_usize(&arg, &value, "pad", 0)?)),
            Value::List(items) if items.len() == 2 || items.len() == 4 => {
                let mut sides = Vec::new();
                for item in items.iter() {
                    sides.push(self.int_to_usize(&arg, item, "pad", 0)?);
                }
                Some(if sides.len() == 2 {
                    Padding {
                        top: sides[0],
                        bottom: sides[0],
                        left: sides[1],
                        right: sides[1],
                    }
                } else {
                    Padding {
                        top: sides[0],
                        bottom: sides[1],
                        left: sides[2],
                        right: sides[3],
                    }
                })
            }
            _ => {
                self.type_error(
                    &arg,
                    "pad",
                    "an int, `same`, `valid`, [vertical, horizontal] or [top, bottom, left, right]",
                );
                None
            }
        }
    }

    /// `bias: true/false`, or literal bias values.
    fn bias(
        &mut self,
        arg: Option<EvalArg>,
        literal_span: &mut Option<Span>,
    ) -> Option<(bool, Option<Literal>)> {
        match arg {
            None => Some((true, None)),
            Some(EvalArg {
                value: Value::Bool(b),
                ..
            }) => Some((b, None)),
            Some(arg) if matches!(arg.value, Value::List(_)) => {
                *literal_span = Some(arg.span);
                let literal = self.literal(arg)?;
                Some((true, Some(literal)))
            }
            Some(arg) => {
                self.type_error(&arg, "bias", "a bool or a list of numbers");
                None
            }
        }
    }

    /// A nested list of numbers as a dense tensor; ragged lists are rejected.
    fn literal(&mut self, arg: EvalArg) -> Option<Literal> {
        if !self.charge(arg.value.size(), arg.span) {
            return None;
        }
        fn shape_of(value: &Value, shape: &mut Vec<usize>) {
            if let Value::List(items) = value {
                shape.push(items.len());
                if let Some(first) = items.first() {
                    shape_of(first, shape);
                }
            }
        }
        fn flatten(value: &Value, depth: usize, shape: &[usize], out: &mut Vec<f32>) -> bool {
            match value {
                Value::List(items) => {
                    depth < shape.len()
                        && items.len() == shape[depth]
                        && items
                            .iter()
                            .all(|item| flatten(item, depth + 1, shape, out))
                }
                number => match number.as_f64() {
                    Some(v) if depth == shape.len() => {
                        out.push(v as f32);
                        true
                    }
                    _ => false,
                },
            }
        }
        let mut shape = Vec::new();
        shape_of(&arg.value, &mut shape);
        let mut values = Vec::new();
        if shape.is_empty() || shape.contains(&0) || !flatten(&arg.value, 0, &shape, &mut values) {
            self.type_error(
                &arg,
                "weights",
                "a non-empty, rectangular nested list of numbers",
            );
            return None;
        }
        Some(Literal { shape, values })
    }

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

    pub(super) fn builtin(&mut self, callee: &Ident, args: Vec<EvalArg>, span: Span) -> Value {
        if args.iter().any(|a| a.value.is_poison()) {
            return Value::Poison;
        }
        let name = callee.name.as_str();
        match name {
            "preprocess" => return self.preprocess(callee, args),
            "labels" => return self.labels(callee, args),
            _ => {}
        }
        if let Some(arg) = args
            .iter()
            .find(|a| a.keyword.is_some() && name != "make_divisible")
        {
            let keyword = arg.keyword.as_ref().map_or("", |k| k.name.as_str());
            self.error(
                Diagnostic::error(
                    "unknown-argument",
                    arg.span,
                    format!("`{name}` has no argument named `{keyword}`"),
                )
                .with_label("unknown argument"),
            );
            return Value::Poison;
        }
        let values: Vec<&Value> = args.iter().map(|a| &a.value).collect();
        let result = match (name, values.as_slice()) {
            ("floor" | "ceil" | "round", [v]) => v.as_f64().map(|x| {
                let r = match name {
                    "floor" => x.floor(),
                    "ceil" => x.ceil(),
                    _ => x.round(),
                };
                if r.abs() < 9.0e18 {
                    Value::Int(r as i64)
                } else {
                    Value::Poison
                }
            }),
            ("int", [v]) => v
                .as_f64()
                .filter(|x| x.abs() < 9.0e18)
                .map(|x| Value::Int(x.trunc() as i64)),
            ("float", [v]) => v.as_f64().map(Value::Float),
            ("abs", [Value::Int(v)]) => v.checked_abs().map(Value::Int),
            ("abs", [Value::Float(v)]) => Some(Value::Float(v.abs())),
            ("len", [Value::List(items)]) => Some(Value::Int(items.len() as i64)),
            ("range", [Value::Int(n)]) if (0..=super::MAX_REPEAT).contains(n) => {
                Value::list((0..*n).map(Value::Int).collect())
            }
            ("range", [Value::Int(start), Value::Int(end)])
                if *start <= *end && end - start <= super::MAX_REPEAT =>
            {
                Value::list((*start..*end).map(Value::Int).collect())
            }
            ("min" | "max", [Value::List(items)]) => {
                min_max(name, &items.iter().collect::<Vec<_>>())
            }
            ("min" | "max", items) if !items.is_empty() => min_max(name, items),
            ("make_divisible", _) => self.make_divisible(&args),
            ("channels" | "height" | "width", [Value::Tensor(id)]) => {
                let shape = self.graph.shape(*id);
                Some(Value::Int(match name {
                    "channels" => shape.c,
                    "height" => shape.h,
                    _ => shape.w,
                } as i64))
            }
            _ => None,
        };
        match result {
            Some(Value::Poison) => {
                self.error(
                    Diagnostic::error(
                        "overflow",
                        span,
                        format!("the result of `{name}` does not fit in a 64-bit integer"),
                    )
                    .with_label("overflow"),
                );
                Value::Poison
            }
            Some(v) => v,
            None => {
                let found: Vec<&str> = values.iter().map(|v| v.type_name()).collect();
                let wants = match name {
                    "floor" | "ceil" | "round" | "int" | "float" | "abs" => "one number",
                    "min" | "max" => "numbers, or one list of numbers",
                    "len" => "one list",
                    "range" => "an end (or a start and an end), at most 10000 apart",
                    "make_divisible" => "a number, then an optional divisor and min_value",
                    _ => "one tensor",
                };
                self.error(
                    Diagnostic::error(
                        "argument-type",
                        span,
                        format!(
                            "`{name}` takes {wants}, but was given {}",
                            if found.is_empty() {
                                "nothing".to_string()
                            } else {
                                found.join(", ")
                            }
                        ),
                    )
                    .with_label("wrong arguments"),
                );
                Value::Poison
            }
        }
    }

    /// torchvision's `_make_divisible`: round `v` to the nearest multiple of `divisor`, not
    /// below `min_value`, and not more than 10 % below `v`.
    fn make_divisible(&mut self, args: &[EvalArg]) -> Option<Value> {
        let descs = [
            ParamDesc {
                name: "v",
                required: true,
            },
            ParamDesc {
                name: "divisor",
                required: false,
            },
            ParamDesc {
                name: "min_value",
                required: false,
            },
        ];
        let mut v = None;
        let mut divisor = 8.0;
        let mut min_value = None;
        let mut positional = 0;
        for arg in args {
            let slot = match &arg.keyword {
                Some(k) => descs.iter().position(|d| d.name == k.name)?,
                None => {
                    positional += 1;
                    positional - 1
                }
            };
            let x = arg.value.as_f64()?;
            match slot {
                0 => v = Some(x),
                1 => divisor = x,
                2 => min_value = Some(x),
                _ => return None,
            }
        }
        let v = v?;
        if divisor <= 0.0 {
            return None;
        }
        let min_value = min_value.unwrap_or(divisor);
        let mut new_v = min_value.max(((v + divisor / 2.0) / divisor).floor() * divisor);
        if new_v < 0.9 * v {
            new_v += divisor;
        }
        (new_v.abs() < 9.0e18).then_some(Value::Int(new_v as i64))
    }

    /// Whether a declaration applies here: it does in the network being expanded, it is
    /// ignored in a network used as a stage, and it is an error in a block.
    fn declaration_allowed(&mut self, callee: &Ident) -> bool {
        match self.calls.last() {
            None => return true,
            Some(call) if call.is_network => return false,
            Some(_) => {}
        }
        self.error(
            Diagnostic::error(
                "misplaced-declaration",
                callee.span,
                format!("`{}` declares something about a network and belongs in its body, not in a block", callee.name),
            )
            .with_label("inside a block"),
        );
        false
    }

    fn preprocess(&mut self, callee: &Ident, args: Vec<EvalArg>) -> Value {
        if !self.declaration_allowed(callee) {
            return Value::Unit;
        }
        let mut pre = Preprocess::default();
        for arg in args {
            let Some(keyword) = arg.keyword.clone() else {
                self.error(
                    Diagnostic::error("argument-type", arg.span, "`preprocess` takes keyword arguments only")
                        .with_label("name this argument")
                        .with_help("e.g. `preprocess(resize: 256, crop: 224, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225])`"),
                );
                continue;
            };
            match keyword.name.as_str() {
                "resize" | "crop" => {
                    let value = arg.value.clone();
                    if let Some(n) = self.int_to_usize(&arg, &value, &keyword.name, 1) {
                        if keyword.name == "resize" {
                            pre.resize = Some(n);
                        } else {
                            pre.crop = Some(n);
                        }
                    }
                }
                "mean" | "std" => {
                    let numbers: Option<Vec<f32>> = match &arg.value {
                        Value::List(items) => {
                            items.iter().map(|v| v.as_f64().map(|x| x as f32)).collect()
                        }
                        _ => None,
                    };
                    match numbers {
                        Some(numbers) if keyword.name == "mean" => pre.mean = numbers,
                        Some(numbers) if numbers.iter().all(|&s| s > 0.0) => pre.std = numbers,
                        _ => self.type_error(
                            &arg,
                            &keyword.name,
                            "a list of numbers (positive for `std`)",
                        ),
                    }
                }
                other => {
                    let mut diagnostic = Diagnostic::error(
                        "unknown-argument",
                        keyword.span,
                        format!("`preprocess` has no argument named `{other}`"),
                    )
                    .with_label("unknown argument");
                    if let Some(s) =
                        super::suggest::closest(other, ["resize", "crop", "mean", "std"])
                    {
                        diagnostic = diagnostic.with_help(format!("did you mean `{s}`?"));
                    }
                    self.error(diagnostic);
                }
            }
        }
        self.graph.meta.preprocess = Some(pre);
        Value::Unit
    }

    fn labels(&mut self, callee: &Ident, args: Vec<EvalArg>) -> Value {
        if !self.declaration_allowed(callee) {
            return Value::Unit;
        }
        match args.as_slice() {
            [EvalArg {
                keyword: None,
                value: Value::Str(file),
                ..
            }] => {
                self.graph.meta.labels_file = Some(file.clone());
                self.graph.meta.labels_span = Some(callee.span);
                Value::Unit
            }
            _ => {
                self.error(
                    Diagnostic::error(
                        "argument-type",
                        callee.span,
                        "`labels` takes one string: the file of class names, one per line",
                    )
                    .with_label("expected `labels(\"classes.txt\")`"),
                );
                Value::Poison
            }
        }
    }
}

fn min_max(name: &str, items: &[&Value]) -> Option<Value> {
    if items.is_empty() {
        return None;
    }
    if items.iter().all(|v| matches!(v, Value::Int(_))) {
        let ints = items.iter().filter_map(|v| match v {
            Value::Int(i) => Some(*i),
            _ => None,
        });
        return if name == "min" {
            ints.min()
        } else {
            ints.max()
        }
        .map(Value::Int);
    }
    let floats: Option<Vec<f64>> = items.iter().map(|v| v.as_f64()).collect();
    let floats = floats?;
    let result = floats
        .into_iter()
        .reduce(|a, b| if name == "min" { a.min(b) } else { a.max(b) })?;
    Some(Value::Float(result))
}
