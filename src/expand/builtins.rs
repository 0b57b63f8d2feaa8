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
                        Code::Overflow,
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
