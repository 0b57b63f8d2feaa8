//! The deterministic text form of a lowered network, printed by `cnnc emit loops`.

use super::ir::{Access, BinaryOp, Expr, ReduceOp, Stmt, UnaryOp};
use super::program::{LoopProgram, Storage};
use std::fmt::Write;

fn access(at: &Access) -> String {
    format!("b{}[{}]", at.buffer.0, at.index)
}

fn binary(op: BinaryOp) -> &'static str {
    match op {
        BinaryOp::Add => "add",
        BinaryOp::Sub => "sub",
        BinaryOp::Mul => "mul",
        BinaryOp::Div => "div",
        BinaryOp::Max => "max",
        BinaryOp::MaxPropagatingNan => "max_nan",
        BinaryOp::Min => "min",
    }
}

fn unary(op: UnaryOp) -> &'static str {
    match op {
        UnaryOp::Exp => "exp",
        UnaryOp::Sigmoid => "sigmoid",
        UnaryOp::Tanh => "tanh",
    }
}

fn expr(e: &Expr) -> String {
    match e {
        Expr::Const(v) => format!("const {v:?}"),
        Expr::Copy(r) => format!("r{}", r.0),
        Expr::Load { at, lanes } => format!("load.{lanes} {}", access(at)),
        Expr::LoadSplat(at) => format!("splat {}", access(at)),
        Expr::Unary(op, a) => format!("{} r{}", unary(*op), a.0),
        Expr::Binary(op, a, b) => format!("{} r{}, r{}", binary(*op), a.0, b.0),
        Expr::Fma(a, b, c) => format!("fma r{}, r{}, r{}", a.0, b.0, c.0),
        Expr::Reduce(op, a, lanes) => {
            let name = match op {
                ReduceOp::Add => "sum",
                ReduceOp::Max => "max",
            };
            format!("reduce_{name}.{lanes} r{}", a.0)
        }
    }
}

fn stmts(out: &mut String, list: &[Stmt], depth: usize) {
    let indent = "  ".repeat(depth);
    for stmt in list {
        match stmt {
            Stmt::Assign(r, e) => {
                let _ = writeln!(out, "{indent}r{} = {}", r.0, expr(e));
            }
            Stmt::Store { at, lanes, value } => {
                let _ = writeln!(out, "{indent}store.{lanes} {}, r{}", access(at), value.0);
            }
            Stmt::Loop(l) => {
                let kind = if l.parallel { "parallel" } else { "loop" };
                let _ = writeln!(out, "{indent}{kind} i{} in 0..{} {{", l.var.0, l.count);
                stmts(out, &l.body, depth + 1);
                let _ = writeln!(out, "{indent}}}");
            }
        }
    }
}

pub(super) fn dump(program: &LoopProgram) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "program {}: arena {} floats ({} bytes)",
        program.name,
        program.arena_len,
        program.arena_bytes()
    );
    let _ = writeln!(out, "buffers:");
    for buffer in &program.buffers {
        let storage = match &buffer.storage {
            Storage::Input(k) => format!("input {k}"),
            Storage::Output => "output".to_string(),
            Storage::Arena { offset } => format!("arena @{offset}"),
            Storage::Const(_) => "const".to_string(),
        };
        let _ = writeln!(
            out,
            "  b{:<3} {storage:<14} {:>9}  {}",
            buffer.id.0, buffer.len, buffer.name
        );
    }
    for kernel in &program.kernels {
        let _ = writeln!(out, "\nkernel {}: {}", kernel.name, kernel.comment);
        let _ = writeln!(out, "  parts {}", kernel.parts());
        stmts(&mut out, &kernel.body, 1);
    }
    out
}
