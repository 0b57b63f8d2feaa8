//! The deterministic text form of a lowered network, printed by `cnnc emit loops`.

use super::ir::{Access, BinaryOp, LoopExpr, LoopStmt, ReduceOp, UnaryOp};
use super::program::{LoopProgram, Storage};
use std::fmt::Write;

fn access(at: &Access) -> String {
    format!("{}[{}]", at.buffer, at.index)
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
        BinaryOp::KeepWherePositive => "keep_where_pos",
        BinaryOp::EqualMask => "eq_mask",
        BinaryOp::And => "and",
    }
}

fn unary(op: UnaryOp) -> &'static str {
    match op {
        UnaryOp::Exp => "exp",
        UnaryOp::Sigmoid => "sigmoid",
        UnaryOp::Tanh => "tanh",
        UnaryOp::Sqrt => "sqrt",
    }
}

fn expr(e: &LoopExpr) -> String {
    match e {
        LoopExpr::Const(v) => format!("const {v:?}"),
        LoopExpr::Copy(r) => format!("{}", r),
        LoopExpr::Load { at, lanes } => format!("load.{lanes} {}", access(at)),
        LoopExpr::LoadSplat(at) => format!("splat {}", access(at)),
        LoopExpr::Unary(op, a) => format!("{} {}", unary(*op), a),
        LoopExpr::Binary(op, a, b) => format!("{} {}, {}", binary(*op), a, b),
        LoopExpr::Fma(a, b, c) => format!("fma {}, {}, {}", a, b, c),
        LoopExpr::Reduce(op, a, lanes) => {
            let name = match op {
                ReduceOp::Add => "sum",
                ReduceOp::Max => "max",
            };
            format!("reduce_{name}.{lanes} {}", a)
        }
    }
}

fn stmts(out: &mut String, list: &[LoopStmt], depth: usize) {
    let indent = "  ".repeat(depth);
    for stmt in list {
        match stmt {
            LoopStmt::Assign(r, e) => {
                let _ = writeln!(out, "{indent}{} = {}", r, expr(e));
            }
            LoopStmt::Store { at, lanes, value } => {
                let _ = writeln!(out, "{indent}store.{lanes} {}, {}", access(at), value);
            }
            LoopStmt::Loop(l) => {
                let kind = if l.parallel { "parallel" } else { "loop" };
                let _ = writeln!(out, "{indent}{kind} {} in 0..{} {{", l.var, l.count);
                stmts(out, &l.body, depth + 1);
                let _ = writeln!(out, "{indent}}}");
            }
            LoopStmt::Images(body) => {
                let _ = writeln!(out, "{indent}each image {{");
                stmts(out, body, depth + 1);
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
    for buffer in program.buffers.values() {
        let storage = match &buffer.storage {
            Storage::Input(k) => format!("input {k}"),
            Storage::Output { offset: 0 } => "output".to_string(),
            Storage::Output { offset } => format!("output+{offset}"),
            Storage::Arena { offset } => format!("arena @{offset}"),
            Storage::Const(_) => "const".to_string(),
            Storage::Accumulator { offset } => format!("accumulator @{offset}"),
        };
        let _ = writeln!(
            out,
            "  b{:<3} {storage:<14} {:>9}  {}",
            buffer.id.as_u32(),
            buffer.len,
            buffer.name
        );
    }
    for kernel in &program.kernels {
        let _ = writeln!(out, "\nkernel {}: {}", kernel.name, kernel.comment);
        let _ = writeln!(out, "  parts {}", kernel.parts());
        stmts(&mut out, &kernel.body, 1);
    }
    out
}
