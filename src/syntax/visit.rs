//! Questions about the syntax tree that need a walk over it.

use super::ast::*;

/// Whether any of `stmts` refers to `name` (ignoring shadowing, which only makes the answer
/// err towards "yes"). Used for the unused-`let` warning, which must not depend on which
/// branch of an `if` one expansion happened to take.
pub fn mentions(stmts: &[Stmt], name: &str) -> bool {
    stmts.iter().any(|stmt| match stmt {
        Stmt::Let { value, .. } | Stmt::Return { value, .. } => expr_mentions(value, name),
        Stmt::Expr(expr) => expr_mentions(expr, name),
    })
}

fn args_mention(args: &[Arg], name: &str) -> bool {
    args.iter().any(|arg| expr_mentions(&arg.value, name))
}

fn expr_mentions(expr: &Expr, name: &str) -> bool {
    match &expr.kind {
        ExprKind::Int(_)
        | ExprKind::Float(_)
        | ExprKind::Bool(_)
        | ExprKind::Str(_)
        | ExprKind::PadMode(_) => false,
        ExprKind::Name(n) => n == name,
        ExprKind::List(items) => items.iter().any(|e| expr_mentions(e, name)),
        ExprKind::Call { args, .. } => args_mention(args, name),
        ExprKind::Unary { operand, .. } => expr_mentions(operand, name),
        ExprKind::Binary { left, right, .. } => {
            expr_mentions(left, name) || expr_mentions(right, name)
        }
        ExprKind::If {
            cond,
            then,
            otherwise,
        } => {
            expr_mentions(cond, name)
                || mentions(&then.stmts, name)
                || otherwise.as_ref().is_some_and(|b| mentions(&b.stmts, name))
        }
        ExprKind::Pipeline { head, stages } => {
            expr_mentions(head, name) || stages.iter().any(|s| stage_mentions(s, name))
        }
        ExprKind::Index { base, index } => expr_mentions(base, name) || expr_mentions(index, name),
    }
}

fn stage_mentions(stage: &Stage, name: &str) -> bool {
    match &stage.kind {
        StageKind::Call { args, .. } => args_mention(args, name),
        // A value used as a stage is an error of its own; it is still not an unused binding.
        StageKind::Name(stage_name) => stage_name.name == name,
        StageKind::Repeat { count, body, .. } => {
            expr_mentions(count, name) || stage_mentions(body, name)
        }
        StageKind::Sequence(items) => items_mention(items, name),
        StageKind::Group(stages) => stages.iter().any(|s| stage_mentions(s, name)),
    }
}

fn items_mention(items: &[SeqItem], name: &str) -> bool {
    items.iter().any(|item| match item {
        SeqItem::Stage(stage) => stage_mentions(stage, name),
        SeqItem::For { iter, items, .. } => expr_mentions(iter, name) || items_mention(items, name),
        SeqItem::If {
            cond,
            then,
            otherwise,
            ..
        } => {
            expr_mentions(cond, name)
                || items_mention(then, name)
                || otherwise.as_ref().is_some_and(|o| items_mention(o, name))
        }
    })
}
