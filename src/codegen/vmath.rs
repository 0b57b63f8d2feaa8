//! `exp`, `sigmoid` and `tanh` on f32x4 vectors, inline: Cephes' `expf` and a rational
//! `tanh` in Cranelift IR.
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
//!
//! `tanh` is the 13/6-degree odd/even rational interpolant Eigen uses for `float`
//! (`ptanh_float`): inputs are clamped to ±c, the smallest value at which the interpolant is
//! exactly 1 (it exceeds 1 a little beyond), and below 0.0004 in magnitude `tanh(x)` is `x`
//! (the interpolant would lose relative accuracy on subnormals). About 1 ulp over the range,
//! relative accuracy kept near 0 (where `2·sigmoid(2x) − 1` would lose it), 11 FMAs and a
//! division for four lanes instead of four calls into libm.

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
/// The odd numerator of the `tanh` interpolant, coefficients of x¹³, x¹¹, …, x¹.
const TANH_NUMERATOR: [f32; 7] = [
    -2.760_768_4e-16,
    2.000_188e-13,
    -8.604_672e-11,
    5.122_297_3e-8,
    1.485_722_35e-5,
    6.372_619_3e-4,
    4.893_524_6e-3,
];
/// The even denominator, coefficients of x⁶, x⁴, x², 1.
const TANH_DENOMINATOR: [f32; 4] = [1.198_258_4e-6, 1.185_347_1e-4, 2.268_434_7e-3, 4.893_525e-3];
/// Where the interpolant reaches exactly 1, evaluated with FMA and without.
const TANH_LIMIT_FMA: f32 = 7.998_811_7;
const TANH_LIMIT: f32 = 7.905_311;
/// Below this magnitude `tanh(x)` is `x` to f32 precision.
const TANH_TINY: f32 = 0.0004;

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

    /// `tanh(x)`: `x·p(x²) / q(x²)` on `x` clamped to where it reaches ±1, `x` itself where
    /// tiny; a NaN stays NaN.
    pub fn tanh(&mut self, input: Value) -> Value {
        let limit = if self.has_fma {
            TANH_LIMIT_FMA
        } else {
            TANH_LIMIT
        };
        let x = self.clamp(input, -limit, limit);
        let x2 = self.builder.ins().fmul(x, x);
        let mut p = self.splat(TANH_NUMERATOR[0]);
        for &c in &TANH_NUMERATOR[1..] {
            let c = self.splat(c);
            p = self.fma(p, x2, c);
        }
        let p = self.builder.ins().fmul(p, x);
        let mut q = self.splat(TANH_DENOMINATOR[0]);
        for &c in &TANH_DENOMINATOR[1..] {
            let c = self.splat(c);
            q = self.fma(q, x2, c);
        }
        let tiny = self.splat(TANH_TINY);
        let b = &mut self.builder;
        let approximation = b.ins().fdiv(p, q);
        let magnitude = b.ins().fabs(input);
        let is_tiny = b.ins().fcmp(FloatCC::LessThan, magnitude, tiny);
        let is_tiny = b.ins().bitcast(F32X4, MemFlagsData::new(), is_tiny);
        b.ins().bitselect(is_tiny, input, approximation)
    }
}
