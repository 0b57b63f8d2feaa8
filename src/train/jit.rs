//! Training steps on the JIT: the loss's gradients from compiled backward kernels
//! (`lower::lower_training`), with the same contract as the reference engine's
//! `trainer::step_gradients`, which stays the oracle the tests compare against.
//!
//! The step program is compiled once. Before each step the current weights are bound to the
//! graph's constants and packed into the program's constant blobs in place (O(parameters),
//! no compilation); then each thread runs a contiguous shard of the batch image by image in
//! its own arena, whose pinned buffers accumulate the parameter gradients; the shards' sums
//! are added in thread order and scaled by `1/N`. The result is deterministic for a thread
//! count, and equals the reference's up to the order of the sums.
//!
//! What the JIT cannot train yet (batch norm in training mode, dropout, some ops' backward:
//! `lower::training_unsupported`) is refused by [`JitStep::new`] with the reason, and the
//! trainer uses the reference engine.

use super::loss;
use super::trainer::{StepGradients, TrainError};
use crate::codegen::{self, CodegenOptions, CompiledNetwork};
use crate::graph::{Graph, Op};
use crate::lower::{self, LoopProgram, ParamGrad};
use crate::reference::backward::logits_graph;
use crate::runtime::Weights;
use ndarray::ArrayD;

/// A compiled training step for one network.
pub struct JitStep {
    /// The logits graph, optimized for training; its constants are rebound every step.
    graph: Graph,
    program: LoopProgram,
    network: CompiledNetwork,
    grads: Vec<ParamGrad>,
    /// The order of the parameters in the state dict, for the gradients' order.
    names: Vec<String>,
    classes: usize,
    arenas: Vec<Vec<f32>>,
    threads: usize,
}

impl JitStep {
    /// Compiles the training step of `graph` (initial constants from `weights`) for
    /// `threads` threads; `Ok(Err(reason))` when the JIT cannot train this network.
    pub fn new(
        graph: &Graph,
        weights: &Weights,
        threads: usize,
    ) -> Result<Result<JitStep, String>, TrainError> {
        if let Some((id, node)) = graph
            .nodes
            .iter()
            .find(|(_, n)| matches!(n.op, Op::Dropout { .. }) && !n.frozen)
        {
            return Ok(Err(format!("{id} ({}) is dropout", node.path)));
        }
        let mut prepared = logits_graph(graph).unwrap_or_else(|| graph.clone());
        bind(&mut prepared, weights)?;
        // Only passes that keep every trainable tensor as it is: no batch-norm folding (it
        // would change the weights the gradients are for), no residual fusion (its backward
        // is not compiled yet).
        let options = crate::opt::Options {
            fuse: true,
            only: Some(vec![
                "remove_identities".to_string(),
                "fuse_conv_activation".to_string(),
            ]),
        };
        crate::opt::optimize(&mut prepared, &options)
            .map_err(|e| TrainError::Evaluation(e.to_string()))?;
        if let Some(reason) = lower::training_unsupported(&prepared) {
            return Ok(Err(reason));
        }
        let threads = threads.max(1);
        let lowered = lower::lower_training(&prepared, threads).map_err(internal)?;
        let program = lowered.lowered.program.clone();
        let grads = lowered.grads;
        let classes = lowered.classes;
        let options = CodegenOptions {
            threads: 1,
            ..CodegenOptions::default()
        };
        let network = codegen::generate(lowered.lowered, &options).map_err(internal)?;
        let names = graph
            .named_params()
            .into_iter()
            .map(|(name, _, _)| name)
            .collect();
        let arenas = (0..threads)
            .map(|_| vec![0.0; network.arena_len()])
            .collect();
        Ok(Ok(JitStep {
            graph: prepared,
            program,
            network,
            grads,
            names,
            classes,
            arenas,
            threads,
        }))
    }

    /// Bytes of one thread's arena: activations, gradients and accumulators of one image.
    pub fn arena_bytes(&self) -> usize {
        self.network.arena_len() * std::mem::size_of::<f32>()
    }

    /// The loss and gradients of one batch with the current `weights`.
    pub fn step(
        &mut self,
        weights: &Weights,
        images: &ArrayD<f32>,
        labels: &[u32],
    ) -> Result<StepGradients, TrainError> {
        bind(&mut self.graph, weights)?;
        let constants =
            lower::pack_constants(&self.graph, &self.program, self.threads).map_err(internal)?;
        self.network.update_constants(constants).map_err(internal)?;
        let n = labels.len();
        let classes = self.classes;
        let images = images.as_standard_layout();
        let pixels = images.as_slice().unwrap_or(&[]);
        let mut targets = vec![0.0f32; n * classes];
        for (i, &label) in labels.iter().enumerate() {
            if let Some(t) = targets.get_mut(i * classes + label as usize) {
                *t = 1.0;
            }
        }
        let mut logits = vec![0.0f32; n * classes];
        let shards = self.threads.clamp(1, n.max(1));
        let bounds: Vec<(usize, usize)> = (0..shards)
            .map(|s| (s * n / shards, (s + 1) * n / shards))
            .collect();
        let network = &self.network;
        let grads = &self.grads;
        let inputs = [pixels, targets.as_slice()];
        let mut outputs: Vec<&mut [f32]> = Vec::new();
        let mut rest = logits.as_mut_slice();
        for &(start, end) in &bounds {
            let (head, tail) = rest.split_at_mut((end - start) * classes);
            outputs.push(head);
            rest = tail;
        }
        let results: Vec<Result<(), String>> = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .arenas
                .iter_mut()
                .zip(outputs)
                .zip(&bounds)
                .map(|((arena, output), &(start, end))| {
                    let inputs = &inputs;
                    let run = move || {
                        for grad in grads {
                            if let Some(g) = arena.get_mut(grad.offset..grad.offset + grad.len) {
                                g.fill(0.0);
                            }
                        }
                        network
                            .run_images(inputs, output, arena, start..end)
                            .map_err(|e| e.to_string())
                    };
                    if start == 0 {
                        Err(run)
                    } else {
                        Ok(scope.spawn(run))
                    }
                })
                .collect();
            handles
                .into_iter()
                .map(|h| match h {
                    Err(mut run) => run(),
                    Ok(handle) => handle
                        .join()
                        .unwrap_or_else(|_| Err("a training thread panicked".into())),
                })
                .collect()
        });
        for result in results {
            result.map_err(TrainError::Evaluation)?;
        }
        let scale = 1.0 / n.max(1) as f32;
        let mut by_name: Vec<(String, Vec<f32>)> = Vec::with_capacity(self.grads.len());
        for grad in &self.grads {
            let mut sum = vec![0.0f32; grad.numel];
            for arena in self.arenas.iter().take(shards) {
                grad.add_to(arena, &mut sum);
            }
            sum.iter_mut().for_each(|g| *g *= scale);
            by_name.push((grad.name.clone(), sum));
        }
        let position = |name: &str| self.names.iter().position(|n| n == name);
        by_name.sort_by_key(|(name, _)| position(name));
        let result = loss::cross_entropy_logits(&logits, labels, classes)?;
        Ok(StepGradients {
            loss: f64::from(result.loss),
            grads: by_name,
            logits,
            batch_norm_stats: Vec::new(),
        })
    }
}

/// Binds `weights` to `graph`'s learned constants.
fn bind(graph: &mut Graph, weights: &Weights) -> Result<(), TrainError> {
    crate::runtime::bind(graph, weights).map_err(|e| TrainError::Evaluation(e.to_string()))
}

/// An error that only a bug in cnnc can cause: the network passed `training_unsupported`.
fn internal(error: impl std::fmt::Display) -> TrainError {
    TrainError::Evaluation(format!(
        "compiling the training step failed (a bug in cnnc; `--backend reference` trains without the JIT): {error}"
    ))
}
