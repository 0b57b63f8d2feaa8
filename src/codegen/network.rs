//! `CompiledNetwork`: the safe face of the generated code.
//!
//! Native code trusts its table: every address in it must point at a buffer at least as long
//! as the lowering assumed. This wrapper is what makes that true. It owns the JIT module, the
//! packed constants and the arena, checks every input tensor's shape and the batch before a
//! single native instruction runs, makes the inputs contiguous, allocates the output for the
//! whole batch, and only then calls the entry function. Nothing on the native side can
//! panic, so no unwinding ever crosses a JIT frame.

use super::barrier::SpinBarrier;
use super::CodegenOptions;
use crate::graph::{NodeId, Shape};
use crate::reference::RunError;
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
}

/// The least work (floating-point operations per image) for which a run is split over
/// threads.
const PARALLEL_MIN_FLOPS: u64 = 20_000_000;

/// A network compiled to native code, ready to run on batches of inputs.
pub struct CompiledNetwork {
    pub(super) name: String,
    /// Owns the code; freed when the network is dropped.
    pub(super) module: Mutex<Option<JITModule>>,
    pub(super) entry: EntryFn,
    pub(super) kernels: Vec<CompiledKernel>,
    /// The packed constants the table points into; never moved or resized.
    pub(super) _constants: Vec<Box<[f32]>>,
    /// The table with constant and kernel slots filled in; arena, inputs and output are
    /// filled per run.
    pub(super) table: Vec<usize>,
    pub(super) output_slot: usize,
    pub(super) input_slots: Vec<usize>,
    pub(super) arena_len: usize,
    /// One arena kept between runs; a concurrent run allocates its own.
    pub(super) arena: Mutex<Vec<f32>>,
    /// Each input's name and shape.
    pub(super) inputs: Vec<(String, Shape)>,
    pub(super) output: Shape,
    /// The graph's output node, which a too-large output is reported at.
    pub(super) output_node: NodeId,
    pub(super) options: CodegenOptions,
    pub(super) constant_bytes: usize,
    /// 2 × the multiply-accumulates of one image.
    pub(super) flops: u64,
}

impl Drop for CompiledNetwork {
    fn drop(&mut self) {
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
        // SAFETY: `run_with` passes a table satisfying the contract of `execute`.
        self.run_with(inputs, &mut |table, batch| unsafe {
            self.execute(table, batch)
        })
    }

    /// Checks the inputs, prepares the table and the output, and calls `execute` with them.
    fn run_with(
        &self,
        inputs: &[ArrayD<f32>],
        execute: &mut dyn FnMut(&[usize], usize),
    ) -> Result<ArrayD<f32>, RunError> {
        let batch = self.check_inputs(inputs)?;
        let out_len = self.output.numel();
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
        // The table now holds, for each buffer of the lowered program, an address with
        // at least as many elements as the verifier proved every access stays within: the
        // inputs were checked to have `batch` images of their declared shapes, the output
        // and arena were allocated at the planned sizes, and the constants were packed at
        // theirs. All of them outlive the call, which does not retain them. This is the
        // contract every caller of native code relies on.
        execute(&table, batch);
        drop(kept);

        let dims = if self.output.flat {
            vec![batch, self.output.c]
        } else {
            vec![batch, self.output.h, self.output.w, self.output.c]
        };
        ArrayD::from_shape_vec(IxDyn(&dims), output).map_err(|e| RunError::Malformed(e.to_string()))
    }

    /// Runs the network like [`run`](Self::run), on one thread, timing each kernel: returns
    /// the output and every kernel's name with its time in seconds, summed over the batch.
    pub fn run_profiled(
        &self,
        inputs: &[ArrayD<f32>],
    ) -> Result<(ArrayD<f32>, KernelTimes), RunError> {
        let mut times: Vec<(String, f64)> =
            self.kernels.iter().map(|k| (k.name.clone(), 0.0)).collect();
        let output = self.run_with(inputs, &mut |table, batch| {
            for image in 0..batch {
                for (kernel, time) in self.kernels.iter().zip(times.iter_mut()) {
                    let start = std::time::Instant::now();
                    // SAFETY: `run_with` passes a table satisfying the contract in `run`.
                    unsafe {
                        (kernel.function)(table.as_ptr(), image as i64, 0, kernel.parts as i64)
                    };
                    time.1 += start.elapsed().as_secs_f64();
                }
            }
        })?;
        Ok((output, times))
    }

    /// Runs every kernel on every image; on one thread through the entry function, on
    /// several by splitting each kernel's parts between threads that meet at a barrier
    /// before the next kernel.
    ///
    /// # Safety
    /// `table` must satisfy the contract established in `run_with`.
    unsafe fn execute(&self, table: &[usize], batch: usize) {
        // Below about a millisecond of work, starting threads costs more than they save.
        let threads = if self.flops < PARALLEL_MIN_FLOPS {
            1
        } else {
            self.options.threads.max(1)
        };
        if threads == 1 {
            // SAFETY: as the caller guarantees.
            unsafe { (self.entry)(table.as_ptr(), batch as i64) };
            return;
        }
        let barrier = SpinBarrier::new(threads);
        let table_address = table.as_ptr() as usize;
        let work = |thread: usize| {
            for image in 0..batch {
                for kernel in &self.kernels {
                    // Contiguous shares of the parts; parts beyond the split stay with the
                    // last threads, none is run twice.
                    let begin = kernel.parts * thread / threads;
                    let end = kernel.parts * (thread + 1) / threads;
                    if begin < end {
                        // SAFETY: as the caller guarantees; sub-ranges of parts write
                        // disjoint elements (checked by the lowering's verifier).
                        unsafe {
                            (kernel.function)(
                                table_address as *const usize,
                                image as i64,
                                begin as i64,
                                end as i64,
                            )
                        };
                    }
                    barrier.wait();
                }
            }
        };
        std::thread::scope(|scope| {
            for thread in 1..threads {
                let work = &work;
                scope.spawn(move || work(thread));
            }
            work(0);
        });
    }

    /// Checks the inputs against the network's; returns the batch size.
    fn check_inputs(&self, inputs: &[ArrayD<f32>]) -> Result<usize, RunError> {
        crate::reference::check_batch(&self.name, &self.inputs, inputs)
    }
}
