//! Training's building blocks that do not depend on how ops are represented: optimizers,
//! learning-rate schedules and gradient clipping, losses and metrics, data sets, their
//! augmentation and loader threads, and checkpoints.
//!
//! The trainer (`cnnc train`, `cnnc eval`) is built on these and on reverse-mode
//! differentiation over the graph: each op's gradient rule (`graph::ops::gradient::GradRule`,
//! in the op's file) driven by `reference::backward`. Everything here works on plain
//! slices and arrays named by the tensors' full PyTorch names, so it is independent of the
//! graph IR and can be tested against hand-computed values on its own. Semantics follow
//! PyTorch throughout, so a recipe gives the numbers a user would get there.
//!
//! One epoch of a trainer, in these terms:
//!
//! ```text
//! spec    = data::InputSpec::from_graph(graph, pad)        n = data::class_count(graph)
//! dataset = data_files::open_dataset(path, labels, &spec, n)      (errors: .diagnostic())
//! (train, val) = dataset.split_validation(fraction, seed)          (optional)
//! train = train.with_augmentation(augment::Augmenter::new(graph.meta.augment, &train))
//! optimizer.set_lr(schedule.lr(base_lr, epoch))
//! for batch in loader::BatchLoader::start(&train, &train.epoch_order(seed, epoch, shuffle),
//!                                         batch_size, seed, epoch, loader_threads):
//!     reference::backward::loss_gradients(graph, weights, images, labels, mode)
//!         = forward on the logits (the input of a final softmax, if any)
//!         + loss::cross_entropy_logits(logits, labels, n) → loss, ∂L/∂logits
//!         + the reverse pass → grads              (trainable tensors only)
//!     schedule::clip_grad_norm(grads, max_norm)                        (optional)
//!     optimizer.step_tensor(name, params, grads) for each trainable tensor
//! checkpoint::save_checkpoint(path, weights, Some(&optimizer), &progress)
//! ```
//!
//! Before the first epoch, `cache::split_frozen_prefix` may cut a frozen base off: its output
//! is computed once per image and the loop above trains the rest on it (`cache.rs`).

pub mod augment;
pub mod augment_pca;
pub mod cache;
pub mod checkpoint;
pub mod data;
pub mod data_error;
pub mod data_files;
pub mod jit;
pub mod loader;
pub mod loss;
pub mod optim;
pub mod recipe;
pub mod schedule;
pub mod trainer;
