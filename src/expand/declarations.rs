//! Declarations a network makes about its use rather than its layers: `preprocess(...)` and
//! `labels("...")` (the training recipe, `train(...)`, is in `recipe.rs`).

use super::eval::EvalArg;
use super::value::Value;
use super::Expander;
use crate::diag::{Code, Diagnostic};
use crate::graph::Preprocess;
use crate::syntax::ast::Ident;

impl Expander<'_> {
    /// Whether a declaration applies here: it does in the network being expanded, it is
    /// ignored in a network used as a stage, and it is an error in a block.
    pub(super) fn declaration_allowed(&mut self, callee: &Ident) -> bool {
        match self.calls.last() {
            None => return true,
            Some(call) if call.is_network => return false,
            Some(_) => {}
        }
        self.error(
            Diagnostic::error(
                Code::MisplacedDeclaration,
                callee.span,
                format!("`{}` declares something about a network and belongs in its body, not in a block", callee.name),
            )
            .with_label("inside a block"),
        );
        false
    }

    pub(super) fn preprocess(&mut self, callee: &Ident, args: Vec<EvalArg>) -> Value {
        if !self.declaration_allowed(callee) {
            return Value::Unit;
        }
        let mut pre = Preprocess::default();
        for arg in args {
            let Some(keyword) = arg.keyword.clone() else {
                self.error(
                    Diagnostic::error(Code::ArgumentType, arg.span, "`preprocess` takes keyword arguments only")
                        .with_label("name this argument")
                        .with_help("e.g. `preprocess(resize: 256, crop: 224, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225])`"),
                );
                continue;
            };
            match keyword.name.as_str() {
                "pad" => {
                    let value = arg.value.clone();
                    if let Some(n) = self.int_to_usize(&arg, &value, "pad", 0) {
                        pre.pad = n;
                    }
                }
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
                        Code::UnknownArgument,
                        keyword.span,
                        format!("`preprocess` has no argument named `{other}`"),
                    )
                    .with_label("unknown argument");
                    if let Some(s) =
                        super::suggest::closest(other, ["resize", "crop", "mean", "std", "pad"])
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

    pub(super) fn labels(&mut self, callee: &Ident, args: Vec<EvalArg>) -> Value {
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
                        Code::ArgumentType,
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
