//! The scalar functions generated code calls for `exp`, `sigmoid` and `tanh`: the Rust
//! standard library's, so the JIT computes exactly what the reference interpreter does.
//!
//! They are `extern "C"` and cannot panic, so no unwinding ever crosses JIT frames.

use crate::graph::Activation;

pub(super) extern "C" fn exp(x: f32) -> f32 {
    x.exp()
}

pub(super) extern "C" fn sigmoid(x: f32) -> f32 {
    Activation::Sigmoid.apply(x)
}

pub(super) extern "C" fn tanh(x: f32) -> f32 {
    x.tanh()
}

/// The symbol names under which the functions are registered with the JIT.
pub(super) const SYMBOLS: [(&str, extern "C" fn(f32) -> f32); 3] = [
    ("cnnc_exp", exp),
    ("cnnc_sigmoid", sigmoid),
    ("cnnc_tanh", tanh),
];
