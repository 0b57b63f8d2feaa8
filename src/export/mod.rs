//! Exporting a network to formats other engines read: today ONNX (`onnx.rs`).
//!
//! An export reads only the graph (through `crate::graph`) and the weights (through
//! `crate::runtime::Weights`); it never depends on the optimizer or the code generator, so an
//! exported model is an independent oracle for what cnnc computes.

pub mod onnx;
mod onnx_norm;
mod onnx_ops;
#[allow(clippy::all, clippy::pedantic)]
pub mod onnx_proto;
