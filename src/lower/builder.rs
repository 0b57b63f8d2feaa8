//! Building a kernel's statements: fresh registers, nested loops, and the small idioms every
//! lowering shares (activations, contiguous copies and fills).

use super::ir::{
    Access, Affine, BinaryOp, BufferId, Kernel, Loop, LoopExpr, LoopStmt, LoopVar, Reg, UnaryOp,
};
use crate::graph::ops::{ERFC_COEFFICIENTS, GELU_CLAMP, GELU_TANH_BETA, GELU_TANH_KAPPA};
use crate::graph::Activation;

pub struct KernelBuilder {
    name: String,
    comment: String,
    n_regs: u32,
    n_vars: u32,
    /// The statement lists being built, innermost last; the first is the kernel's body.
    blocks: Vec<Vec<LoopStmt>>,
}

impl KernelBuilder {
    pub fn new(name: impl Into<String>, comment: impl Into<String>) -> KernelBuilder {
        KernelBuilder {
            name: name.into(),
            comment: comment.into(),
            n_regs: 0,
            n_vars: 0,
            blocks: vec![Vec::new()],
        }
    }

    pub fn finish(mut self) -> Kernel {
        Kernel {
            name: self.name,
            comment: self.comment,
            n_regs: self.n_regs,
            n_vars: self.n_vars,
            body: self.blocks.swap_remove(0),
        }
    }

    fn push(&mut self, stmt: LoopStmt) {
        if let Some(block) = self.blocks.last_mut() {
            block.push(stmt);
        }
    }

    pub fn reg(&mut self) -> Reg {
        self.n_regs += 1;
        Reg::from_u32(self.n_regs - 1)
    }

    /// Assigns `expr` to `reg` (again, for accumulators).
    pub fn set(&mut self, reg: Reg, expr: LoopExpr) {
        self.push(LoopStmt::Assign(reg, expr));
    }

    /// Assigns `expr` to a fresh register.
    pub fn assign(&mut self, expr: LoopExpr) -> Reg {
        let reg = self.reg();
        self.set(reg, expr);
        reg
    }

    pub fn constant(&mut self, value: f32) -> Reg {
        self.assign(LoopExpr::Const(value))
    }

    pub fn load(&mut self, buffer: BufferId, index: Affine, lanes: u8) -> Reg {
        self.assign(LoopExpr::Load {
            at: Access { buffer, index },
            lanes,
        })
    }

    pub fn splat(&mut self, buffer: BufferId, index: Affine) -> Reg {
        self.assign(LoopExpr::LoadSplat(Access { buffer, index }))
    }

    pub fn binary(&mut self, op: BinaryOp, a: Reg, b: Reg) -> Reg {
        self.assign(LoopExpr::Binary(op, a, b))
    }

    pub fn unary(&mut self, op: UnaryOp, a: Reg) -> Reg {
        self.assign(LoopExpr::Unary(op, a))
    }

    pub fn store(&mut self, buffer: BufferId, index: Affine, lanes: u8, value: Reg) {
        self.push(LoopStmt::Store {
            at: Access { buffer, index },
            lanes,
            value,
        });
    }

    /// Stores `value`, or adds it to what is there when `add` (a gradient with several
    /// contributions: the first stores, the others add).
    pub fn store_or_add(&mut self, buffer: BufferId, at: Affine, lanes: u8, value: Reg, add: bool) {
        let value = if add {
            let sum = self.load(buffer, at.clone(), lanes);
            self.binary(BinaryOp::Add, sum, value)
        } else {
            value
        };
        self.store(buffer, at, lanes, value);
    }

    /// `for i in 0..count { body(i) }`. A loop of one iteration is written out as its body
    /// with the index 0, and a loop of none is omitted, so dumps show only real loops.
    pub fn repeat(&mut self, count: usize, body: impl FnOnce(&mut Self, Affine)) {
        self.counted(count, false, body);
    }

    /// Like [`repeat`](Self::repeat), but marks the loop as the kernel's parallel loop when it
    /// is the outermost statement list; the lowering guarantees its iterations write disjoint
    /// elements, and `verify.rs` checks it.
    pub fn parallel(&mut self, count: usize, body: impl FnOnce(&mut Self, Affine)) {
        let already = self.blocks[0]
            .iter()
            .any(|s| matches!(s, LoopStmt::Loop(l) if l.parallel));
        let top_level = self.blocks.len() == 1 && !already;
        self.counted(count, top_level, body);
    }

    /// `body` once for each image of the call (`LoopStmt::Images`): written for one image.
    pub fn images(&mut self, body: impl FnOnce(&mut Self)) {
        self.blocks.push(Vec::new());
        body(self);
        let body = self.blocks.pop().unwrap_or_default();
        self.push(LoopStmt::Images(body));
    }

    fn counted(&mut self, count: usize, parallel: bool, body: impl FnOnce(&mut Self, Affine)) {
        match count {
            0 => {}
            1 => body(self, Affine::constant(0)),
            _ => {
                let var = LoopVar::from_u32(self.n_vars);
                self.n_vars += 1;
                self.blocks.push(Vec::new());
                body(self, Affine::var(var));
                let body = self.blocks.pop().unwrap_or_default();
                self.push(LoopStmt::Loop(Loop {
                    var,
                    count,
                    parallel,
                    body,
                }));
            }
        }
    }

    /// `activation(value)` in a fresh register, or `value` itself without one.
    pub fn activate(&mut self, value: Reg, activation: Option<Activation>) -> Reg {
        match activation {
            None => value,
            // The constant goes first: `max(0, x)` is `x < 0 ? 0 : x`, one `maxps` that keeps
            // a NaN `x` (PyTorch's semantics); `max(x, 0)` would turn it into 0.
            Some(Activation::Relu) => {
                let zero = self.constant(0.0);
                self.binary(BinaryOp::Max, zero, value)
            }
            Some(Activation::Relu6) => {
                let zero = self.constant(0.0);
                let six = self.constant(6.0);
                let low = self.binary(BinaryOp::Max, zero, value);
                self.binary(BinaryOp::Min, six, low)
            }
            Some(Activation::Sigmoid) => self.unary(UnaryOp::Sigmoid, value),
            Some(Activation::Swish) => {
                let gate = self.unary(UnaryOp::Sigmoid, value);
                self.binary(BinaryOp::Mul, value, gate)
            }
            Some(Activation::Tanh) => self.unary(UnaryOp::Tanh, value),
            Some(Activation::Hardswish) => {
                // `x · min(max(x + 3, 0), 6) / 6`, in the reference's order of operations.
                let three = self.constant(3.0);
                let zero = self.constant(0.0);
                let six = self.constant(6.0);
                let shifted = self.binary(BinaryOp::Add, value, three);
                let low = self.binary(BinaryOp::Max, zero, shifted);
                let gate = self.binary(BinaryOp::Min, six, low);
                let product = self.binary(BinaryOp::Mul, value, gate);
                self.binary(BinaryOp::Div, product, six)
            }
            Some(Activation::Hardsigmoid) => {
                // `min(max(x + 3, 0), 6) / 6`, PyTorch's order of operations.
                let three = self.constant(3.0);
                let zero = self.constant(0.0);
                let six = self.constant(6.0);
                let shifted = self.binary(BinaryOp::Add, value, three);
                let low = self.binary(BinaryOp::Max, zero, shifted);
                let gate = self.binary(BinaryOp::Min, six, low);
                self.binary(BinaryOp::Div, gate, six)
            }
            // Without a select, both pieces are computed from `max(0, x)` and `min(0, x)`, one of
            // which is 0 (and both NaN for a NaN `x`, which then propagates).
            Some(Activation::LeakyRelu(slope)) => {
                let (positive, negative) = self.split_at_zero(value);
                let slope = self.constant(slope.get());
                let scaled = self.binary(BinaryOp::Mul, negative, slope);
                self.binary(BinaryOp::Add, positive, scaled)
            }
            Some(Activation::Elu(alpha)) => {
                let (positive, negative) = self.split_at_zero(value);
                let exp = self.unary(UnaryOp::Exp, negative);
                let one = self.constant(1.0);
                let shifted = self.binary(BinaryOp::Sub, exp, one);
                let alpha = self.constant(alpha.get());
                let scaled = self.binary(BinaryOp::Mul, shifted, alpha);
                self.binary(BinaryOp::Add, positive, scaled)
            }
            Some(Activation::Gelu) => self.gelu(value),
            Some(Activation::GeluTanh) => {
                // `0.5 · x · (1 + tanh(β · (x + κ · x · x · x)))`, in the reference's order.
                let kappa = self.constant(GELU_TANH_KAPPA);
                let beta = self.constant(GELU_TANH_BETA);
                let half = self.constant(0.5);
                let one = self.constant(1.0);
                let kx = self.binary(BinaryOp::Mul, kappa, value);
                let kxx = self.binary(BinaryOp::Mul, kx, value);
                let cubic = self.binary(BinaryOp::Mul, kxx, value);
                let sum = self.binary(BinaryOp::Add, value, cubic);
                let inner = self.binary(BinaryOp::Mul, beta, sum);
                let t = self.unary(UnaryOp::Tanh, inner);
                let half_x = self.binary(BinaryOp::Mul, half, value);
                let shifted = self.binary(BinaryOp::Add, one, t);
                self.binary(BinaryOp::Mul, half_x, shifted)
            }
        }
    }

    /// `(max(0, x), min(0, x))`, each keeping a NaN `x`.
    fn split_at_zero(&mut self, value: Reg) -> (Reg, Reg) {
        let zero = self.constant(0.0);
        let positive = self.binary(BinaryOp::Max, zero, value);
        let negative = self.binary(BinaryOp::Min, zero, value);
        (positive, negative)
    }

    /// GELU as the reference defines it (`graph::ops::activation`): `max(0, x) − a/2 ·
    /// erfc(a/√2)` with `a = min(|x|, 20)`, `erfc` by its Chebyshev fit `t · exp(p(t) − z²)`,
    /// `t = 1/(1 + z/2)`.
    fn gelu(&mut self, value: Reg) -> Reg {
        let zero = self.constant(0.0);
        let positive = self.binary(BinaryOp::Max, zero, value);
        let negated = self.binary(BinaryOp::Sub, zero, value);
        // `max(x, −x)`: a NaN `x` gives NaN (the second operand comes back).
        let magnitude = self.binary(BinaryOp::Max, value, negated);
        let clamp = self.constant(GELU_CLAMP as f32);
        let a = self.binary(BinaryOp::Min, clamp, magnitude);
        let inv_sqrt2 = self.constant(std::f32::consts::FRAC_1_SQRT_2);
        let z = self.binary(BinaryOp::Mul, a, inv_sqrt2);
        let erfc = self.erfc_nonnegative(z);
        let half = self.constant(0.5);
        let half_a = self.binary(BinaryOp::Mul, a, half);
        let correction = self.binary(BinaryOp::Mul, half_a, erfc);
        self.binary(BinaryOp::Sub, positive, correction)
    }

    /// `erfc(z)` for `z ≥ 0` by the reference's Chebyshev fit, `t · exp(p(t) − z²)` with
    /// `t = 1/(1 + z/2)` (GELU's forward, and its derivative in a training step).
    pub(super) fn erfc_nonnegative(&mut self, z: Reg) -> Reg {
        let half = self.constant(0.5);
        let one = self.constant(1.0);
        let half_z = self.binary(BinaryOp::Mul, z, half);
        let denominator = self.binary(BinaryOp::Add, one, half_z);
        let t = self.binary(BinaryOp::Div, one, denominator);
        let mut poly = self.constant(ERFC_COEFFICIENTS[ERFC_COEFFICIENTS.len() - 1] as f32);
        for &c in ERFC_COEFFICIENTS.iter().rev().skip(1) {
            let c = self.constant(c as f32);
            poly = self.assign(LoopExpr::Fma(poly, t, c));
        }
        let z_squared = self.binary(BinaryOp::Mul, z, z);
        let exponent = self.binary(BinaryOp::Sub, poly, z_squared);
        let exp = self.unary(UnaryOp::Exp, exponent);
        self.binary(BinaryOp::Mul, t, exp)
    }

    /// Applies `f` to `len` consecutive elements starting at `start`, in vectors: `f` gets the
    /// offset from `start` and the number of lanes (4, or fewer for the last one). Unrolled
    /// by 4 vectors so that independent work overlaps; the unrolled loop is the kernel's
    /// parallel loop when `parallel` is set.
    pub fn vectors(
        &mut self,
        len: usize,
        parallel: bool,
        f: &mut impl FnMut(&mut Self, Affine, u8),
    ) {
        const UNROLL: usize = 4;
        let chunk = 4 * UNROLL;
        let body = |b: &mut Self, i: Affine| {
            for u in 0..UNROLL {
                f(b, i.clone() * chunk + 4 * u, 4);
            }
        };
        if parallel {
            self.parallel(len / chunk, body);
        } else {
            self.repeat(len / chunk, body);
        }
        let mut done = len / chunk * chunk;
        while done < len {
            let lanes = (len - done).min(4);
            f(self, Affine::constant(done), lanes as u8);
            done += lanes;
        }
    }

    /// `dst[dst_start..][..len] = src[src_start..][..len]`.
    pub fn copy_range(
        &mut self,
        dst: BufferId,
        dst_start: Affine,
        src: BufferId,
        src_start: Affine,
        len: usize,
    ) {
        self.vectors(len, false, &mut |b, offset, lanes| {
            let value = b.load(src, src_start.clone() + offset.clone(), lanes);
            b.store(dst, dst_start.clone() + offset, lanes, value);
        });
    }

    /// `dst[start..][..len] = value`.
    pub fn fill_range(&mut self, dst: BufferId, start: Affine, len: usize, value: f32) {
        if len == 0 {
            return;
        }
        let fill = self.constant(value);
        self.vectors(len, false, &mut |b, offset, lanes| {
            b.store(dst, start.clone() + offset, lanes, fill);
        });
    }
}
