//! Weights bound from a mapped safetensors file (`runtime::bind_safetensors`, what `cnnc run`
//! and `cnnc bench` use): the numbers and the errors of `Weights::load_safetensors`; every
//! kind of constant read in pieces (`Constant::read_range`) as it reads whole; and the JIT's
//! packing from the file, in pieces, as from memory.

use super::runtime_files::{conv_net, crate_file, small_net};
use super::*;
use cnnc::codegen::{compile_graph, CodegenOptions};
use cnnc::graph::{ConstSource, Constant};
use cnnc::runtime::{bind_safetensors, learned_weights, WeightsErrors};
use std::path::Path;

/// `graph` with the file at `path` bound.
fn bound(graph: &Graph, path: &Path, options: &LoadOptions) -> Result<Graph, WeightsErrors> {
    let mut graph = graph.clone();
    bind_safetensors(&mut graph, path, options)?;
    Ok(graph)
}

fn write(name: &str, bytes: &[u8]) -> PathBuf {
    let path = temp_path(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn a_bound_file_holds_the_numbers_loading_decodes() {
    let graph = small_net();
    let weights = Weights::seeded(&graph, 3).unwrap();
    let path = temp_path("mapped_round_trip.safetensors");
    weights.save_safetensors(&path).unwrap();
    let mut mapped = graph.clone();
    let report = bind_safetensors(&mut mapped, &path, &LoadOptions::strict()).unwrap();
    assert_eq!(report.from_file, 7);
    assert!(report.warnings.is_empty() && report.seeded.is_empty());
    assert!(mapped
        .consts
        .values()
        .filter(|c| c.learned)
        .all(|c| matches!(c.source, ConstSource::Mapped(_))));
    assert_eq!(learned_weights(&mapped), weights);
    let input = synthetic_input(Shape::spatial(16, 16, 3), 2, 0).unwrap();
    let expected = run1(&graph, &weights, input.clone());
    let found = cnnc::reference::evaluate(&mapped, &[input]).unwrap();
    assert_eq!(found, expected);
}

/// F16 tensors are converted; an F32 tensor at an address that is not 4-byte aligned (a
/// header whose length is not a multiple of 4, which the format allows) is read all the same.
#[test]
fn half_precision_and_unaligned_tensors_are_converted() {
    let graph = conv_net(1, 1);
    let values = [0.5f32, -2.0, 3.25];
    let f16: Vec<u8> = values
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    let file = crate_file(&[(
        "conv1.weight",
        safetensors::Dtype::F16,
        vec![1, 3, 1, 1],
        f16,
    )]);
    let path = write("mapped_f16.safetensors", &file);
    let mapped = bound(&graph, &path, &LoadOptions::strict()).unwrap();
    let id = mapped.node_const(mapped.output(), "weight").unwrap();
    assert_eq!(&*mapped.consts[id].read(), &values);

    let header = r#"{"conv1.weight":{"dtype":"F32","shape":[1,3,1,1],"data_offsets":[0,12]}}"#;
    let mut header = header.to_string();
    while (8 + header.len()) % 4 != 1 {
        header.push(' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    for value in values {
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    let path = write("mapped_unaligned.safetensors", &bytes);
    let mapped = bound(&graph, &path, &LoadOptions::strict()).unwrap();
    let id = mapped.node_const(mapped.output(), "weight").unwrap();
    assert_eq!(&*mapped.consts[id].read(), &values);
    assert_eq!(&*mapped.consts[id].read_range(1..3), &values[1..]);
    assert_eq!(mapped.consts[id].values(), &values);
}

/// Every bad file gives the errors (and warnings) loading it gives, and leaves the graph's
/// constants as they were.
#[test]
fn bad_files_give_the_errors_of_loading() {
    let graph = conv_net(64, 7);
    let good = Weights::seeded(&graph, 0).unwrap().to_safetensors_bytes();
    let mut wrong_shape = Weights::new();
    wrong_shape.insert("conv1.weight", ArrayD::zeros(IxDyn(&[64, 3, 5, 5])));
    let f32_tensor = |name: &str, shape: Vec<usize>| {
        let bytes = vec![0; shape.iter().product::<usize>() * 4];
        (name.to_string(), safetensors::Dtype::F32, shape, bytes)
    };
    let (prefixed, extra) = (
        f32_tensor("model.conv1.weight", vec![1]),
        f32_tensor("extra", vec![2]),
    );
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("wrong_shape", wrong_shape.to_safetensors_bytes()),
        (
            "prefixed",
            crate_file(&[(&prefixed.0, prefixed.1, prefixed.2, prefixed.3)]),
        ),
        (
            "integers",
            crate_file(&[(
                "conv1.weight",
                safetensors::Dtype::I64,
                vec![64, 3, 7, 7],
                vec![0; 64 * 3 * 49 * 8],
            )]),
        ),
        ("truncated", good[..good.len() - 10].to_vec()),
        ("empty", Vec::new()),
        ("text", b"conv1.weight = [1, 2, 3]\n".to_vec()),
        (
            "noise",
            (0..500u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
        ),
    ];
    for (name, bytes) in files {
        let path = write(&format!("mapped_bad_{name}.safetensors"), &bytes);
        let loaded = Weights::load_safetensors(&path, &graph, &LoadOptions::strict()).unwrap_err();
        let mut mapped = graph.clone();
        let found = bind_safetensors(&mut mapped, &path, &LoadOptions::strict()).unwrap_err();
        assert_eq!(found.to_string(), loaded.to_string(), "{name}");
        assert_eq!(found.warnings.len(), loaded.warnings.len(), "{name}");
        assert!(
            mapped
                .consts
                .values()
                .all(|c| matches!(c.source, ConstSource::Seeded { seed: 0, .. })),
            "{name}"
        );
    }
    let extra_file = write(
        "mapped_extra.safetensors",
        &crate_file(&[(&extra.0, extra.1, extra.2, extra.3)]),
    );
    let options = LoadOptions {
        allow_missing: vec!["conv1".into()],
        seed: 9,
        ..LoadOptions::default()
    };
    // A tensor no layer uses warns; an allowed missing one is seeded with the given seed.
    let mut mapped = graph.clone();
    let report = bind_safetensors(&mut mapped, &extra_file, &options).unwrap();
    assert_eq!((report.from_file, report.warnings.len()), (0, 1));
    assert_eq!(report.seeded, ["conv1.weight"]);
    let id = mapped.node_const(mapped.output(), "weight").unwrap();
    let seeded = Weights::seeded(&graph, 9).unwrap();
    let expected = seeded.get("conv1.weight").unwrap();
    assert_eq!(&*mapped.consts[id].read(), expected.as_slice().unwrap());
    for path in [temp_path("no_such_file"), temp_path("")] {
        let loaded = Weights::load_safetensors(&path, &graph, &LoadOptions::default());
        let found = bind_safetensors(&mut graph.clone(), &path, &LoadOptions::default());
        assert_eq!(
            found.unwrap_err().to_string(),
            loaded.unwrap_err().to_string()
        );
    }
}

/// `read_range` of `constant` is the same part of `read`, for ranges at both ends, inside and
/// past the end; and still so once its memory is released.
fn check_ranges(constant: &Constant) {
    let whole = constant.read().into_owned();
    let n = whole.len();
    for range in [
        0..n,
        0..1,
        1..n,
        n / 3..n / 2 + 1,
        n - 1..n,
        n..n,
        n / 2..n + 5,
    ] {
        let expected = &whole[range.start.min(n)..range.end.min(n)];
        assert_eq!(
            &*constant.read_range(range.clone()),
            expected,
            "{}",
            constant.name
        );
        constant.release_range(range);
    }
    constant.release();
    assert_eq!(constant.read().into_owned(), whole, "{}", constant.name);
}

#[test]
fn constants_read_in_pieces_as_whole() {
    // Seeded, then folded (batch norm into conv1's weight and a new bias) from seeded.
    let mut graph = small_net();
    graph.seed_constants(4);
    for constant in graph.consts.values() {
        check_ranges(constant);
    }
    let mut folded = graph.clone();
    cnnc::opt::optimize(&mut folded, &cnnc::opt::Options::default()).unwrap();
    assert!(folded
        .consts
        .values()
        .any(|c| matches!(c.source, ConstSource::Folded(_))));
    for constant in folded.consts.values() {
        check_ranges(constant);
    }
    // Mapped, and folded from mapped; and numbers in hand.
    let path = temp_path("mapped_ranges.safetensors");
    Weights::seeded(&graph, 4)
        .unwrap()
        .save_safetensors(&path)
        .unwrap();
    let mut mapped = bound(&graph, &path, &LoadOptions::strict()).unwrap();
    for constant in mapped.consts.values() {
        check_ranges(constant);
    }
    cnnc::opt::optimize(&mut mapped, &cnnc::opt::Options::default()).unwrap();
    for constant in mapped.consts.values() {
        check_ranges(constant);
    }
    check_ranges(&Constant::from_values(
        "v",
        vec![5],
        false,
        vec![1., 2., 3., 4., 5.],
    ));
}

/// A dense layer of more than a million weights, which the packer reads a piece at a time:
/// compiled from seeded numbers (generated piece by piece), from the same numbers in memory
/// and from a mapped file, the code computes the same bits, and what the interpreter does.
#[test]
fn large_dense_weights_pack_in_pieces_from_every_source() {
    let dense = DenseAttrs {
        units: 1100,
        bias: true,
        weights: None,
        bias_values: None,
        activation: None,
    };
    let mut graph = Graph::new("wide");
    let x = graph.add_input("x", Shape::flat(1030), Span::default());
    let y = graph
        .add(Op::Dense(dense), vec![x], "fc".into(), Origin::default())
        .unwrap();
    graph.set_output(y);
    graph.seed_constants(2);
    let weights = Weights::seeded(&graph, 2).unwrap();
    let mut in_memory = graph.clone();
    cnnc::runtime::bind(&mut in_memory, &weights).unwrap();
    let path = temp_path("mapped_dense.safetensors");
    weights.save_safetensors(&path).unwrap();
    let mapped = bound(&graph, &path, &LoadOptions::strict()).unwrap();

    let input = synthetic_input(Shape::flat(1030), 1, 5).unwrap();
    let expected = run1(&graph, &weights, input.clone());
    let outputs: Vec<ArrayD<f32>> = [&graph, &in_memory, &mapped]
        .into_iter()
        .map(|graph| {
            let compiled = compile_graph(graph, &CodegenOptions::default()).unwrap();
            compiled.run(std::slice::from_ref(&input)).unwrap()
        })
        .collect();
    assert_eq!(outputs[0], outputs[1]);
    assert_eq!(outputs[0], outputs[2]);
    assert_close(&outputs[0], expected.as_slice().unwrap());
}
