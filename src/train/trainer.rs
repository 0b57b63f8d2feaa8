//! The training loop: epochs of shuffled batches, each a forward and backward on the
//! reference engine, gradient clipping, an optimizer step on the trainable tensors and the
//! batch norms' running statistics; a validation and a checkpoint after each epoch.
//!
//! This is the one module that calls the reverse-mode driver (`reference::backward`) and
//! writes into the weights (`runtime::Weights`): [`step_gradients`] and [`apply_step`] are
//! where a change of either lands.
//!
//! Semantics are PyTorch's `model.train()` loop with `CrossEntropyLoss`, with one choice of
//! Keras': a frozen layer runs as at inference, so its batch norms keep their running
//! statistics and a frozen tensor is bit-identical after training. A non-finite loss or
//! gradient norm stops the run before the step that would apply it, naming the step; the
//! checkpoint of the last finished epoch is left as it was.
//!
//! With `threads > 1` a batch is cut into that many contiguous shards whose gradients are
//! computed at once and summed in shard order, weighted by shard size: the result is the
//! batch's mean gradient, deterministic for a seed and a thread count (the sums' order differs
//! from one thread's, so the last bits may too). A network with a batch norm in training mode
//! is not sharded: its statistics are the whole batch's.

use super::checkpoint::{save_checkpoint, CheckpointError, Progress};
use super::data::Dataset;
use super::data_error::DataError;
use super::jit::JitStep;
use super::loss::{self, ConfusionMatrix, LossError};
use super::optim::{OptimError, Optimizer};
use super::recipe::Settings;
use super::schedule::clip_grad_norm;
use crate::graph::ops::gradient::TrainingMode;
use crate::graph::{Graph, Op};
use crate::reference::backward::{loss_gradients, node_mode, BackwardError, BatchNormStats};
use crate::runtime::rng::SplitMix64;
use crate::runtime::Weights;
use ndarray::{ArrayD, IxDyn};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;
use thiserror::Error;

/// PyTorch's `BatchNorm2d(momentum=0.1)`.
pub const BATCH_NORM_MOMENTUM: f64 = 0.1;

/// How a run goes, beyond the recipe.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub settings: Settings,
    pub shuffle: bool,
    /// Stop after this many optimizer steps in all (`--steps`).
    pub max_steps: Option<u64>,
    pub threads: usize,
    /// Threads that build the next batches while a step trains (`--loader-threads`).
    pub loader_threads: usize,
    /// Where each epoch's checkpoint goes (`--out`).
    pub checkpoint: Option<PathBuf>,
}

#[derive(Debug, Error)]
pub enum TrainError {
    #[error(
        "training diverged at step {step} (epoch {epoch}, batch {batch}): the {what} is {value}"
    )]
    Diverged {
        step: u64,
        epoch: usize,
        batch: usize,
        what: &'static str,
        value: f64,
        /// The checkpoint left as it was, if one was written.
        kept: Option<PathBuf>,
    },
    #[error(transparent)]
    Backward(#[from] BackwardError),
    #[error(transparent)]
    Optim(#[from] OptimError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Loss(#[from] LossError),
    #[error("the weights have no tensor `{0}` to update")]
    MissingTensor(String),
    #[error(
        "a batch of {batch} needs {gib:.1} GiB of activations: its batch norms need every image's \
         at once, {mib:.1} MiB each; use a smaller --batch"
    )]
    BatchTooLarge { batch: usize, gib: f64, mib: f64 },
    #[error("{0}")]
    Evaluation(String),
}

/// One epoch's figures.
#[derive(Clone, Debug)]
pub struct EpochReport {
    /// From 1.
    pub epoch: usize,
    pub epochs: usize,
    pub lr: f64,
    /// Mean training loss over the epoch's images (training mode, weights as they were at
    /// each batch).
    pub loss: f64,
    pub accuracy: f64,
    pub images: usize,
    pub seconds: f64,
    pub global_step: u64,
    pub validation: Option<EvalReport>,
}

impl EpochReport {
    pub fn images_per_second(&self) -> f64 {
        self.images as f64 / self.seconds.max(1e-9)
    }
}

/// Where an epoch is, for a live progress line.
#[derive(Clone, Debug)]
pub struct BatchProgress {
    pub epoch: usize,
    pub epochs: usize,
    pub batch: usize,
    pub n_batches: usize,
    pub loss: f64,
    pub accuracy: f64,
    pub images_per_second: f64,
}

/// What an evaluation found.
#[derive(Clone, Debug)]
pub struct EvalReport {
    pub n: usize,
    pub loss: f64,
    pub accuracy: f64,
    /// Top-5 accuracy, for 5 classes or more.
    pub top5: Option<f64>,
    pub confusion: ConfusionMatrix,
}

/// The gradients of one batch: the mean loss, the trainable tensors' gradients by name, the
/// logits (for the training accuracy) and the batch norms' statistics.
pub struct StepGradients {
    pub loss: f64,
    pub grads: Vec<(String, Vec<f32>)>,
    pub logits: Vec<f32>,
    pub batch_norm_stats: Vec<BatchNormStats>,
}

/// Whether some batch norm normalizes with its batch's statistics in training.
fn has_training_batch_norm(graph: &Graph) -> bool {
    let mode = TrainingMode {
        training: true,
        seed: 0,
    };
    graph.nodes.iter().any(|(id, node)| {
        matches!(node.op, Op::BatchNorm { .. }) && node_mode(graph, id, mode).training
    })
}

/// The loss and gradients of one batch on the reference engine (see the module docs for
/// `threads`).
pub fn step_gradients(
    graph: &Graph,
    weights: &Weights,
    images: &ArrayD<f32>,
    labels: &[u32],
    mode: TrainingMode,
    threads: usize,
) -> Result<StepGradients, BackwardError> {
    let n = labels.len();
    let n_shards = if has_training_batch_norm(graph) {
        1
    } else {
        threads.clamp(1, n.max(1))
    };
    let one = |images: &ArrayD<f32>, labels: &[u32], seed: u64| {
        let mode = TrainingMode { seed, ..mode };
        let result = loss_gradients(graph, weights, std::slice::from_ref(images), labels, mode)?;
        let grads = result
            .backward
            .params
            .into_iter()
            .map(|(name, g)| (name, g.iter().copied().collect::<Vec<f32>>()))
            .collect();
        Ok::<StepGradients, BackwardError>(StepGradients {
            loss: f64::from(result.loss),
            grads,
            logits: result.backward.output.iter().copied().collect(),
            batch_norm_stats: result.backward.batch_norm_stats,
        })
    };
    if n_shards == 1 {
        return one(images, labels, mode.seed);
    }
    // Contiguous shards whose sizes differ by at most one.
    let bounds: Vec<(usize, usize)> = (0..n_shards)
        .map(|s| (s * n / n_shards, (s + 1) * n / n_shards))
        .collect();
    let per_image = images.len() / n.max(1);
    let flat = images.as_standard_layout();
    let flat = flat.as_slice().unwrap_or(&[]);
    let shards: Vec<(ArrayD<f32>, &[u32])> = bounds
        .iter()
        .map(|&(start, end)| {
            let mut dims = images.shape().to_vec();
            dims[0] = end - start;
            let values = flat[start * per_image..end * per_image].to_vec();
            let array = ArrayD::from_shape_vec(IxDyn(&dims), values)
                .unwrap_or_else(|_| ArrayD::zeros(IxDyn(&dims)));
            (array, &labels[start..end])
        })
        .collect();
    let results: Vec<Result<StepGradients, BackwardError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = shards
            .iter()
            .enumerate()
            .map(|(s, (images, labels))| {
                let seed = mode.seed.wrapping_add(s as u64);
                scope.spawn(move || one(images, labels, seed))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(BackwardError::Run(crate::reference::RunError::Malformed(
                        "a training thread panicked".into(),
                    )))
                })
            })
            .collect()
    });
    let mut total: Option<StepGradients> = None;
    for (result, &(start, end)) in results.into_iter().zip(&bounds) {
        let shard = result?;
        let weight = (end - start) as f64 / n as f64;
        let scale = weight as f32;
        match &mut total {
            None => {
                let mut first = shard;
                first.loss *= weight;
                for (_, g) in &mut first.grads {
                    g.iter_mut().for_each(|v| *v *= scale);
                }
                total = Some(first);
            }
            Some(sum) => {
                sum.loss += shard.loss * weight;
                for ((_, acc), (_, g)) in sum.grads.iter_mut().zip(&shard.grads) {
                    for (a, &v) in acc.iter_mut().zip(g) {
                        *a += scale * v;
                    }
                }
                sum.logits.extend(shard.logits);
            }
        }
    }
    total.ok_or(BackwardError::Run(crate::reference::RunError::EmptyBatch))
}

/// Applies one step: the optimizer on every trainable tensor (already clipped; on up to
/// `threads` threads), then the batch norms' running statistics (PyTorch's rule:
/// `running ← (1 − m)·running + m·batch`, the variance unbiased, `· M/(M − 1)`).
pub fn apply_step(
    weights: &mut Weights,
    optimizer: &mut Optimizer,
    grads: &[(String, Vec<f32>)],
    batch_norm_stats: &[BatchNormStats],
    threads: usize,
) -> Result<(), TrainError> {
    if let Some((name, _)) = grads.iter().find(|(name, _)| weights.get(name).is_none()) {
        return Err(TrainError::MissingTensor(name.clone()));
    }
    let mut by_name: HashMap<&str, &[f32]> = grads
        .iter()
        .map(|(name, grad)| (name.as_str(), grad.as_slice()))
        .collect();
    // The tensors in one piece are updated in place, together; any other through a copy.
    let mut in_place = Vec::with_capacity(grads.len());
    let mut copied = Vec::new();
    for (name, tensor) in weights.iter_mut() {
        let Some(grad) = by_name.remove(name) else {
            continue;
        };
        if tensor.as_slice().is_some() {
            if let Some(values) = tensor.as_slice_mut() {
                in_place.push((name, values, grad));
            }
        } else {
            copied.push((name, tensor, grad));
        }
    }
    optimizer.step_tensors(in_place, threads)?;
    for (name, tensor, grad) in copied {
        let mut values: Vec<f32> = tensor.iter().copied().collect();
        optimizer.step_tensor(name, &mut values, grad)?;
        tensor.iter_mut().zip(values).for_each(|(t, v)| *t = v);
    }
    let m = BATCH_NORM_MOMENTUM;
    for stats in batch_norm_stats {
        let correction = if stats.count > 1 {
            stats.count as f64 / (stats.count - 1) as f64
        } else {
            1.0
        };
        for (name, batch, scale) in [
            (&stats.running_mean, &stats.mean, 1.0),
            (&stats.running_var, &stats.var, correction),
        ] {
            let running = weights
                .get_mut(name)
                .ok_or_else(|| TrainError::MissingTensor(name.clone()))?;
            for (r, &b) in running.iter_mut().zip(batch) {
                *r = ((1.0 - m) * f64::from(*r) + m * b * scale) as f32;
            }
        }
    }
    Ok(())
}

/// Whether every value is finite: `v · 0` is ±0 for a finite `v` and NaN otherwise, summed
/// in 8 independent lanes so the loop vectorizes.
fn all_finite(values: &[f32]) -> bool {
    let mut lanes = [0.0f32; 8];
    let chunks = values.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += v * 0.0;
        }
    }
    lanes.iter().chain(rest).all(|v| v.is_finite())
}

/// The dropout seed of one step: a stream of its own per run seed and step.
fn step_seed(seed: u64, global_step: u64) -> u64 {
    SplitMix64::for_stream(seed, &format!("dropout step {global_step}")).next_u64()
}

/// Trains `weights` in place from `progress` on; calls `on_batch` after every step and
/// `on_epoch` after every epoch (with its validation, from `validate`). Returns the epochs'
/// reports. The gradients come from `jit`'s compiled step when given, else from the
/// reference engine ([`step_gradients`]).
#[allow(clippy::too_many_arguments)]
pub fn train(
    graph: &Graph,
    weights: &mut Weights,
    optimizer: &mut Optimizer,
    data: &Dataset,
    options: &RunOptions,
    mut progress: Progress,
    validate: &mut dyn FnMut(&Weights) -> Result<Option<EvalReport>, TrainError>,
    on_batch: &mut dyn FnMut(&BatchProgress),
    on_epoch: &mut dyn FnMut(&EpochReport),
    mut jit: Option<&mut JitStep>,
) -> Result<Vec<EpochReport>, TrainError> {
    let settings = &options.settings;
    let n_classes = data.n_classes();
    let base_lr = settings.optimizer.lr();
    let mut reports = Vec::new();
    let mut written: Option<PathBuf> = None;
    let start_epoch = usize::try_from(progress.epoch).unwrap_or(usize::MAX);
    for epoch in start_epoch..settings.epochs {
        if options
            .max_steps
            .is_some_and(|max| progress.global_step >= max)
        {
            break;
        }
        let lr = settings.schedule.lr(base_lr, epoch);
        optimizer.set_lr(lr);
        let order = data.epoch_order(settings.seed, epoch, options.shuffle);
        let n_batches = order.len().div_ceil(settings.batch);
        let started = Instant::now();
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        let batches = super::loader::BatchLoader::start(
            data,
            &order,
            settings.batch,
            settings.seed,
            epoch,
            options.loader_threads,
        )?;
        for (batch_idx, batch) in batches.enumerate() {
            let batch = batch?;
            if options
                .max_steps
                .is_some_and(|max| progress.global_step >= max)
            {
                break;
            }
            let step = progress.global_step + 1;
            let diverged = |what, value| TrainError::Diverged {
                step,
                epoch: epoch + 1,
                batch: batch_idx + 1,
                what,
                value,
                kept: written.clone(),
            };
            let mode = TrainingMode {
                training: true,
                seed: step_seed(settings.seed, step),
            };
            let mut result = match jit.as_deref_mut() {
                Some(step) => step.step(weights, &batch.images, &batch.labels, mode.seed)?,
                None => step_gradients(
                    graph,
                    weights,
                    &batch.images,
                    &batch.labels,
                    mode,
                    options.threads,
                )?,
            };
            if !result.loss.is_finite() {
                return Err(diverged("loss", result.loss));
            }
            let mut slices: Vec<&mut [f32]> = result
                .grads
                .iter_mut()
                .map(|(_, g)| g.as_mut_slice())
                .collect();
            let norm = match settings.clip {
                Some(max_norm) => clip_grad_norm(&mut slices, max_norm)
                    .map_err(|e| TrainError::Evaluation(e.to_string()))?,
                // Only its finiteness is used: a sum of f32 squares in f64 cannot overflow,
                // so it is finite exactly when every gradient is. That check vectorizes; the
                // f64 sum (a serial chain of adds, 1 % of a LeNet step) is made only to name
                // the value of a diverged run.
                None if slices.iter().all(|g| all_finite(g)) => 0.0,
                None => slices
                    .iter()
                    .map(|g| g.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>())
                    .sum::<f64>()
                    .sqrt(),
            };
            if !norm.is_finite() {
                return Err(diverged("gradient norm", norm));
            }
            apply_step(
                weights,
                optimizer,
                &result.grads,
                &result.batch_norm_stats,
                options.threads,
            )?;
            if let Some(step) = jit.as_deref_mut() {
                step.recycle(std::mem::take(&mut result.grads));
            }
            progress.global_step = step;
            let n = batch.labels.len();
            loss_sum += result.loss * n as f64;
            correct += loss::top_k_correct(&result.logits, &batch.labels, n_classes, 1)?;
            seen += n;
            on_batch(&BatchProgress {
                epoch: epoch + 1,
                epochs: settings.epochs,
                batch: batch_idx + 1,
                n_batches,
                loss: loss_sum / seen as f64,
                accuracy: correct as f64 / seen as f64,
                images_per_second: seen as f64 / started.elapsed().as_secs_f64().max(1e-9),
            });
        }
        let seconds = started.elapsed().as_secs_f64();
        let finished = seen == order.len();
        if finished {
            progress.epoch = (epoch + 1) as u64;
        }
        if let Some(path) = &options.checkpoint {
            save_checkpoint(path, weights, Some(optimizer), &progress)?;
            written = Some(path.clone());
        }
        let validation = validate(weights)?;
        let report = EpochReport {
            epoch: epoch + 1,
            epochs: settings.epochs,
            lr,
            loss: loss_sum / seen.max(1) as f64,
            accuracy: correct as f64 / seen.max(1) as f64,
            images: seen,
            seconds,
            global_step: progress.global_step,
            validation,
        };
        on_epoch(&report);
        reports.push(report);
    }
    Ok(reports)
}

/// A network's inference forward: N images to the N×C output, or a message.
pub type Forward<'a> = dyn FnMut(&ArrayD<f32>) -> Result<ArrayD<f32>, String> + 'a;

/// Evaluates a forward over a data set in batches: mean loss, top-1 (and top-5) accuracy and
/// the confusion matrix. `forward` maps N images to the network's N×C output; `softmax_output`
/// says whether that output is probabilities (the loss is then `−log p`) or logits.
pub fn evaluate(
    data: &Dataset,
    batch: usize,
    softmax_output: bool,
    forward: &mut Forward<'_>,
) -> Result<EvalReport, TrainError> {
    let n_classes = data.n_classes();
    let order = data.epoch_order(0, 0, false);
    let mut confusion = ConfusionMatrix::new(n_classes);
    let (mut loss_sum, mut top5, mut n) = (0.0f64, 0usize, 0usize);
    for batch in data.batches(&order, batch)? {
        let output = forward(&batch.images).map_err(TrainError::Evaluation)?;
        let scores: Vec<f32> = output.iter().copied().collect();
        let result = if softmax_output {
            loss::cross_entropy_probabilities(&scores, &batch.labels, n_classes)?
        } else {
            loss::cross_entropy_logits(&scores, &batch.labels, n_classes)?
        };
        let count = batch.labels.len();
        loss_sum += f64::from(result.loss) * count as f64;
        if n_classes >= 5 {
            top5 += loss::top_k_correct(&scores, &batch.labels, n_classes, 5)?;
        }
        confusion.add_batch(&scores, &batch.labels)?;
        n += count;
    }
    Ok(EvalReport {
        n,
        loss: loss_sum / n.max(1) as f64,
        accuracy: confusion.accuracy(),
        top5: (n_classes >= 5).then(|| top5 as f64 / n.max(1) as f64),
        confusion,
    })
}

#[cfg(test)]
#[path = "trainer_tests.rs"]
mod tests;
