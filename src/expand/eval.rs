//! Expressions: arithmetic on hyperparameters, names, lists, conditionals, `+` and `*` on
//! tensors, and calls (dispatched to blocks, layers and built-in functions).

use super::stage::StageInput;
use super::suggest::closest;
use super::value::Value;
use super::{Expander, Naming};
use crate::diag::{Code, Diagnostic};
use crate::graph::{ArithmeticOp, Op, ScalarAttrs, ScalarOp};
use crate::source::Span;
use crate::syntax::ast::{Arg, BinaryOp, Expr, ExprKind, Ident, UnaryOp};

/// An evaluated call argument.
pub struct EvalArg {
    pub keyword: Option<Ident>,
    pub value: Value,
    pub span: Span,
}

impl Expander<'_> {
    pub(super) fn eval(&mut self, expr: &Expr) -> Value {
        match &expr.kind {
            ExprKind::Int(v) => Value::Int(*v),
            ExprKind::Float(v) => Value::Float(*v),
            ExprKind::Bool(v) => Value::Bool(*v),
            ExprKind::Str(v) => Value::Str(v.clone()),
            ExprKind::PadMode(mode) => Value::Pad(*mode),
            ExprKind::Name(name) => self.name(name, expr.span),
            ExprKind::List(items) => {
                let values: Vec<Value> = items.iter().map(|item| self.eval(item)).collect();
                if values.iter().any(Value::is_poison) {
                    return Value::Poison;
                }
                match Value::list(values) {
                    Some(list) => list,
                    None => {
                        self.error(
                            Diagnostic::error(
                                Code::ListTooLarge,
                                expr.span,
                                format!(
                                    "this list holds more than {} values or is nested more than {} deep",
                                    crate::diag::thousands(super::value::MAX_LIST_VALUES),
                                    super::value::MAX_LIST_DEPTH
                                ),
                            )
                            .with_label("too large"),
                        );
                        Value::Poison
                    }
                }
            }
            // The recipe's optimizer, schedule and loss are names, not values: read as written.
            ExprKind::Call { callee, args } if callee.name == "train" => {
                self.train_recipe(callee, args)
            }
            ExprKind::Call { callee, args } => {
                let args = self.eval_args(args);
                self.call(callee, args, None, Naming::Auto, expr.span)
            }
            ExprKind::Unary { op, operand } => {
                let value = self.eval(operand);
                self.unary(*op, value, expr.span)
            }
            ExprKind::Binary {
                op,
                op_span,
                left,
                right,
            } => {
                let l = self.eval(left);
                let r = self.eval(right);
                self.binary(*op, *op_span, (l, left.span), (r, right.span))
            }
            ExprKind::If {
                cond,
                then,
                otherwise,
            } => {
                let Some(choice) = self.condition(cond) else {
                    return Value::Poison;
                };
                if choice {
                    self.body_statements(&then.stmts, then.span)
                } else if let Some(otherwise) = otherwise {
                    self.body_statements(&otherwise.stmts, otherwise.span)
                } else {
                    self.error(
                        Diagnostic::error(Code::IfWithoutElse, expr.span, "this `if` has no `else`, so it has no value when its condition is false")
                            .with_label("the condition is false here")
                            .with_help("add an `else` branch, e.g. `else { x }`"),
                    );
                    Value::Poison
                }
            }
            ExprKind::Index { base, index } => {
                let list = self.eval(base);
                let idx = self.eval(index);
                self.index(list, base.span, idx, index.span)
            }
            ExprKind::Pipeline { head, stages } => {
                let mut value = self.eval(head);
                let mut span = head.span;
                for stage in stages {
                    value = self.apply_stage(stage, StageInput { value, span }, Naming::Auto);
                    span = stage.span;
                }
                value
            }
        }
    }

    /// Evaluates an `if` condition: true, false, or `None` after a diagnostic.
    pub(super) fn condition(&mut self, cond: &Expr) -> Option<bool> {
        match self.eval(cond) {
            Value::Bool(b) => Some(b),
            Value::Poison => None,
            other => {
                self.error(
                    Diagnostic::error(
                        Code::TypeMismatch,
                        cond.span,
                        format!(
                            "a condition must be a bool, but this is {}",
                            other.type_name()
                        ),
                    )
                    .with_label("expected a bool")
                    .with_help("compare it, e.g. `stride != 1`"),
                );
                None
            }
        }
    }

    pub(super) fn eval_args(&mut self, args: &[Arg]) -> Vec<EvalArg> {
        args.iter()
            .map(|arg| EvalArg {
                keyword: arg.keyword.clone(),
                value: self.eval(&arg.value),
                span: arg.span(),
            })
            .collect()
    }

    fn name(&mut self, name: &str, span: Span) -> Value {
        if let Some(value) = self.lookup(name) {
            return value;
        }
        let mut candidates = self.names_in_scope();
        let is_callable =
            self.defs.block(span.file, name).is_some() || super::catalogue::is_callable(name);
        if is_callable {
            self.error(
                Diagnostic::error(
                    Code::NotAValue,
                    span,
                    format!("`{name}` is a layer or block, not a value"),
                )
                .with_label("used as a value here")
                .with_help(format!(
                    "apply it in a pipeline (`x -> {name}`) or call it (`{name}(x)`)"
                )),
            );
            return Value::Poison;
        }
        candidates.sort();
        let suggestion = closest(name, candidates.iter().map(String::as_str)).map(str::to_string);
        let mut diagnostic =
            Diagnostic::error(Code::UnknownName, span, format!("unknown name `{name}`"))
                .with_label("not defined here");
        if let Some(s) = suggestion {
            diagnostic = diagnostic.with_help(format!("did you mean `{s}`?"));
        }
        self.error(diagnostic);
        Value::Poison
    }

    fn unary(&mut self, op: UnaryOp, value: Value, span: Span) -> Value {
        match (op, value) {
            (_, Value::Poison) => Value::Poison,
            (UnaryOp::Neg, Value::Int(v)) => match v.checked_neg() {
                Some(n) => Value::Int(n),
                None => self.overflow(span),
            },
            (UnaryOp::Neg, Value::Float(v)) => Value::Float(-v),
            (UnaryOp::Not, Value::Bool(b)) => Value::Bool(!b),
            (op, other) => {
                let (symbol, wants) = match op {
                    UnaryOp::Neg => ("-", "a number"),
                    UnaryOp::Not => ("not", "a bool"),
                };
                self.error(
                    Diagnostic::error(
                        Code::TypeMismatch,
                        span,
                        format!(
                            "`{symbol}` needs {wants}, but this is {}",
                            other.type_name()
                        ),
                    )
                    .with_label(format!("expected {wants}")),
                );
                Value::Poison
            }
        }
    }

    fn index(&mut self, list: Value, list_span: Span, idx: Value, idx_span: Span) -> Value {
        match (list, idx) {
            (Value::Poison, _) | (_, Value::Poison) => Value::Poison,
            (Value::List(items), Value::Int(i)) => {
                match usize::try_from(i).ok().and_then(|i| items.get(i)) {
                    Some(item) => item.clone(),
                    None => {
                        self.error(
                            Diagnostic::error(
                                Code::IndexOutOfRange,
                                idx_span,
                                format!("index {i} is out of range for a list of {}", items.len()),
                            )
                            .with_label(format!(
                                "valid indices are 0 to {}",
                                items.len() as i64 - 1
                            ))
                            .with_secondary(
                                list_span,
                                format!("this list has {} elements", items.len()),
                            ),
                        );
                        Value::Poison
                    }
                }
            }
            (Value::List(_), other) => {
                self.error(
                    Diagnostic::error(
                        Code::TypeMismatch,
                        idx_span,
                        format!(
                            "a list index must be an int, but this is {}",
                            other.type_name()
                        ),
                    )
                    .with_label("expected an int"),
                );
                Value::Poison
            }
            (other, _) => {
                self.error(
                    Diagnostic::error(
                        Code::TypeMismatch,
                        list_span,
                        format!(
                            "only lists can be indexed, but this is {}",
                            other.type_name()
                        ),
                    )
                    .with_label("not a list"),
                );
                Value::Poison
            }
        }
    }

    fn overflow(&mut self, span: Span) -> Value {
        self.error(
            Diagnostic::error(Code::Overflow, span, "integer overflow in this arithmetic")
                .with_label("the result does not fit in a 64-bit integer"),
        );
        Value::Poison
    }

    fn float_overflow(&mut self, span: Span) -> Value {
        self.error(
            Diagnostic::error(Code::Overflow, span, "float overflow in this arithmetic")
                .with_label("the result is beyond the largest 64-bit float")
                .with_note("floats are 64-bit: their magnitude is at most about 1.8e308"),
        );
        Value::Poison
    }

    fn binary(
        &mut self,
        op: BinaryOp,
        op_span: Span,
        left: (Value, Span),
        right: (Value, Span),
    ) -> Value {
        let span = left.1.to(right.1);
        match (&left.0, &right.0) {
            (Value::Poison, _) | (_, Value::Poison) => return Value::Poison,
            (Value::Tensor(a), Value::Tensor(b))
                if matches!(
                    op,
                    BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div
                ) =>
            {
                let op = match op {
                    BinaryOp::Add => Op::Add,
                    BinaryOp::Sub => Op::Arithmetic(ArithmeticOp::Sub),
                    BinaryOp::Mul => Op::Mul,
                    _ => Op::Arithmetic(ArithmeticOp::Div),
                };
                return self.add_node(
                    op,
                    vec![*a, *b],
                    &[left.1, right.1],
                    &Naming::Auto,
                    op_span,
                    None,
                );
            }
            (Value::Tensor(t), number) | (number, Value::Tensor(t))
                if matches!(
                    op,
                    BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div
                ) && number.as_f64().is_some() =>
            {
                let tensor_first = matches!(left.0, Value::Tensor(_));
                let (tensor, number_span) = if tensor_first {
                    (*t, right.1)
                } else {
                    (*t, left.1)
                };
                let value = number.as_f64().unwrap_or_default();
                if op == BinaryOp::Div && tensor_first && value == 0.0 {
                    return self.division_by_zero(op_span, number_span);
                }
                let value32 = value as f32;
                if !value32.is_finite() {
                    self.error(
                        Diagnostic::error(
                            Code::ArgumentRange,
                            number_span,
                            format!("{value} is too large for a 32-bit float, the tensors' type"),
                        )
                        .with_label("too large"),
                    );
                    return Value::Poison;
                }
                let scalar_op = match (op, tensor_first) {
                    (BinaryOp::Add, _) => ScalarOp::Add,
                    (BinaryOp::Mul, _) => ScalarOp::Mul,
                    (BinaryOp::Sub, true) => ScalarOp::Sub,
                    (BinaryOp::Sub, false) => ScalarOp::SubFrom,
                    (_, true) => ScalarOp::Div,
                    (_, false) => ScalarOp::DivInto,
                };
                let attrs = ScalarAttrs {
                    op: scalar_op,
                    value: value32,
                };
                let operand = if tensor_first { left.1 } else { right.1 };
                return self.add_node(
                    Op::Scalar(attrs),
                    vec![tensor],
                    &[operand],
                    &Naming::Auto,
                    op_span,
                    None,
                );
            }
            _ => {}
        }
        use BinaryOp::*;
        let result = match (op, &left.0, &right.0) {
            (Or, Value::Bool(a), Value::Bool(b)) => Some(Value::Bool(*a || *b)),
            (And, Value::Bool(a), Value::Bool(b)) => Some(Value::Bool(*a && *b)),
            (Eq | Ne, a, b) => {
                // Comparing lists walks them: count the walk as expansion work.
                if !self.charge(a.size().max(b.size()), op_span) {
                    return Value::Poison;
                }
                values_equal(a, b).map(|eq| Value::Bool(eq == (op == Eq)))
            }
            (Lt | Le | Gt | Ge, a, b) => match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) => Some(Value::Bool(match op {
                    Lt => x < y,
                    Le => x <= y,
                    Gt => x > y,
                    _ => x >= y,
                })),
                _ => None,
            },
            (Add | Sub | Mul | Rem, Value::Int(a), Value::Int(b)) => {
                if op == Rem && *b == 0 {
                    return self.division_by_zero(op_span, right.1);
                }
                let result = match op {
                    Add => a.checked_add(*b),
                    Sub => a.checked_sub(*b),
                    Mul => a.checked_mul(*b),
                    _ => a.checked_rem_euclid(*b),
                };
                match result {
                    Some(v) => Some(Value::Int(v)),
                    None => return self.overflow(span),
                }
            }
            (Add | Sub | Mul | Div, a, b) => match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) => {
                    if op == Div && y == 0.0 {
                        return self.division_by_zero(op_span, right.1);
                    }
                    let v = match op {
                        Add => x + y,
                        Sub => x - y,
                        Mul => x * y,
                        _ => x / y,
                    };
                    if v.is_finite() {
                        Some(Value::Float(v))
                    } else {
                        return self.float_overflow(span);
                    }
                }
                _ => None,
            },
            _ => None,
        };
        match result {
            Some(v) => v,
            None => {
                let mut diagnostic = Diagnostic::error(
                    Code::TypeMismatch,
                    op_span,
                    format!(
                        "`{}` cannot combine {} and {}",
                        op.symbol(),
                        left.0.type_name(),
                        right.0.type_name()
                    ),
                )
                .with_label("these operands do not fit this operator")
                .with_secondary(left.1, format!("this is {}", left.0.type_name()))
                .with_secondary(right.1, format!("this is {}", right.0.type_name()));
                if matches!(left.0, Value::Tensor(_)) || matches!(right.0, Value::Tensor(_)) {
                    diagnostic = diagnostic.with_help(
                        "tensors support `+` (residual add) and `*` (broadcast multiply) with another tensor",
                    );
                }
                self.error(diagnostic);
                Value::Poison
            }
        }
    }

    /// A name bound to a value (`let t = x -> conv(8, 3)`) used as a pipeline stage or called.
    fn value_as_stage(&mut self, callee: &Ident, value: &Value) -> Value {
        if value.is_poison() {
            return Value::Poison;
        }
        let name = callee.name.as_str();
        let help = match value {
            Value::Tensor(_) => format!(
                "a pipeline stage must be a layer or a block; to combine `{name}` with another tensor, use `+`, `*` or `concat`"
            ),
            _ => "a pipeline stage must be a layer or a block".to_string(),
        };
        self.error(
            Diagnostic::error(
                Code::UnknownLayer,
                callee.span,
                format!("`{name}` is {}, not a layer or block", value.type_name()),
            )
            .with_label("used as a layer here")
            .with_help(help),
        );
        Value::Poison
    }

    fn division_by_zero(&mut self, op_span: Span, divisor: Span) -> Value {
        self.error(
            Diagnostic::error(Code::DivisionByZero, op_span, "division by zero")
                .with_label("this divides")
                .with_secondary(divisor, "this is zero"),
        );
        Value::Poison
    }

    /// Dispatches a call to a block, a layer or a built-in function. `piped` is the pipeline's
    /// tensor when the call is a stage.
    pub(super) fn call(
        &mut self,
        callee: &Ident,
        mut args: Vec<EvalArg>,
        piped: Option<StageInput>,
        naming: Naming,
        span: Span,
    ) -> Value {
        if let Some(input) = piped {
            args.insert(
                0,
                EvalArg {
                    keyword: None,
                    value: input.value,
                    span: input.span,
                },
            );
        }
        let name = callee.name.as_str();
        if let Some(block) = self.defs.block(callee.span.file, name) {
            return self.call_block(block, callee, args, naming, span);
        }
        if let Some(network) = self.defs.network(callee.span.file, name) {
            return self.call_network(network, callee, args, naming, span);
        }
        if let Some(sig) = super::catalogue::signature(name) {
            return self.layer(sig, callee, args, naming, span);
        }
        if super::builtins::is_builtin(name) {
            return self.builtin(callee, args, span);
        }
        if let Some(value) = self.lookup(name) {
            return self.value_as_stage(callee, &value);
        }
        let message = format!("unknown layer or block `{name}`");
        // Inside a repeat the same call fails once per iteration: a million of them must not
        // each rebuild the candidate list and its edit distances.
        if self.is_reported(Code::UnknownLayer, callee.span, &message) {
            return Value::Poison;
        }
        let mut candidates: Vec<String> = self.defs.blocks.keys().map(|k| k.to_string()).collect();
        candidates.extend(super::catalogue::callable_names().map(String::from));
        candidates.sort();
        let help = match super::suggest::equivalent(name) {
            Some(super::suggest::Equivalent::Layer(layer)) => {
                Some(format!("cnnc calls this layer `{layer}`"))
            }
            Some(super::suggest::Equivalent::Missing(what)) => {
                Some(format!("cnnc has no {what} layer yet"))
            }
            None => closest(name, candidates.iter().map(String::as_str))
                .map(|s| format!("did you mean `{s}`?")),
        };
        let mut diagnostic = Diagnostic::error(Code::UnknownLayer, callee.span, message)
            .with_label("not a layer, block or function");
        if let Some(help) = help {
            diagnostic = diagnostic.with_help(help);
        }
        self.error(diagnostic);
        Value::Poison
    }
}

/// Equality where it is meaningful; `None` for values of kinds that cannot be compared.
fn values_equal(a: &Value, b: &Value) -> Option<bool> {
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => Some(x == y),
        (Value::Str(x), Value::Str(y)) => Some(x == y),
        (Value::Pad(x), Value::Pad(y)) => Some(x == y),
        (Value::Int(x), Value::Int(y)) => Some(x == y),
        (Value::List(x), Value::List(y)) => {
            if x.len() != y.len() {
                return Some(false);
            }
            let mut all = true;
            for (a, b) in x.iter().zip(y.iter()) {
                all &= values_equal(a, b)?;
            }
            Some(all)
        }
        // Tensors have no value to compare.
        (Value::Tensor(_), _) | (_, Value::Tensor(_)) => None,
        (x, y) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => Some(x == y),
            // Values of different kinds are simply unequal, so that a configuration list may
            // mix numbers and markers: `if v == "M" { maxpool(2) }`.
            _ => Some(false),
        },
    }
}
