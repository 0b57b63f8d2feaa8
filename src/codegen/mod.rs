//! Code generation: loop nests to Cranelift IR to native code, and the safe wrapper that runs
//! it (`LoopProgram + PackedConstants → CompiledNetwork`, [`generate`]).
//!
//! The input is `lower::Lowered`: the loop program (which carries the network's input and
//! output shapes) and the constant blobs lowering packed. Nothing here reads the graph; the
//! pipeline conveniences [`compile`], [`compile_graph`] and [`emit_clif`] take one only to
//! hand it to `lower`.
//!
//! One network is one `JITModule` holding one function per kernel and an entry function that
//! runs them in order for each image of a batch, over one arena. Every function takes a table
//! of buffer addresses (`layout.rs`) rather than having addresses baked in, so the code is the
//! same on every run and `cnnc emit clif` is deterministic.
//!
//! - `kernel.rs` translates one kernel (strength reduction, loop shape, checked accesses);
//! - `jit.rs` sets up the ISA and the module and builds the entry function;
//! - `network.rs` is [`CompiledNetwork`], which validates inputs before any native code runs;
//! - `pool.rs` splits a run over worker threads that meet at a barrier (`barrier.rs`) between
//!   kernels;
//! - `vmath.rs` computes `exp`, `sigmoid` and `tanh` inline on vectors; the code calls no
//!   function outside the module.

mod barrier;
mod image_pool;
mod jit;
mod kernel;
mod layout;
mod network;
mod pool;
mod vmath;

pub use network::{CompiledNetwork, KernelTimes};

use crate::diag::{Code, Diagnostic};
use crate::graph::{Graph, NodeId};
use crate::lower::{
    self, LoopProgram, LowerError, LowerOptions, Lowered, PackedConstants, Storage, Winograd,
};
use crate::runtime::WeightsError;
use cranelift_frontend::FunctionBuilderContext;
use jit::{Generator, MachineCode};
use layout::TableLayout;
use lower::ir::BufferId;
use network::{CompiledKernel, EntryFn, KernelFn};
use std::fmt::Write;
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

// The three functions below are conveniences of the whole pipeline (tests, `emit clif`): the
// only ones here that take a `Graph`, and only to hand it to `lower`.

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

/// Compiles `graph` with its own constants to native code: lowers it, then [`generate`]s
/// the code while packing its constants (seeded and folded ones are computed then) on the
/// same `options.threads` threads.
pub fn compile_graph(
    graph: &Graph,
    options: &CodegenOptions,
) -> Result<CompiledNetwork, CodegenError> {
    let program = lower::lower_with(graph, &lower_options(options))?;
    let pack = |buffer: &lower::Buffer| lower::pack_buffer(graph, buffer);
    generate_with(program, Constants::ToPack(&pack), options)
}

/// Generates native code for a lowered program and its packed constants; the graph is not
/// needed (nor seen) here.
pub fn generate(
    lowered: Lowered,
    options: &CodegenOptions,
) -> Result<CompiledNetwork, CodegenError> {
    let Lowered { program, constants } = lowered;
    generate_with(program, Constants::Packed(constants), options)
}

/// A packer of one constant buffer (`lower::pack_buffer` with its graph).
pub type PackFn<'a> = &'a (dyn Fn(&lower::Buffer) -> Result<Box<[f32]>, LowerError> + Sync);

/// The constants of a program to generate code for: packed already, or to be packed by
/// [`generate_with`] on the threads that compile the kernels.
pub enum Constants<'a> {
    Packed(PackedConstants),
    ToPack(PackFn<'a>),
}

/// One job of the threads that generate a network: pack a constant buffer or compile a
/// kernel.
enum Job {
    Pack(BufferId),
    Compile(usize),
}

enum Done {
    Packed(Box<[f32]>),
    Compiled(MachineCode),
}

/// Generates native code for a lowered program, packing its constants on the same threads
/// as its kernels are compiled if they are not packed yet: the largest constants first, then
/// the kernels, so that the threads, taking jobs in turn, finish together. Packing and
/// compiling do not depend on each other; the code is the same whatever the threads.
pub fn generate_with(
    program: LoopProgram,
    constants: Constants<'_>,
    options: &CodegenOptions,
) -> Result<CompiledNetwork, CodegenError> {
    let mut phases = crate::phases::Phases::start();
    let layout = TableLayout::new(&program);
    let mut table = vec![0usize; layout.len()];
    let threads = options.threads.max(1);
    let mut generator = Generator::new(options)?;
    let ids = program
        .kernels
        .iter()
        .map(|kernel| generator.declare_kernel(kernel))
        .collect::<Result<Vec<_>, _>>()?;
    let (mut packed, pack) = match constants {
        Constants::Packed(constants) => (constants.blobs, None),
        Constants::ToPack(pack) => (Vec::new(), Some(pack)),
    };
    let mut jobs = Vec::new();
    if pack.is_some() {
        let mut buffers: Vec<_> = program
            .buffers
            .values()
            .filter(|buffer| matches!(buffer.storage, Storage::Const(_)))
            .collect();
        buffers.sort_by_key(|buffer| std::cmp::Reverse(buffer.len));
        jobs.extend(buffers.iter().map(|buffer| Job::Pack(buffer.id)));
    }
    jobs.extend((0..program.kernels.len()).map(Job::Compile));
    let compiler = generator.compiler();
    let done = crate::parallel::parallel_map(
        &jobs,
        threads,
        FunctionBuilderContext::new,
        |function_context, job| match *job {
            Job::Pack(buffer) => match pack {
                Some(pack) => pack(program.buffer(buffer))
                    .map(Done::Packed)
                    .map_err(CodegenError::from),
                None => Err(CodegenError::Malformed("no packer".into())),
            },
            Job::Compile(k) => compiler
                .compile(
                    ids[k],
                    &program,
                    &layout,
                    &program.kernels[k],
                    function_context,
                )
                .map(Done::Compiled),
        },
    );
    phases.mark("pack and compile");
    let mut codes = Vec::with_capacity(ids.len());
    for (job, done) in jobs.iter().zip(done) {
        match (job, done?) {
            (&Job::Pack(buffer), Done::Packed(data)) => packed.push((buffer, data)),
            (Job::Compile(_), Done::Compiled(code)) => codes.push(code),
            _ => {
                return Err(CodegenError::Malformed(
                    "a job's result of another kind".into(),
                ))
            }
        }
    }
    for (&id, code) in ids.iter().zip(&codes) {
        generator.place(id, code)?;
    }
    drop(codes);
    // In buffer order, whatever order they were packed in.
    packed.sort_by_key(|&(buffer, _)| buffer);
    let constant_bytes = packed
        .iter()
        .map(|(_, blob)| blob.len() * std::mem::size_of::<f32>())
        .sum();
    let mut blobs = Vec::with_capacity(packed.len());
    let mut constant_ids = Vec::with_capacity(packed.len());
    for (buffer, data) in packed {
        constant_ids.push(buffer);
        let buffer = program.buffer(buffer);
        if !matches!(buffer.storage, Storage::Const(_)) || data.len() < buffer.len {
            return Err(CodegenError::Malformed(format!(
                "the packed constant for {} does not fit its buffer",
                buffer.name
            )));
        }
        table[layout.slot(buffer).0] = data.as_ptr() as usize;
        blobs.push(data);
    }
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
            images: kernel.has_images(),
        });
    }
    // SAFETY: as above, with the entry signature `extern "C" fn(*const usize, i64)`.
    let entry = unsafe {
        std::mem::transmute::<*const u8, EntryFn>(module.get_finalized_function(entry_id))
    };

    phases.mark("entry, finalize");
    let steps = network::plan_steps(&kernels, options, program.flops);
    Ok(CompiledNetwork {
        name: program.name.clone(),
        module: Mutex::new(Some(module)),
        entry,
        kernels,
        steps,
        flops: program.flops,
        pool: Mutex::new(None),
        image_pool: Mutex::new(None),
        _constants: blobs,
        constant_ids,
        table,
        output_slot: layout.output_slot(),
        input_slots: (0..program.input_lens.len())
            .map(|k| layout.input_slot(k))
            .collect(),
        arena_len: program.arena_len,
        accumulator_slot: layout.accumulator_slot(),
        accumulator_len: program.accumulator_len,
        images_slot: layout.images_slot(),
        arena: Mutex::new(vec![0.0; program.arena_len]),
        thread_arenas: Mutex::new(Vec::new()),
        inputs: program.inputs.clone(),
        output: program.output_shape,
        extra_outputs: program.extra_outputs.iter().map(|&(_, s)| s).collect(),
        output_len: program.output_len,
        output_node: program.output_node,
        options: options.clone(),
        constant_bytes,
    })
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
