//! Training's building blocks that do not depend on how ops are represented: optimizers,
//! learning-rate schedules and gradient clipping, losses and metrics, data sets, and
//! checkpoints.
//!
//! The trainer (reverse-mode differentiation over the graph, `cnnc train`, `cnnc eval`) is
//! built on these once every op carries its gradient rule. Everything here works on plain
//! slices and arrays named by the tensors' full PyTorch names, so it is independent of the
//! graph IR and can be tested against hand-computed values on its own. Semantics follow
//! PyTorch throughout, so a recipe gives the numbers a user would get there.

pub mod checkpoint;
pub mod data;
pub mod data_error;
pub mod data_files;
pub mod loss;
pub mod optim;
pub mod schedule;
