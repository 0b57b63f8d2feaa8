//! One stage of `cnnc train`: the frozen features cached when the network allows it
//! (`train::cache`; the frozen prefix compiled by the JIT and run once per image), then the
//! trainer on what is left, validated after every epoch.

use super::engine::{Backend, Engine};
use super::eval::{engine_options, evaluate_weights};
use super::train::{epoch_line, rate, TrainArgs};
use crate::diag::{thousands, Diagnostic};
use crate::graph::summary::Summary;
use crate::graph::Graph;
use crate::runtime::Weights;
use crate::source::Span;
use crate::train::cache::{cached_features, split_frozen_prefix, NoCache};
use crate::train::checkpoint::Progress;
use crate::train::data::Dataset;
use crate::train::jit::JitStep;
use crate::train::optim::Optimizer;
use crate::train::trainer::{self, BatchProgress, EpochReport, RunOptions, TrainError};
use std::io::{IsTerminal, Write};
use std::time::Instant;

/// What caching the frozen features did.
#[derive(Clone, Debug)]
pub(super) struct CacheReport {
    /// Training and validation images.
    pub images: usize,
    /// Floats per image.
    pub floats: usize,
    pub seconds: f64,
    /// Whether the features were read from `--cache DIR` (else computed).
    pub from_disk: bool,
    /// The layer whose output is cached, and its shape.
    pub frontier: String,
}

impl CacheReport {
    pub fn line(&self) -> String {
        format!(
            "features cached: {} images, {} floats each, {:.2} s ({}, the output of {})",
            thousands(self.images as u64),
            thousands(self.floats as u64),
            self.seconds,
            if self.from_disk {
                "read from --cache"
            } else {
                "computed once"
            },
            self.frontier
        )
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "images": self.images,
            "floats_per_image": self.floats,
            "seconds": self.seconds,
            "from_disk": self.from_disk,
            "frontier": self.frontier,
        })
    }
}

/// What a stage trains: the head and the data sets of features when the frozen features are
/// cached, else the network and its data sets.
struct Cached {
    head: Graph,
    train: Dataset,
    val: Option<Dataset>,
    report: CacheReport,
}

/// Caches the frozen features of `graph` for both data sets, if the network allows it.
fn cache_features(
    args: &TrainArgs,
    graph: &Graph,
    weights: &Weights,
    train: &Dataset,
    val: Option<&Dataset>,
    batch: usize,
    threads: usize,
) -> Result<Result<Cached, NoCache>, Box<Diagnostic>> {
    if args.no_cache {
        return Ok(Err(NoCache::Disabled));
    }
    let split = match split_frozen_prefix(graph) {
        Ok(split) => split,
        Err(reason) => return Ok(Err(reason)),
    };
    let started = Instant::now();
    let mut prefix = split.prefix.clone();
    crate::runtime::bind(&mut prefix, weights).map_err(|e| Box::new(e.to_diagnostic(graph)))?;
    let built = Engine::build(prefix, &engine_options(Backend::Jit, Some(threads)))?;
    let mut forward = |images: &ndarray::ArrayD<f32>| {
        built
            .engine
            .run(std::slice::from_ref(images))
            .map_err(|d| d.message)
    };
    let dir = args.cache.as_deref();
    let engine = Backend::Jit.describe();
    let (train, train_disk) = cached_features(
        dir,
        "train",
        &split,
        weights,
        train,
        batch,
        engine,
        &mut forward,
    )
    .map_err(|e| Box::new(e.diagnostic()))?;
    let (val, val_disk) = match val {
        None => (None, true),
        Some(data) => {
            let (features, disk) = cached_features(
                dir,
                "val",
                &split,
                weights,
                data,
                batch,
                engine,
                &mut forward,
            )
            .map_err(|e| Box::new(e.diagnostic()))?;
            (Some(features), disk)
        }
    };
    let report = CacheReport {
        images: train.len() + val.as_ref().map_or(0, Dataset::len),
        floats: split.features.numel(),
        seconds: started.elapsed().as_secs_f64(),
        from_disk: train_disk && val_disk,
        frontier: split.frontier.clone(),
    };
    Ok(Ok(Cached {
        head: split.head,
        train,
        val,
        report,
    }))
}

/// One stage to run.
pub(super) struct Stage<'a> {
    pub args: &'a TrainArgs,
    /// The network with this stage's layers frozen.
    pub graph: &'a Graph,
    pub train: &'a Dataset,
    pub val: Option<&'a Dataset>,
    pub options: RunOptions,
}

/// What a stage did.
pub(super) struct StageResult {
    pub reports: Vec<EpochReport>,
    pub cache: Option<CacheReport>,
    /// Which engine computed the gradients: `jit` or `reference`.
    pub backend: &'static str,
}

/// Runs a stage: caches the frozen features when it can (printing what it did, or why not
/// when the network has frozen layers), then trains.
pub(super) fn run_stage(
    stage: &Stage<'_>,
    weights: &mut Weights,
    optimizer: &mut Optimizer,
    progress: Progress,
) -> Result<StageResult, Vec<Diagnostic>> {
    let args = stage.args;
    let threads = stage.options.threads;
    let batch = stage.options.settings.batch;
    let cached = cache_features(
        args,
        stage.graph,
        weights,
        stage.train,
        stage.val,
        batch,
        threads,
    )
    .map_err(|d| vec![*d])?;
    let (graph, train, val, cache) = match &cached {
        Ok(c) => (&c.head, &c.train, c.val.as_ref(), Some(c.report.clone())),
        Err(reason) => {
            let summary = Summary::of(stage.graph);
            let has_frozen = summary.parameters > summary.trainable_parameters;
            if has_frozen && !args.json && *reason != NoCache::Disabled {
                println!("features not cached: {reason}");
            }
            (stage.graph, stage.train, stage.val, None)
        }
    };
    if let (Some(report), false) = (&cache, args.json) {
        println!("{}", report.line());
    }
    let (mut jit, engine_line) = match args.backend {
        Backend::Reference => (
            None,
            "reference interpreter (--backend reference)".to_string(),
        ),
        Backend::Jit => match JitStep::new(graph, weights, threads)
            .map_err(|e| vec![super::train::train_error_diagnostic(&e)])?
        {
            Ok(step) => {
                let line = format!(
                    "compiled backward (Cranelift JIT), {} KiB arena per {}",
                    step.arena_bytes().div_ceil(1024),
                    if step.arena_per_image() {
                        "image"
                    } else {
                        "thread"
                    }
                );
                (Some(step), line)
            }
            Err(reason) => (
                None,
                format!("reference interpreter: the JIT cannot train this network yet ({reason})"),
            ),
        },
    };
    if !args.json {
        println!("gradients: {engine_line}");
    }
    let backend = if jit.is_some() { "jit" } else { "reference" };
    let engine = engine_options(Backend::Jit, Some(threads));
    let mut validate = |w: &Weights| match val {
        None => Ok(None),
        Some(data) => evaluate_weights(graph, w, data, batch, &engine)
            .map(Some)
            .map_err(|d| TrainError::Evaluation(d.message)),
    };
    let live = std::io::stderr().is_terminal() && !args.json;
    let mut on_batch = |p: &BatchProgress| {
        if live {
            eprint!(
                "\r\x1b[2Kepoch {}/{}  batch {}/{}  loss {:.4}  accuracy {:.2}%  {} images/s",
                p.epoch,
                p.epochs,
                p.batch,
                p.n_batches,
                p.loss,
                100.0 * p.accuracy,
                rate(p.images_per_second)
            );
            let _ = std::io::stderr().flush();
        }
    };
    let mut on_epoch = |r: &EpochReport| {
        if live {
            eprint!("\r\x1b[2K");
        }
        if !args.json {
            println!("{}", epoch_line(r));
        }
    };
    let result = trainer::train(
        graph,
        weights,
        optimizer,
        train,
        &stage.options,
        progress,
        &mut validate,
        &mut on_batch,
        &mut on_epoch,
        jit.as_mut(),
    );
    if live {
        eprint!("\r\x1b[2K");
    }
    let reports = result.map_err(|e| vec![super::train::train_error_diagnostic(&e)])?;
    Ok(StageResult {
        reports,
        cache,
        backend,
    })
}

/// `graph` with the layers under `paths` (a path or its sublayers) trainable.
pub(super) fn unfreeze(graph: &mut Graph, paths: &[(String, Span)]) {
    for node in graph.nodes.values_mut() {
        let under = |p: &String| node.path == *p || node.path.starts_with(&format!("{p}."));
        if paths.iter().any(|(p, _)| under(p)) {
            node.frozen = false;
        }
    }
}
