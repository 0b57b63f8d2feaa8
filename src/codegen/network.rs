//! `CompiledNetwork`: the safe face of the generated code.
//!
//! Native code trusts its table: every address in it must point at a buffer at least as long
//! as the lowering assumed. This wrapper is what makes that true. It owns the JIT module, the
//! packed constants and the arena, checks every input tensor's shape and the batch before a
//! single native instruction runs, makes the inputs contiguous, allocates the output for the
//! whole batch, and only then calls the entry function. Nothing on the native side can
//! panic, so no unwinding ever crosses a JIT frame.

use super::image_pool::ImagePool;
use super::pool::{self, ScheduledKernel, Step, WorkerPool};
use super::CodegenOptions;
use crate::graph::{NodeId, Shape};
use crate::lower::ir::BufferId;
use crate::runtime::RunError;
use crate::runtime::MAX_ELEMENTS;
use cranelift_jit::JITModule;
use ndarray::{ArrayD, IxDyn};
use std::sync::{Mutex, PoisonError};

/// `kernel(table, image, begin, end)`.
pub(super) type KernelFn = unsafe extern "C" fn(*const usize, i64, i64, i64);
/// `entry(table, n_images)`.
pub(super) type EntryFn = unsafe extern "C" fn(*const usize, i64);

/// Each kernel's name and its time in seconds.
pub type KernelTimes = Vec<(String, f64)>;

pub(super) struct CompiledKernel {
    pub name: String,
    pub function: KernelFn,
    pub parts: usize,
    /// Its dynamic count of vector operations ([`pool::kernel_work`]).
    pub work: u64,
    /// Whether it loops over the images of its call itself (`Kernel::has_images`).
    pub images: bool,
}

/// The least work (floating-point operations per image) for which a run is split over
/// threads.
const PARALLEL_MIN_FLOPS: u64 = 20_000_000;

/// The least work (floating-point operations per batch) for which a batch's images are
/// shared out over threads.
const BATCH_MIN_FLOPS: u64 = 1_000_000;

/// The steps of a run split over `options.threads` threads, or none if it runs on one: a
/// network under [`PARALLEL_MIN_FLOPS`], or with no kernel worth splitting, runs on the
/// calling thread alone. Checked mode splits every network and kernel that can be split, so
/// that its range checks see every split.
pub(super) fn plan_steps(
    kernels: &[CompiledKernel],
    options: &CodegenOptions,
    flops: u64,
) -> Vec<Step> {
    let threads = options.threads.max(1);
    if threads == 1 || (flops < PARALLEL_MIN_FLOPS && !options.checked) {
        return Vec::new();
    }
    let sizes: Vec<_> = kernels.iter().map(|k| (k.parts, k.work)).collect();
    let steps = pool::schedule(&sizes, threads, options.checked);
    if steps.iter().any(|step| matches!(step, Step::Split { .. })) {
        steps
    } else {
        Vec::new()
    }
}

/// A network compiled to native code, ready to run on batches of inputs.
pub struct CompiledNetwork {
    pub(super) name: String,
    /// Owns the code; freed when the network is dropped.
    pub(super) module: Mutex<Option<JITModule>>,
    pub(super) entry: EntryFn,
    pub(super) kernels: Vec<CompiledKernel>,
    /// How an image is split over threads; empty when it runs on one thread.
    pub(super) steps: Vec<Step>,
    /// Floating-point operations per image (2 × MACs): whether a batch is worth sharing out.
    pub(super) flops: u64,
    /// The worker threads, started by the first run split over threads; a run that finds
    /// them busy with another runs on its own thread.
    pub(super) pool: Mutex<Option<WorkerPool>>,
    /// The worker threads of a network with no kernel worth splitting (no `steps`), which
    /// share out a batch's images; started by the first such run.
    pub(super) image_pool: Mutex<Option<ImagePool>>,
    /// The packed constants the table points into; never moved or resized.
    pub(super) _constants: Vec<Box<[f32]>>,
    /// The buffer each of `_constants` fills.
    pub(super) constant_ids: Vec<BufferId>,
    /// The table with constant and kernel slots filled in; arena, inputs and output are
    /// filled per run.
    pub(super) table: Vec<usize>,
    pub(super) output_slot: usize,
    pub(super) input_slots: Vec<usize>,
    pub(super) arena_len: usize,
    pub(super) accumulator_slot: Option<usize>,
    pub(super) accumulator_len: usize,
    /// The table slot of a call's image count, when some kernel loops over images; the
    /// images' arenas then lie one after another.
    pub(super) images_slot: Option<usize>,
    /// One arena kept between runs; a concurrent run allocates its own.
    pub(super) arena: Mutex<Vec<f32>>,
    /// The other threads' arenas when a batch's images run whole on several threads at once;
    /// allocated by the first such run.
    pub(super) thread_arenas: Mutex<Vec<Vec<f32>>>,
    /// Each input's name and shape.
    pub(super) inputs: Vec<(String, Shape)>,
    pub(super) output: Shape,
    /// The shapes of the outputs after the first (`return (a, b)`), which follow it in each
    /// image's output region.
    pub(super) extra_outputs: Vec<Shape>,
    /// Elements of each image's output region: every output's.
    pub(super) output_len: usize,
    /// The graph's output node, which a too-large output is reported at.
    pub(super) output_node: NodeId,
    pub(super) options: CodegenOptions,
    pub(super) constant_bytes: usize,
}

impl Drop for CompiledNetwork {
    fn drop(&mut self) {
        // Stop the workers first, although they call no kernel between runs.
        drop(
            self.pool
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        drop(
            self.image_pool
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let module = self
            .module
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(module) = module {
            // SAFETY: the function pointers into this module live in `self` and die with it.
            unsafe { module.free_memory() };
        }
    }
}

impl CompiledNetwork {
    /// Bytes of the activation arena (per image; images reuse it).
    pub fn arena_bytes(&self) -> usize {
        self.arena_len * std::mem::size_of::<f32>()
    }

    /// Bytes of the packed weights.
    pub fn weight_bytes(&self) -> usize {
        self.constant_bytes
    }

    pub fn n_kernels(&self) -> usize {
        self.kernels.len()
    }

    /// The kernels' names, in execution order.
    pub fn kernel_names(&self) -> impl Iterator<Item = &str> {
        self.kernels.iter().map(|k| k.name.as_str())
    }

    /// Runs the network on `inputs` (one tensor per network input, N×H×W×C, or N×C for a flat
    /// input) and returns N×H×W×C, or N×C for a flat output: the layouts of
    /// [`reference::run`](crate::reference::run).
    pub fn run(&self, inputs: &[ArrayD<f32>]) -> Result<ArrayD<f32>, RunError> {
        first(self.run_all(inputs)?)
    }

    /// [`run`](Self::run) for every output of a network that returns several
    /// (`return (a, b)`): one tensor per output, in order.
    pub fn run_all(&self, inputs: &[ArrayD<f32>]) -> Result<Vec<ArrayD<f32>>, RunError> {
        // SAFETY: `run_with` passes a table satisfying the contract of `execute`.
        self.run_with(inputs, &mut |table, batch| unsafe {
            self.execute(table, batch)
        })
    }

    /// Every output's shape, in order.
    pub fn output_shapes(&self) -> Vec<Shape> {
        std::iter::once(self.output)
            .chain(self.extra_outputs.iter().copied())
            .collect()
    }

    /// Checks the inputs, prepares the table and the output, and calls `execute` with them.
    fn run_with(
        &self,
        inputs: &[ArrayD<f32>],
        execute: &mut dyn FnMut(&[usize], usize),
    ) -> Result<Vec<ArrayD<f32>>, RunError> {
        let batch = self.check_inputs(inputs)?;
        if self.images_slot.is_some() {
            return Err(RunError::Malformed(format!(
                "`{}` has kernels that loop over images; it runs through `run_kernels`",
                self.name
            )));
        }
        let out_len = self.output_len;
        if (batch as u64).saturating_mul(out_len as u64) > MAX_ELEMENTS {
            return Err(RunError::TooLarge {
                layer: format!("network `{}`", self.name),
                batch,
                shape: self.output,
                node: self.output_node,
            });
        }
        let contiguous: Vec<_> = inputs.iter().map(|t| t.as_standard_layout()).collect();
        let mut output = vec![0.0f32; batch * out_len];
        let mut table = self.table.clone();
        for (&slot, tensor) in self.input_slots.iter().zip(&contiguous) {
            table[slot] = tensor.as_ptr() as usize;
        }
        table[self.output_slot] = output.as_mut_ptr() as usize;

        let mut kept = self.arena.try_lock().ok();
        let mut own = Vec::new();
        let arena: &mut Vec<f32> = match kept.as_deref_mut() {
            Some(arena) => arena,
            None => {
                own.resize(self.arena_len, 0.0);
                &mut own
            }
        };
        table[0] = arena.as_mut_ptr() as usize;
        // Only a training step has accumulators, and it runs through `run_kernels`; a plain
        // run of one gets a scratch region, summed into and dropped.
        let mut accumulators = vec![0.0f32; self.accumulator_len];
        if let Some(slot) = self.accumulator_slot {
            table[slot] = accumulators.as_mut_ptr() as usize;
        }
        // The table now holds, for each buffer of the lowered program, an address with
        // at least as many elements as the verifier proved every access stays within: the
        // inputs were checked to have `batch` images of their declared shapes, the output
        // and arena were allocated at the planned sizes, and the constants were packed at
        // theirs. All of them outlive the call, which does not retain them. This is the
        // contract every caller of native code relies on.
        execute(&table, batch);
        drop(kept);
        split_outputs(output, batch, &self.output_shapes())
    }

    /// Runs the network like [`run`](Self::run), timing each kernel: returns the output and
    /// every kernel's name with its time in seconds, summed over the batch. On several
    /// threads, a split kernel's time is its step's, from the threads' meeting before it to
    /// the one after; kernels too small to split run on the calling thread, one by one.
    pub fn run_profiled(
        &self,
        inputs: &[ArrayD<f32>],
    ) -> Result<(ArrayD<f32>, KernelTimes), RunError> {
        let mut times = vec![0.0; self.kernels.len()];
        let outputs = self.run_with(inputs, &mut |table, batch| {
            // SAFETY: `run_with` passes a table satisfying the contract of `execute`.
            if unsafe { self.execute_on_pool(table, batch, Some(&mut times)) } {
                return;
            }
            for image in 0..batch {
                for (kernel, time) in self.kernels.iter().zip(times.iter_mut()) {
                    let start = std::time::Instant::now();
                    // SAFETY: as above.
                    unsafe {
                        (kernel.function)(table.as_ptr(), image as i64, 0, kernel.parts as i64)
                    };
                    *time += start.elapsed().as_secs_f64();
                }
            }
        })?;
        let names = self.kernels.iter().map(|k| k.name.clone());
        Ok((first(outputs)?, names.zip(times).collect()))
    }

    /// Runs every kernel on every image: split over the worker threads if the network's
    /// plan says so and no other run is using them, else on this thread through the entry
    /// function.
    ///
    /// # Safety
    /// `table` must satisfy the contract established in `run_with`.
    unsafe fn execute(&self, table: &[usize], batch: usize) {
        // SAFETY: as the caller guarantees.
        if !unsafe { self.execute_on_pool(table, batch, None) } {
            // SAFETY: as the caller guarantees.
            unsafe { (self.entry)(table.as_ptr(), batch as i64) };
        }
    }

    /// How many of a batch's first images to run whole, one thread each: all but the last
    /// `batch % threads` (which are split kernel by kernel), or all of them if the network
    /// cannot be split; none for a batch of one, on one thread, or when the whole batch is
    /// under [`PARALLEL_MIN_FLOPS`] (for a network that can be split) or [`BATCH_MIN_FLOPS`]
    /// (for one that cannot). Checked mode shares out whatever it can.
    pub fn images_shared_out(&self, batch: usize) -> usize {
        let threads = self.options.threads.max(1);
        let least = if self.steps.is_empty() {
            BATCH_MIN_FLOPS
        } else {
            PARALLEL_MIN_FLOPS
        };
        let enough = self.options.checked || self.flops.saturating_mul(batch as u64) >= least;
        if threads < 2 || batch < 2 || !enough {
            0
        } else if self.steps.is_empty() {
            batch
        } else {
            batch / threads * threads
        }
    }

    /// Runs every kernel on every image on the worker threads (started if need be) and this
    /// one, adding each kernel's time to `times` if given; returns false, having run
    /// nothing, if the run is not to be split, the workers are busy with another run, or
    /// none could be started.
    ///
    /// # Safety
    /// `table` must satisfy the contract established in `run_with`.
    unsafe fn execute_on_pool(
        &self,
        table: &[usize],
        batch: usize,
        times: Option<&mut [f64]>,
    ) -> bool {
        let whole_images = if times.is_some() {
            0
        } else {
            self.images_shared_out(batch)
        };
        if self.steps.is_empty() {
            // SAFETY: as the caller guarantees.
            return whole_images > 0 && unsafe { self.share_out_images(table, batch) };
        }
        let Ok(mut pool) = self.pool.try_lock() else {
            return false;
        };
        let pool = pool.get_or_insert_with(|| {
            let kernels = self.scheduled_kernels();
            WorkerPool::start(kernels, self.steps.clone(), self.options.threads)
        });
        if pool.threads() < 2 {
            return false;
        }
        let threads = if whole_images > 0 { pool.threads() } else { 1 };
        self.with_thread_tables(table, threads, |tables| {
            // SAFETY: as the caller guarantees for `table`; the others differ from it only
            // in their arena, each as long as the caller's and used by one thread, and they
            // outlive the run.
            unsafe { pool.run(tables, batch, whole_images, times) }
        });
        true
    }

    /// Runs a batch of a network with no kernel worth splitting on the image pool (started
    /// if need be) and this thread, each image whole on one thread; returns false, having
    /// run nothing, if the pool is busy with another run or no worker could be started.
    ///
    /// # Safety
    /// `table` must satisfy the contract established in `run_with`.
    unsafe fn share_out_images(&self, table: &[usize], batch: usize) -> bool {
        let Ok(mut pool) = self.image_pool.try_lock() else {
            return false;
        };
        let threads = self.options.threads;
        let pool = pool.get_or_insert_with(|| {
            let kernels = self.scheduled_kernels();
            ImagePool::start(kernels, threads, pool::spin_bound(threads))
        });
        if pool.threads() < 2 {
            return false;
        }
        self.with_thread_tables(table, pool.threads(), |tables| {
            // SAFETY: as for `execute_on_pool`.
            unsafe { pool.run(tables, batch) }
        });
        true
    }

    /// The kernels as the worker pools call them.
    fn scheduled_kernels(&self) -> Vec<ScheduledKernel> {
        self.kernels
            .iter()
            .map(|k| ScheduledKernel {
                function: k.function,
                parts: k.parts,
            })
            .collect()
    }

    /// Calls `run` with `threads` tables: `table` first, then copies of it that differ only
    /// in their arena, one each (kept between runs unless another run holds them).
    fn with_thread_tables(
        &self,
        table: &[usize],
        threads: usize,
        run: impl FnOnce(&[*const usize]),
    ) {
        let mut kept = self.thread_arenas.try_lock().ok();
        let mut own = Vec::new();
        let arenas: &mut Vec<Vec<f32>> = match kept.as_deref_mut() {
            Some(arenas) => arenas,
            None => &mut own,
        };
        if threads > arenas.len() + 1 {
            arenas.resize_with(threads - 1, || vec![0.0; self.arena_len]);
        }
        let copies: Vec<Vec<usize>> = arenas
            .iter_mut()
            .take(threads - 1)
            .map(|arena| {
                let mut copy = table.to_vec();
                copy[0] = arena.as_mut_ptr() as usize;
                copy
            })
            .collect();
        let mut tables = vec![table.as_ptr()];
        tables.extend(copies.iter().map(|copy| copy.as_ptr()));
        run(&tables);
    }

    /// The packed constants, each with the buffer it fills, to be overwritten in place
    /// (`lower::repack_constants`): a training step's way to run on updated weights without
    /// compiling again. The blobs are never moved, so the table's addresses stay valid.
    pub fn constants_mut(&mut self) -> Vec<(BufferId, &mut [f32])> {
        self.constant_ids
            .iter()
            .copied()
            .zip(self._constants.iter_mut().map(|blob| &mut blob[..]))
            .collect()
    }

    /// Elements of the arena [`run_kernels`](Self::run_kernels) needs.
    pub fn arena_len(&self) -> usize {
        self.arena_len
    }

    /// Elements of the accumulator region [`run_kernels`](Self::run_kernels) needs.
    pub fn accumulator_len(&self) -> usize {
        self.accumulator_len
    }

    /// The number of kernels, which [`run_kernels`](Self::run_kernels) ranges over.
    pub fn kernel_count(&self) -> usize {
        self.kernels.len()
    }

    /// Runs kernels `kernels`, on this thread, for images `images` of a batch whose inputs are
    /// `inputs` (each a whole batch, flat), writing those images' outputs to `output` (which
    /// holds only them, from `images.start`), in `arena`, adding to `accumulators`. Unlike
    /// [`run`](Self::run), arena and accumulators are the caller's and keep what the kernels
    /// leave in them: a training step runs its kernels in phases, with work over the whole
    /// batch between them, and sums its parameter gradients over the images
    /// (`lower::ParamGrad`). With `times` (one per kernel of the network), adds each kernel's
    /// time in seconds to its entry.
    ///
    /// A network with kernels that loop over images ([`loops_over_images`](Self::loops_over_images))
    /// needs one arena per image, one after another in `arena`. Its kernels run in runs: a
    /// run of per-image kernels image by image (an image's tensors stay in cache from one
    /// kernel to the next), then a kernel that loops over the images once for all of them.
    #[allow(clippy::too_many_arguments)]
    pub fn run_kernels(
        &self,
        inputs: &[&[f32]],
        output: &mut [f32],
        arena: &mut [f32],
        accumulators: &mut [f32],
        images: std::ops::Range<usize>,
        kernels: std::ops::Range<usize>,
        mut times: Option<&mut [f64]>,
    ) -> Result<(), RunError> {
        let out_len = self.output_len;
        let n = images.len();
        let arenas = if self.images_slot.is_some() { n } else { 1 };
        let fits = inputs.len() == self.inputs.len()
            && inputs
                .iter()
                .zip(&self.inputs)
                .all(|(given, (_, shape))| given.len() >= images.end * shape.numel())
            && output.len() >= n * out_len
            && arena.len() >= arenas.saturating_mul(self.arena_len)
            && accumulators.len() >= self.accumulator_len
            && kernels.end <= self.kernels.len()
            && times.as_ref().is_none_or(|t| t.len() >= self.kernels.len());
        if !fits {
            return Err(RunError::Malformed(format!(
                "the buffers given to `{}` do not fit it",
                self.name
            )));
        }
        let mut table = self.table.clone();
        for (&slot, given) in self.input_slots.iter().zip(inputs) {
            table[slot] = given.as_ptr() as usize;
        }
        // The kernels address image `i`'s output at `base + i·out_len`; `output` starts at
        // image `images.start`, so the base is that many images before it (an address never
        // dereferenced below `output`'s start). The same holds for the arenas when each image
        // has its own.
        let f32_bytes = std::mem::size_of::<f32>();
        let base = output.as_mut_ptr() as usize;
        table[self.output_slot] = base.wrapping_sub(images.start * out_len * f32_bytes);
        table[0] = match self.images_slot {
            Some(slot) => {
                table[slot] = n;
                (arena.as_mut_ptr() as usize)
                    .wrapping_sub(images.start * self.arena_len * f32_bytes)
            }
            None => arena.as_mut_ptr() as usize,
        };
        if let Some(slot) = self.accumulator_slot {
            table[slot] = accumulators.as_mut_ptr() as usize;
        }
        let mut run = |index: usize, image: usize| {
            let kernel = &self.kernels[index];
            let start = times.is_some().then(std::time::Instant::now);
            // SAFETY: the table holds, for every buffer, an address with as many elements
            // as the verifier proved each access needs: the inputs hold `images.end`
            // images, the output slice those of the range, arena and accumulators their
            // planned lengths (an arena per image of the range where kernels loop over
            // images, whose count the table holds), the constants their packed lengths;
            // all outlive the call.
            unsafe { (kernel.function)(table.as_ptr(), image as i64, 0, kernel.parts as i64) };
            if let (Some(times), Some(start)) = (times.as_deref_mut(), start) {
                times[index] += start.elapsed().as_secs_f64();
            }
        };
        let mut first = kernels.start;
        while first < kernels.end {
            if self.kernels[first].images {
                run(first, images.start);
                first += 1;
                continue;
            }
            let end = (first..kernels.end)
                .find(|&k| self.kernels[k].images)
                .unwrap_or(kernels.end);
            for image in images.clone() {
                for index in first..end {
                    run(index, image);
                }
            }
            first = end;
        }
        Ok(())
    }

    /// Whether some kernel loops over the images of its call: then each image of a call
    /// to [`run_kernels`](Self::run_kernels) needs its own arena.
    pub fn loops_over_images(&self) -> bool {
        self.images_slot.is_some()
    }

    /// Checks the inputs against the network's; returns the batch size.
    fn check_inputs(&self, inputs: &[ArrayD<f32>]) -> Result<usize, RunError> {
        crate::runtime::check_batch(&self.name, &self.inputs, inputs)
    }
}

fn first(outputs: Vec<ArrayD<f32>>) -> Result<ArrayD<f32>, RunError> {
    outputs
        .into_iter()
        .next()
        .ok_or_else(|| RunError::Malformed("it has no output".into()))
}

/// The outputs of `batch` images from their output regions (each image's outputs one after
/// another), each N×H×W×C or N×C for a flat one.
fn split_outputs(
    region: Vec<f32>,
    batch: usize,
    shapes: &[Shape],
) -> Result<Vec<ArrayD<f32>>, RunError> {
    let dims = |shape: &Shape| {
        if shape.flat {
            vec![batch, shape.c]
        } else {
            vec![batch, shape.h, shape.w, shape.c]
        }
    };
    let tensor = |shape: &Shape, values: Vec<f32>| {
        ArrayD::from_shape_vec(IxDyn(&dims(shape)), values)
            .map_err(|e| RunError::Malformed(e.to_string()))
    };
    if let [only] = shapes {
        return Ok(vec![tensor(only, region)?]);
    }
    let region_len: usize = shapes.iter().map(|s| s.numel()).sum();
    let mut offset = 0;
    let mut outputs = Vec::with_capacity(shapes.len());
    for shape in shapes {
        let len = shape.numel();
        let values = (0..batch)
            .flat_map(|image| {
                let start = image * region_len + offset;
                region[start..start + len].iter().copied()
            })
            .collect();
        outputs.push(tensor(shape, values)?);
        offset += len;
    }
    Ok(outputs)
}
