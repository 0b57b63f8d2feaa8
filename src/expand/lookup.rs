//! How a name written in a file finds its block or network: through the file's namespace
//! (`resnet.` for a file imported `as resnet`), so an imported file's own calls keep meaning
//! its own blocks.

use super::Definitions;
use crate::syntax::ast::{BlockDef, Ident, NetworkDef};

impl<'a> Definitions<'a> {
    /// `name` as written in `file`, in the root's namespace.
    fn key(&self, file: crate::source::FileId, name: &str) -> String {
        let prefix = self.namespaces.get(&file).map_or("", String::as_str);
        format!("{prefix}{name}")
    }

    /// The block that `name`, written in `file`, refers to.
    pub fn block(&self, file: crate::source::FileId, name: &str) -> Option<&'a BlockDef> {
        self.blocks.get(&self.key(file, name)).copied()
    }

    /// The network that `name`, written in `file`, refers to.
    pub fn network(&self, file: crate::source::FileId, name: &str) -> Option<&'a NetworkDef> {
        self.networks.get(&self.key(file, name)).copied()
    }

    /// A definition's own name in the root's namespace (`resnet.basic`).
    pub fn qualified(&self, name: &Ident) -> String {
        self.key(name.span.file, &name.name)
    }
}
