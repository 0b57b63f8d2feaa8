//! `cnnc run`: compile one network and run it on an input, printing what came out.
//!
//! The command gathers what a run needs — the class labels the network declares, its weights
//! (a safetensors file, or a deterministic seeded initialization), its inputs (`.npy` arrays,
//! images, or a deterministic synthetic tensor) — and turns every way those can be wrong into
//! a diagnostic: pointing at the layer's source line when the problem is about a layer, at the
//! input declaration when it is about an input's shape, at `labels(...)` when it is about the
//! labels file, and at no place at all when a file cannot be read. All of them are collected
//! before anything runs, so a user fixing an export sees the whole list at once.
//!
//! What is printed depends on the output: a classifier (a flat output that declares labels or
//! ends in softmax) prints its top classes; a small output prints its numbers, one matrix per
//! channel, as the course writes them; anything larger prints its range.

use super::engine::{default_threads, Backend, Engine, EngineOptions};
use super::{compile_network, EXIT_ERRORS, EXIT_OK};
use crate::diag::{self, Code, Diagnostic, Severity};
use crate::driver::{FileOrigin, Program};
use crate::graph::{Graph, NodeId, Op, Shape};
use crate::runtime::{self, input_name, Dims, LoadOptions};
use crate::stdlib;
use ndarray::{ArrayD, ArrayViewD, Axis};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct RunArgs {
    /// The .cnn file (default: ResNet-18 from the embedded standard library).
    pub file: Option<PathBuf>,
    /// The network to run (default: the file's first).
    #[arg(long)]
    pub net: Option<String>,
    /// Trained weights, named as in PyTorch's state_dict (default: a seeded initialization).
    #[arg(long, value_name = "W.safetensors")]
    pub weights: Option<PathBuf>,
    /// Tensors of the weights file that no layer uses are errors rather than warnings.
    #[arg(long, requires = "weights")]
    pub strict: bool,
    /// Tensors under this layer path may be absent from the weights file; they are seeded.
    #[arg(long = "allow-missing", value_name = "PREFIX", requires = "weights")]
    pub allow_missing: Vec<String>,
    /// The seed of the initial weights and of the synthetic input.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// A .npy array or a PNG or JPEG image; once per network input, in order (default: a
    /// synthetic input).
    #[arg(long, value_name = "PATH")]
    pub input: Vec<PathBuf>,
    /// How many synthetic images to run at once (with --input, the file sets the batch).
    #[arg(long, default_value_t = 1, conflicts_with = "input",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: u64,
    /// Write the output tensor to this .npy file (N×H×W×C, or N×C for a flat output); a
    /// network with several outputs writes one file each, `OUT.0.npy`, `OUT.1.npy`, ….
    #[arg(long, value_name = "OUT.npy")]
    pub output: Option<PathBuf>,
    /// How many of a classifier's classes to print.
    #[arg(long, value_name = "K", default_value_t = 5)]
    pub top: usize,
    /// The engine that runs the network.
    #[arg(long, value_enum, default_value_t = Backend::Jit)]
    pub backend: Backend,
    /// Threads for the JIT's kernels (default: every core).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Bounds-check every load and store of the generated code (slower; for testing).
    #[arg(long)]
    pub checked: bool,
    /// Lower every convolution directly, without Winograd's algorithm.
    #[arg(long)]
    pub no_winograd: bool,
}

/// What `cnnc run` runs when given no file.
pub const DEFAULT_FILE: &str = "std/resnet.cnn";
pub const DEFAULT_NETWORK: &str = "resnet18";

pub fn run(args: &RunArgs) -> u8 {
    // With no file, the embedded default: a standard network that needs nothing on disk.
    let (file, net) = match &args.file {
        Some(file) => (file.clone(), args.net.clone()),
        None => (
            PathBuf::from(DEFAULT_FILE),
            Some(
                args.net
                    .clone()
                    .unwrap_or_else(|| DEFAULT_NETWORK.to_string()),
            ),
        ),
    };
    let Some((compilation, mut graph)) = compile_network(&file, &net) else {
        return EXIT_ERRORS;
    };
    let program = &compilation.program;
    match execute(args, program, &mut graph) {
        Ok(()) => EXIT_OK,
        Err(diagnostics) => {
            diag::emit_stderr(&program.sources, &diagnostics);
            EXIT_ERRORS
        }
    }
}

/// Everything after compilation. Errors come back as diagnostics; warnings are printed as
/// they are found.
fn execute(args: &RunArgs, program: &Program, graph: &mut Graph) -> Result<(), Vec<Diagnostic>> {
    let mut errors = Vec::new();
    let output_paths = args
        .output
        .as_deref()
        .map(|path| output_paths(path, graph.outputs().len()))
        .unwrap_or_default();
    for path in &output_paths {
        if let Err(error) = runtime::check_output_path(path) {
            errors.push(Diagnostic::global(Code::OutputFile, error.to_string()));
        }
    }
    if let Err(error) = load_labels(program, graph) {
        errors.push(*error);
    }
    let weights = match load_weights(args, program, graph) {
        Ok((weights, line)) => Some((weights, line)),
        Err(found) => {
            errors.extend(found);
            None
        }
    };
    let inputs = match load_inputs(args, graph) {
        Ok(inputs) => Some(inputs),
        Err(found) => {
            errors.extend(found);
            None
        }
    };
    let (Some((weights, weights_line)), Some(inputs), true) = (weights, inputs, errors.is_empty())
    else {
        return Err(errors);
    };

    let options = EngineOptions {
        backend: args.backend,
        threads: args.threads.unwrap_or_else(default_threads),
        checked: args.checked,
        opt: crate::opt::Options::default(),
        winograd: !args.no_winograd,
    };
    let built = Engine::build(weights, &options).map_err(|d| vec![*d])?;
    println!("network: {} ({})", graph.name, args.backend.describe());
    println!("weights: {weights_line}");
    for line in &inputs.lines {
        println!("input {line}");
    }
    let outputs = built
        .engine
        .run_all(&inputs.tensors)
        .map_err(|d| vec![*d])?;
    let nodes = graph.outputs();
    for (idx, (&node, output)) in nodes.iter().zip(&outputs).enumerate() {
        let title = match nodes.len() {
            1 => "output".to_string(),
            _ => format!("output {idx} ({})", graph.nodes[node].path),
        };
        // A labels file names the classes of the first output.
        print_output(graph, node, &title, output, args.top, idx == 0);
    }
    for (path, output) in output_paths.iter().zip(&outputs) {
        runtime::write_npy(path, output)
            .map_err(|error| vec![Diagnostic::global(Code::OutputFile, error.to_string())])?;
        println!("wrote {} ({})", path.display(), Dims::of(output.shape()));
    }
    Ok(())
}

/// The files `--output PATH` writes: `PATH` itself for one output; for several, one file each,
/// numbered in the order of the network's `return (a, b)` before the extension
/// (`out.npy` → `out.0.npy`, `out.1.npy`).
pub fn output_paths(path: &Path, n_outputs: usize) -> Vec<PathBuf> {
    if n_outputs <= 1 {
        return vec![path.to_path_buf()];
    }
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let extension = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    (0..n_outputs)
        .map(|idx| path.with_file_name(format!("{stem}.{idx}{extension}")))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Labels

/// Reads the class names of a network that declares `labels("...")` into `graph.meta.labels`.
fn load_labels(program: &Program, graph: &mut Graph) -> Result<(), Box<Diagnostic>> {
    let (Some(name), Some(span)) = (graph.meta.labels_file.clone(), graph.meta.labels_span) else {
        return Ok(());
    };
    let labels_error = |message: String| {
        Diagnostic::error(Code::LabelsFile, span, message)
            .with_label("the labels are declared here")
    };
    let (shown, text) =
        match locate_labels(program, span.file, &name) {
            LabelsFile::Std(std_name) => match stdlib::get_data(&std_name) {
                Some(text) => (std_name, text.to_string()),
                None => {
                    let available: Vec<&str> = stdlib::DATA_FILES.iter().map(|(n, _)| *n).collect();
                    return Err(Box::new(
                        labels_error(format!(
                            "the standard library has no labels file `{std_name}`"
                        ))
                        .with_help(format!("it has {}", available.join(", "))),
                    ));
                }
            },
            LabelsFile::Disk(path) => {
                match crate::source::read_regular_file(&path, crate::source::MAX_SOURCE_BYTES)
                    .and_then(|bytes| {
                        String::from_utf8(bytes).map_err(|_| {
                            std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text")
                        })
                    }) {
                    Ok(text) => (path.display().to_string(), text),
                    Err(error) => return Err(Box::new(
                        labels_error(format!(
                            "cannot read the labels file `{}`: {error}",
                            path.display()
                        ))
                        .with_help(
                            "a labels file is found relative to the .cnn file that declares it; \
                         `std/...` names one of the standard library's",
                        ),
                    )),
                }
            }
        };
    let labels = parse_labels(&text);
    let output = graph.shape(graph.output());
    if labels.len() != output.numel() {
        let outputs = if output.flat {
            format!("{} outputs", output.c)
        } else {
            format!("{} outputs ({output})", output.numel())
        };
        return Err(Box::new(
            labels_error(format!(
                "the labels file `{shown}` names {} classes, but network `{}` has {outputs}",
                labels.len(),
                graph.name,
            ))
            .with_note("a labels file holds one class name per line, in the order of the outputs"),
        ));
    }
    graph.meta.labels = labels;
    Ok(())
}

/// Where a labels file is: embedded in the standard library, or on disk.
enum LabelsFile {
    Std(String),
    Disk(PathBuf),
}

/// Resolves a labels file as an import is resolved: `std/...` and names used inside the
/// standard library are its embedded files; anything else is relative to the declaring file.
fn locate_labels(program: &Program, file: crate::source::FileId, name: &str) -> LabelsFile {
    if name.starts_with("std/") {
        return LabelsFile::Std(name.to_string());
    }
    let origin = program
        .files
        .iter()
        .find(|f| f.id == file)
        .map(|f| &f.origin);
    if let Some(FileOrigin::Std(std_name)) = origin {
        let folder = std_name
            .rsplit_once('/')
            .map_or("std", |(folder, _)| folder);
        return LabelsFile::Std(format!("{folder}/{name}"));
    }
    // The file's name as the user gave it keeps the path short in messages.
    let base = Path::new(program.sources.name(file))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    LabelsFile::Disk(base.join(name))
}

/// One class name per line; surrounding spaces and trailing empty lines do not count.
fn parse_labels(text: &str) -> Vec<String> {
    let mut labels: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
    while labels.last().is_some_and(String::is_empty) {
        labels.pop();
    }
    labels
}

// ---------------------------------------------------------------------------------------------
// Weights

/// The graph with the weights to run with bound to its constants, and the line that says
/// where they came from.
fn load_weights(
    args: &RunArgs,
    program: &Program,
    graph: &Graph,
) -> Result<(Graph, String), Vec<Diagnostic>> {
    let options = LoadOptions {
        strict: args.strict,
        allow_missing: args.allow_missing.clone(),
        seed: args.seed,
    };
    bind_weights(program, graph, args.weights.as_deref(), &options)
}

/// `graph` with the weights of the file at `path` bound to its constants (mapped, read in
/// place when packed), or seeded with `options.seed` without a file; and the line that says
/// where they came from. Warnings (unused tensors) are printed here.
pub(super) fn bind_weights(
    program: &Program,
    graph: &Graph,
    path: Option<&Path>,
    options: &LoadOptions,
) -> Result<(Graph, String), Vec<Diagnostic>> {
    let mut phases = crate::phases::Phases::start();
    let mut bound = graph.clone();
    let Some(path) = path else {
        runtime::seed(&mut bound, options.seed)
            .map_err(|error| vec![error.to_diagnostic(graph)])?;
        let line = if !bound.consts.values().any(|c| c.learned) {
            "none to load: every weight of this network is written in its source".to_string()
        } else {
            format!(
                "seeded initialisation (seed {}); pass --weights to load trained ones",
                options.seed
            )
        };
        return Ok((bound, line));
    };
    let bound_file = runtime::bind_safetensors(&mut bound, path, options);
    phases.mark("map and check the weights file");
    match bound_file {
        Ok(loaded) => {
            let warnings: Vec<Diagnostic> = loaded
                .warnings
                .iter()
                .map(|w| as_warning(w.to_diagnostic(graph)))
                .collect();
            diag::emit_stderr(&program.sources, &warnings);
            let mut line = format!("{} tensors from {}", loaded.from_file, path.display());
            if !loaded.seeded.is_empty() {
                line.push_str(&format!(
                    "; seeded (seed {}) because of --allow-missing: {}",
                    options.seed,
                    loaded.seeded.join(", ")
                ));
            }
            Ok((bound, line))
        }
        Err(problems) => {
            let mut all: Vec<Diagnostic> = problems
                .errors
                .iter()
                .map(|e| e.to_diagnostic(graph))
                .collect();
            all.extend(
                problems
                    .warnings
                    .iter()
                    .map(|w| as_warning(w.to_diagnostic(graph))),
            );
            Err(all)
        }
    }
}

/// The same diagnostic as a warning: for problems that did not stop the load.
fn as_warning(diagnostic: Diagnostic) -> Diagnostic {
    Diagnostic {
        severity: Severity::Warning,
        ..diagnostic
    }
}

// ---------------------------------------------------------------------------------------------
// Inputs

/// The tensors a network runs on, one per network input, and where each came from.
struct Inputs {
    tensors: Vec<ArrayD<f32>>,
    /// `name (N×H×W×C): from FILE`, one per input, for the user.
    lines: Vec<String>,
}

fn load_inputs(args: &RunArgs, graph: &Graph) -> Result<Inputs, Vec<Diagnostic>> {
    let names: Vec<String> = graph
        .inputs
        .iter()
        .map(|&id| input_name(graph, id))
        .collect();
    if !args.input.is_empty() && args.input.len() != graph.inputs.len() {
        return Err(vec![Diagnostic::global(
            Code::InputCount,
            format!(
                "network `{}` has {} input(s) ({}), but {} --input file(s) were given",
                graph.name,
                graph.inputs.len(),
                names.join(", "),
                args.input.len()
            ),
        )
        .with_help(
            "give one --input per network input, in the order the network declares them",
        )]);
    }
    let mut tensors = Vec::new();
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    for (input_idx, (&id, name)) in graph.inputs.iter().zip(&names).enumerate() {
        let result = match args.input.get(input_idx) {
            Some(path) => runtime::load_input(path, graph, input_idx)
                .map(|t| (format!("from {}", path.display()), t)),
            None => {
                // Each input gets its own stream, so two inputs of one shape still differ.
                let seed = args.seed.wrapping_add(input_idx as u64);
                runtime::synthetic_input(graph.shape(id), args.batch as usize, seed).map(|t| {
                    let how = format!(
                        "synthetic, uniform in [-1, 1) (seed {seed}); pass --input for an \
                         image or a .npy array"
                    );
                    (how, t)
                })
            }
        };
        match result {
            Ok((how, tensor)) => {
                lines.push(format!("{name} ({}): {how}", Dims::of(tensor.shape())));
                tensors.push(tensor);
            }
            Err(error) => errors.push(error.to_diagnostic(graph, id)),
        }
    }
    if errors.is_empty() {
        Ok(Inputs { tensors, lines })
    } else {
        Err(errors)
    }
}

// ---------------------------------------------------------------------------------------------
// Output

/// Outputs of at most this many numbers per image are printed in full.
const PRINT_LIMIT: usize = 64;

/// Prints output `node`'s values under `title`; `labelled` when the network's labels (if it
/// has any) name its classes.
fn print_output(
    graph: &Graph,
    node: NodeId,
    title: &str,
    output: &ArrayD<f32>,
    top: usize,
    labelled: bool,
) {
    let shape = graph.shape(node);
    let batch = output.shape().first().copied().unwrap_or(0);
    let ends_in_softmax = matches!(graph.nodes[node].op, Op::Softmax);
    let labels: &[String] = if labelled { &graph.meta.labels } else { &[] };
    let is_classifier = shape.flat && (!labels.is_empty() || ends_in_softmax);
    if batch == 1 {
        println!("{title}: {shape}");
    } else {
        println!("{title}: {shape} for each of {batch} images");
    }
    for (image_idx, image) in output.axis_iter(Axis(0)).enumerate() {
        if batch > 1 {
            println!("image {image_idx}:");
        }
        if is_classifier {
            print_top_classes(&image, labels, top, ends_in_softmax);
        } else if shape.numel() <= PRINT_LIMIT {
            print_values(&image, shape);
        } else {
            print_range(&image);
        }
    }
}

/// The `top` most probable classes, most probable first (the lower index first on a tie).
fn print_top_classes(scores: &ArrayViewD<f32>, labels: &[String], top: usize, is_softmax: bool) {
    let scores: Vec<f32> = scores.iter().copied().collect();
    // Logits (a labelled network without a final softmax) are shown as probabilities too,
    // which is what a reader of a top-5 list expects.
    let probabilities = if is_softmax { scores } else { softmax(&scores) };
    let mut order: Vec<usize> = (0..probabilities.len()).collect();
    order.sort_by(|&a, &b| {
        probabilities[b]
            .total_cmp(&probabilities[a])
            .then(a.cmp(&b))
    });
    let shown = top.min(order.len());
    if shown == 0 {
        return;
    }
    let how = if is_softmax {
        ""
    } else {
        " (softmax of the network's output)"
    };
    println!("top {shown} of {} classes{how}:", probabilities.len());
    for &class_idx in &order[..shown] {
        let name = labels
            .get(class_idx)
            .cloned()
            .unwrap_or_else(|| format!("class {class_idx}"));
        println!("  {:.4}  {name}", probabilities[class_idx]);
    }
}

fn softmax(values: &[f32]) -> Vec<f32> {
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = values.iter().map(|&v| (v - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|&e| e / sum).collect()
}

/// A small output in full: one H×W matrix per channel, or one row for a flat output. Integral
/// values are shown without decimals, so the course's examples read as the course prints them.
fn print_values(image: &ArrayViewD<f32>, shape: Shape) {
    let integral = image.iter().all(|v| v.is_finite() && v.fract() == 0.0);
    let format = |v: f32| {
        // −0 is shown as 0: a sum that cancels to zero is zero to the reader.
        let v = if v == 0.0 { 0.0 } else { v };
        if integral {
            format!("{v:.0}")
        } else {
            format!("{v:.4}")
        }
    };
    let cells: Vec<String> = image.iter().map(|&v| format(v)).collect();
    let width = cells.iter().map(|c| c.chars().count()).max().unwrap_or(0);
    let row = |cells: &[String]| {
        let padded: Vec<String> = cells.iter().map(|c| format!("{c:>width$}")).collect();
        padded.join(" ")
    };
    if shape.flat {
        println!("  {}", row(&cells));
        return;
    }
    // The image is H×W×C in row-major order: the value at (y, x, ch) is cell (y·W + x)·C + ch.
    for ch in 0..shape.c {
        let indent = if shape.c > 1 {
            println!("  channel {ch}:");
            "    "
        } else {
            "  "
        };
        for y in 0..shape.h {
            let line: Vec<String> = (0..shape.w)
                .map(|x| cells[(y * shape.w + x) * shape.c + ch].clone())
                .collect();
            println!("{indent}{}", row(&line));
        }
    }
}

fn print_range(image: &ArrayViewD<f32>) {
    let n = image.len().max(1) as f64;
    let min = image.iter().copied().fold(f32::INFINITY, f32::min);
    let max = image.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mean = image.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    println!("  min {min:.4}, max {max:.4}, mean {mean:.4}");
}
