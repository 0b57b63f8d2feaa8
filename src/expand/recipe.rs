//! The training recipe declaration, `train(...)`, beside `preprocess(...)` in a network:
//!
//! ```text
//! train(optimizer: adam(lr: 1e-3), loss: cross_entropy, epochs: 10, batch: 64,
//!       schedule: cosine, seed: 1, clip: 5.0)
//! ```
//!
//! Every argument is optional and named. `optimizer`, `schedule` and `loss` take a name
//! (`adam`, `cosine`) or a call of that name with its settings (`sgd(lr: 0.1, momentum:
//! 0.9)`, `step(every: 5, gamma: 0.5)`); those names are not values of the language, so these
//! three arguments are read from the syntax rather than evaluated. The other arguments are
//! ordinary expressions. `docs/TRAINING.md` lists every setting.

use super::eval::EvalArg;
use super::value::Value;
use super::Expander;
use crate::diag::{Code, Diagnostic};
use crate::syntax::ast::{Arg, Expr, ExprKind, Ident};
use crate::train::recipe::{OptimizerKind, Recipe, ScheduleSpec};

/// The settings of `train`, then `lr`, which is refused with its own message.
const KEYWORDS: [&str; 10] = [
    "optimizer",
    "loss",
    "epochs",
    "batch",
    "schedule",
    "seed",
    "clip",
    "unfreeze",
    "then",
    "lr",
];
const LOSSES: [&str; 1] = ["cross_entropy"];

fn article(what: &str) -> String {
    match what.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => format!("an {what}"),
        _ => format!("a {what}"),
    }
}

/// The first components of the frozen layers' paths (`layer1`, `layer2`, …), in order.
fn frozen_tops(layers: &[(String, bool)]) -> Vec<String> {
    let mut tops: Vec<String> = Vec::new();
    for (path, frozen) in layers {
        let top = path.split('.').next().unwrap_or(path);
        if *frozen && !tops.iter().any(|t| t == top) {
            tops.push(top.to_string());
        }
    }
    tops.into_iter().map(|t| format!("`{t}`")).collect()
}

fn plural(what: &str) -> String {
    if what.ends_with('s') {
        format!("{what}es")
    } else {
        format!("{what}s")
    }
}

impl Expander<'_> {
    /// `train(...)`: records the recipe in the graph's metadata.
    pub(super) fn train_recipe(&mut self, callee: &Ident, args: &[Arg]) -> Value {
        if !self.declaration_allowed(callee) {
            return Value::Unit;
        }
        let recipe = self.recipe_stage(args);
        self.graph.meta.train = Some(recipe);
        Value::Unit
    }

    /// The settings of one `train(...)` stage, with the stages after it.
    fn recipe_stage(&mut self, args: &[Arg]) -> Recipe {
        let mut recipe = Recipe::default();
        let mut seen: Vec<String> = Vec::new();
        for arg in args {
            let Some(keyword) = &arg.keyword else {
                self.error(
                    Diagnostic::error(
                        Code::ArgumentType,
                        arg.span(),
                        "`train` takes keyword arguments only",
                    )
                    .with_label("name this argument")
                    .with_help("e.g. `train(optimizer: adam(lr: 1e-3), epochs: 10, batch: 64)`"),
                );
                continue;
            };
            let name = keyword.name.as_str();
            if seen.iter().any(|s| s == name) {
                self.error(
                    Diagnostic::error(
                        Code::DuplicateArgument,
                        keyword.span,
                        format!("`{name}` is given twice"),
                    )
                    .with_label("given again here"),
                );
                continue;
            }
            match name {
                "optimizer" => self.recipe_optimizer(&arg.value, &mut recipe),
                "schedule" => recipe.schedule = self.recipe_schedule(&arg.value),
                "loss" => {
                    self.recipe_name(&arg.value, "loss", &LOSSES);
                }
                "lr" => {
                    self.error(
                        Diagnostic::error(
                            Code::Recipe,
                            keyword.span,
                            "the learning rate is a setting of the optimizer",
                        )
                        .with_label("not an argument of `train`")
                        .with_help("write it inside the optimizer: `optimizer: adam(lr: 1e-3)`"),
                    );
                }
                "epochs" | "batch" => {
                    let value = self.eval(&arg.value);
                    let eval_arg = EvalArg {
                        keyword: Some(keyword.clone()),
                        value: value.clone(),
                        span: arg.span(),
                    };
                    let n = self.int_to_usize(&eval_arg, &value, name, 1);
                    if name == "epochs" {
                        recipe.epochs = n;
                    } else {
                        recipe.batch = n;
                    }
                }
                "seed" => {
                    let value = self.eval(&arg.value);
                    let eval_arg = EvalArg {
                        keyword: Some(keyword.clone()),
                        value: value.clone(),
                        span: arg.span(),
                    };
                    recipe.seed = self
                        .int_to_usize(&eval_arg, &value, name, 0)
                        .map(|n| n as u64);
                }
                "clip" => recipe.clip = self.positive_number(&arg.value, "clip", false),
                "unfreeze" => recipe.unfreeze = self.recipe_unfreeze(&arg.value),
                "then" => recipe.then = self.recipe_then(&arg.value).map(Box::new),
                other => {
                    self.unknown_setting(keyword, "train", other, &KEYWORDS[..9]);
                    continue;
                }
            }
            seen.push(name.to_string());
        }
        recipe
    }

    /// `unfreeze: [layer4, "layer3.1"]`: layer paths, as names or (dotted) strings, read from
    /// the syntax; checked against the network's layers once it is built
    /// ([`Expander::check_unfreeze`]).
    fn recipe_unfreeze(&mut self, expr: &Expr) -> Vec<(String, crate::source::Span)> {
        let items = match &expr.kind {
            ExprKind::List(items) => items.as_slice(),
            _ => std::slice::from_ref(expr),
        };
        let mut paths = Vec::new();
        for item in items {
            match &item.kind {
                ExprKind::Name(name) | ExprKind::Str(name) if !name.is_empty() => {
                    paths.push((name.clone(), item.span))
                }
                _ => self.error(
                    Diagnostic::error(
                        Code::Unfreeze,
                        item.span,
                        "`unfreeze` takes the paths of layers, such as `[layer4]` or `[\"layer4.1\"]`",
                    )
                    .with_label("not a layer path"),
                ),
            }
        }
        paths
    }

    /// `then: train(...)`: the next stage.
    fn recipe_then(&mut self, expr: &Expr) -> Option<Recipe> {
        match &expr.kind {
            ExprKind::Call { callee, args } if callee.name == "train" => {
                Some(self.recipe_stage(args))
            }
            _ => {
                self.error(
                    Diagnostic::error(
                        Code::Recipe,
                        expr.span,
                        "`then` is the next training stage, a `train(...)` of its own",
                    )
                    .with_label("expected `train(...)`")
                    .with_help(
                        "e.g. `then: train(unfreeze: [layer4], optimizer: sgd(lr: 1e-4), epochs: 3)`",
                    ),
                );
                None
            }
        }
    }

    /// Checks every stage's `unfreeze` against the built network: each path must name layers
    /// of the network, and some of them must still be frozen when the stage starts.
    pub(super) fn check_unfreeze(&mut self) {
        let mut frozen: Vec<(String, bool)> = self
            .graph
            .nodes
            .values()
            .filter(|node| !node.path.is_empty())
            .map(|node| (node.path.clone(), node.frozen))
            .collect();
        let mut stage = self.graph.meta.train.clone();
        let mut number = 1;
        while let Some(recipe) = stage {
            for (path, span) in &recipe.unfreeze {
                let under = |p: &str| p == path || p.starts_with(&format!("{path}."));
                let matching: Vec<&mut (String, bool)> =
                    frozen.iter_mut().filter(|(p, _)| under(p)).collect();
                let message = if matching.is_empty() {
                    format!("the network has no layer `{path}` to unfreeze")
                } else if matching.iter().all(|(_, f)| !*f) {
                    format!("`{path}` is not frozen when stage {number} starts: it trains already")
                } else {
                    for (_, f) in matching {
                        *f = false;
                    }
                    continue;
                };
                let mut diagnostic = Diagnostic::error(Code::Unfreeze, *span, message)
                    .with_label("nothing to unfreeze here");
                let frozen_tops: Vec<String> = frozen_tops(&frozen);
                diagnostic = if frozen_tops.is_empty() {
                    diagnostic.with_note("no layer is frozen at this stage")
                } else {
                    diagnostic.with_note(format!(
                        "the frozen layers at this stage are under {}",
                        frozen_tops.join(", ")
                    ))
                };
                self.error(diagnostic);
            }
            stage = recipe.then.map(|next| *next);
            number += 1;
        }
    }

    fn unknown_setting(&mut self, keyword: &Ident, of: &str, name: &str, known: &[&str]) {
        let mut diagnostic = Diagnostic::error(
            Code::UnknownArgument,
            keyword.span,
            format!("`{of}` has no setting named `{name}`"),
        )
        .with_label("unknown setting")
        .with_note(format!("its settings are {}", known.join(", ")));
        if let Some(s) = super::suggest::closest(name, known.iter().copied()) {
            diagnostic = diagnostic.with_help(format!("did you mean `{s}`?"));
        }
        self.error(diagnostic);
    }

    /// A name out of `known`, bare or called with settings; `None` after a diagnostic.
    fn recipe_name<'e>(
        &mut self,
        expr: &'e Expr,
        what: &str,
        known: &[&str],
    ) -> Option<(String, &'e [Arg])> {
        let (name, span, args) = match &expr.kind {
            ExprKind::Name(name) => (name.as_str(), expr.span, &[][..]),
            ExprKind::Call { callee, args } => (callee.name.as_str(), callee.span, args.as_slice()),
            _ => {
                self.error(
                    Diagnostic::error(
                        Code::Recipe,
                        expr.span,
                        format!("the {what} is a name, such as `{}`", known[0]),
                    )
                    .with_label(format!("expected one of {}", known.join(", "))),
                );
                return None;
            }
        };
        if known.contains(&name) {
            return Some((name.to_string(), args));
        }
        let mut diagnostic = Diagnostic::error(
            Code::Recipe,
            span,
            format!("there is no {what} named `{name}`"),
        )
        .with_label(format!("not {}", article(what)))
        .with_note(format!("cnnc knows {}: {}", plural(what), known.join(", ")));
        if let Some(s) = super::suggest::closest(name, known.iter().copied()) {
            diagnostic = diagnostic.with_help(format!("did you mean `{s}`?"));
        }
        self.error(diagnostic);
        None
    }

    /// The keyword settings of an optimizer or schedule call, each checked against `known`;
    /// gives (keyword, value expression) for the known ones.
    fn recipe_settings<'e>(
        &mut self,
        of: &str,
        args: &'e [Arg],
        known: &[&str],
        others: &[&str],
    ) -> Vec<(&'e Ident, &'e Expr)> {
        let mut settings: Vec<(&Ident, &Expr)> = Vec::new();
        for arg in args {
            let Some(keyword) = &arg.keyword else {
                self.error(
                    Diagnostic::error(
                        Code::ArgumentType,
                        arg.span(),
                        format!("`{of}` takes keyword arguments only"),
                    )
                    .with_label("name this argument"),
                );
                continue;
            };
            let name = keyword.name.as_str();
            if settings.iter().any(|(k, _)| k.name == name) {
                self.error(
                    Diagnostic::error(
                        Code::DuplicateArgument,
                        keyword.span,
                        format!("`{name}` is given twice"),
                    )
                    .with_label("given again here"),
                );
            } else if known.contains(&name) {
                settings.push((keyword, &arg.value));
            } else if others.contains(&name) {
                self.error(
                    Diagnostic::error(
                        Code::Recipe,
                        keyword.span,
                        format!("`{of}` has no `{name}`: that is a setting of another optimizer"),
                    )
                    .with_label(format!("not a setting of `{of}`"))
                    .with_note(format!("the settings of `{of}` are {}", known.join(", "))),
                );
            } else {
                self.unknown_setting(keyword, of, name, known);
            }
        }
        settings
    }

    /// A number (int or float), finite and > 0 (≥ 0 when `zero_ok`).
    fn positive_number(&mut self, expr: &Expr, name: &str, zero_ok: bool) -> Option<f64> {
        let value = self.eval(expr);
        if value.is_poison() {
            return None;
        }
        let rule = if zero_ok {
            "a number ≥ 0"
        } else {
            "a number > 0"
        };
        match value.as_f64() {
            Some(x) if x.is_finite() && (x > 0.0 || (zero_ok && x == 0.0)) => Some(x),
            Some(x) => {
                self.error(
                    Diagnostic::error(
                        Code::ArgumentRange,
                        expr.span,
                        format!("`{name}` must be {rule}, but this is {x}"),
                    )
                    .with_label("out of range"),
                );
                None
            }
            None => {
                self.error(
                    Diagnostic::error(
                        Code::ArgumentType,
                        expr.span,
                        format!("`{name}` must be {rule}, but this is {}", value.type_name()),
                    )
                    .with_label(format!("expected {rule}")),
                );
                None
            }
        }
    }

    /// A number in [0, 1).
    fn unit_number(&mut self, expr: &Expr, name: &str) -> Option<f64> {
        let x = self.positive_number(expr, name, true)?;
        if x < 1.0 {
            return Some(x);
        }
        self.error(
            Diagnostic::error(
                Code::ArgumentRange,
                expr.span,
                format!("`{name}` must be in [0, 1), but this is {x}"),
            )
            .with_label("out of range"),
        );
        None
    }

    fn recipe_optimizer(&mut self, expr: &Expr, recipe: &mut Recipe) {
        let Some((name, args)) = self.recipe_name(expr, "optimizer", &OptimizerKind::NAMES) else {
            return;
        };
        let Some(kind) = OptimizerKind::from_name(&name) else {
            return;
        };
        recipe.optimizer = Some(kind);
        let known = kind.hyperparameters();
        let all = ["lr", "momentum", "nesterov", "weight_decay", "betas", "eps"];
        let others: Vec<&str> = all.into_iter().filter(|n| !known.contains(n)).collect();
        let h = &mut recipe.hyperparameters;
        for (keyword, value) in self.recipe_settings(&name, args, known, &others) {
            match keyword.name.as_str() {
                "lr" => h.lr = self.positive_number(value, "lr", true),
                "weight_decay" => {
                    h.weight_decay = self.positive_number(value, "weight_decay", true)
                }
                "momentum" => h.momentum = self.positive_number(value, "momentum", true),
                "eps" => h.eps = self.positive_number(value, "eps", true),
                "nesterov" => match self.eval(value) {
                    Value::Bool(b) => h.nesterov = Some(b),
                    Value::Poison => {}
                    other => self.error(
                        Diagnostic::error(
                            Code::ArgumentType,
                            value.span,
                            format!(
                                "`nesterov` must be a bool, but this is {}",
                                other.type_name()
                            ),
                        )
                        .with_label("expected true or false"),
                    ),
                },
                _ => {
                    // betas: a list of two numbers in [0, 1).
                    let pair = match &value.kind {
                        ExprKind::List(items) if items.len() == 2 => Some((
                            self.unit_number(&items[0], "beta1"),
                            self.unit_number(&items[1], "beta2"),
                        )),
                        _ => None,
                    };
                    match pair {
                        Some((Some(b1), Some(b2))) => h.betas = Some((b1, b2)),
                        Some(_) => {}
                        None => self.error(
                            Diagnostic::error(
                                Code::ArgumentType,
                                value.span,
                                "`betas` must be a list of two numbers, e.g. `[0.9, 0.999]`",
                            )
                            .with_label("expected [beta1, beta2]"),
                        ),
                    }
                }
            }
        }
    }

    fn recipe_schedule(&mut self, expr: &Expr) -> Option<ScheduleSpec> {
        let (name, args) = self.recipe_name(expr, "schedule", &ScheduleSpec::NAMES)?;
        let mut spec = ScheduleSpec::from_name(&name)?;
        let known: &[&str] = match spec {
            ScheduleSpec::Constant => &[],
            ScheduleSpec::Step { .. } => &["every", "gamma"],
            ScheduleSpec::Cosine { .. } => &["epochs", "min_lr"],
        };
        for (keyword, value) in self.recipe_settings(&name, args, known, &[]) {
            match (&mut spec, keyword.name.as_str()) {
                (ScheduleSpec::Step { every, .. }, "every")
                | (
                    ScheduleSpec::Cosine {
                        epochs: Some(every),
                        ..
                    },
                    "epochs",
                ) => {
                    if let Some(n) = self.recipe_count(keyword, value) {
                        *every = n;
                    }
                }
                (ScheduleSpec::Cosine { epochs, .. }, "epochs") => {
                    *epochs = self.recipe_count(keyword, value);
                }
                (ScheduleSpec::Step { gamma, .. }, "gamma") => {
                    if let Some(x) = self.positive_number(value, "gamma", false) {
                        *gamma = x;
                    }
                }
                (ScheduleSpec::Cosine { min_lr, .. }, _) => {
                    if let Some(x) = self.positive_number(value, "min_lr", true) {
                        *min_lr = x;
                    }
                }
                _ => {}
            }
        }
        Some(spec)
    }

    /// An int ≥ 1.
    fn recipe_count(&mut self, keyword: &Ident, expr: &Expr) -> Option<usize> {
        let value = self.eval(expr);
        let arg = EvalArg {
            keyword: Some(keyword.clone()),
            value: value.clone(),
            span: expr.span,
        };
        self.int_to_usize(&arg, &value, &keyword.name, 1)
    }
}
