//! The deterministic text form of the AST, printed by `cnnc emit ast`: one node per line,
//! indented by depth, with the line:column where the node starts.

use super::ast::*;
use crate::source::{SourceMap, Span};
use std::fmt::Write;

struct Dumper<'a> {
    sources: &'a SourceMap,
    out: String,
}

pub fn dump(sources: &SourceMap, file: &File) -> String {
    let mut d = Dumper {
        sources,
        out: String::new(),
    };
    for item in &file.items {
        d.item(item);
    }
    d.out
}

impl Dumper<'_> {
    fn line(&mut self, depth: usize, span: Span, text: impl AsRef<str>) {
        let (line, col) = self.sources.line_col(span);
        let _ = writeln!(
            self.out,
            "{}{} @{line}:{col}",
            "  ".repeat(depth),
            text.as_ref()
        );
    }

    fn item(&mut self, item: &Item) {
        match item {
            Item::Import(import) => {
                let alias = import
                    .alias
                    .as_ref()
                    .map_or(String::new(), |a| format!(" as {}", a.name));
                self.line(0, import.span, format!("import {:?}{alias}", import.path))
            }
            Item::Block(block) => {
                self.line(0, block.span, format!("block {}", block.name.name));
                self.params(&block.params);
                self.body(1, &block.body);
            }
            Item::Network(network) => {
                self.line(0, network.span, format!("network {}", network.name.name));
                for input in &network.inputs {
                    let [h, w, c] = input.dims;
                    self.line(
                        1,
                        input.name.span,
                        format!("input {}: {h}x{w}x{c}", input.name.name),
                    );
                }
                self.params(&network.params);
                self.body(1, &network.body);
            }
        }
    }

    fn params(&mut self, params: &[Param]) {
        for param in params {
            let mut text = format!("param {}", param.name.name);
            if let Some((ty, _)) = param.ty {
                let _ = write!(text, ": {}", ty.name());
            }
            self.line(1, param.span, text);
            if let Some(default) = &param.default {
                self.expr(2, default, "default ");
            }
        }
    }

    fn body(&mut self, depth: usize, body: &Body) {
        for stmt in &body.stmts {
            match stmt {
                Stmt::Let { name, value, span } => {
                    self.line(depth, *span, format!("let {}", name.name));
                    self.expr(depth + 1, value, "");
                }
                Stmt::Return { values, span } => {
                    self.line(depth, *span, "return");
                    for value in values {
                        self.expr(depth + 1, value, "");
                    }
                }
                Stmt::Expr(expr) => self.expr(depth, expr, ""),
            }
        }
    }

    fn args(&mut self, depth: usize, args: &[Arg]) {
        for arg in args {
            let prefix = match &arg.keyword {
                Some(keyword) => format!("{}: ", keyword.name),
                None => String::new(),
            };
            self.expr(depth, &arg.value, &prefix);
        }
    }

    fn expr(&mut self, depth: usize, expr: &Expr, prefix: &str) {
        let span = expr.span;
        match &expr.kind {
            ExprKind::Int(v) => self.line(depth, span, format!("{prefix}int {v}")),
            ExprKind::Float(v) => self.line(depth, span, format!("{prefix}float {v:?}")),
            ExprKind::Bool(v) => self.line(depth, span, format!("{prefix}bool {v}")),
            ExprKind::Str(v) => self.line(depth, span, format!("{prefix}string {v:?}")),
            ExprKind::PadMode(PadMode::Same) => self.line(depth, span, format!("{prefix}same")),
            ExprKind::PadMode(PadMode::Valid) => self.line(depth, span, format!("{prefix}valid")),
            ExprKind::Name(name) => self.line(depth, span, format!("{prefix}name {name}")),
            ExprKind::List(items) => {
                self.line(depth, span, format!("{prefix}list"));
                for item in items {
                    self.expr(depth + 1, item, "");
                }
            }
            ExprKind::Call { callee, args } => {
                self.line(depth, span, format!("{prefix}call {}", callee.name));
                self.args(depth + 1, args);
            }
            ExprKind::Unary { op, operand } => {
                let name = match op {
                    UnaryOp::Neg => "neg",
                    UnaryOp::Not => "not",
                };
                self.line(depth, span, format!("{prefix}{name}"));
                self.expr(depth + 1, operand, "");
            }
            ExprKind::Binary {
                op, left, right, ..
            } => {
                self.line(depth, span, format!("{prefix}binary {}", op.symbol()));
                self.expr(depth + 1, left, "");
                self.expr(depth + 1, right, "");
            }
            ExprKind::If {
                cond,
                then,
                otherwise,
            } => {
                self.line(depth, span, format!("{prefix}if"));
                self.expr(depth + 1, cond, "cond ");
                self.line(depth + 1, then.span, "then");
                self.body(depth + 2, then);
                if let Some(otherwise) = otherwise {
                    self.line(depth + 1, otherwise.span, "else");
                    self.body(depth + 2, otherwise);
                }
            }
            ExprKind::Index { base, index } => {
                self.line(depth, span, format!("{prefix}index"));
                self.expr(depth + 1, base, "");
                self.expr(depth + 1, index, "");
            }
            ExprKind::Pipeline { head, stages } => {
                self.line(depth, span, format!("{prefix}pipeline"));
                self.expr(depth + 1, head, "");
                for stage in stages {
                    self.stage(depth + 1, stage);
                }
            }
        }
    }

    fn stage(&mut self, depth: usize, stage: &Stage) {
        let mut label = match &stage.label {
            // A label that is not a name (`"block2-0"`, `"layer{i + 1}"`) was written quoted.
            Some(label) if is_name(&label.name) => format!("{}: ", label.name),
            Some(label) => format!("\"{}\": ", label.name),
            None => String::new(),
        };
        if stage.frozen {
            label.push_str("frozen ");
        }
        match &stage.kind {
            StageKind::Call { callee, args } => {
                self.line(depth, stage.span, format!("-> {label}call {}", callee.name));
                self.args(depth + 1, args);
            }
            StageKind::Name(name) => {
                self.line(depth, stage.span, format!("-> {label}{}", name.name))
            }
            StageKind::Repeat { count, var, body } => {
                let var = var
                    .as_ref()
                    .map_or(String::new(), |v| format!(" as {}", v.name));
                self.line(depth, stage.span, format!("-> {label}repeat{var}"));
                self.expr(depth + 1, count, "count ");
                self.stage(depth + 1, body);
            }
            StageKind::Sequence(items) => {
                self.line(depth, stage.span, format!("-> {label}sequence"));
                self.seq_items(depth + 1, items);
            }
            StageKind::Group(stages) => {
                self.line(depth, stage.span, format!("-> {label}group"));
                for inner in stages {
                    self.stage(depth + 1, inner);
                }
            }
        }
    }

    fn seq_items(&mut self, depth: usize, items: &[SeqItem]) {
        for item in items {
            match item {
                SeqItem::Stage(stage) => self.stage(depth, stage),
                SeqItem::For {
                    vars,
                    destructure,
                    iter,
                    items,
                    span,
                } => {
                    let names: Vec<&str> = vars.iter().map(|v| v.name.as_str()).collect();
                    let binding = if *destructure {
                        format!("[{}]", names.join(", "))
                    } else {
                        names.join(", ")
                    };
                    self.line(depth, *span, format!("for {binding}"));
                    self.expr(depth + 1, iter, "in ");
                    self.seq_items(depth + 1, items);
                }
                SeqItem::If {
                    cond,
                    then,
                    otherwise,
                    span,
                } => {
                    self.line(depth, *span, "if");
                    self.expr(depth + 1, cond, "cond ");
                    self.seq_items(depth + 1, then);
                    if let Some(otherwise) = otherwise {
                        self.line(depth, *span, "else");
                        self.seq_items(depth + 1, otherwise);
                    }
                }
            }
        }
    }
}

/// Whether `text` is a plain name, which a label needs no quotes for.
fn is_name(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_')
}
