//! The scalar function generated code calls: `tanh`, from the Rust standard library (libm),
//! so the JIT computes exactly what the reference interpreter does. (`exp` and `sigmoid` are
//! computed inline on vectors: `vmath.rs`.)
//!
//! It is `extern "C"` and cannot panic, so no unwinding ever crosses JIT frames.

pub(super) extern "C" fn tanh(x: f32) -> f32 {
    x.tanh()
}

/// The symbol name under which `tanh` is registered with the JIT.
pub(super) const TANH: &str = "cnnc_tanh";
