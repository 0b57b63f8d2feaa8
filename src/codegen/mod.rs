//! Code generation: loop nests to Cranelift IR to native code, and the safe wrapper that runs
//! it (`LoopProgram → CompiledNetwork`).
//!
//! One network is one `JITModule` holding one function per kernel and an entry function that
//! runs them in order for each image of a batch, over one arena. Every function takes a table
//! of buffer addresses (`layout.rs`) rather than having addresses baked in, so the code is the
//! same on every run and `cnnc emit clif` is deterministic.
//!
//! - `kernel.rs` translates one kernel (strength reduction, loop shape, checked accesses);
//! - `jit.rs` sets up the ISA and the module and builds the entry function;
//! - `pack.rs` packs the weights into the layouts the kernels index;
//! - `network.rs` is [`CompiledNetwork`], which validates inputs before any native code runs;
//! - `pool.rs` splits a run over worker threads that meet at a barrier (`barrier.rs`) between
//!   kernels;
//! - `vmath.rs` computes `exp` and `sigmoid` inline on vectors; `math.rs` holds `tanh`, the
//!   one function the code calls.

mod barrier;
mod jit;
mod kernel;
mod layout;
mod math;
mod network;
mod pack;
mod pool;
mod vmath;
mod winograd_pack;

pub use network::{CompiledNetwork, KernelTimes};

use crate::diag::{Code, Diagnostic};
use crate::graph::{Graph, NodeId};
use crate::lower::{self, LoopProgram, LowerError, LowerOptions, Storage, Winograd};
use crate::runtime::WeightsError;
use jit::Generator;
use layout::TableLayout;
use network::{CompiledKernel, EntryFn, KernelFn};
use std::fmt::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use thiserror::Error;

/// How to generate code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodegenOptions {
    /// Check every load and store against its buffer at run time, trapping on a violation.
    /// The lowering already proves every access in bounds; this catches code-generation bugs.
    pub checked: bool,
    /// Threads to split each kernel's work over (1 runs everything on the caller's thread;
    /// networks of under 20 MFLOP, and kernels too small to split, run on one; checked mode
    /// splits whatever can be split).
    pub threads: usize,
    /// Which 3×3 convolutions use Winograd's algorithm (`lower/winograd.rs`).
    pub winograd: Winograd,
}

impl Default for CodegenOptions {
    fn default() -> Self {
        CodegenOptions {
            checked: false,
            threads: 1,
            winograd: Winograd::default(),
        }
    }
}

#[derive(Debug, Error)]
pub enum CodegenError {
    #[error(transparent)]
    Lower(#[from] LowerError),
    /// Weights given by name (`compile`) do not fit the graph.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error("the graph is malformed: {0}")]
    Malformed(String),
    #[error("{0}")]
    Isa(String),
    #[error("Cranelift failed: {0}")]
    Cranelift(String),
}

impl CodegenError {
    /// The layer the error is about, if it is about one.
    pub fn node(&self) -> Option<NodeId> {
        match self {
            CodegenError::Weights(error) => error.node(),
            _ => None,
        }
    }
}

/// The diagnostic of a failed compilation: at the layer concerned where there is one. Only a
/// bug in cnnc or a CPU without the instructions the code needs gets here, since the weights
/// are checked when they are loaded.
impl CodegenError {
    pub fn to_diagnostic(&self, graph: &Graph) -> Diagnostic {
        if let CodegenError::Weights(error) = self {
            return error.to_diagnostic(graph);
        }
        let message = format!("cannot compile network `{}`: {self}", graph.name);
        let diagnostic = match self.node() {
            Some(node) => graph.diagnostic_at(node, Code::Codegen, message, "this layer"),
            None => Diagnostic::global(Code::Codegen, message),
        };
        match self {
            CodegenError::Isa(_) | CodegenError::Weights(_) => diagnostic,
            CodegenError::Lower(_) | CodegenError::Malformed(_) | CodegenError::Cranelift(_) => {
                diagnostic.with_help(
                    "this is a bug in cnnc: please report it with the program; \
                 `--backend reference` runs without the code generator",
                )
            }
        }
    }
}

/// Compiles `graph` to native code with `weights` bound to its learned constants (every one
/// must be there, with its shape).
pub fn compile(
    graph: &Graph,
    weights: &crate::runtime::Weights,
    options: &CodegenOptions,
) -> Result<CompiledNetwork, CodegenError> {
    let mut graph = graph.clone();
    crate::runtime::bind(&mut graph, weights)?;
    compile_graph(&graph, options)
}

/// Compiles `graph` with its own constants to native code; seeded and folded constants are
/// generated while they are packed, on `options.threads` threads.
pub fn compile_graph(
    graph: &Graph,
    options: &CodegenOptions,
) -> Result<CompiledNetwork, CodegenError> {
    let program = lower::lower_with(graph, &lower_options(options))?;
    let layout = TableLayout::new(&program);
    let mut table = vec![0usize; layout.len()];
    let threads = options.threads.max(1);
    let const_buffers: Vec<_> = program
        .buffers
        .iter()
        .filter_map(|buffer| match &buffer.storage {
            Storage::Const(spec) => Some((buffer, spec)),
            _ => None,
        })
        .collect();
    let packed = parallel_map(
        &const_buffers,
        threads,
        || (),
        |(), &(buffer, spec)| pack::pack(graph, spec, buffer.len),
    );
    let mut constants = Vec::new();
    let mut constant_bytes = 0;
    for (&(buffer, _), data) in const_buffers.iter().zip(packed) {
        let data = data?.into_boxed_slice();
        table[layout.slot(buffer).0] = data.as_ptr() as usize;
        constant_bytes += data.len() * std::mem::size_of::<f32>();
        constants.push(data);
    }

    let mut generator = Generator::new(options)?;
    let ids = program
        .kernels
        .iter()
        .map(|kernel| generator.declare_kernel(kernel))
        .collect::<Result<Vec<_>, _>>()?;
    generator.define_kernels(&ids, &program, &layout, threads)?;
    let entry_id = generator.declare_entry()?;
    let func = generator.entry_function(entry_id, &program, &layout);
    generator.define(entry_id, func)?;
    let mut module = generator.module;
    module
        .finalize_definitions()
        .map_err(|e| CodegenError::Cranelift(format!("finalizing: {e}")))?;

    let mut kernels = Vec::new();
    for (k, (kernel, &id)) in program.kernels.iter().zip(&ids).enumerate() {
        let address = module.get_finalized_function(id);
        table[layout.kernel_slot(k)] = address as usize;
        // SAFETY: the function was compiled with the kernel signature, which is
        // `extern "C" fn(*const usize, i64, i64, i64)` under the host's C calling convention.
        let function = unsafe { std::mem::transmute::<*const u8, KernelFn>(address) };
        kernels.push(CompiledKernel {
            name: kernel.name.clone(),
            function,
            parts: kernel.parts(),
            work: pool::kernel_work(kernel),
        });
    }
    // SAFETY: as above, with the entry signature `extern "C" fn(*const usize, i64)`.
    let entry = unsafe {
        std::mem::transmute::<*const u8, EntryFn>(module.get_finalized_function(entry_id))
    };

    let inputs = graph
        .inputs
        .iter()
        .map(|&id| {
            let name = graph.nodes[id]
                .op
                .input_name()
                .map_or_else(|| id.to_string(), str::to_string);
            (name, graph.shape(id))
        })
        .collect();
    let flops = 2 * graph.total_macs();
    let steps = network::plan_steps(&kernels, options, flops);
    Ok(CompiledNetwork {
        name: graph.name.clone(),
        module: Mutex::new(Some(module)),
        entry,
        kernels,
        steps,
        pool: Mutex::new(None),
        _constants: constants,
        table,
        output_slot: layout.output_slot(),
        input_slots: (0..program.input_lens.len())
            .map(|k| layout.input_slot(k))
            .collect(),
        arena_len: program.arena_len,
        arena: Mutex::new(vec![0.0; program.arena_len]),
        inputs,
        output: graph.shape(graph.output()),
        output_node: graph.output(),
        options: options.clone(),
        constant_bytes,
    })
}

/// `f` applied to every item, on up to `threads` threads (this one included) that take items
/// in turn from a shared counter, each with its own `state`; the results in the items' order.
/// If the system refuses to start a thread, the others do its share.
fn parallel_map<T: Sync, S, R: Send>(
    items: &[T],
    threads: usize,
    state: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, &T) -> R + Sync,
) -> Vec<R> {
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        let mut state = state();
        return items.iter().map(|item| f(&mut state, item)).collect();
    }
    let next = AtomicUsize::new(0);
    let work = || {
        let mut state = state();
        let mut done = Vec::new();
        loop {
            let index = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(index) else {
                break;
            };
            done.push((index, f(&mut state, item)));
        }
        done
    };
    let mut results = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads)
            .filter_map(|_| std::thread::Builder::new().spawn_scoped(scope, work).ok())
            .collect();
        let mut results = work();
        for helper in helpers {
            match helper.join() {
                Ok(done) => results.extend(done),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        results
    });
    results.sort_by_key(|&(index, _)| index);
    results.into_iter().map(|(_, result)| result).collect()
}

/// The Cranelift IR of every function of `graph`'s code: the text of `cnnc emit clif`.
///
/// Weights do not appear in it (kernels read constants through the table), so none are
/// needed.
pub fn emit_clif(graph: &Graph, options: &CodegenOptions) -> Result<String, CodegenError> {
    let program = lower::lower_with(graph, &lower_options(options))?;
    clif_text(&program, options)
}

fn lower_options(options: &CodegenOptions) -> LowerOptions {
    LowerOptions {
        winograd: options.winograd,
    }
}

fn clif_text(program: &LoopProgram, options: &CodegenOptions) -> Result<String, CodegenError> {
    let layout = TableLayout::new(program);
    let mut generator = Generator::new(options)?;
    let mut out = String::new();
    for kernel in &program.kernels {
        let id = generator.declare_kernel(kernel)?;
        let func = generator.kernel_function(id, program, &layout, kernel);
        let _ = writeln!(out, "; kernel {}: {}", kernel.name, kernel.comment);
        let _ = writeln!(out, "{}", func.display());
    }
    let id = generator.declare_entry()?;
    let func = generator.entry_function(id, program, &layout);
    let _ = writeln!(out, "; entry: every kernel, for each image");
    let _ = write!(out, "{}", func.display());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::parallel_map;

    /// Results come back in the items' order, each computed once, however many threads take
    /// items and whatever state each carries.
    #[test]
    fn parallel_map_keeps_the_order() {
        let items: Vec<u64> = (0..1_000).collect();
        for threads in [1, 2, 3, 8] {
            let found = parallel_map(&items, threads, Vec::new, |seen: &mut Vec<u64>, &x| {
                seen.push(x);
                (x * x, seen.len())
            });
            let squares: Vec<u64> = found.iter().map(|&(square, _)| square).collect();
            assert_eq!(squares, items.iter().map(|x| x * x).collect::<Vec<_>>());
            let per_thread_total: usize = found.iter().filter(|&&(_, n)| n == 1).count();
            assert!((1..=threads).contains(&per_thread_total), "{threads}");
        }
    }
}
