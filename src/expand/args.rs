//! Binding call arguments to parameters: positional, then by keyword, with every mistake
//! (unknown, duplicate, missing, too many) reported at the argument it concerns.

use super::eval::EvalArg;
use super::suggest::closest;
use super::Expander;
use crate::diag::{Code, Diagnostic};
use crate::source::Span;

pub struct ParamDesc<'a> {
    pub name: &'a str,
    pub required: bool,
}

fn signature(what: &str, params: &[ParamDesc]) -> String {
    let name = what.trim_start_matches("block ").trim_matches('`');
    let list: Vec<String> = params
        .iter()
        .map(|p| {
            if p.required {
                p.name.to_string()
            } else {
                format!("{}: ..", p.name)
            }
        })
        .collect();
    format!("{name}({})", list.join(", "))
}

impl Expander<'_> {
    /// Binds `args` to `params`; `None` after reporting a mistake.
    pub(super) fn bind_args(
        &mut self,
        what: &str,
        params: &[ParamDesc],
        args: Vec<EvalArg>,
        call_span: Span,
        definition: Option<Span>,
    ) -> Option<Vec<Option<EvalArg>>> {
        let mut bound: Vec<Option<EvalArg>> = params.iter().map(|_| None).collect();
        let mut ok = true;
        let mut positional = 0;
        let mut first_keyword: Option<Span> = None;
        for arg in args {
            if arg.keyword.is_some() && first_keyword.is_none() {
                first_keyword = Some(arg.span);
            }
            let slot = match &arg.keyword {
                None if first_keyword.is_some() => {
                    // Binding it to the next free position would report a confusing
                    // "given twice" (`conv(filters: 8, 3)` binds 3 to `filters`).
                    let mut diagnostic = Diagnostic::error(
                        Code::PositionalAfterKeyword,
                        arg.span,
                        "a positional argument cannot follow a keyword argument",
                    )
                    .with_label("positional argument")
                    .with_help(format!(
                        "give it by name too, or put it before the keyword arguments: {}",
                        signature(what, params)
                    ));
                    if let Some(keyword) = first_keyword {
                        diagnostic = diagnostic.with_secondary(keyword, "first keyword argument");
                    }
                    self.error(diagnostic);
                    ok = false;
                    continue;
                }
                None => {
                    if positional >= params.len() {
                        let mut diagnostic = Diagnostic::error(
                            Code::TooManyArguments,
                            arg.span,
                            format!("{what} takes at most {} arguments", params.len()),
                        )
                        .with_label("this argument is one too many")
                        .with_help(format!("the parameters are {}", signature(what, params)));
                        if let Some(def) = definition {
                            diagnostic = diagnostic.with_secondary(def, "defined here");
                        }
                        self.error(diagnostic);
                        ok = false;
                        continue;
                    }
                    positional += 1;
                    positional - 1
                }
                Some(keyword) => match params.iter().position(|p| p.name == keyword.name) {
                    Some(idx) => idx,
                    None => {
                        let mut diagnostic = Diagnostic::error(
                            Code::UnknownArgument,
                            keyword.span,
                            format!("{what} has no argument named `{}`", keyword.name),
                        )
                        .with_label("unknown argument");
                        match closest(&keyword.name, params.iter().map(|p| p.name)) {
                            Some(s) => {
                                diagnostic = diagnostic.with_help(format!("did you mean `{s}`?"))
                            }
                            None => {
                                diagnostic = diagnostic.with_help(format!(
                                    "the parameters are {}",
                                    signature(what, params)
                                ))
                            }
                        }
                        if let Some(def) = definition {
                            diagnostic = diagnostic.with_secondary(def, "defined here");
                        }
                        self.error(diagnostic);
                        ok = false;
                        continue;
                    }
                },
            };
            if let Some(previous) = &bound[slot] {
                let diagnostic = Diagnostic::error(
                    Code::DuplicateArgument,
                    arg.span,
                    format!("argument `{}` is given twice", params[slot].name),
                )
                .with_label("second value")
                .with_secondary(previous.span, "first value");
                self.error(diagnostic);
                ok = false;
                continue;
            }
            bound[slot] = Some(arg);
        }
        for (param, arg) in params.iter().zip(&bound) {
            if param.required && arg.is_none() && ok {
                let mut diagnostic = Diagnostic::error(
                    Code::MissingArgument,
                    call_span,
                    format!("missing argument `{}` in this call to {what}", param.name),
                )
                .with_label(format!("`{}` is not given", param.name))
                .with_help(format!("the parameters are {}", signature(what, params)));
                if let Some(def) = definition {
                    diagnostic = diagnostic.with_secondary(def, "defined here");
                }
                self.error(diagnostic);
                ok = false;
            }
        }
        ok.then_some(bound)
    }
}
