//! cnnc: a compiler for convolutional networks.
//!
//! The pipeline, one module per arrow:
//!
//! ```text
//! source ─syntax─▶ AST ─expand─▶ graph (shapes inferred as nodes are inserted)
//!        ─reference─▶ tensors
//! ```
//!
//! `driver` strings the stages together for the CLI and the tests; `diag` renders the
//! diagnostics every stage produces.

pub mod cli;
pub mod codegen;
pub mod diag;
pub mod driver;
pub mod expand;
pub mod graph;
pub mod lower;
pub mod opt;
pub mod reference;
pub mod runtime;
pub mod source;
pub mod stdlib;
pub mod syntax;
