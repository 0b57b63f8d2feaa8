//! Diagnostics about a layer of a built graph: the errors found after expansion (weights that do
//! not fit a layer, a run that fails at a layer, code generation) point at the layer's source
//! line and at the block calls that led to it, as the front end's errors do.

use super::{Graph, NodeId};
use crate::diag::{Code, Diagnostic};

impl Graph {
    /// An error at the source line of layer `node`, labelled `label`, with a secondary label
    /// for each block call that led to it.
    pub fn diagnostic_at(
        &self,
        node: NodeId,
        code: Code,
        message: String,
        label: &str,
    ) -> Diagnostic {
        let origin = &self.origins[node];
        let mut diagnostic = Diagnostic::error(code, origin.span, message).with_label(label);
        for &call in &origin.call_chain {
            diagnostic = diagnostic.with_secondary(call, "in this block call");
        }
        diagnostic
    }
}
