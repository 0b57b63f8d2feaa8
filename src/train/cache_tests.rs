//! Where a network is split for cached features (one frontier tensor, an unfrozen dropout or
//! batch norm ends the prefix, a residual read of the base is not cached), and that training
//! the head on features computed by the reference interpreter gives bit for bit the weights
//! of training the whole network on the images.

use super::*;
use crate::driver::{self, Select};
use crate::train::checkpoint::Progress;
use crate::train::data::{Dataset, InputSpec, SampleValues, Samples};
use crate::train::optim::{Optimizer, OptimizerConfig, SgdConfig};
use crate::train::recipe::Recipe;
use crate::train::trainer::{train, RunOptions};

fn graph_of(source: &str) -> Graph {
    let compilation = driver::compile(driver::load_source("t.cnn", source), &Select::All);
    assert!(
        !compilation.has_errors(),
        "{}",
        compilation.render_diagnostics()
    );
    let graph = compilation.graphs().next().cloned();
    graph.expect("a network")
}

const BASE: &str =
    "block base(x) { x -> conv(4, 3, pad: 1) -> bn: batchnorm -> relu -> maxpool(2) }";

fn network(body: &str) -> Graph {
    graph_of(&format!("{BASE}\nnetwork n(x: 8x8x2) {{ {body} }}"))
}

#[test]
fn a_frozen_base_is_cut_where_the_head_reads_it() {
    let graph = network("x -> b: frozen base -> flatten -> fc: dense(3) -> softmax");
    let split = split_frozen_prefix(&graph).unwrap();
    // The flatten after the base is not trainable and reads nothing trainable: it is cached.
    assert_eq!(split.features, Shape::flat(64));
    assert_eq!(split.frontier, "flatten (64)");
    assert_eq!(split.prefix.shape(split.prefix.output()), Shape::flat(64));
    // The head keeps the network's node numbers: the input and identities stand for the
    // prefix's nodes.
    let head_ops: Vec<&str> = split.head.nodes.values().map(|n| n.op.name()).collect();
    assert_eq!(head_ops.len(), graph.nodes.len());
    assert_eq!(head_ops[0], "input");
    assert!(
        head_ops[1..6].iter().all(|&op| op == "identity"),
        "{head_ops:?}"
    );
    assert_eq!(head_ops[6..], ["dense", "softmax"]);
    assert_eq!(split.head.shape(split.head.inputs[0]), Shape::flat(64));
    // The names stay, so the same weights train the head.
    let names: Vec<String> = split.head.named_params().into_iter().map(|p| p.0).collect();
    assert_eq!(names, ["fc.weight", "fc.bias"]);
    let prefix: Vec<String> = split
        .prefix
        .named_params()
        .into_iter()
        .map(|p| p.0)
        .collect();
    assert_eq!(prefix.len(), 6, "{prefix:?}");
}

#[test]
fn an_unfrozen_dropout_ends_the_prefix() {
    let graph = network("x -> b: frozen base -> dropout(0.5) -> flatten -> fc: dense(3)");
    let split = split_frozen_prefix(&graph).unwrap();
    assert_eq!(split.features, Shape::spatial(4, 4, 4));
    let head_ops: Vec<&str> = split.head.nodes.values().map(|n| n.op.name()).collect();
    assert_eq!(
        head_ops[head_ops.len() - 3..],
        ["dropout", "flatten", "dense"]
    );
    assert_eq!(head_ops[head_ops.len() - 4], "identity");
}

#[test]
fn networks_that_cannot_be_cached_say_why() {
    let none = network("x -> b: base -> flatten -> fc: dense(3)");
    assert_eq!(
        split_frozen_prefix(&none).unwrap_err(),
        NoCache::NoFrozenPrefix
    );
    let all = network("x -> b: frozen base -> flatten -> fc: frozen dense(3)");
    assert_eq!(
        split_frozen_prefix(&all).unwrap_err(),
        NoCache::NothingTrainable
    );
    // The head reads both the base's output and the image: two tensors.
    let residual = graph_of(
        "network n(x: 8x8x4) { let y = x -> b: frozen conv(4, 3, pad: 1)\n\
         let z = y -> c: conv(4, 3, pad: 1)\n return z + x -> flatten -> fc: dense(3) }",
    );
    assert_eq!(
        split_frozen_prefix(&residual).unwrap_err(),
        NoCache::SeveralTensors(2)
    );
}

/// A data set of `n` random 8×8×2 images with labels 0..3.
fn random_dataset(n: usize, seed: u64) -> Dataset {
    let mut rng = crate::runtime::rng::SplitMix64::for_stream(seed, "test images");
    let values: Vec<f32> = (0..n * 128)
        .map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
        .collect();
    let labels: Vec<u32> = (0..n).map(|i| (i % 3) as u32).collect();
    let shape = Shape::spatial(8, 8, 2);
    let samples = Samples {
        values: SampleValues::Raw(values),
        labels,
        stored: shape,
        source: "random".into(),
    };
    let spec = InputSpec {
        name: "x".into(),
        shape,
        preprocess: None,
        pad: 0,
    };
    Dataset::new(samples, spec, Vec::new(), 3).unwrap()
}

fn run(graph: &Graph, weights: &mut Weights, data: &Dataset, threads: usize) -> Vec<f64> {
    let settings = Recipe::default().settings().unwrap();
    let options = RunOptions {
        settings: crate::train::recipe::Settings {
            optimizer: OptimizerConfig::Sgd(SgdConfig {
                lr: 0.3,
                momentum: 0.9,
                ..SgdConfig::default()
            }),
            epochs: 2,
            batch: 5,
            ..settings
        },
        shuffle: true,
        max_steps: None,
        threads,
        loader_threads: 1,
        checkpoint: None,
    };
    let mut optimizer = Optimizer::new(options.settings.optimizer.clone()).unwrap();
    let reports = train(
        graph,
        weights,
        &mut optimizer,
        data,
        &options,
        Progress::default(),
        &mut |_| Ok(None),
        &mut |_| {},
        &mut |_| {},
        None,
    )
    .unwrap();
    reports.iter().map(|r| r.loss).collect()
}

/// The cached run is the same computation in another order of calls: the prefix's reference
/// forward is what the trainer's forward does for frozen layers (inference mode), so every
/// weight must come out bit-identical, frozen and trained alike.
#[test]
fn training_the_head_on_cached_features_gives_the_same_weights() {
    let graph =
        network("x -> b: frozen base -> dropout(0.25) -> flatten -> fc: dense(3) -> softmax");
    let data = random_dataset(13, 4);
    let mut start = Weights::seeded(&graph, 9).unwrap();
    // Running statistics away from (0, 1), so inference-mode batch norm matters.
    start.get_mut("b.bn.running_mean").unwrap().fill(0.25);
    start.get_mut("b.bn.running_var").unwrap().fill(2.0);
    for threads in [1, 2] {
        let mut whole = start.clone();
        let whole_losses = run(&graph, &mut whole, &data, threads);

        let split = split_frozen_prefix(&graph).unwrap();
        let mut forward = |images: &ArrayD<f32>| {
            crate::reference::run(&split.prefix, &start, std::slice::from_ref(images))
                .map_err(|e| e.to_string())
        };
        let (features, from_disk) = cached_features(
            None,
            "train",
            &split,
            &start,
            &data,
            4,
            "reference",
            &mut forward,
        )
        .unwrap();
        assert!(!from_disk);
        assert_eq!(features.len(), data.len());
        let mut cached = start.clone();
        let cached_losses = run(&split.head, &mut cached, &features, threads);

        assert_eq!(whole_losses, cached_losses, "{threads} thread(s)");
        for (name, tensor) in whole.iter() {
            let other = cached.get(name).unwrap();
            let same = tensor
                .iter()
                .zip(other.iter())
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{name} differs with {threads} thread(s)");
        }
        assert_ne!(whole.get("fc.weight"), start.get("fc.weight"));
        assert_eq!(whole.get("b.bn.running_var"), start.get("b.bn.running_var"));
    }
}

#[test]
fn the_disk_cache_is_reused_only_under_the_same_key() {
    let graph = network("x -> b: frozen base -> flatten -> fc: dense(3)");
    let split = split_frozen_prefix(&graph).unwrap();
    let data = random_dataset(6, 1);
    let weights = Weights::seeded(&graph, 2).unwrap();
    let dir = std::env::temp_dir().join(format!("cnnc-cache-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut calls = 0;
    let run_with = |weights: &Weights, data: &Dataset, calls: &mut usize| {
        let mut forward = |images: &ArrayD<f32>| {
            *calls += 1;
            crate::reference::run(&split.prefix, weights, std::slice::from_ref(images))
                .map_err(|e| e.to_string())
        };
        cached_features(
            Some(&dir),
            "train",
            &split,
            weights,
            data,
            4,
            "reference",
            &mut forward,
        )
        .unwrap()
    };
    let (first, disk) = run_with(&weights, &data, &mut calls);
    assert!(!disk);
    assert_eq!(calls, 2, "6 images in batches of 4");
    let (second, disk) = run_with(&weights, &data, &mut calls);
    assert!(disk, "the same key reads the features back");
    assert_eq!(calls, 2);
    let order: Vec<usize> = (0..6).collect();
    assert_eq!(first.batch(&order), second.batch(&order));
    // Another frozen weight, or other images: computed again.
    let mut changed = weights.clone();
    changed.get_mut("b.bn.running_mean").unwrap()[[0]] += 1e-3;
    assert!(!run_with(&changed, &data, &mut calls).1);
    assert_eq!(calls, 4);
    assert!(!run_with(&weights, &random_dataset(6, 2), &mut calls).1);
    // A change of the trainable head's weights does not touch the features.
    let mut head = weights.clone();
    head.get_mut("fc.weight").unwrap()[[0, 0]] += 1.0;
    assert!(run_with(&head, &random_dataset(6, 2), &mut calls).1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn stages_inherit_what_they_do_not_set() {
    let graph = graph_of(
        "network n(x: 4x4x1) {\n train(optimizer: sgd(lr: 0.1, momentum: 0.9), epochs: 3, batch: 8,\n \
         then: train(unfreeze: [b], optimizer: sgd(lr: 0.01), epochs: 2,\n \
         then: train(optimizer: adam)))\n x -> b: frozen conv(2, 3) -> flatten -> fc: dense(2) }",
    );
    let recipe = graph.meta.train.clone().unwrap();
    let flags = Recipe {
        batch: Some(4),
        ..Recipe::default()
    };
    let stages = recipe.stages(0, &flags).unwrap();
    let settings: Vec<_> = stages.iter().map(|s| s.settings().unwrap()).collect();
    let OptimizerConfig::Sgd(second) = &settings[1].optimizer else {
        panic!("sgd")
    };
    assert_eq!((second.lr, second.momentum), (0.01, 0.9));
    assert_eq!(
        settings
            .iter()
            .map(|s| (s.epochs, s.batch))
            .collect::<Vec<_>>(),
        [(3, 4), (2, 4), (2, 4)]
    );
    assert!(matches!(settings[2].optimizer, OptimizerConfig::Adam(_)));
    assert_eq!(stages[1].unfreeze.len(), 1);
    assert!(stages[2].unfreeze.is_empty());
    // Flags laid over the second stage leave the first as declared.
    let stages = recipe.stages(1, &flags).unwrap();
    assert_eq!(stages[0].batch, Some(8));
    assert_eq!(stages[1].batch, Some(4));
}
