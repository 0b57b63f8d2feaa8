//! Parsing: `.cnn` text → the owned AST of `ast.rs`.
//!
//! pest does the recognising; `parser.rs` walks its pairs positionally into AST nodes and
//! `errors.rs` turns pest's failures into diagnostics with English expectations. Nothing of
//! pest leaves this module.

pub mod ast;
mod dump;
mod errors;
mod parser;
pub mod visit;

pub use dump::dump;

use crate::diag::Diagnostic;
use crate::source::{FileId, Span};

/// The deepest bracket nesting accepted. pest and the later stages recurse once per level, so
/// this keeps hostile inputs (10,000 nested brackets) from exhausting the stack.
pub const MAX_NESTING: usize = 128;

/// Parses one file.
pub fn parse(file: FileId, text: &str) -> Result<ast::File, Vec<Diagnostic>> {
    check_nesting(file, text)?;
    parser::parse_file(file, text)
}

/// Rejects inputs nested deeper than [`MAX_NESTING`] before pest sees them.
fn check_nesting(file: FileId, text: &str) -> Result<(), Vec<Diagnostic>> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut idx = 0;
    while idx < bytes.len() {
        match bytes[idx] {
            b'"' => {
                idx += 1;
                while idx < bytes.len() && bytes[idx] != b'"' && bytes[idx] != b'\n' {
                    idx += if bytes[idx] == b'\\' { 2 } else { 1 };
                }
            }
            b'/' if bytes.get(idx + 1) == Some(&b'/') => {
                while idx < bytes.len() && bytes[idx] != b'\n' {
                    idx += 1;
                }
            }
            b'/' if bytes.get(idx + 1) == Some(&b'*') => {
                depth += 1;
                idx += 1;
            }
            b'*' if bytes.get(idx + 1) == Some(&b'/') => {
                depth = depth.saturating_sub(1);
                idx += 1;
            }
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > MAX_NESTING {
            let span = Span::new(file, idx..(idx + 1).min(text.len()));
            return Err(vec![Diagnostic::error(
                "nesting-too-deep",
                span,
                format!("brackets are nested more than {MAX_NESTING} levels deep"),
            )
            .with_label("this bracket is too deep")
            .with_help("split the expression with `let` bindings or blocks")]);
        }
        idx += 1;
    }
    Ok(())
}
