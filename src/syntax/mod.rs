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
pub use errors::internal as internal_error;

use crate::diag::{Code, Diagnostic};
use crate::source::{FileId, Span};

/// The deepest bracket nesting accepted. pest and the later stages recurse once per level, so
/// this keeps hostile inputs (10,000 nested brackets) from exhausting the stack.
pub const MAX_NESTING: usize = 128;

/// Parses one file.
pub fn parse(file: FileId, text: &str) -> Result<ast::File, Vec<Diagnostic>> {
    check_nesting(file, text)?;
    parser::parse_file(file, text)
}

/// Rejects inputs nested deeper than [`MAX_NESTING`] before pest sees them. Brackets and
/// block comments (which nest) count; strings and line comments are skipped, and inside a block
/// comment only `/*` and `*/` matter.
fn check_nesting(file: FileId, text: &str) -> Result<(), Vec<Diagnostic>> {
    let bytes = text.as_bytes();
    let mut brackets = 0usize;
    let mut comments = 0usize;
    let mut idx = 0;
    while idx < bytes.len() {
        let pair = (bytes[idx], bytes.get(idx + 1).copied());
        let opened = match pair {
            (b'/', Some(b'*')) => {
                comments += 1;
                idx += 2;
                true
            }
            (b'*', Some(b'/')) if comments > 0 => {
                comments -= 1;
                idx += 2;
                false
            }
            _ if comments > 0 => {
                idx += 1;
                false
            }
            (b'/', Some(b'/')) => {
                while idx < bytes.len() && bytes[idx] != b'\n' {
                    idx += 1;
                }
                false
            }
            (b'"', _) => {
                idx += 1;
                while idx < bytes.len() && bytes[idx] != b'"' && bytes[idx] != b'\n' {
                    idx += if bytes[idx] == b'\\' { 2 } else { 1 };
                }
                idx += 1;
                false
            }
            (b'(' | b'[' | b'{', _) => {
                brackets += 1;
                idx += 1;
                true
            }
            (b')' | b']' | b'}', _) => {
                brackets = brackets.saturating_sub(1);
                idx += 1;
                false
            }
            _ => {
                idx += 1;
                false
            }
        };
        if opened && brackets + comments > MAX_NESTING {
            let start = idx.saturating_sub(1).min(text.len());
            let start = (0..=start)
                .rev()
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(0);
            let end = (start + 1..=text.len())
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(text.len());
            let span = Span::new(file, start..end);
            return Err(vec![Diagnostic::error(
                Code::NestingTooDeep,
                span,
                format!("brackets are nested more than {MAX_NESTING} levels deep"),
            )
            .with_label("this bracket is too deep")
            .with_help("split the expression with `let` bindings or blocks")]);
        }
    }
    Ok(())
}
