//! Converting a layer's arguments to the typed values its builder destructures, by the kind
//! each parameter declares (`graph::ops::signature`); literal tensors among them.

use super::eval::EvalArg;
use super::value::Value;
use super::Expander;
use crate::diag::{Code, Diagnostic};
use crate::graph::ops::signature::{ArgValue, PadSpec, Param, ParamDefault, ParamKind};
use crate::graph::{Literal, Padding};
use crate::source::Span;
use crate::syntax::ast::PadMode;

impl Expander<'_> {
    /// The value of parameter `param` given `arg` (or its default when left out); `None`
    /// after reporting why the argument does not fit. A literal's span is recorded in
    /// `literal_span`, where a literal-shape error will point.
    pub(super) fn convert(
        &mut self,
        param: &Param,
        arg: Option<EvalArg>,
        literal_span: &mut Option<Span>,
    ) -> Option<ArgValue> {
        let Some(arg) = arg else {
            return Some(match param.default {
                ParamDefault::Required | ParamDefault::Absent => ArgValue::Absent,
                ParamDefault::Count(n) => ArgValue::Count(n),
                ParamDefault::Pair(p) => ArgValue::Pair(p),
                ParamDefault::Flag(b) => ArgValue::Flag(b),
                ParamDefault::Real(x) => ArgValue::Real(x),
                ParamDefault::Choice(idx) => ArgValue::Choice(idx),
            });
        };
        let name = param.name;
        match param.kind {
            ParamKind::Tensor => Some(ArgValue::Tensor),
            ParamKind::Count { min } => {
                let value = arg.value.clone();
                self.int_to_usize(&arg, &value, name, min)
                    .map(ArgValue::Count)
            }
            ParamKind::Pair { min } => self.pair(arg, name, min).map(ArgValue::Pair),
            ParamKind::Flag => match arg.value {
                Value::Bool(b) => Some(ArgValue::Flag(b)),
                _ => {
                    self.type_error(&arg, name, "a bool");
                    None
                }
            },
            ParamKind::Real => match arg.value.as_f64() {
                // The layers compute in f32: a coefficient it cannot hold would make every
                // output infinite or NaN.
                Some(v) if v >= 0.0 && (v as f32).is_finite() => Some(ArgValue::Real(v)),
                Some(v) if v >= 0.0 => {
                    self.range_error(
                        &arg,
                        format!(
                            "`{name}` is {}, too large for a 32-bit float, the type the layers compute in",
                            number_as_written(&arg.value, v)
                        ),
                        "above 3.4e38",
                    );
                    None
                }
                Some(v) => {
                    self.range_error(
                        &arg,
                        format!(
                            "`{name}` must be zero or more, but this is {}",
                            number_as_written(&arg.value, v)
                        ),
                        "negative",
                    );
                    None
                }
                None => {
                    self.type_error(&arg, name, "a non-negative number");
                    None
                }
            },
            ParamKind::Probability => match arg.value.as_f64() {
                Some(v) if (0.0..1.0).contains(&v) => Some(ArgValue::Real(v)),
                Some(v) => {
                    self.range_error(
                        &arg,
                        format!(
                            "`{name}` is a probability of dropping a value and must be at least 0 and below 1, but this is {}",
                            number_as_written(&arg.value, v)
                        ),
                        "outside [0, 1)",
                    );
                    None
                }
                None => {
                    self.type_error(&arg, name, "a number in [0, 1)");
                    None
                }
            },
            ParamKind::Pad => self.pad(arg).map(ArgValue::Pad),
            ParamKind::Bias => match arg.value {
                Value::Bool(b) => Some(ArgValue::Bias(b, None)),
                Value::List(_) => {
                    *literal_span = Some(arg.span);
                    let literal = self.literal(arg)?;
                    Some(ArgValue::Bias(true, Some(literal)))
                }
                _ => {
                    self.type_error(&arg, "bias", "a bool or a list of numbers");
                    None
                }
            },
            ParamKind::Literal => {
                *literal_span = Some(arg.span);
                self.literal(arg).map(ArgValue::Literal)
            }
            ParamKind::Choice(choices) => self.choice(&arg, name, choices).map(ArgValue::Choice),
        }
    }

    /// The position of a string among `choices`.
    fn choice(&mut self, arg: &EvalArg, name: &str, choices: &[&str]) -> Option<usize> {
        let quoted: Vec<String> = choices.iter().map(|c| format!("\"{c}\"")).collect();
        let wants = match quoted.as_slice() {
            [init @ .., last] if !init.is_empty() => format!("{} or {last}", init.join(", ")),
            _ => quoted.join(""),
        };
        match &arg.value {
            Value::Str(s) => {
                if let Some(idx) = choices.iter().position(|c| c == s) {
                    return Some(idx);
                }
                self.error(
                    Diagnostic::error(
                        Code::ArgumentRange,
                        arg.span,
                        format!("`{name}` must be {wants}, but this is \"{s}\""),
                    )
                    .with_label("not one of the choices"),
                );
                None
            }
            _ => {
                self.type_error(arg, name, &format!("the string {wants}"));
                None
            }
        }
    }

    pub(super) fn type_error(&mut self, arg: &EvalArg, name: &str, wants: &str) {
        if arg.value.is_poison() {
            return;
        }
        let mut diagnostic = Diagnostic::error(
            Code::ArgumentType,
            arg.span,
            format!(
                "`{name}` must be {wants}, but this is {}",
                arg.value.type_name()
            ),
        )
        .with_label(format!("expected {wants}"));
        // The usual way to get a float where a count belongs is `/`, which always gives one.
        if matches!(arg.value, Value::Float(_)) && wants.starts_with("an int") {
            diagnostic = diagnostic.with_help(
                "`/` always gives a float: for a whole number write `floor(a / b)` (or `ceil`, `round`, `int`)",
            );
        }
        self.error(diagnostic);
    }

    fn range_error(&mut self, arg: &EvalArg, message: String, label: &str) {
        self.error(Diagnostic::error(Code::ArgumentRange, arg.span, message).with_label(label));
    }

    pub(super) fn int_to_usize(
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
                        Code::ArgumentRange,
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

    /// An int `n` (meaning `[n, n]`) or a list `[a, b]`.
    fn pair(&mut self, arg: EvalArg, name: &str, min: usize) -> Option<[usize; 2]> {
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

    /// `pad: 1`, `pad: [ph, pw]`, `pad: [top, bottom, left, right]`, `pad: same`, `pad: valid`.
    fn pad(&mut self, arg: EvalArg) -> Option<PadSpec> {
        let value = arg.value.clone();
        match value {
            Value::Pad(PadMode::Valid) => Some(PadSpec::Explicit(Padding::default())),
            Value::Pad(PadMode::Same) => Some(PadSpec::Same),
            Value::Int(_) => Some(PadSpec::Explicit(Padding::uniform(
                self.int_to_usize(&arg, &value, "pad", 0)?,
            ))),
            Value::List(items) if items.len() == 2 || items.len() == 4 => {
                let mut sides = Vec::new();
                for item in items.iter() {
                    sides.push(self.int_to_usize(&arg, item, "pad", 0)?);
                }
                Some(PadSpec::Explicit(if sides.len() == 2 {
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
                }))
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
}

/// A number as the user wrote it: `1` for an int, `1.0` for a float.
fn number_as_written(value: &Value, as_f64: f64) -> String {
    match value {
        Value::Int(i) => i.to_string(),
        _ => format!("{as_f64:?}"),
    }
}
