//! The built-in functions on values rather than tensors (`floor`, `min`, `make_divisible`,
//! `channels`, ...): their table and their evaluation.

use super::args::ParamDesc;
use super::eval::EvalArg;
use super::value::Value;
use super::Expander;
use crate::diag::{Code, Diagnostic};
use crate::source::Span;
use crate::syntax::ast::Ident;

/// Functions on values rather than tensors.
pub(super) static BUILTINS: &[&str] = &[
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
    "train",
    "augment",
];

pub fn is_builtin(name: &str) -> bool {
    BUILTINS.contains(&name)
}

impl Expander<'_> {
    pub(super) fn builtin(&mut self, callee: &Ident, args: Vec<EvalArg>, span: Span) -> Value {
        if args.iter().any(|a| a.value.is_poison()) {
            return Value::Poison;
        }
        let name = callee.name.as_str();
        match name {
            "preprocess" => return self.preprocess(callee, args),
            "labels" => return self.labels(callee, args),
            "augment" => return self.augment(callee, args),
            // Reached only as a pipeline stage: a statement `train(...)` is read from its syntax.
            "train" => {
                self.error(
                    Diagnostic::error(
                        Code::Recipe,
                        callee.span,
                        "`train(...)` declares the network's training recipe; it is not a layer",
                    )
                    .with_label("used as a stage")
                    .with_help("write it as a statement of its own, beside `preprocess(...)`"),
                );
                return Value::Poison;
            }
            _ => {}
        }
        if let Some(arg) = args
            .iter()
            .find(|a| a.keyword.is_some() && name != "make_divisible")
        {
            let keyword = arg.keyword.as_ref().map_or("", |k| k.name.as_str());
            self.error(
                Diagnostic::error(
                    Code::UnknownArgument,
                    arg.span,
                    format!("`{name}` has no argument named `{keyword}`"),
                )
                .with_label("unknown argument"),
            );
            return Value::Poison;
        }
        let values: Vec<&Value> = args.iter().map(|a| &a.value).collect();
        let result = match (name, values.as_slice()) {
            ("floor" | "ceil" | "round" | "int", [v]) => match v.as_f64() {
                Some(x) => {
                    let r = match name {
                        "floor" => x.floor(),
                        "ceil" => x.ceil(),
                        "round" => x.round(),
                        _ => x.trunc(),
                    };
                    to_int(r).ok_or_else(|| BuiltinFailure::NotAnInt {
                        function: name.to_string(),
                        value: x,
                    })
                }
                None => Err(BuiltinFailure::WrongArguments),
            },
            ("float", [v]) => v
                .as_f64()
                .map(Value::Float)
                .ok_or(BuiltinFailure::WrongArguments),
            ("abs", [Value::Int(v)]) => v.checked_abs().map(Value::Int).ok_or_else(|| {
                BuiltinFailure::Overflow(format!(
                    "`abs({v})` is {}, one more than the largest int",
                    i64::MAX as i128 + 1
                ))
            }),
            ("abs", [Value::Float(v)]) => Ok(Value::Float(v.abs())),
            ("len", [Value::List(items)]) => Ok(Value::Int(items.len() as i64)),
            ("range", [Value::Int(n)]) if (0..=super::MAX_REPEAT).contains(n) => {
                Value::list((0..*n).map(Value::Int).collect()).ok_or(BuiltinFailure::WrongArguments)
            }
            ("range", [Value::Int(start), Value::Int(end)])
                if *start <= *end
                    && end
                        .checked_sub(*start)
                        .is_some_and(|n| n <= super::MAX_REPEAT) =>
            {
                Value::list((*start..*end).map(Value::Int).collect())
                    .ok_or(BuiltinFailure::WrongArguments)
            }
            ("min" | "max", [Value::List(items)]) => {
                min_max(name, &items.iter().collect::<Vec<_>>())
                    .ok_or(BuiltinFailure::WrongArguments)
            }
            ("min" | "max", items) if !items.is_empty() => {
                min_max(name, items).ok_or(BuiltinFailure::WrongArguments)
            }
            ("make_divisible", _) => make_divisible(&args),
            ("channels" | "height" | "width", [Value::Tensor(id)]) => {
                let shape = self.graph.shape(*id);
                Ok(Value::Int(match name {
                    "channels" => shape.c,
                    "height" => shape.h,
                    _ => shape.w,
                } as i64))
            }
            _ => Err(BuiltinFailure::WrongArguments),
        };
        match result {
            Ok(v) => v,
            Err(BuiltinFailure::Overflow(message)) => {
                self.error(
                    Diagnostic::error(Code::Overflow, span, message)
                        .with_label("does not fit in a 64-bit int")
                        .with_note(INT_RANGE_NOTE),
                );
                Value::Poison
            }
            Err(BuiltinFailure::NotAnInt { function, value }) => {
                self.error(
                    Diagnostic::error(
                        Code::Overflow,
                        span,
                        format!(
                            "`{function}({})` is out of the range of an int",
                            show_float(value)
                        ),
                    )
                    .with_label("out of range")
                    .with_note(INT_RANGE_NOTE),
                );
                Value::Poison
            }
            Err(BuiltinFailure::Range { message, label }) => {
                self.error(Diagnostic::error(Code::ArgumentRange, span, message).with_label(label));
                Value::Poison
            }
            Err(BuiltinFailure::WrongArguments) => {
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
                        Code::ArgumentType,
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
}

/// What the notes of the overflow diagnostics say an int is.
const INT_RANGE_NOTE: &str =
    "ints are 64-bit: from -9223372036854775808 to 9223372036854775807 (about ±9.2e18)";

/// Why a built-in function gave no value.
enum BuiltinFailure {
    /// The arguments are not of the types the function takes.
    WrongArguments,
    /// An int result beyond 64 bits; the message says which.
    Overflow(String),
    /// A float that `floor`, `int`, ... cannot turn into an int.
    NotAnInt { function: String, value: f64 },
    /// An argument of the right type outside the function's domain.
    Range { message: String, label: String },
}

/// `x` as an int when it is a whole number an int holds.
fn to_int(x: f64) -> Option<Value> {
    // 2^63 is exactly representable; every float below it in magnitude converts without loss.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    (-LIMIT..LIMIT).contains(&x).then_some(Value::Int(x as i64))
}

/// A float as a user reads it in a message: `1e300` rather than 301 digits.
fn show_float(x: f64) -> String {
    if x != 0.0 && (x.abs() >= 1e16 || x.abs() < 1e-4) {
        format!("{x:e}")
    } else {
        format!("{x:?}")
    }
}

/// torchvision's `_make_divisible`: round `v` to the nearest multiple of `divisor`, not below
/// `min_value`, and not more than 10 % below `v`.
fn make_divisible(args: &[EvalArg]) -> Result<Value, BuiltinFailure> {
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
            Some(k) => descs
                .iter()
                .position(|d| d.name == k.name)
                .ok_or(BuiltinFailure::WrongArguments)?,
            None => {
                positional += 1;
                positional - 1
            }
        };
        let x = arg.value.as_f64().ok_or(BuiltinFailure::WrongArguments)?;
        match slot {
            0 => v = Some(x),
            1 => divisor = x,
            2 => min_value = Some(x),
            _ => return Err(BuiltinFailure::WrongArguments),
        }
    }
    let v = v.ok_or(BuiltinFailure::WrongArguments)?;
    if divisor <= 0.0 {
        return Err(BuiltinFailure::Range {
            message: format!(
                "`make_divisible` rounds to a multiple of its divisor, which must be positive, but it is {}",
                show_float(divisor)
            ),
            label: "the divisor is not positive".to_string(),
        });
    }
    let min_value = min_value.unwrap_or(divisor);
    let mut new_v = min_value.max(((v + divisor / 2.0) / divisor).floor() * divisor);
    if new_v < 0.9 * v {
        new_v += divisor;
    }
    to_int(new_v).ok_or_else(|| {
        BuiltinFailure::Overflow(format!(
            "the result of `make_divisible`, {}, is too large for an int",
            show_float(new_v)
        ))
    })
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
