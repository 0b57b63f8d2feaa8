//! `cnnc train`: train a network on a labelled data set on the reference engine, with its
//! declared recipe (`train(...)`) overridden by the flags, validating after every epoch and
//! writing a checkpoint (weights + optimizer state) to `--out` after every epoch. A recipe
//! with `then:` stages runs them in order, each unfreezing its layers and starting a fresh
//! optimizer; each stage caches its frozen features when it can (`train_stage.rs`).
//!
//! Progress: on a terminal, a live line on standard error during each epoch; always one line
//! per epoch on standard output (loss, accuracy, validation, images/s, epoch time); with
//! `--json`, one JSON object at the end instead of the lines.

use super::engine::Backend;
use super::eval::{self, class_names, open_data};
use super::train_stage;
use super::{compile_network, EXIT_ERRORS, EXIT_OK};
use crate::diag::{self, thousands, Code, Diagnostic};
use crate::driver::Program;
use crate::graph::summary::Summary;
use crate::graph::Graph;
use crate::runtime::{LoadOptions, Weights};
use crate::train::augment::Augmenter;
use crate::train::checkpoint::{load_checkpoint, Progress};
use crate::train::data::Dataset;
use crate::train::optim::{Optimizer, OptimizerConfig};
use crate::train::recipe::{Hyperparameters, OptimizerKind, Recipe, ScheduleSpec, Settings};
use crate::train::trainer::{EpochReport, RunOptions, TrainError};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct TrainArgs {
    /// The .cnn file.
    pub file: PathBuf,
    /// The network to train (default: the file's first).
    #[arg(long)]
    pub net: Option<String>,
    /// The training images: a .npy array (N×H×W×C) or a folder with one subfolder per class.
    #[arg(long, value_name = "D")]
    pub data: PathBuf,
    /// The labels .npy (default: beside the images, `images` → `labels` in the name).
    #[arg(long, value_name = "L")]
    pub labels: Option<PathBuf>,
    /// Validation images, evaluated after every epoch (their labels found as for --data).
    #[arg(long, value_name = "D", conflicts_with = "val_split")]
    pub val: Option<PathBuf>,
    /// The labels of --val.
    #[arg(long, value_name = "L", requires = "val")]
    pub val_labels: Option<PathBuf>,
    /// Hold out this fraction of --data for validation instead (chosen from the seed).
    #[arg(long, value_name = "FRACTION")]
    pub val_split: Option<f64>,
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Images per optimizer step.
    #[arg(long)]
    pub batch: Option<usize>,
    /// The learning rate (before the schedule).
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long, value_parser = ["sgd", "adam", "adamw"])]
    pub optimizer: Option<String>,
    /// SGD's momentum.
    #[arg(long)]
    pub momentum: Option<f64>,
    /// SGD with Nesterov momentum.
    #[arg(long)]
    pub nesterov: bool,
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Adam's betas, as `0.9,0.999`.
    #[arg(long, value_name = "B1,B2")]
    pub betas: Option<String>,
    /// Adam's epsilon.
    #[arg(long)]
    pub eps: Option<f64>,
    /// The learning-rate schedule: constant, step (×0.1 every 10 epochs) or cosine (over the
    /// run's epochs).
    #[arg(long, value_parser = ["constant", "step", "cosine"])]
    pub schedule: Option<String>,
    /// Clip the gradients to this total 2-norm.
    #[arg(long, value_name = "MAX_NORM")]
    pub clip: Option<f64>,
    /// The seed of the initial weights, the shuffling and dropout.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Start from these weights (default: a seeded initialization).
    #[arg(long, value_name = "W.safetensors", conflicts_with = "resume")]
    pub weights: Option<PathBuf>,
    /// Tensors under this layer path may be absent from --weights; they are seeded.
    #[arg(long = "allow-missing", value_name = "PREFIX", requires = "weights")]
    pub allow_missing: Vec<String>,
    /// Continue from a checkpoint of `cnnc train --out`, with its optimizer state and epoch.
    #[arg(long, value_name = "CKPT")]
    pub resume: Option<PathBuf>,
    /// Where to write the checkpoint after every epoch.
    #[arg(long, value_name = "OUT.safetensors")]
    pub out: Option<PathBuf>,
    /// Stop after this many optimizer steps in all.
    #[arg(long, value_name = "K")]
    pub steps: Option<u64>,
    /// Keep the data's order in every epoch.
    #[arg(long)]
    pub no_shuffle: bool,
    /// Threads: the batch is split in this many shards for the gradients, and the JIT that
    /// validates uses them (default: every core).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub threads: Option<u64>,
    /// Threads that build the next batches (scale, pad, augment, normalize) while a step
    /// trains.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub loader_threads: u64,
    /// Train without the network's declared `augment(...)`.
    #[arg(long)]
    pub no_augment: bool,
    /// Print one JSON object with every epoch's figures at the end.
    #[arg(long)]
    pub json: bool,
    /// Recompute the frozen layers for every batch instead of caching their output per image.
    #[arg(long, conflicts_with = "cache")]
    pub no_cache: bool,
    /// Keep the cached frozen features in this folder (.npy and a key file), reused by a later
    /// run whose network, weights, preprocessing and images are the same.
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Run only this stage of a recipe with `then:` stages (from 1), from --weights or
    /// --resume; the flags apply to it.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub stage: Option<u64>,
    /// Where the gradients are computed: compiled backward kernels (jit; a network they do
    /// not cover yet trains on the reference engine, which the header says) or the reference
    /// interpreter.
    #[arg(long, value_enum, default_value_t = Backend::Jit)]
    pub backend: Backend,
}

pub fn run(args: &TrainArgs) -> u8 {
    let Some((compilation, graph)) = compile_network(&args.file, &args.net) else {
        return EXIT_ERRORS;
    };
    let program = &compilation.program;
    match execute(args, program, &graph) {
        Ok(()) => EXIT_OK,
        Err(diagnostics) => {
            diag::emit_stderr(&program.sources, &diagnostics);
            EXIT_ERRORS
        }
    }
}

/// Training, evaluation and the training benchmark compare one output with the labels: a
/// network with several outputs (`return (a, b)`) is refused, pointing at the network.
pub fn one_output(graph: &Graph, command: &str) -> Result<(), Box<Diagnostic>> {
    let n_outputs = graph.outputs().len();
    if n_outputs <= 1 {
        return Ok(());
    }
    Err(Box::new(
        Diagnostic::error(
            Code::SeveralOutputs,
            graph.span,
            format!(
                "`cnnc {command}` needs a network with one output, and `{}` has {n_outputs}",
                graph.name
            ),
        )
        .with_label("returns several tensors")
        .with_note(
            "the loss and the accuracy compare one output, the class scores, with the labels",
        )
        .with_help("write a network that returns only the class scores, and train that"),
    ))
}

/// The flags as a recipe, to lay over the network's.
fn flags_recipe(args: &TrainArgs) -> Result<Recipe, Box<Diagnostic>> {
    let betas = match &args.betas {
        None => None,
        Some(text) => {
            let parts: Vec<Option<f64>> = text
                .split(',')
                .map(|p| p.trim().parse::<f64>().ok())
                .collect();
            match parts.as_slice() {
                [Some(b1), Some(b2)] => Some((*b1, *b2)),
                _ => {
                    return Err(Box::new(Diagnostic::global(
                        Code::Recipe,
                        format!("--betas takes two numbers separated by a comma, such as 0.9,0.999; not `{text}`"),
                    )))
                }
            }
        }
    };
    Ok(Recipe {
        optimizer: args.optimizer.as_deref().and_then(OptimizerKind::from_name),
        hyperparameters: Hyperparameters {
            lr: args.lr,
            momentum: args.momentum,
            nesterov: args.nesterov.then_some(true),
            weight_decay: args.weight_decay,
            betas,
            eps: args.eps,
        },
        epochs: args.epochs,
        batch: args.batch,
        schedule: args.schedule.as_deref().and_then(ScheduleSpec::from_name),
        seed: args.seed,
        clip: args.clip,
        ..Recipe::default()
    })
}

fn execute(args: &TrainArgs, program: &Program, graph: &Graph) -> Result<(), Vec<Diagnostic>> {
    let one = |d: Box<Diagnostic>| vec![*d];
    one_output(graph, "train").map_err(one)?;
    let declared = graph.meta.train.clone().unwrap_or_default();
    let flags = flags_recipe(args).map_err(one)?;
    let first = args.stage.map_or(0, |n| n as usize - 1);
    let recipes = declared
        .stages(first, &flags)
        .map_err(|e| vec![e.diagnostic()])?;
    if first >= recipes.len() {
        return Err(vec![Diagnostic::global(
            Code::Recipe,
            format!(
                "--stage {} asks for a stage the recipe does not have: it has {}",
                first + 1,
                recipes.len()
            ),
        )]);
    }
    if args.resume.is_some() && args.stage.is_none() && recipes.len() > 1 {
        return Err(vec![Diagnostic::global(
            Code::Checkpoint,
            format!(
                "--resume continues one stage, and this recipe has {}",
                recipes.len()
            ),
        )
        .with_help("say which with --stage N")]);
    }
    let stages: Vec<(usize, Settings, &Recipe)> = recipes
        .iter()
        .enumerate()
        .skip(first)
        .take(if args.stage.is_some() { 1 } else { usize::MAX })
        .map(|(n, recipe)| recipe.settings().map(|s| (n, s, recipe)))
        .collect::<Result<_, _>>()
        .map_err(|e| vec![e.diagnostic()])?;
    let settings = stages[0].1.clone();
    if let Some(path) = &args.out {
        crate::runtime::check_output_path(path)
            .map_err(|e| vec![Diagnostic::global(Code::Checkpoint, e.to_string())])?;
    }
    if let Some(dir) = args.cache.as_ref().filter(|dir| !dir.is_dir()) {
        let error = crate::train::cache::CacheError::NotAFolder { path: dir.clone() };
        return Err(vec![error.diagnostic()]);
    }
    let (train_data, val_data) = open_datasets(args, graph, settings.seed).map_err(one)?;
    // Augmentation applies to the training images only: validation runs on `val_data` as is.
    let augmentation = graph.meta.augment.clone().filter(|_| !args.no_augment);
    let augmenter = augmentation.map(|config| Arc::new(Augmenter::new(config, &train_data)));
    let train_data = train_data.with_augmentation(augmenter);
    let (mut weights, mut optimizer, mut progress, from) =
        initial_state(args, program, graph, &settings)?;

    let threads = args
        .threads
        .map(|n| n as usize)
        .unwrap_or_else(super::engine::default_threads);
    // The layers each stage trains: the network's, less what the stages up to it unfreeze.
    let mut stage_graph = graph.clone();
    if args.no_augment {
        stage_graph.meta.augment = None;
    }
    for recipe in &recipes[..first] {
        train_stage::unfreeze(&mut stage_graph, &recipe.unfreeze);
    }
    let mut all_reports: Vec<(usize, EpochReport)> = Vec::new();
    let mut stages_json = Vec::new();
    for (position, (number, settings, recipe)) in stages.iter().enumerate() {
        train_stage::unfreeze(&mut stage_graph, &recipe.unfreeze);
        if position == 0 {
            if !args.json {
                print_header(
                    &stage_graph,
                    settings,
                    &train_data,
                    val_data.as_ref(),
                    &from,
                    threads,
                );
            }
        } else {
            optimizer = Optimizer::new(settings.optimizer.clone())
                .map_err(|e| vec![Diagnostic::global(Code::Recipe, e.to_string())])?;
            progress = Progress::default();
        }
        if recipes.len() > 1 && !args.json {
            let line = (position > 0).then(|| recipe_line(settings, threads));
            print_stage(&stage_graph, *number + 1, recipes.len(), recipe, line);
        }
        let options = RunOptions {
            settings: settings.clone(),
            shuffle: !args.no_shuffle,
            max_steps: args.steps,
            loader_threads: args.loader_threads as usize,
            threads,
            checkpoint: args.out.clone(),
        };
        let stage = train_stage::Stage {
            args,
            graph: &stage_graph,
            train: &train_data,
            val: val_data.as_ref(),
            options,
        };
        let result =
            train_stage::run_stage(&stage, &mut weights, &mut optimizer, progress.clone())?;
        stages_json.push(json!({
            "stage": number + 1,
            "unfreeze": recipe.unfreeze.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
            "optimizer": settings.optimizer.kind(),
            "lr": settings.optimizer.lr(),
            "epochs": settings.epochs,
            "trainable_parameters": Summary::of(&stage_graph).trainable_parameters,
            "features_cached": result.cache.as_ref().map(|c| c.json()),
            "gradients": result.backend,
        }));
        all_reports.extend(result.reports.into_iter().map(|r| (number + 1, r)));
    }
    let names = val_data
        .as_ref()
        .map(|d| class_names(graph, d))
        .unwrap_or_default();
    if args.json {
        let epochs: Vec<serde_json::Value> = all_reports
            .iter()
            .map(|(stage, r)| {
                let mut e = epoch_json(r);
                e["stage"] = json!(stage);
                e
            })
            .collect();
        let out = json!({
            "network": graph.name,
            "optimizer": settings.optimizer.kind(),
            "lr": settings.optimizer.lr(),
            "batch": settings.batch,
            "seed": settings.seed,
            "threads": threads,
            "loader_threads": args.loader_threads,
            "augment": train_data.augmenter().map(|a| a.config.describe()),
            "epochs": epochs,
            "stages": stages_json,
            "features_cached": stages_json.first().map(|s| s["features_cached"].clone()),
            "out": args.out.as_ref().map(|p| p.display().to_string()),
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(());
    }
    if let Some(last) = all_reports.last().and_then(|(_, r)| r.validation.as_ref()) {
        println!("validation after the last epoch:");
        eval::print_report(last, &names);
    }
    if let Some(path) = &args.out {
        println!("wrote {} (weights and optimizer state)", path.display());
    }
    Ok(())
}

/// The line that starts a stage of a recipe with `then:` stages.
fn print_stage(
    graph: &Graph,
    number: usize,
    of: usize,
    recipe: &Recipe,
    recipe_line: Option<String>,
) {
    let unfrozen: Vec<&str> = recipe.unfreeze.iter().map(|(p, _)| p.as_str()).collect();
    let what = if unfrozen.is_empty() {
        String::new()
    } else {
        format!("unfreeze {}; ", unfrozen.join(", "))
    };
    println!(
        "stage {number}/{of}: {what}{} trainable parameters{}",
        thousands(Summary::of(graph).trainable_parameters),
        recipe_line.map_or(String::new(), |line| format!("; {line}"))
    );
}

fn open_datasets(
    args: &TrainArgs,
    graph: &Graph,
    seed: u64,
) -> Result<(Dataset, Option<Dataset>), Box<Diagnostic>> {
    let data = open_data(graph, &args.data, args.labels.as_deref())?;
    if let Some(path) = &args.val {
        let val = open_data(graph, path, args.val_labels.as_deref())?;
        return Ok((data, Some(val)));
    }
    if let Some(fraction) = args.val_split {
        let (train, val) = data
            .split_validation(fraction, seed)
            .map_err(|e| Box::new(e.diagnostic()))?;
        return Ok((train, Some(val)));
    }
    Ok((data, None))
}

/// The weights, optimizer and progress to start from, and a line saying where they came from.
fn initial_state(
    args: &TrainArgs,
    program: &Program,
    graph: &Graph,
    settings: &Settings,
) -> Result<(Weights, Optimizer, Progress, String), Vec<Diagnostic>> {
    let mut optimizer = Optimizer::new(settings.optimizer.clone())
        .map_err(|e| vec![Diagnostic::global(Code::Recipe, e.to_string())])?;
    if let Some(path) = &args.resume {
        let checkpoint = load_checkpoint(path).map_err(|e| vec![e.diagnostic()])?;
        let weights = eval::load_weights(program, graph, path, &LoadOptions::default())?;
        checkpoint
            .restore_optimizer(&mut optimizer, path)
            .map_err(|e| vec![e.diagnostic()])?;
        let progress = checkpoint.progress.clone();
        let line = format!(
            "resumed from {} after epoch {} (step {})",
            path.display(),
            progress.epoch,
            progress.global_step
        );
        return Ok((weights, optimizer, progress, line));
    }
    let (weights, line) = match &args.weights {
        Some(path) => {
            let options = LoadOptions {
                strict: false,
                allow_missing: args.allow_missing.clone(),
                seed: settings.seed,
            };
            let weights = eval::load_weights(program, graph, path, &options)?;
            (weights, format!("weights from {}", path.display()))
        }
        None => {
            let weights =
                Weights::seeded(graph, settings.seed).map_err(|e| vec![e.to_diagnostic(graph)])?;
            (
                weights,
                format!("seeded initialization (seed {})", settings.seed),
            )
        }
    };
    Ok((weights, optimizer, Progress::default(), line))
}

/// A hyperparameter as a user writes it: `0.001`, `1e-8`, `1e30`.
fn number(x: f64) -> String {
    if x != 0.0 && !(1e-3..1e6).contains(&x.abs()) {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

fn describe_optimizer(config: &OptimizerConfig) -> String {
    match config {
        OptimizerConfig::Sgd(c) => format!(
            "sgd (lr {}, momentum {}{}, weight decay {})",
            number(c.lr),
            number(c.momentum),
            if c.nesterov { ", nesterov" } else { "" },
            number(c.weight_decay)
        ),
        OptimizerConfig::Adam(c) | OptimizerConfig::AdamW(c) => format!(
            "{} (lr {}, betas {}/{}, eps {}, weight decay {})",
            config.kind(),
            number(c.lr),
            number(c.betas.0),
            number(c.betas.1),
            number(c.eps),
            number(c.weight_decay)
        ),
    }
}

fn print_header(
    graph: &Graph,
    settings: &Settings,
    train: &Dataset,
    val: Option<&Dataset>,
    from: &str,
    threads: usize,
) {
    let summary = Summary::of(graph);
    let frozen = summary.parameters - summary.trainable_parameters;
    let frozen = if frozen > 0 {
        format!(", {} frozen", thousands(frozen))
    } else {
        String::new()
    };
    println!(
        "network: {} ({} trainable parameters{frozen})",
        graph.name,
        thousands(summary.trainable_parameters)
    );
    println!("start: {from}");
    println!(
        "data: {} ({} images, {} classes)",
        train.source().display(),
        train.len(),
        train.n_classes()
    );
    if let Some(val) = val {
        println!(
            "validation: {} ({} images)",
            val.source().display(),
            val.len()
        );
    }
    println!("recipe: {}", recipe_line(settings, threads));
    if let Some(augmenter) = train.augmenter() {
        println!("augment: {}", augmenter.config.describe());
    }
}

fn recipe_line(settings: &Settings, threads: usize) -> String {
    let clip = settings.clip.map_or(String::new(), |c| {
        format!(", gradients clipped to norm {c}")
    });
    format!(
        "{}, {} epoch(s), batch {}, schedule {}, seed {}{clip}; {threads} thread(s)",
        describe_optimizer(&settings.optimizer),
        settings.epochs,
        settings.batch,
        describe_schedule(&settings.schedule),
        settings.seed
    )
}

fn describe_schedule(schedule: &crate::train::schedule::Schedule) -> String {
    use crate::train::schedule::Schedule;
    match schedule {
        Schedule::Constant => "constant".into(),
        Schedule::Step { step_size, gamma } => format!("step (×{gamma} every {step_size} epochs)"),
        Schedule::Cosine { t_max, eta_min } => {
            format!("cosine (over {t_max} epochs to {eta_min})")
        }
    }
}

/// Images per second: whole numbers, with a decimal below 10 (a ResNet on the reference
/// engine trains at under one image a second).
pub(super) fn rate(per_second: f64) -> String {
    if per_second < 10.0 {
        format!("{per_second:.1}")
    } else {
        format!("{per_second:.0}")
    }
}

pub(super) fn epoch_line(r: &EpochReport) -> String {
    let mut line = format!(
        "epoch {}/{}  loss {:.4}  accuracy {:.2}%",
        r.epoch,
        r.epochs,
        r.loss,
        100.0 * r.accuracy
    );
    if let Some(v) = &r.validation {
        line.push_str(&format!(
            "  val_loss {:.4}  val_accuracy {:.2}%",
            v.loss,
            100.0 * v.accuracy
        ));
    }
    line.push_str(&format!(
        "  {} images/s  {:.2} s",
        rate(r.images_per_second()),
        r.seconds
    ));
    line
}

fn epoch_json(r: &EpochReport) -> serde_json::Value {
    json!({
        "epoch": r.epoch,
        "lr": r.lr,
        "loss": r.loss,
        "accuracy": r.accuracy,
        "images": r.images,
        "seconds": r.seconds,
        "images_per_second": r.images_per_second(),
        "global_step": r.global_step,
        "validation": r.validation.as_ref().map(|v| json!({
            "n": v.n,
            "loss": v.loss,
            "accuracy": v.accuracy,
            "top5": v.top5,
        })),
    })
}

pub(super) fn train_error_diagnostic(error: &TrainError) -> Diagnostic {
    match error {
        TrainError::Diverged { kept, .. } => {
            let diagnostic = Diagnostic::global(Code::Diverged, error.to_string())
                .with_help("lower the learning rate (--lr), or clip the gradients (--clip 1.0)");
            match kept {
                Some(path) => diagnostic.with_note(format!(
                    "the checkpoint of the last finished epoch, {}, is kept as it was",
                    path.display()
                )),
                None => diagnostic.with_note("no checkpoint had been written yet"),
            }
        }
        TrainError::Checkpoint(e) => e.diagnostic(),
        TrainError::Data(e) => e.diagnostic(),
        other => Diagnostic::global(Code::Run, other.to_string()),
    }
}
