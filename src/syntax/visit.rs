//! Questions about the syntax tree that need a walk over it.

use super::ast::*;

/// What a walk looks for: a name used as a value, or a name called (a block or layer).
#[derive(Copy, Clone)]
enum Wanted<'a> {
    Value(&'a str),
    Callee(&'a str),
}

/// Whether any of `stmts` refers to `name` (ignoring shadowing, which only makes the answer
/// err towards "yes"). Used for the unused-`let` and unused-parameter warnings, which must not
/// depend on which branch of an `if` one expansion happened to take.
pub fn mentions(stmts: &[Stmt], name: &str) -> bool {
    stmts_want(stmts, Wanted::Value(name))
}

/// Whether an expression refers to `name` (a parameter's default may use an earlier one).
pub fn expr_mentions_name(expr: &Expr, name: &str) -> bool {
    expr_wants(expr, Wanted::Value(name))
}

/// Whether any of `stmts` calls `name`, as a stage (`x -> name(…)`, `x -> name`) or a
/// function (`name(x)`).
pub fn calls(stmts: &[Stmt], name: &str) -> bool {
    stmts_want(stmts, Wanted::Callee(name))
}

fn stmts_want(stmts: &[Stmt], wanted: Wanted) -> bool {
    stmts.iter().any(|stmt| match stmt {
        Stmt::Let { value, .. } => expr_wants(value, wanted),
        Stmt::Return { values, .. } => values.iter().any(|value| expr_wants(value, wanted)),
        Stmt::Expr(expr) => expr_wants(expr, wanted),
    })
}

fn args_want(args: &[Arg], wanted: Wanted) -> bool {
    args.iter().any(|arg| expr_wants(&arg.value, wanted))
}

fn is_callee(callee: &Ident, wanted: Wanted) -> bool {
    matches!(wanted, Wanted::Callee(name) if callee.name == name)
}

fn expr_wants(expr: &Expr, wanted: Wanted) -> bool {
    match &expr.kind {
        ExprKind::Int(_)
        | ExprKind::Float(_)
        | ExprKind::Bool(_)
        | ExprKind::Str(_)
        | ExprKind::PadMode(_) => false,
        ExprKind::Name(n) => matches!(wanted, Wanted::Value(name) if n == name),
        ExprKind::List(items) => items.iter().any(|e| expr_wants(e, wanted)),
        ExprKind::Call { callee, args } => is_callee(callee, wanted) || args_want(args, wanted),
        ExprKind::Unary { operand, .. } => expr_wants(operand, wanted),
        ExprKind::Binary { left, right, .. } => {
            expr_wants(left, wanted) || expr_wants(right, wanted)
        }
        ExprKind::If {
            cond,
            then,
            otherwise,
        } => {
            expr_wants(cond, wanted)
                || stmts_want(&then.stmts, wanted)
                || otherwise
                    .as_ref()
                    .is_some_and(|b| stmts_want(&b.stmts, wanted))
        }
        ExprKind::Pipeline { head, stages } => {
            expr_wants(head, wanted) || stages.iter().any(|s| stage_wants(s, wanted))
        }
        ExprKind::Index { base, index } => expr_wants(base, wanted) || expr_wants(index, wanted),
    }
}

fn stage_wants(stage: &Stage, wanted: Wanted) -> bool {
    let in_label = stage.label_parts.iter().any(|part| match part {
        crate::syntax::ast::LabelPart::Hole(expr) => expr_wants(expr, wanted),
        crate::syntax::ast::LabelPart::Text(_) => false,
    });
    in_label
        || match &stage.kind {
            StageKind::Call { callee, args } => {
                is_callee(callee, wanted) || args_want(args, wanted)
            }
            // A stage that names a value is an error of its own, but still a use of the name; a
            // stage that names a block is a call.
            StageKind::Name(stage_name) => match wanted {
                Wanted::Value(name) | Wanted::Callee(name) => stage_name.name == name,
            },
            StageKind::Repeat { count, body, .. } => {
                expr_wants(count, wanted) || stage_wants(body, wanted)
            }
            StageKind::Sequence(items) => items_want(items, wanted),
            StageKind::Group(stages) => stages.iter().any(|s| stage_wants(s, wanted)),
        }
}

fn items_want(items: &[SeqItem], wanted: Wanted) -> bool {
    items.iter().any(|item| match item {
        SeqItem::Stage(stage) => stage_wants(stage, wanted),
        SeqItem::For { iter, items, .. } => expr_wants(iter, wanted) || items_want(items, wanted),
        SeqItem::If {
            cond,
            then,
            otherwise,
            ..
        } => {
            expr_wants(cond, wanted)
                || items_want(then, wanted)
                || otherwise.as_ref().is_some_and(|o| items_want(o, wanted))
        }
    })
}
