//! `exp` and `sigmoid` on f32x4 vectors, inline: Cephes' `expf` in Cranelift IR.
//!
//! A call per lane into libm costs far more than the activation it computes (in EfficientNet,
//! whose every layer ends in swish, it took most of the time), so `exp` is computed in
//! vector registers: `x = n·ln 2 + r` with `n = round(x / ln 2)` and `|r| ≤ ln 2 / 2`, a
//! degree-5 polynomial for `(eʳ − 1 − r) / r²`, and `2ⁿ` made by writing `n + 127` into the
//! exponent bits. Relative error is about 1e-7, within the 1e-6 asked of it. Inputs are clamped
//! to [−87.3, 88.3] so that `n + 127` stays a normal exponent: `exp` then never returns 0,
//! which changes `sigmoid` and `softmax` only far below f32 resolution of their results.
//! Above ln(f32::MAX) it returns +∞ as libm does, so `swish` of a huge negative number is −0
//! (as PyTorch's), not a finite product; a NaN goes through the clamp and the polynomial and
//! comes out NaN.

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::types::{F32X4, I32X4};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value};
use cranelift_frontend::FunctionBuilder;

const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// ln(f32::MAX): `exp` of anything larger overflows to +∞.
const LN_F32_MAX: f32 = 88.722_84;
/// ln 2 split in a part exact in few bits and the rest, so `n·LN2_HI` is exact.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Cephes' minimax coefficients, highest degree first (the last, 5.0000001201e-1, is 0.5 in
/// f32).
const POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

pub(super) struct VectorMath<'b, 'f> {
    pub builder: &'b mut FunctionBuilder<'f>,
    pub has_fma: bool,
}

impl VectorMath<'_, '_> {
    fn splat(&mut self, value: f32) -> Value {
        let scalar = self.builder.ins().f32const(value);
        self.builder.ins().splat(F32X4, scalar)
    }

    /// `a · b + c`.
    fn fma(&mut self, a: Value, b: Value, c: Value) -> Value {
        if self.has_fma {
            self.builder.ins().fma(a, b, c)
        } else {
            let product = self.builder.ins().fmul(a, b);
            self.builder.ins().fadd(product, c)
        }
    }

    /// `x` clamped to `[low, high]` with compare-and-select (`maxps`, `minps`), the
    /// comparisons written so that a NaN `x` is kept.
    fn clamp(&mut self, x: Value, low: f32, high: f32) -> Value {
        let (low, high) = (self.splat(low), self.splat(high));
        let b = &mut self.builder;
        let below = b.ins().fcmp(FloatCC::LessThan, x, low);
        let below = b.ins().bitcast(F32X4, MemFlagsData::new(), below);
        let x = b.ins().bitselect(below, low, x);
        let above = b.ins().fcmp(FloatCC::LessThan, high, x);
        let above = b.ins().bitcast(F32X4, MemFlagsData::new(), above);
        b.ins().bitselect(above, high, x)
    }

    pub fn exp(&mut self, x: Value) -> Value {
        let finite = self.exp_clamped(x);
        let (limit, infinity) = (self.splat(LN_F32_MAX), self.splat(f32::INFINITY));
        let b = &mut self.builder;
        let overflows = b.ins().fcmp(FloatCC::LessThan, limit, x);
        let overflows = b.ins().bitcast(F32X4, MemFlagsData::new(), overflows);
        b.ins().bitselect(overflows, infinity, finite)
    }

    /// `exp` of `x` clamped to [−87.3, 88.3].
    fn exp_clamped(&mut self, x: Value) -> Value {
        let x = self.clamp(x, -87.3, 88.3);
        let log2e = self.splat(LOG2_E);
        let scaled = self.builder.ins().fmul(x, log2e);
        let n = self.builder.ins().nearest(scaled);
        let minus_n = self.builder.ins().fneg(n);
        let (hi, lo) = (self.splat(LN2_HI), self.splat(LN2_LO));
        let r = self.fma(minus_n, hi, x);
        let r = self.fma(minus_n, lo, r);
        let mut p = self.splat(POLY[0]);
        for &c in &POLY[1..] {
            let c = self.splat(c);
            p = self.fma(p, r, c);
        }
        let r2 = self.builder.ins().fmul(r, r);
        let y = self.fma(p, r2, r);
        let one = self.splat(1.0);
        let y = self.builder.ins().fadd(y, one);
        let b = &mut self.builder;
        let n = b.ins().fcvt_to_sint_sat(I32X4, n);
        let bias = b.ins().iconst(cranelift_codegen::ir::types::I32, 127);
        let bias = b.ins().splat(I32X4, bias);
        let biased = b.ins().iadd(n, bias);
        let bits = b.ins().ishl_imm_u(biased, 23);
        let scale = b.ins().bitcast(F32X4, MemFlagsData::new(), bits);
        b.ins().fmul(y, scale)
    }

    /// `1 / (1 + exp(−x))`.
    pub fn sigmoid(&mut self, x: Value) -> Value {
        let minus_x = self.builder.ins().fneg(x);
        let e = self.exp(minus_x);
        let one = self.splat(1.0);
        let denominator = self.builder.ins().fadd(one, e);
        self.builder.ins().fdiv(one, denominator)
    }
}
