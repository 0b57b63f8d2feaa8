//! The engines that run a compiled network, behind one interface for `run` and `bench`: the
//! reference interpreter, or the optimizer followed by the Cranelift JIT.

use crate::codegen::{self, CodegenOptions, CompiledNetwork, KernelTimes};
use crate::diag::Diagnostic;
use crate::graph::Graph;
use crate::opt;
use crate::reference;
use ndarray::ArrayD;
use std::time::Instant;

#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// Optimize the graph and compile it to native code with Cranelift.
    Jit,
    /// The plain ndarray interpreter: slow, obviously correct, the oracle of the tests.
    Reference,
}

impl Backend {
    pub fn describe(self) -> &'static str {
        match self {
            Backend::Jit => "Cranelift JIT",
            Backend::Reference => "reference interpreter",
        }
    }
}

/// How to build an engine.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    pub backend: Backend,
    /// Threads for the JIT's kernels.
    pub threads: usize,
    /// Bounds-check every load and store of the generated code.
    pub checked: bool,
    pub opt: opt::Options,
    /// Use Winograd's algorithm where it pays (`--no-winograd` clears it).
    pub winograd: bool,
}

/// Every convolution Winograd's algorithm pays for, or none (`--no-winograd`).
pub fn winograd_choice(on: bool) -> crate::lower::Winograd {
    if on {
        crate::lower::Winograd::Auto
    } else {
        crate::lower::Winograd::Off
    }
}

/// The default thread count: every core the process may use.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub enum Engine {
    /// The interpreter, on the graph's own constants.
    Reference { graph: Graph },
    Jit {
        /// The optimized graph the code was generated from, for locating errors.
        graph: Graph,
        compiled: Box<CompiledNetwork>,
    },
}

/// An engine and what building it cost.
pub struct Built {
    pub engine: Engine,
    pub compile_ms: f64,
}

impl Engine {
    /// Builds the engine for `graph`, whose constants hold the weights to run with (bound
    /// from a file or seeded): for the JIT, optimizes the graph (folding batch norms into
    /// constants computed at packing) and compiles it. Errors are diagnostics at the layer
    /// concerned where there is one.
    pub fn build(graph: Graph, options: &EngineOptions) -> Result<Built, Box<Diagnostic>> {
        let start = Instant::now();
        let engine = match options.backend {
            Backend::Reference => Engine::Reference { graph },
            Backend::Jit => {
                let mut graph = graph;
                let mut phases = crate::phases::Phases::start();
                opt::optimize(&mut graph, &options.opt)
                    .map_err(|error| Box::new(error.to_diagnostic()))?;
                phases.mark("optimize");
                let codegen_options = CodegenOptions {
                    checked: options.checked,
                    threads: options.threads.max(1),
                    winograd: winograd_choice(options.winograd),
                };
                // Lowering, then code generation packing the constants (computing the seeded
                // and folded ones) on the threads that compile the kernels; the code generator
                // sees only the loop program and a function packing each constant buffer.
                let compiled = codegen::compile_graph(&graph, &codegen_options)
                    .map_err(|error| Box::new(error.to_diagnostic(&graph)))?;
                Engine::Jit {
                    graph,
                    compiled: Box::new(compiled),
                }
            }
        };
        Ok(Built {
            engine,
            compile_ms: start.elapsed().as_secs_f64() * 1e3,
        })
    }

    /// Every output of the network, in order (one but for `return (a, b)`).
    pub fn run_all(&self, inputs: &[ArrayD<f32>]) -> Result<Vec<ArrayD<f32>>, Box<Diagnostic>> {
        let result = match self {
            Engine::Reference { graph } => reference::evaluate_all(graph, inputs),
            Engine::Jit { compiled, .. } => compiled.run_all(inputs),
        };
        result.map_err(|error| Box::new(error.to_diagnostic(self.graph())))
    }

    pub fn run(&self, inputs: &[ArrayD<f32>]) -> Result<ArrayD<f32>, Box<Diagnostic>> {
        let result = match self {
            Engine::Reference { graph } => reference::evaluate(graph, inputs),
            Engine::Jit { compiled, .. } => compiled.run(inputs),
        };
        result.map_err(|error| Box::new(error.to_diagnostic(self.graph())))
    }

    /// Runs once, timing each kernel (JIT only).
    pub fn run_profiled(&self, inputs: &[ArrayD<f32>]) -> Option<KernelTimes> {
        match self {
            Engine::Jit { compiled, .. } => compiled.run_profiled(inputs).ok().map(|(_, t)| t),
            Engine::Reference { .. } => None,
        }
    }

    /// Bytes of the activation arena (JIT only: the interpreter allocates per layer).
    pub fn arena_bytes(&self) -> Option<usize> {
        match self {
            Engine::Jit { compiled, .. } => Some(compiled.arena_bytes()),
            Engine::Reference { .. } => None,
        }
    }

    /// Bytes of the weights the engine holds (packed, for the JIT).
    pub fn weight_bytes(&self) -> usize {
        match self {
            Engine::Jit { compiled, .. } => compiled.weight_bytes(),
            Engine::Reference { graph } => graph.consts.values().map(|c| c.numel() * 4).sum(),
        }
    }

    fn graph(&self) -> &Graph {
        match self {
            Engine::Reference { graph } | Engine::Jit { graph, .. } => graph,
        }
    }
}
