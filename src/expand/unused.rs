//! Warnings about what the root file defines and nothing uses: a block that no network or
//! block calls (its body is expanded only through a call, so its mistakes would go unseen),
//! and a block parameter its body never reads. Both are found on the syntax tree, so they do
//! not depend on which branch one expansion took. Imported files are not warned about: a
//! library defines more than each user calls.

use crate::diag::{Code, Diagnostic};
use crate::syntax::ast::{BlockDef, File, Item, Param, Stmt};
use crate::syntax::visit;

/// The warnings for `root`'s blocks; `files` are every parsed file, `root` among them.
pub fn unused_warnings(root: &File, files: &[&File]) -> Vec<Diagnostic> {
    let mut warnings = Vec::new();
    for item in &root.items {
        let Item::Block(block) = item else {
            continue;
        };
        if !block.name.name.starts_with('_') && !is_called(block, files) {
            warnings.push(
                Diagnostic::warning(
                    Code::UnusedBlock,
                    block.name.span,
                    format!("block `{}` is never used", block.name.name),
                )
                .with_label("defined here")
                .with_note(
                    "a block's body is checked when a network calls it, so this one is not checked",
                )
                .with_help(format!(
                    "call it from a network, remove it, or name it `_{}` to keep it unused",
                    block.name.name
                )),
            );
        }
        for (idx, param) in block.params.iter().enumerate() {
            let name = param.name.name.as_str();
            if name.starts_with('_') || is_read(name, &block.body.stmts, &block.params[idx + 1..]) {
                continue;
            }
            warnings.push(
                Diagnostic::warning(
                    Code::UnusedParameter,
                    param.name.span,
                    format!(
                        "parameter `{name}` of block `{}` is never used",
                        block.name.name
                    ),
                )
                .with_label("never read in the body")
                .with_help(format!(
                    "remove the parameter, or name it `_{name}` to keep it unused"
                )),
            );
        }
    }
    warnings
}

/// Whether any other definition (in any file) calls `block`, in its body or its defaults.
fn is_called(block: &BlockDef, files: &[&File]) -> bool {
    let name = block.name.name.as_str();
    let calls = |stmts: &[Stmt], params: &[Param]| {
        visit::calls(stmts, name)
            || params.iter().any(|p| {
                p.default
                    .as_ref()
                    .is_some_and(|d| visit::calls(&[Stmt::Expr(d.clone())], name))
            })
    };
    files.iter().flat_map(|f| &f.items).any(|item| match item {
        Item::Block(other) => {
            !std::ptr::eq(other, block) && calls(&other.body.stmts, &other.params)
        }
        Item::Network(network) => calls(&network.body.stmts, &network.params),
        Item::Import(_) => false,
    })
}

/// Whether a parameter is read by the body or by a later parameter's default.
fn is_read(name: &str, body: &[Stmt], later: &[Param]) -> bool {
    visit::mentions(body, name)
        || later.iter().any(|p| {
            p.default
                .as_ref()
                .is_some_and(|d| visit::expr_mentions_name(d, name))
        })
}
