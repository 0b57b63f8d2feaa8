//! One kernel of loop-nest IR to one Cranelift function.
//!
//! The function is `extern "C" fn(table: *const usize, image: i64, begin: i64, end: i64)`.
//! `table` holds the base address of every buffer (see `layout.rs`); `image` selects the
//! image of a batch in the input and output tensors; `begin..end` is the range of the
//! kernel's parts to run (`Kernel::parts`): iterations of its parallel loop, and a last part
//! for its other top-level statements.
//!
//! The translation does what docs/CRANELIFT.md §2 says Cranelift will not (the how is §6):
//!
//! - **strength reduction**: every distinct pair (buffer, index terms of the loops up to
//!   this one) is one pointer variable, set before the loop from the enclosing loop's pointer
//!   and bumped by a constant byte stride at the end of each iteration. An access is then a
//!   load from a pointer plus its constant term as the displacement, with no index
//!   arithmetic inside loops;
//! - **loop shape**: loops are top-tested and count down to zero — the header holds the
//!   counter, the pointers and the live registers as block parameters and branches on the
//!   counter alone;
//! - **ReLU and max** as the compare-and-select pattern that becomes one `maxps`, and FMA
//!   only where the CPU has it (otherwise `fmul` + `fadd`, never the per-lane libcall).
//!
//! With `checked`, every access is preceded by a comparison of its address range against its
//! buffer's and a trap, and the `begin..end` arguments are checked too.

use super::layout::TableLayout;
use super::vmath::VectorMath;
use crate::lower::ir::{
    Access, BinaryOp, BufferId, Kernel, LoopExpr, LoopStmt, LoopVar, ReduceOp, UnaryOp,
};
use crate::lower::LoopProgram;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F32X4, F64, F64X2, I64};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, TrapCode, Value};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_entity::EntityRef;
use cranelift_frontend::{FunctionBuilder, Variable};
use std::collections::HashMap;

const F32_BYTES: i64 = 4;

/// A pointer's identity: a buffer and index terms (restricted to some depth of loops).
type PointerKey = (BufferId, Vec<(LoopVar, usize)>);

struct Scope {
    pointers: HashMap<PointerKey, Variable>,
}

pub(super) struct KernelTranslator<'a, 'f> {
    pub builder: FunctionBuilder<'f>,
    pub program: &'a LoopProgram,
    pub layout: &'a TableLayout,
    pub has_fma: bool,
    pub checked: bool,
    regs: Vec<Variable>,
    /// Each used buffer's base address for this image, and its end in checked mode.
    bases: HashMap<BufferId, (Value, Value)>,
    /// In a kernel that loops over images, the same for the buffers that move from one image
    /// to the next, as variables (which the loop moves), with the bytes per image.
    moving_bases: HashMap<BufferId, (Variable, Variable, i64)>,
    table: Value,
    scopes: Vec<Scope>,
    begin: Value,
    end: Value,
}

/// Every access in a list of statements, recursively.
fn accesses<'s>(stmts: &'s [LoopStmt], out: &mut Vec<&'s Access>) {
    for stmt in stmts {
        match stmt {
            LoopStmt::Assign(_, LoopExpr::Load { at, .. } | LoopExpr::LoadSplat(at)) => {
                out.push(at)
            }
            LoopStmt::Assign(..) => {}
            LoopStmt::Store { at, .. } => out.push(at),
            LoopStmt::Loop(l) => accesses(&l.body, out),
            LoopStmt::Images(body) => accesses(body, out),
        }
    }
}

fn data_flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// The flags of a bitcast between vectors of different lane counts (f32x4 ↔ f64x2), which
/// the verifier requires to name the lanes' byte order.
fn lane_cast_flags() -> MemFlagsData {
    MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little)
}

impl<'a, 'f> KernelTranslator<'a, 'f> {
    pub fn new(
        kernel: &Kernel,
        mut builder: FunctionBuilder<'f>,
        program: &'a LoopProgram,
        layout: &'a TableLayout,
        has_fma: bool,
        checked: bool,
    ) -> Self {
        let entry = builder.create_block();
        builder.append_block_params_for_function_params(entry);
        builder.switch_to_block(entry);
        builder.seal_block(entry);
        let params = builder.block_params(entry).to_vec();
        KernelTranslator {
            builder,
            program,
            layout,
            has_fma,
            checked,
            regs: Vec::new(),
            bases: HashMap::new(),
            moving_bases: HashMap::new(),
            table: params[0],
            scopes: Vec::new(),
            begin: params[2],
            end: params[3],
        }
        .with_bases(kernel, params[0], params[1])
    }

    /// Loads the base address of every buffer the kernel touches from the table, once, at
    /// the top of the function.
    fn with_bases(mut self, kernel: &Kernel, table: Value, image: Value) -> Self {
        let table_flags = MemFlagsData::new().with_notrap().with_readonly();
        let images = kernel.has_images();
        let mut used = Vec::new();
        accesses(&kernel.body, &mut used);
        let mut used: Vec<BufferId> = used.iter().map(|at| at.buffer).collect();
        used.sort();
        used.dedup();
        for id in used {
            let buffer = self.program.buffer(id);
            let (slot, image_stride, offset) = self.layout.slot(buffer);
            let b = &mut self.builder;
            let mut base = b.ins().load(I64, table_flags, table, (slot * 8) as i32);
            if image_stride > 0 {
                let stride = b.ins().iconst(I64, image_stride as i64 * F32_BYTES);
                let skip = b.ins().imul(image, stride);
                base = b.ins().iadd(base, skip);
            }
            if offset > 0 {
                base = b.ins().iadd_imm_s(base, offset as i64 * F32_BYTES);
            }
            let end = if self.checked {
                b.ins().iadd_imm_s(base, buffer.len as i64 * F32_BYTES)
            } else {
                base
            };
            self.bases.insert(buffer.id, (base, end));
            if image_stride > 0 && images {
                let base_var = b.declare_var(I64);
                b.def_var(base_var, base);
                let end_var = b.declare_var(I64);
                b.def_var(end_var, end);
                let bytes = image_stride as i64 * F32_BYTES;
                self.moving_bases
                    .insert(buffer.id, (base_var, end_var, bytes));
            }
        }
        self
    }

    pub fn translate(mut self, kernel: &Kernel, config: TargetFrontendConfig) {
        for _ in 0..kernel.n_regs {
            self.regs.push(self.builder.declare_var(F32X4));
        }
        let parallel_count = kernel.parallel_count() as i64;
        if self.checked {
            let b = &mut self.builder;
            let parts = kernel.parts() as i64;
            let negative = b.ins().icmp_imm_s(IntCC::SignedLessThan, self.begin, 0);
            b.ins().trapnz(negative, TrapCode::HEAP_OUT_OF_BOUNDS);
            let reversed = b.ins().icmp(IntCC::SignedGreaterThan, self.begin, self.end);
            b.ins().trapnz(reversed, TrapCode::HEAP_OUT_OF_BOUNDS);
            let past = b
                .ins()
                .icmp_imm_s(IntCC::SignedGreaterThan, self.end, parts);
            b.ins().trapnz(past, TrapCode::HEAP_OUT_OF_BOUNDS);
        }
        // The statements besides the parallel loop form the last part: they run when the
        // range reaches past the loop's iterations.
        let mut serial: Vec<&LoopStmt> = Vec::new();
        for stmt in &kernel.body {
            match stmt {
                LoopStmt::Loop(l) if l.parallel => {
                    self.serial_part(&serial, parallel_count);
                    serial.clear();
                    self.parallel_loop(l);
                }
                other => serial.push(other),
            }
        }
        self.serial_part(&serial, parallel_count);
        self.builder.ins().return_(&[]);
        self.builder.finalize(config);
    }

    fn serial_part(&mut self, stmts: &[&LoopStmt], parallel_count: i64) {
        if stmts.is_empty() {
            return;
        }
        let run = self.builder.create_block();
        let after = self.builder.create_block();
        let reaches =
            self.builder
                .ins()
                .icmp_imm_s(IntCC::SignedGreaterThan, self.end, parallel_count);
        self.builder.ins().brif(reaches, run, &[], after, &[]);
        self.builder.switch_to_block(run);
        self.builder.seal_block(run);
        for stmt in stmts {
            self.stmt(stmt);
        }
        self.builder.ins().jump(after, &[]);
        self.builder.switch_to_block(after);
        self.builder.seal_block(after);
    }

    /// The parallel loop runs iterations `begin..min(end, count)`.
    fn parallel_loop(&mut self, l: &crate::lower::ir::Loop) {
        let b = &mut self.builder;
        let count = b.ins().iconst(I64, l.count as i64);
        let stop = b.ins().smin(self.end, count);
        let trips = b.ins().isub(stop, self.begin);
        let zero = b.ins().iconst(I64, 0);
        let trips = b.ins().smax(trips, zero);
        let begin = self.begin;
        self.counted_loop(l.var, &l.body, trips, Some(begin));
    }

    fn stmt(&mut self, stmt: &LoopStmt) {
        match stmt {
            LoopStmt::Assign(reg, expr) => {
                let value = self.expr(expr);
                self.builder.def_var(self.regs[reg.index()], value);
            }
            LoopStmt::Store { at, lanes, value } => {
                let value = self.builder.use_var(self.regs[value.index()]);
                let (pointer, offset) = self.address(at, *lanes);
                let b = &mut self.builder;
                if *lanes == 4 {
                    b.ins().store(data_flags(), value, pointer, offset);
                } else {
                    // Two lanes as one 64-bit store (`movsd`), not two extracts and stores:
                    // channel counts of 4k + 2 (LeNet's 6) store such a pair per pixel.
                    let mut first = 0;
                    if *lanes >= 2 {
                        let pair = b.ins().bitcast(F64X2, lane_cast_flags(), value);
                        let pair = b.ins().extractlane(pair, 0);
                        b.ins().store(data_flags(), pair, pointer, offset);
                        first = 2;
                    }
                    for lane in first..*lanes {
                        let scalar = b.ins().extractlane(value, lane);
                        let at = offset + i32::from(lane) * 4;
                        b.ins().store(data_flags(), scalar, pointer, at);
                    }
                }
            }
            LoopStmt::Loop(l) => {
                let trips = self.builder.ins().iconst(I64, l.count as i64);
                self.counted_loop(l.var, &l.body, trips, None);
            }
            LoopStmt::Images(body) => self.image_loop(body),
        }
    }

    /// `body` for each image of the call: the table's image count times, moving every
    /// address variable of a per-image buffer (bases, ends and the enclosing loops'
    /// pointers) one image on per iteration, and putting them back after.
    fn image_loop(&mut self, body: &[LoopStmt]) {
        // Only what the body can reach moves: a buffer it accesses, and an enclosing pointer
        // whose terms are those of one of its accesses cut at the pointer's last loop (the
        // body's own loops come after). Moving every pointer cost ResNet-18's layer4 weight
        // gradient, 4 tiles an image, some 30 scalar instructions and spills per 32 FMAs.
        let mut reached = Vec::new();
        accesses(body, &mut reached);
        let used = |buffer: BufferId, terms: &[(LoopVar, usize)]| {
            let last = terms.iter().map(|t| t.0).max();
            reached.iter().any(|at| {
                at.buffer == buffer
                    && last.is_none_or(|last| {
                        at.index
                            .terms
                            .iter()
                            .filter(|t| t.0 <= last)
                            .eq(terms.iter())
                    })
            })
        };
        let mut moving: Vec<(Variable, i64)> = Vec::new();
        for (&buffer, &(base, end, bytes)) in &self.moving_bases {
            if used(buffer, &[]) {
                moving.push((base, bytes));
                moving.push((end, bytes));
            }
        }
        for scope in &self.scopes {
            for ((buffer, terms), &variable) in &scope.pointers {
                if let Some(&(_, _, bytes)) = self.moving_bases.get(buffer) {
                    if used(*buffer, terms) {
                        moving.push((variable, bytes));
                    }
                }
            }
        }
        // Sorted, so that the generated code does not depend on hash order.
        moving.sort_by_key(|&(variable, _)| variable.index());
        let saved: Vec<Value> = moving
            .iter()
            .map(|&(variable, _)| self.builder.use_var(variable))
            .collect();
        let table_flags = MemFlagsData::new().with_notrap().with_readonly();
        let slot = self.layout.images_slot().unwrap_or(0);
        let b = &mut self.builder;
        let count = b
            .ins()
            .load(I64, table_flags, self.table, (slot * 8) as i32);
        self.down_counting_loop(count, &moving, body);
        for (&(variable, _), value) in moving.iter().zip(saved) {
            self.builder.def_var(variable, value);
        }
    }

    /// A top-tested loop counting `trips` down to zero; `start` is the first index (the
    /// parallel loop's `begin`) when it is not 0.
    fn counted_loop(
        &mut self,
        var: LoopVar,
        body: &[LoopStmt],
        trips: Value,
        start: Option<Value>,
    ) {
        // The pointers that move with this loop: one per distinct (buffer, terms up to `var`).
        let mut all = Vec::new();
        accesses(body, &mut all);
        let mut pointers: HashMap<PointerKey, Variable> = HashMap::new();
        let mut bumps: Vec<(Variable, i64)> = Vec::new();
        for at in all {
            let coefficient = at.index.coefficient(var);
            if coefficient == 0 {
                continue;
            }
            let terms: Vec<(LoopVar, usize)> = at
                .index
                .terms
                .iter()
                .filter(|t| t.0 <= var)
                .cloned()
                .collect();
            let key = (at.buffer, terms);
            if pointers.contains_key(&key) {
                continue;
            }
            let outer: Vec<(LoopVar, usize)> =
                key.1.iter().filter(|t| t.0 < var).cloned().collect();
            let mut init = self.pointer(at.buffer, &outer);
            let stride = coefficient as i64 * F32_BYTES;
            if let Some(start) = start {
                let b = &mut self.builder;
                let stride_value = b.ins().iconst(I64, stride);
                let skip = b.ins().imul(start, stride_value);
                init = b.ins().iadd(init, skip);
            }
            let variable = self.builder.declare_var(I64);
            self.builder.def_var(variable, init);
            pointers.insert(key, variable);
            bumps.push((variable, stride));
        }
        self.scopes.push(Scope { pointers });
        self.down_counting_loop(trips, &bumps, body);
        self.scopes.pop();
    }

    /// `body` `trips` times, as a top-tested loop counting down to zero, each variable of
    /// `bumps` moved by its byte stride at the end of each iteration.
    fn down_counting_loop(&mut self, trips: Value, bumps: &[(Variable, i64)], body: &[LoopStmt]) {
        let b = &mut self.builder;
        let counter = b.declare_var(I64);
        b.def_var(counter, trips);
        let header = b.create_block();
        let body_block = b.create_block();
        let exit = b.create_block();
        b.ins().jump(header, &[]);
        b.switch_to_block(header);
        let remaining = b.use_var(counter);
        b.ins().brif(remaining, body_block, &[], exit, &[]);
        b.switch_to_block(body_block);
        b.seal_block(body_block);
        for stmt in body {
            self.stmt(stmt);
        }
        let b = &mut self.builder;
        let remaining = b.use_var(counter);
        let next = b.ins().iadd_imm_s(remaining, -1);
        b.def_var(counter, next);
        for &(variable, stride) in bumps {
            let pointer = b.use_var(variable);
            let moved = b.ins().iadd_imm_s(pointer, stride);
            b.def_var(variable, moved);
        }
        b.ins().jump(header, &[]);
        b.seal_block(header);
        b.switch_to_block(exit);
        b.seal_block(exit);
    }

    /// The pointer for `buffer` plus the index terms `terms` (all of enclosing loops).
    fn pointer(&mut self, buffer: BufferId, terms: &[(LoopVar, usize)]) -> Value {
        if terms.is_empty() {
            return match self.moving_bases.get(&buffer) {
                Some(&(base, _, _)) => self.builder.use_var(base),
                None => self.bases[&buffer].0,
            };
        }
        let key = (buffer, terms.to_vec());
        let variable = self
            .scopes
            .iter()
            .rev()
            .find_map(|scope| scope.pointers.get(&key).copied());
        match variable {
            Some(variable) => self.builder.use_var(variable),
            // Every access's terms have a pointer in the scope of their innermost loop
            // (`counted_loop` makes them); computing it from scratch is the safe fallback.
            None => self.pointer_from_scratch(buffer, terms),
        }
    }

    fn pointer_from_scratch(&mut self, _buffer: BufferId, _terms: &[(LoopVar, usize)]) -> Value {
        // Unreachable for verified programs: the verifier rejects a variable used outside
        // its loop. A trap keeps a broken program from touching memory.
        self.trap_and_continue();
        self.builder.ins().iconst(I64, 0)
    }

    /// Traps, and continues in a fresh unreachable block so that translation can go on.
    fn trap_and_continue(&mut self) {
        let b = &mut self.builder;
        b.ins().trap(TrapCode::HEAP_OUT_OF_BOUNDS);
        let dead = b.create_block();
        b.switch_to_block(dead);
        b.seal_block(dead);
    }

    /// The pointer and displacement of an access of `lanes` elements; checked if asked.
    fn address(&mut self, at: &Access, lanes: u8) -> (Value, i32) {
        let pointer = self.pointer(at.buffer, &at.index.terms);
        let bytes = at.index.constant as i64 * F32_BYTES;
        let (pointer, offset) = match i32::try_from(bytes) {
            Ok(offset) if offset <= i32::MAX - 16 => (pointer, offset),
            _ => (self.builder.ins().iadd_imm_s(pointer, bytes), 0),
        };
        if self.checked {
            let (base, end) = match self.moving_bases.get(&at.buffer) {
                Some(&(base, end, _)) => (self.builder.use_var(base), self.builder.use_var(end)),
                None => self.bases[&at.buffer],
            };
            let b = &mut self.builder;
            let first = b.ins().iadd_imm_s(pointer, i64::from(offset));
            let last = b.ins().iadd_imm_s(first, i64::from(lanes) * F32_BYTES);
            let below = b.ins().icmp(IntCC::UnsignedLessThan, first, base);
            b.ins().trapnz(below, TrapCode::HEAP_OUT_OF_BOUNDS);
            let above = b.ins().icmp(IntCC::UnsignedGreaterThan, last, end);
            b.ins().trapnz(above, TrapCode::HEAP_OUT_OF_BOUNDS);
        }
        (pointer, offset)
    }

    fn reg(&mut self, reg: crate::lower::ir::Reg) -> Value {
        self.builder.use_var(self.regs[reg.index()])
    }

    fn expr(&mut self, expr: &LoopExpr) -> Value {
        match expr {
            LoopExpr::Const(v) => {
                let scalar = self.builder.ins().f32const(*v);
                self.builder.ins().splat(F32X4, scalar)
            }
            LoopExpr::Copy(r) => self.reg(*r),
            LoopExpr::Load { at, lanes } => {
                let (pointer, offset) = self.address(at, *lanes);
                let b = &mut self.builder;
                if *lanes == 4 {
                    return b.ins().load(F32X4, data_flags(), pointer, offset);
                }
                // Two lanes as one 64-bit load (`movsd`, which zeroes the upper lanes).
                let (mut vector, first) = if *lanes >= 2 {
                    let pair = b.ins().load(F64, data_flags(), pointer, offset);
                    let pair = b.ins().scalar_to_vector(F64X2, pair);
                    (b.ins().bitcast(F32X4, lane_cast_flags(), pair), 2)
                } else {
                    let scalar = b.ins().load(F32, data_flags(), pointer, offset);
                    (b.ins().scalar_to_vector(F32X4, scalar), 1)
                };
                for lane in first..*lanes {
                    let at = offset + i32::from(lane) * 4;
                    let scalar = b.ins().load(F32, data_flags(), pointer, at);
                    vector = b.ins().insertlane(vector, scalar, lane);
                }
                vector
            }
            LoopExpr::LoadSplat(at) => {
                let (pointer, offset) = self.address(at, 1);
                let scalar = self.builder.ins().load(F32, data_flags(), pointer, offset);
                self.builder.ins().splat(F32X4, scalar)
            }
            LoopExpr::Unary(op, a) => {
                let a = self.reg(*a);
                let mut math = VectorMath {
                    builder: &mut self.builder,
                    has_fma: self.has_fma,
                };
                match op {
                    UnaryOp::Exp => math.exp(a),
                    UnaryOp::Sigmoid => math.sigmoid(a),
                    UnaryOp::Tanh => math.tanh(a),
                    UnaryOp::Sqrt => math.builder.ins().sqrt(a),
                }
            }
            LoopExpr::Binary(op, a, c) => {
                let (a, c) = (self.reg(*a), self.reg(*c));
                self.binary(*op, a, c)
            }
            LoopExpr::Fma(a, m, c) => {
                let (a, m, c) = (self.reg(*a), self.reg(*m), self.reg(*c));
                let b = &mut self.builder;
                if self.has_fma {
                    b.ins().fma(a, m, c)
                } else {
                    let product = b.ins().fmul(a, m);
                    b.ins().fadd(product, c)
                }
            }
            LoopExpr::Reduce(op, a, lanes) => {
                let a = self.reg(*a);
                let b = &mut self.builder;
                let mut total = b.ins().extractlane(a, 0);
                for lane in 1..*lanes {
                    let x = b.ins().extractlane(a, lane);
                    total = match op {
                        ReduceOp::Add => b.ins().fadd(total, x),
                        ReduceOp::Max => {
                            let less = b.ins().fcmp(FloatCC::LessThan, x, total);
                            b.ins().select(less, total, x)
                        }
                    };
                }
                b.ins().splat(F32X4, total)
            }
        }
    }

    fn binary(&mut self, op: BinaryOp, a: Value, c: Value) -> Value {
        let b = &mut self.builder;
        match op {
            BinaryOp::Add => b.ins().fadd(a, c),
            BinaryOp::Sub => b.ins().fsub(a, c),
            BinaryOp::Mul => b.ins().fmul(a, c),
            BinaryOp::Div => b.ins().fdiv(a, c),
            // `c < a ? a : c` as a bitwise select on the comparison mask: one `maxps`.
            BinaryOp::Max => {
                let mask = b.ins().fcmp(FloatCC::LessThan, c, a);
                let mask = b.ins().bitcast(F32X4, MemFlagsData::new(), mask);
                b.ins().bitselect(mask, a, c)
            }
            // `a` where it is NaN or above `c`, else `c` (NaN when `c` is): four instructions,
            // where CLIF's `fmax` takes ten.
            BinaryOp::MaxPropagatingNan => {
                let a_is_nan = b.ins().fcmp(FloatCC::Unordered, a, a);
                let a_above = b.ins().fcmp(FloatCC::GreaterThan, a, c);
                let mask = b.ins().bor(a_is_nan, a_above);
                let mask = b.ins().bitcast(F32X4, MemFlagsData::new(), mask);
                b.ins().bitselect(mask, a, c)
            }
            // `a < c ? a : c`: one `minps`.
            BinaryOp::Min => {
                let mask = b.ins().fcmp(FloatCC::LessThan, a, c);
                let mask = b.ins().bitcast(F32X4, MemFlagsData::new(), mask);
                b.ins().bitselect(mask, a, c)
            }
            // `0 < a` as a mask (false for NaN), then `c` and the mask bit by bit.
            BinaryOp::KeepWherePositive => {
                let zero = b.ins().f32const(0.0);
                let zero = b.ins().splat(F32X4, zero);
                let mask = b.ins().fcmp(FloatCC::LessThan, zero, a);
                let mask = b.ins().bitcast(F32X4, MemFlagsData::new(), mask);
                b.ins().bitselect(mask, c, zero)
            }
            BinaryOp::EqualMask => {
                let mask = b.ins().fcmp(FloatCC::Equal, a, c);
                b.ins().bitcast(F32X4, MemFlagsData::new(), mask)
            }
            BinaryOp::And => {
                let zero = b.ins().f32const(0.0);
                let zero = b.ins().splat(F32X4, zero);
                b.ins().bitselect(a, c, zero)
            }
        }
    }
}
