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
//! What the JIT cannot train yet (grouped convolutions other than depthwise, grouped
//! transposed convolutions: `lower::training_unsupported`) is refused by [`JitStep::new`]
//! with the reason, and the trainer uses the reference engine.

use super::loss;
use super::trainer::{StepGradients, TrainError};
use crate::codegen::{self, CodegenOptions, CompiledNetwork};
use crate::graph::ops::dropout_scale;
use crate::graph::{ConstId, Graph, NodeId, Op};
use crate::lower::{
    self, chw_index, BatchSync, DropoutMask, LoopProgram, ParamGrad, Storage, SyncOp, Winograd,
};
use crate::reference::backward::{is_trainable, logits_graph, BatchNormStats};
use crate::runtime::Weights;
use cranelift_entity::EntityRef;
use ndarray::ArrayD;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

/// A compiled training step for one network.
pub struct JitStep {
    /// The logits graph, optimized for training; its constants are rebound every step.
    graph: Graph,
    program: LoopProgram,
    network: CompiledNetwork,
    grads: Vec<ParamGrad>,
    syncs: Vec<BatchSync>,
    /// Each masking dropout's place in the mask input, with its node index in the reference's
    /// graph (which seeds its mask).
    dropouts: Vec<(DropoutMask, usize)>,
    /// The order of the parameters in the state dict, for the gradients' order.
    names: Vec<String>,
    classes: usize,
    /// Arenas: one per thread, or one per image when the step has batch-wide syncs (each
    /// image's activations must then outlive the phases).
    /// The images' arenas one after another (or one per thread, when the images of a
    /// thread can share one), `network.arena_len()` floats each.
    arenas: Vec<f32>,
    /// One accumulator region per thread.
    accumulators: Vec<Vec<f32>>,
    threads: usize,
    /// The numbers each frozen layer's buffers were last packed from: a frozen layer whose
    /// numbers are unchanged is not packed again (a frozen ResNet-18 base under a new head
    /// is most of the packing, and packing is most of what a step does outside the kernels).
    frozen_packed: HashMap<NodeId, Vec<f32>>,
    /// Where the steps' time went, when profiling.
    profile: Option<StepProfile>,
    /// Gradient tensors of earlier steps given back through [`recycle`](Self::recycle), by
    /// name: a step's gradients are as large as the network, and fresh allocations of that
    /// size reach the process as zeroed pages, one fault each (2 % of a ResNet-18 step).
    spare: HashMap<String, Vec<f32>>,
}

/// Time spent in each part of the steps since profiling began, in seconds: per kernel and
/// thread (so a kernel's total is its CPU time over the threads), and outside the kernels.
#[derive(Default)]
struct StepProfile {
    kernels: Vec<Vec<f64>>,
    bind: f64,
    pack: f64,
    syncs: f64,
    sums: f64,
}

impl JitStep {
    /// Compiles the training step of `graph` (initial constants from `weights`) for
    /// `threads` threads; `Ok(Err(reason))` when the JIT cannot train this network.
    pub fn new(
        graph: &Graph,
        weights: &Weights,
        threads: usize,
    ) -> Result<Result<JitStep, String>, TrainError> {
        JitStep::with_winograd(graph, weights, threads, Winograd::Auto)
    }

    /// [`new`](Self::new) with the forward's Winograd choice made explicit (for tests).
    pub fn with_winograd(
        graph: &Graph,
        weights: &Weights,
        threads: usize,
        winograd: Winograd,
    ) -> Result<Result<JitStep, String>, TrainError> {
        let mut prepared = prepare(graph)?;
        bind(&mut prepared, weights)?;
        // The masks are made from each dropout's node index in the reference's graph (the
        // logits graph before any pass); passes renumber nodes but keep their order.
        let dropout_nodes = masking_dropouts(&logits_graph(graph).unwrap_or_else(|| graph.clone()));
        if let Some(reason) = lower::training_unsupported(&prepared) {
            return Ok(Err(reason));
        }
        let threads = threads.max(1);
        let lowered =
            lower::lower_training(&prepared, Some(threads), winograd).map_err(internal)?;
        let program = lowered.lowered.program.clone();
        let options = CodegenOptions {
            threads: 1,
            ..CodegenOptions::default()
        };
        if lowered.dropouts.len() != dropout_nodes.len() {
            return Err(internal("the dropouts were not kept"));
        }
        let dropouts = lowered.dropouts.into_iter().zip(dropout_nodes).collect();
        let network = codegen::generate(lowered.lowered, &options).map_err(internal)?;
        let names = graph
            .named_params()
            .into_iter()
            .map(|(name, _, _)| name)
            .collect();
        let accumulators = (0..threads)
            .map(|_| vec![0.0; network.accumulator_len()])
            .collect();
        Ok(Ok(JitStep {
            graph: prepared,
            program,
            network,
            grads: lowered.grads,
            syncs: lowered.syncs,
            dropouts,
            names,
            classes: lowered.classes,
            arenas: Vec::new(),
            accumulators,
            threads,
            frozen_packed: HashMap::new(),
            profile: None,
            spare: HashMap::new(),
        }))
    }

    /// Starts timing each kernel and the work between kernels, for [`profile`](Self::profile);
    /// the steps then run a little slower.
    pub fn start_profile(&mut self) {
        self.profile = Some(StepProfile {
            kernels: vec![vec![0.0; self.network.kernel_count()]; self.threads],
            ..StepProfile::default()
        });
    }

    /// The time of each kernel (summed over the threads) and of the work between them, in
    /// seconds, since [`start_profile`](Self::start_profile), in program order.
    pub fn profile(&self) -> Vec<(String, f64)> {
        let Some(profile) = &self.profile else {
            return Vec::new();
        };
        let mut rows: Vec<(String, f64)> = self
            .network
            .kernel_names()
            .enumerate()
            .map(|(k, name)| (name.to_string(), profile.kernels.iter().map(|t| t[k]).sum()))
            .collect();
        rows.push(("(bind the weights to the graph)".into(), profile.bind));
        rows.push(("(pack the weights)".into(), profile.pack));
        if !self.syncs.is_empty() {
            rows.push(("(batch-wide batch-norm work)".into(), profile.syncs));
        }
        rows.push(("(sum the threads' gradients)".into(), profile.sums));
        rows
    }

    /// Bytes of one arena: the activations, gradients and scratch of one image.
    pub fn arena_bytes(&self) -> usize {
        self.network.arena_len() * std::mem::size_of::<f32>()
    }

    /// Whether each image of a batch keeps its own arena: the step has batch norms in
    /// training, whose statistics need every image's activations at once, or kernels that
    /// loop over the images.
    pub fn arena_per_image(&self) -> bool {
        !self.syncs.is_empty() || self.network.loops_over_images()
    }

    /// The frozen layers whose numbers (weights and buffers, as bound now) are those their
    /// packed buffers were made from; the others' numbers are remembered for the next step.
    fn unchanged_frozen_layers(&mut self, weights: &Weights) -> HashSet<NodeId> {
        let graph = &self.graph;
        let mut unchanged = HashSet::new();
        for (id, node) in graph.nodes.iter() {
            if node.consts.is_empty() || is_trainable(graph, id) {
                continue;
            }
            // Compared tensor by tensor against the remembered run, copied only when it
            // differs: a frozen base's numbers are not copied every step.
            let tensors = || node.consts.iter().map(|&(_, c)| current(graph, weights, c));
            let same = self.frozen_packed.get(&id).is_some_and(|packed| {
                let mut rest = packed.as_slice();
                tensors().all(|tensor| match rest.split_at_checked(tensor.len()) {
                    Some((head, tail)) if head == &tensor[..] => {
                        rest = tail;
                        true
                    }
                    _ => false,
                }) && rest.is_empty()
            });
            if same {
                unchanged.insert(id);
            } else {
                self.frozen_packed
                    .insert(id, tensors().flat_map(|t| t.into_owned()).collect());
            }
        }
        unchanged
    }

    /// The loss and gradients of one batch with the current `weights`; `seed` seeds the
    /// dropout masks as `TrainingMode::seed` does the reference's.
    pub fn step(
        &mut self,
        weights: &Weights,
        images: &ArrayD<f32>,
        labels: &[u32],
        seed: u64,
    ) -> Result<StepGradients, TrainError> {
        let started = std::time::Instant::now();
        // The packer reads the weights where they are; bound to the graph first, each was
        // copied once more every step. A tensor not in one piece is bound (copied) instead.
        crate::runtime::check_bindable(&self.graph, weights)
            .map_err(|e| TrainError::Evaluation(e.to_string()))?;
        let in_place = weights
            .iter()
            .all(|(_, tensor)| tensor.as_slice().is_some());
        if !in_place {
            bind(&mut self.graph, weights)?;
        }
        if let Some(profile) = &mut self.profile {
            profile.bind += started.elapsed().as_secs_f64();
        }
        let started = std::time::Instant::now();
        let unchanged = self.unchanged_frozen_layers(weights);
        let program = &self.program;
        let blobs = self
            .network
            .constants_mut()
            .into_iter()
            .filter(|(id, _)| match &program.buffer(*id).storage {
                Storage::Const(spec) => spec.node().is_none_or(|node| !unchanged.contains(&node)),
                _ => true,
            })
            .collect();
        let lookup = |name: &str| weights.get(name).and_then(|tensor| tensor.as_slice());
        let overrides: Option<lower::Overrides<'_>> = in_place.then_some(&lookup);
        lower::repack_constants(&self.graph, overrides, &self.program, self.threads, blobs)
            .map_err(internal)?;
        if let Some(profile) = &mut self.profile {
            profile.pack += started.elapsed().as_secs_f64();
        }
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
        let masks = self.masks(n, seed);
        let per_image = self.arena_per_image();
        let shards = self.threads.clamp(1, n.max(1));
        let bounds: Vec<(usize, usize)> = (0..shards)
            .map(|s| (s * n / shards, (s + 1) * n / shards))
            .collect();
        let arena_len = self.network.arena_len();
        let wanted = if per_image { n } else { shards };
        if (wanted as u64).saturating_mul(arena_len as u64) > crate::runtime::MAX_ELEMENTS {
            let bytes = (arena_len * std::mem::size_of::<f32>()) as f64;
            return Err(TrainError::BatchTooLarge {
                batch: n,
                gib: bytes * wanted as f64 / f64::from(1u32 << 30),
                mib: bytes / f64::from(1u32 << 20),
            });
        }
        if self.arenas.len() < wanted * arena_len {
            self.arenas.resize(wanted * arena_len, 0.0);
        }
        for accumulator in &mut self.accumulators {
            accumulator.fill(0.0);
        }
        let mut logits = vec![0.0f32; n * classes];
        let mut cuts: Vec<usize> = self.syncs.iter().map(|s| s.before_kernel).collect();
        cuts.dedup();
        let mut start = 0;
        let mut batch_norm_stats = Vec::new();
        let mut sync_grads: Vec<(String, Vec<f32>)> = Vec::new();
        for end in cuts.into_iter().chain([self.network.kernel_count()]) {
            let inputs: &[&[f32]] = if self.dropouts.is_empty() {
                &[pixels, &targets]
            } else {
                &[pixels, &targets, &masks]
            };
            self.run_phase(inputs, &mut logits, &bounds, per_image, start..end)?;
            let started = std::time::Instant::now();
            for sync in self.syncs.iter().filter(|s| s.before_kernel == end) {
                apply_sync(
                    &sync.op,
                    &self.program,
                    weights,
                    &mut self.arenas[..n * arena_len],
                    arena_len,
                    &mut batch_norm_stats,
                    &mut sync_grads,
                )?;
            }
            if let Some(profile) = &mut self.profile {
                profile.syncs += started.elapsed().as_secs_f64();
            }
            start = end;
        }
        let started = std::time::Instant::now();
        let scale = 1.0 / n.max(1) as f32;
        let mut by_name = self.summed_grads(shards, scale);
        for (name, mut sum) in sync_grads {
            sum.iter_mut().for_each(|g| *g *= scale);
            by_name.push((name, sum));
        }
        let position = |name: &str| self.names.iter().position(|n| n == name);
        by_name.sort_by_key(|(name, _)| position(name));
        if let Some(profile) = &mut self.profile {
            profile.sums += started.elapsed().as_secs_f64();
        }
        let result = loss::cross_entropy_logits(&logits, labels, classes)?;
        Ok(StepGradients {
            loss: f64::from(result.loss),
            grads: by_name,
            logits,
            batch_norm_stats,
        })
    }

    /// Each parameter's gradient in PyTorch's layout: the first `shards` threads'
    /// accumulators summed and scaled by `scale`. The tensors are shared among the step's
    /// threads, largest first so that they finish together (serial, this was a sixth of
    /// ResNet-18's work outside the kernels at two threads).
    /// Each is written into the buffer [`recycle`](Self::recycle) gave back for it, if any.
    fn summed_grads(&mut self, shards: usize, scale: f32) -> Vec<(String, Vec<f32>)> {
        let spare: Vec<std::sync::Mutex<Vec<f32>>> = self
            .grads
            .iter()
            .map(|g| self.spare.remove(&g.name).unwrap_or_default().into())
            .collect();
        let accumulators = &self.accumulators[..shards.min(self.accumulators.len())];
        let grads = &self.grads;
        let mut order: Vec<usize> = (0..grads.len()).collect();
        order.sort_by_key(|&g| std::cmp::Reverse(grads[g].len));
        // Starting a thread costs more than summing LeNet-5's gradients.
        let total: usize = grads.iter().map(|g| g.len).sum();
        let threads = if total < 1 << 18 { 1 } else { self.threads };
        crate::parallel::parallel_map(
            &order,
            threads,
            || (),
            |(), &g| {
                let grad = &grads[g];
                let mut sum = std::mem::take(
                    &mut *spare[g]
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner),
                );
                sum.clear();
                sum.resize(grad.numel, 0.0);
                let regions: Vec<&[f32]> =
                    accumulators.iter().filter_map(|a| grad.region(a)).collect();
                grad.write_scaled(&regions, scale, &mut sum);
                (grad.name.clone(), sum)
            },
        )
    }

    /// Gives back the gradients of a step once they are applied, for the next step to
    /// write its own in.
    pub fn recycle(&mut self, grads: Vec<(String, Vec<f32>)>) {
        self.spare.extend(grads);
    }

    /// The mask input for a batch of `n`: each image's dropout multipliers, from the element's
    /// index in the whole batch tensor in PyTorch's order, as the reference draws them.
    fn masks(&self, n: usize, seed: u64) -> Vec<f32> {
        let Some((last, _)) = self.dropouts.last() else {
            return Vec::new();
        };
        let per_image = last.offset + last.len.next_multiple_of(4);
        let mut masks = vec![0.0f32; n * per_image];
        for (mask, node) in &self.dropouts {
            for image in 0..n {
                let at = image * per_image + mask.offset;
                for (r, m) in masks[at..at + mask.len].iter_mut().enumerate() {
                    let element = match mask.hwc {
                        Some(hwc) => chw_index(r, hwc),
                        None => r,
                    };
                    *m = dropout_scale(mask.p, seed, *node, image * mask.len + element);
                }
            }
        }
        masks
    }

    /// Runs `kernels` for every image, a contiguous shard of images per thread.
    fn run_phase(
        &mut self,
        inputs: &[&[f32]],
        logits: &mut [f32],
        bounds: &[(usize, usize)],
        per_image: bool,
        kernels: std::ops::Range<usize>,
    ) -> Result<(), TrainError> {
        let classes = self.classes;
        let network = &self.network;
        // Each shard's outputs, arenas and accumulators, split off disjointly.
        let mut outputs = logits;
        let arena_len = network.arena_len();
        let mut arenas = self.arenas.as_mut_slice();
        let mut work = Vec::new();
        let mut times: Vec<Option<&mut [f64]>> = match &mut self.profile {
            Some(profile) => profile
                .kernels
                .iter_mut()
                .map(|t| Some(t.as_mut_slice()))
                .collect(),
            None => Vec::new(),
        };
        times.resize_with(bounds.len(), || None);
        for ((&(start, end), accumulator), times) in
            bounds.iter().zip(self.accumulators.iter_mut()).zip(times)
        {
            let (output, rest) = outputs.split_at_mut((end - start) * classes);
            outputs = rest;
            let take = if per_image { end - start } else { 1 };
            let (own, rest) = arenas.split_at_mut(take * arena_len);
            arenas = rest;
            work.push(Shard {
                images: start..end,
                output,
                arenas: own,
                accumulator,
                times,
            });
        }
        let run = |shard: Shard<'_>| {
            let Shard {
                images,
                output,
                arenas,
                accumulator,
                mut times,
            } = shard;
            if network.loops_over_images() {
                return network
                    .run_kernels(
                        inputs,
                        output,
                        arenas,
                        accumulator,
                        images,
                        kernels.clone(),
                        times,
                    )
                    .map_err(|e| e.to_string());
            }
            let start = images.start;
            for image in images {
                let arena = if per_image {
                    &mut arenas[(image - start) * arena_len..][..arena_len]
                } else {
                    &mut arenas[..arena_len]
                };
                let output = &mut output[(image - start) * classes..][..classes];
                network
                    .run_kernels(
                        inputs,
                        output,
                        arena,
                        accumulator,
                        image..image + 1,
                        kernels.clone(),
                        times.as_deref_mut(),
                    )
                    .map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        };
        let results: Vec<Result<(), String>> = std::thread::scope(|scope| {
            let mut work = work.into_iter();
            let first = work.next();
            let handles: Vec<_> = work.map(|w| scope.spawn(move || run(w))).collect();
            let mut results = vec![first.map_or(Ok(()), run)];
            results.extend(handles.into_iter().map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a training thread panicked".into()))
            }));
            results
        });
        for result in results {
            result.map_err(TrainError::Evaluation)?;
        }
        Ok(())
    }
}

/// One thread's part of a phase: its images, their outputs, their arenas (one per image, or
/// one for all), its accumulators.
struct Shard<'a> {
    images: std::ops::Range<usize>,
    output: &'a mut [f32],
    arenas: &'a mut [f32],
    accumulator: &'a mut Vec<f32>,
    /// Where to add each kernel's time, when profiling.
    times: Option<&'a mut [f64]>,
}

/// The arena offset of `buffer`.
fn arena_offset(program: &LoopProgram, buffer: lower::ir::BufferId) -> Result<usize, TrainError> {
    match program.buffer(buffer).storage {
        Storage::Arena { offset } => Ok(offset),
        _ => Err(internal("a sync buffer is not in the arena")),
    }
}

/// One batch-wide step between phases (`lower::SyncOp`), over every image's arena.
fn apply_sync(
    op: &SyncOp,
    program: &LoopProgram,
    weights: &Weights,
    arenas: &mut [f32],
    arena_len: usize,
    stats_out: &mut Vec<BatchNormStats>,
    grads: &mut Vec<(String, Vec<f32>)>,
) -> Result<(), TrainError> {
    let tensor = |name: &str| -> Result<Vec<f64>, TrainError> {
        let t = weights
            .get(name)
            .ok_or_else(|| TrainError::MissingTensor(name.to_string()))?;
        Ok(t.iter().map(|&v| f64::from(v)).collect())
    };
    match op {
        SyncOp::BatchNormForward {
            names,
            eps,
            channels,
            channels_padded,
            pixels,
            stats,
            affine,
        } => {
            let (c, cp) = (*channels, *channels_padded);
            let stats = arena_offset(program, *stats)?;
            let affine = arena_offset(program, *affine)?;
            let n = (arenas.len() / arena_len.max(1)) as f64;
            let p = *pixels as f64;
            // Chan et al.: the images' means average to the batch's (equal counts), and the
            // squared deviations add, with each image's mean's deviation counted p times.
            let mut mean = vec![0.0f64; c];
            for arena in arenas.chunks(arena_len.max(1)) {
                for (ch, m) in mean.iter_mut().enumerate() {
                    *m += f64::from(arena[stats + ch]) / n;
                }
            }
            let mut m2 = vec![0.0f64; c];
            for arena in arenas.chunks(arena_len.max(1)) {
                for (ch, total) in m2.iter_mut().enumerate() {
                    let d = f64::from(arena[stats + ch]) - mean[ch];
                    *total += f64::from(arena[stats + cp + ch]) + p * d * d;
                }
            }
            let count = n * p;
            let var: Vec<f64> = m2.iter().map(|&v| (v / count).max(0.0)).collect();
            let gamma = tensor(&names[0])?;
            let beta = tensor(&names[1])?;
            let mut values = vec![0.0f32; 4 * cp];
            for ch in 0..c {
                let inv_sigma = 1.0 / (var[ch] + eps).sqrt();
                let scale = gamma[ch] * inv_sigma;
                values[ch] = scale as f32;
                values[cp + ch] = (beta[ch] - mean[ch] * scale) as f32;
                values[2 * cp + ch] = mean[ch] as f32;
                values[3 * cp + ch] = inv_sigma as f32;
            }
            for arena in arenas.chunks_mut(arena_len.max(1)) {
                arena[affine..affine + 4 * cp].copy_from_slice(&values);
            }
            stats_out.push(BatchNormStats {
                running_mean: names[2].clone(),
                running_var: names[3].clone(),
                mean,
                var,
                count: count as usize,
            });
        }
        SyncOp::BatchNormBackward {
            names,
            channels,
            channels_padded,
            pixels,
            affine,
            sums,
            coefficients,
        } => {
            let (c, cp) = (*channels, *channels_padded);
            let sums = arena_offset(program, *sums)?;
            let affine = arena_offset(program, *affine)?;
            let mut d_beta = vec![0.0f64; c];
            let mut d_gamma = vec![0.0f64; c];
            for arena in arenas.chunks(arena_len.max(1)) {
                for ch in 0..c {
                    d_beta[ch] += f64::from(arena[sums + ch]);
                    d_gamma[ch] += f64::from(arena[sums + cp + ch]);
                }
            }
            let count = (arenas.len() / arena_len.max(1) * pixels) as f64;
            if let Some(coefficients) = coefficients {
                let coefficients = arena_offset(program, *coefficients)?;
                let gamma = tensor(&names[0])?;
                let first = arenas
                    .chunks(arena_len.max(1))
                    .next()
                    .ok_or_else(|| internal("an empty batch"))?;
                let mut values = vec![0.0f32; 3 * cp];
                for ch in 0..c {
                    let mean = f64::from(first[affine + 2 * cp + ch]);
                    let inv_sigma = f64::from(first[affine + 3 * cp + ch]);
                    let a = gamma[ch] * inv_sigma;
                    let (b, g) = (d_beta[ch] / count, d_gamma[ch] / count);
                    let k1 = -a * g * inv_sigma;
                    values[ch] = a as f32;
                    values[cp + ch] = k1 as f32;
                    values[2 * cp + ch] = (-a * b - k1 * mean) as f32;
                }
                for arena in arenas.chunks_mut(arena_len.max(1)) {
                    arena[coefficients..coefficients + 3 * cp].copy_from_slice(&values);
                }
            }
            // Sums over the batch, like the accumulators: the caller scales both by 1/N.
            let to_f32 = |v: Vec<f64>| v.into_iter().map(|g| g as f32).collect();
            grads.push((names[0].clone(), to_f32(d_gamma)));
            grads.push((names[1].clone(), to_f32(d_beta)));
        }
    }
    Ok(())
}

/// The graph a training step is lowered from: the logits graph (a final softmax becomes the
/// loss's) with only a pass that keeps every trainable tensor and every dropout as they are —
/// no batch-norm folding (it would change the weights the gradients are for), no removal of
/// dropout, no residual fusion (its backward is not compiled yet).
fn prepare(graph: &Graph) -> Result<Graph, TrainError> {
    let mut prepared = logits_graph(graph).unwrap_or_else(|| graph.clone());
    let options = crate::opt::Options {
        fuse: true,
        only: Some(vec!["fuse_conv_activation".to_string()]),
    };
    crate::opt::optimize(&mut prepared, &options)
        .map_err(|e| TrainError::Evaluation(e.to_string()))?;
    Ok(prepared)
}

/// The node indices of the dropouts that mask in training, in graph order.
fn masking_dropouts(graph: &Graph) -> Vec<usize> {
    graph
        .nodes
        .iter()
        .filter(|(_, n)| matches!(n.op, Op::Dropout { p } if p > 0.0) && !n.frozen)
        .map(|(id, _)| id.index())
        .collect()
}

/// The memory of a training step, as `cnnc summary --train` reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StepMemory {
    /// Bytes of one arena: the forward's activations, the gradients and scratch of one image.
    pub arena_bytes: usize,
    /// Whether each image of a batch has its own arena (batch norms in training, or kernels
    /// that loop over the images), rather than each thread.
    pub arena_per_image: bool,
    /// Bytes of the parameter-gradient accumulators (one set per thread).
    pub accumulator_bytes: usize,
}

/// The memory a compiled training step of `graph` would take, or why the JIT cannot train
/// it (it then trains on the reference interpreter). No weights are needed.
pub fn step_memory(graph: &Graph) -> Result<StepMemory, String> {
    let prepared = prepare(graph).map_err(|e| e.to_string())?;
    if let Some(reason) = lower::training_unsupported(&prepared) {
        return Err(reason);
    }
    let lowered =
        lower::lower_training(&prepared, None, Winograd::Auto).map_err(|e| e.to_string())?;
    let program = &lowered.lowered.program;
    let f32_bytes = std::mem::size_of::<f32>();
    Ok(StepMemory {
        arena_bytes: program.arena_len * f32_bytes,
        arena_per_image: !lowered.syncs.is_empty()
            || program.kernels.iter().any(|kernel| kernel.has_images()),
        accumulator_bytes: program.accumulator_len * f32_bytes,
    })
}

/// The numbers of constant `c` of `graph` as a step packs them: the tensor of its name in
/// `weights` if it is learned, else the graph's.
fn current<'a>(graph: &'a Graph, weights: &'a Weights, c: ConstId) -> Cow<'a, [f32]> {
    let constant = &graph.consts[c];
    match weights.get(&constant.name).and_then(|t| t.as_slice()) {
        Some(values) if constant.learned => Cow::Borrowed(values),
        _ => constant.read(),
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
