//! The optimizer's graph passes: rewrites of a typed [`Graph`] (its nodes and its constants,
//! which folding changes) into an equivalent graph with fewer, fatter nodes, for the lowering
//! to turn into fewer loops.
//!
//! Each pass is one small function in its own file, `fn(&mut Graph) -> bool`,
//! named for what it does and returning whether it changed anything. [`PASSES`] lists them in
//! the one order they run in: identities go first so that batch norms sit directly after
//! their convolutions; folding comes before fusion because a conv with a fused activation can
//! no longer absorb a per-channel affine; activations are fused before residual adds so that
//! an add's operand is a bare conv and the activation after the add is left for the residual
//! pass.
//!
//! A pass may only rewrite what it can prove computes the same numbers (up to f32 rounding):
//! a conv read by two nodes keeps its batch norm. Passes change constants' sources, never
//! their numbers: folding makes a *folded* constant, computed when first needed. Passes edit nodes in place, rewire readers
//! with the helpers of `rewrite.rs`, and end with [`Graph::prune_unreachable`], so the graph
//! stays in insertion (= topological) order. The verifier (`graph::verify`) checks that after
//! every pass in tests and in debug builds.
//!
//! What the fused forms mean is defined by the reference interpreter: a conv's epilogue is
//! `activation(acc + bias + skip)`.

mod fold_batch_norm;
mod fuse_conv_activation;
mod fuse_residual_add;
mod remove_identities;
mod rewrite;

pub(crate) use fold_batch_norm::batch_norm_constants;
pub use fold_batch_norm::fold_batch_norm;
pub use fuse_conv_activation::fuse_conv_activation;
pub use fuse_residual_add::fuse_residual_add;
pub use remove_identities::remove_identities;

use crate::diag::{Code, Diagnostic};
use crate::graph::{verify, Graph};
use crate::runtime::Weights;
use thiserror::Error;

/// A graph pass: rewrites in place and says whether it changed anything.
pub type PassFn = fn(&mut Graph) -> bool;

/// Every pass, in the order `optimize` runs them.
pub static PASSES: &[(&str, PassFn)] = &[
    ("remove_identities", remove_identities),
    ("fold_batch_norm", fold_batch_norm),
    ("fuse_conv_activation", fuse_conv_activation),
    ("fuse_residual_add", fuse_residual_add),
];

/// The passes `--no-fuse` turns off: they merge nodes, where the others only remove them.
pub const FUSION_PASSES: &[&str] = &["fuse_conv_activation", "fuse_residual_add"];

/// The names of the passes, in table order.
pub fn pass_names() -> impl Iterator<Item = &'static str> {
    PASSES.iter().map(|(name, _)| *name)
}

/// Which passes to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Run the fusion passes; `--no-fuse` clears it, to compare fused and unfused code.
    pub fuse: bool,
    /// Run only these passes (`--passes a,b`), still in table order; `None` runs them all.
    pub only: Option<Vec<String>>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            fuse: true,
            only: None,
        }
    }
}

impl Options {
    /// The passes these options select, in table order; an unknown name is an error.
    pub fn selected(&self) -> Result<Vec<(&'static str, PassFn)>, OptError> {
        if let Some(only) = &self.only {
            if let Some(unknown) = only.iter().find(|name| !pass_names().any(|n| n == *name)) {
                return Err(OptError::UnknownPass {
                    name: unknown.clone(),
                    known: pass_names().collect::<Vec<_>>().join(", "),
                });
            }
        }
        Ok(PASSES
            .iter()
            .filter(|(name, _)| self.fuse || !FUSION_PASSES.contains(name))
            .filter(|(name, _)| {
                self.only
                    .as_ref()
                    .is_none_or(|only| only.iter().any(|n| n == name))
            })
            .copied()
            .collect())
    }
}

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum OptError {
    #[error("there is no pass named `{name}`; the passes are {known}")]
    UnknownPass { name: String, known: String },
    /// A pass left the graph inconsistent: a bug in cnnc, caught in debug builds.
    #[error("the pass `{pass}` broke the graph:\n{problems}")]
    Broken {
        pass: &'static str,
        problems: String,
    },
}

impl OptError {
    /// The diagnostic of a failed optimization, about no place in the source: an unknown pass
    /// name comes from the command line, a broken graph from a bug in a pass.
    pub fn to_diagnostic(&self) -> Diagnostic {
        let diagnostic = Diagnostic::global(Code::Optimize, self.to_string());
        match self {
            OptError::Broken { .. } => diagnostic
                .with_help("this is a bug in cnnc: please report it with the program; `--backend reference` runs without the optimizer"),
            OptError::UnknownPass { .. } => diagnostic,
        }
    }
}

/// Runs the selected passes over `graph`; returns the names of the passes that changed
/// something. In debug builds the graph is verified after each pass.
pub fn optimize(graph: &mut Graph, options: &Options) -> Result<Vec<&'static str>, OptError> {
    let mut changed = Vec::new();
    for (name, pass) in options.selected()? {
        if pass(graph) {
            changed.push(name);
        }
        if cfg!(debug_assertions) {
            verify::verify(graph).map_err(|problems| OptError::Broken {
                pass: name,
                problems,
            })?;
        }
    }
    Ok(changed)
}

/// [`optimize`] for a caller that keeps its weights by name: binds the tensors of `weights`
/// that fit (the others keep the graph's constants), optimizes, and replaces `weights` with
/// the optimized graph's learned tensors (folded ones included, the batch norms' gone). Empty
/// weights stay empty: the graph is optimized on its own constants.
pub fn optimize_weights(
    graph: &mut Graph,
    weights: &mut Weights,
    options: &Options,
) -> Result<Vec<&'static str>, OptError> {
    if weights.is_empty() {
        return optimize(graph, options);
    }
    crate::runtime::bind_present(graph, weights);
    let changed = optimize(graph, options)?;
    *weights = crate::runtime::learned_weights(graph);
    Ok(changed)
}
