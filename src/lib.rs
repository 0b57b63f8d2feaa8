//! cnnc: a compiler for convolutional networks.
//!
//! The pipeline, one module per arrow:
//!
//! ```text
//! source ─syntax─▶ AST ─expand─▶ graph (shapes inferred as nodes are inserted)
//!        ─opt─▶ fused graph ─lower─▶ loop nests + packed constants ─codegen─▶ native code ─▶ tensors
//!                      └──────────reference (the interpreter, the tests' oracle)──────────▶ tensors
//! ```
//!
//! `driver` strings the front end together for the CLI and the tests; `runtime` holds
//! weights and inputs; `diag` renders the diagnostics every stage produces; `cli` is the
//! command line; `export` writes a graph and its weights as an ONNX model.

pub mod cli;
pub mod codegen;
pub mod diag;
pub mod driver;
pub mod expand;
pub mod export;
pub mod graph;
pub mod lower;
pub mod opt;
mod parallel;
pub(crate) mod phases;
pub mod reference;
pub mod runtime;
pub mod source;
pub mod stdlib;
pub mod syntax;
pub mod train;
