//! The runtime's weights and inputs: seeded initialization, safetensors and `.npy` round trips,
//! images, and every way such a file can be wrong.

use super::*;

// ---------------------------------------------------------------------------------------------
// Seeded weights

/// conv1 (7×7, 3 → 8, no bias) → bn1 → relu → global pool → flatten → fc (8 → 10).
pub(super) fn small_net() -> Graph {
    let mut graph = Graph::new("small");
    let x = graph.add_input("image", Shape::spatial(16, 16, 3), Span::default());
    let mut add = |op, input, path: &str| {
        graph
            .add(op, vec![input], path.into(), Origin::default())
            .unwrap()
    };
    let c = add(
        Op::Conv(ConvAttrs {
            stride: [2, 2],
            pad: Padding::uniform(3),
            ..conv(8, 7)
        }),
        x,
        "conv1",
    );
    let b = add(Op::BatchNorm { eps: 1e-5 }, c, "bn1");
    let r = add(Op::Activation(Activation::Relu), b, "relu");
    let p = add(Op::GlobalPool(PoolKind::Avg), r, "pool");
    let f = add(Op::Flatten, p, "flatten");
    let fc = DenseAttrs {
        units: 10,
        bias: true,
        weights: None,
        bias_values: None,
        activation: None,
    };
    let y = add(Op::Dense(fc), f, "fc");
    graph.set_output(y);
    graph
}

#[test]
fn seeded_weights_follow_pytorch_defaults_and_are_deterministic() {
    let graph = small_net();
    let weights = Weights::seeded(&graph, 42).unwrap();
    let names: Vec<&str> = weights.iter().map(|(name, _)| name).collect();
    assert_eq!(
        names,
        [
            "conv1.weight",
            "bn1.weight",
            "bn1.bias",
            "bn1.running_mean",
            "bn1.running_var",
            "fc.weight",
            "fc.bias"
        ]
    );
    // fan_in = 3·7·7 for conv1, 8 for fc.
    let conv_bound = 1.0 / (147.0f32).sqrt();
    let conv1 = weights.get("conv1.weight").unwrap();
    assert_eq!(conv1.shape(), &[8, 3, 7, 7]);
    assert!(conv1.iter().all(|v| v.abs() <= conv_bound));
    assert!(
        conv1.iter().any(|v| v.abs() > conv_bound * 0.9),
        "the whole range is used"
    );
    let fc_bound = 1.0 / 8f32.sqrt();
    assert!(weights
        .get("fc.bias")
        .unwrap()
        .iter()
        .all(|v| v.abs() <= fc_bound));
    assert!(weights.get("bn1.weight").unwrap().iter().all(|&v| v == 1.0));
    assert!(weights
        .get("bn1.running_mean")
        .unwrap()
        .iter()
        .all(|&v| v == 0.0));
    assert!(weights
        .get("bn1.running_var")
        .unwrap()
        .iter()
        .all(|&v| v == 1.0));

    assert_eq!(weights, Weights::seeded(&graph, 42).unwrap());
    assert_ne!(
        weights.get("fc.weight"),
        Weights::seeded(&graph, 43).unwrap().get("fc.weight")
    );
    // A tensor's values depend on its name and the seed only, not on the other layers.
    let mut alone = single(Shape::spatial(16, 16, 3), Op::Conv(conv(8, 7)));
    let output = alone.output();
    alone.nodes[output].path = "conv1".into();
    assert_eq!(
        Weights::seeded(&alone, 42).unwrap().get("conv1.weight"),
        Some(conv1)
    );
}

// ---------------------------------------------------------------------------------------------
// Safetensors

#[test]
fn safetensors_round_trip_is_exact() {
    let graph = small_net();
    let weights = Weights::seeded(&graph, 3).unwrap();
    let path = temp_path("round_trip.safetensors");
    weights.save_safetensors(&path).unwrap();
    let loaded = Weights::load_safetensors(&path, &graph, &LoadOptions::strict()).unwrap();
    assert_eq!(loaded.weights, weights);
    assert!(loaded.warnings.is_empty() && loaded.seeded.is_empty());
    let input = synthetic_input(Shape::spatial(16, 16, 3), 2, 0).unwrap();
    let output = run1(&graph, &loaded.weights, input);
    assert_eq!(output.shape(), &[2, 10]);
}

/// A safetensors file written by the crate itself, with tensors of any dtype.
pub(super) fn crate_file(tensors: &[(&str, safetensors::Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(name, dtype, shape, data)| {
            let view = safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).unwrap();
            (name.to_string(), view)
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

pub(super) fn conv_net(filters: usize, kernel: usize) -> Graph {
    let mut graph = single(Shape::spatial(8, 8, 3), Op::Conv(conv(filters, kernel)));
    let output = graph.output();
    graph.nodes[output].path = "conv1".into();
    graph
}

#[test]
fn half_precision_tensors_are_converted() {
    let graph = conv_net(1, 1);
    let values = [0.5f32, -2.0, 3.25];
    let f16: Vec<u8> = values
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    let bf16: Vec<u8> = values
        .iter()
        .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
        .collect();
    for (dtype, data) in [
        (safetensors::Dtype::F16, f16),
        (safetensors::Dtype::BF16, bf16),
    ] {
        let file = crate_file(&[("conv1.weight", dtype, vec![1, 3, 1, 1], data)]);
        let loaded =
            Weights::from_safetensors_bytes(&file, "w".as_ref(), &graph, &LoadOptions::strict())
                .unwrap();
        assert_close(loaded.weights.get("conv1.weight").unwrap(), &values);
    }
}

#[test]
fn wrong_shape_missing_and_wrong_dtype_tensors_name_the_layer() {
    let graph = conv_net(64, 7);
    let wrong = ArrayD::<f32>::zeros(IxDyn(&[64, 3, 5, 5]));
    let mut weights = Weights::new();
    weights.insert("conv1.weight", wrong);
    let path = temp_path("wrong_shape.safetensors");
    weights.save_safetensors(&path).unwrap();
    let errors = Weights::load_safetensors(&path, &graph, &LoadOptions::default()).unwrap_err();
    assert_eq!(errors.errors.len(), 1);
    let error = &errors.errors[0];
    assert_eq!(
        error.to_string(),
        "tensor `conv1.weight` has shape 64×3×5×5 but conv `conv1` needs 64×3×7×7"
    );
    assert_eq!(error.node(), Some(graph.output()));

    // Missing, with a hint when the file's names carry a prefix.
    let file = crate_file(&[(
        "model.conv1.weight",
        safetensors::Dtype::F32,
        vec![1],
        vec![0; 4],
    )]);
    let errors =
        Weights::from_safetensors_bytes(&file, "w".as_ref(), &graph, &LoadOptions::default())
            .unwrap_err();
    match &errors.errors[0] {
        e @ WeightsError::Missing {
            name,
            expected,
            found_as,
            ..
        } => {
            assert_eq!(
                (name.as_str(), expected.to_string()),
                ("conv1.weight", "64×3×7×7".into())
            );
            assert_eq!(found_as.as_deref(), Some("model.conv1.weight"));
            assert!(e.help().unwrap().contains("prefix"));
        }
        other => panic!("expected a missing tensor, got {other}"),
    }
    assert_eq!(errors.warnings.len(), 1, "the prefixed tensor is unused");

    let file = crate_file(&[(
        "conv1.weight",
        safetensors::Dtype::I64,
        vec![64, 3, 7, 7],
        vec![0; 64 * 3 * 49 * 8],
    )]);
    let errors =
        Weights::from_safetensors_bytes(&file, "w".as_ref(), &graph, &LoadOptions::default())
            .unwrap_err();
    assert!(
        matches!(&errors.errors[0], WeightsError::WrongDtype { dtype, .. } if dtype == "I64"),
        "{errors}"
    );
}

#[test]
fn unexpected_tensors_warn_unless_strict_and_step_counters_are_ignored() {
    let graph = conv_net(1, 1);
    let file = crate_file(&[
        (
            "conv1.weight",
            safetensors::Dtype::F32,
            vec![1, 3, 1, 1],
            vec![0; 12],
        ),
        ("extra.weight", safetensors::Dtype::F32, vec![2], vec![0; 8]),
        (
            "bn1.num_batches_tracked",
            safetensors::Dtype::I64,
            vec![],
            vec![0; 8],
        ),
    ]);
    let loaded =
        Weights::from_safetensors_bytes(&file, "w".as_ref(), &graph, &LoadOptions::default())
            .unwrap();
    assert_eq!(loaded.warnings.len(), 1);
    assert_eq!(
        loaded.warnings[0].to_string(),
        "the weights file has a tensor `extra.weight` (2) that no layer of network `test` uses"
    );
    let errors =
        Weights::from_safetensors_bytes(&file, "w".as_ref(), &graph, &LoadOptions::strict())
            .unwrap_err();
    assert_eq!(errors.errors.len(), 1);
}

#[test]
fn allowed_missing_tensors_are_seeded() {
    let graph = small_net();
    let weights = Weights::seeded(&graph, 5).unwrap();
    let mut partial = Weights::new();
    for (name, t) in weights.iter().filter(|(name, _)| !name.starts_with("fc.")) {
        partial.insert(name, t.clone());
    }
    let file = partial.to_safetensors_bytes();
    let options = LoadOptions {
        allow_missing: vec!["fc".into()],
        seed: 5,
        ..LoadOptions::default()
    };
    let loaded = Weights::from_safetensors_bytes(&file, "w".as_ref(), &graph, &options).unwrap();
    assert_eq!(loaded.seeded, ["fc.weight", "fc.bias"]);
    assert_eq!(loaded.weights, weights);
    // `f` is not a path prefix of `fc.weight`.
    let options = LoadOptions {
        allow_missing: vec!["f".into()],
        ..LoadOptions::default()
    };
    assert!(Weights::from_safetensors_bytes(&file, "w".as_ref(), &graph, &options).is_err());
}

#[test]
fn truncated_and_garbage_weight_files_are_errors_never_panics() {
    let graph = small_net();
    let file = Weights::seeded(&graph, 1).unwrap().to_safetensors_bytes();
    let path = temp_path("truncated.safetensors");
    std::fs::write(&path, &file[..file.len() - 10]).unwrap();
    let errors = Weights::load_safetensors(&path, &graph, &LoadOptions::default()).unwrap_err();
    assert!(
        matches!(errors.errors[0], WeightsError::Corrupt { .. }),
        "{errors}"
    );

    let missing =
        Weights::load_safetensors(&temp_path("no_such_file"), &graph, &LoadOptions::default());
    assert!(matches!(
        missing.unwrap_err().errors[0],
        WeightsError::Unreadable { .. }
    ));

    // Every prefix, and the file with bytes flipped, and plain noise: errors or loads, no panic.
    let options = LoadOptions::default();
    for len in (0..file.len()).step_by(7) {
        let _ = Weights::from_safetensors_bytes(&file[..len], "w".as_ref(), &graph, &options);
    }
    let mut state = 0x1234_5678u32;
    for _ in 0..300 {
        let mut bytes = file.clone();
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let idx = state as usize % 120.min(bytes.len());
        bytes[idx] ^= (state >> 24) as u8 | 1;
        let _ = Weights::from_safetensors_bytes(&bytes, "w".as_ref(), &graph, &options);
    }
    let noise: Vec<u8> = (0..500u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let err = Weights::from_safetensors_bytes(&noise, "w".as_ref(), &graph, &options).unwrap_err();
    // Noise does not open as a safetensors file does: not a damaged file, not one at all.
    assert!(matches!(err.errors[0], WeightsError::NotSafetensors { .. }));
}

// ---------------------------------------------------------------------------------------------
// Inputs: .npy

fn input_net(shape: Shape, preprocess: Option<Preprocess>) -> Graph {
    let mut graph = single(shape, Op::Identity);
    graph.meta.preprocess = preprocess;
    graph
}

#[test]
fn npy_round_trip_and_shapes() {
    let array = synthetic_input(Shape::spatial(4, 5, 3), 2, 11).unwrap();
    let path = temp_path("round_trip.npy");
    write_npy(&path, &array).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(parse_npy(&bytes).unwrap(), NpyArray::Float(array.clone()));
    assert_eq!(
        &bytes[..10],
        b"\x93NUMPY\x01\x00\x76\x00",
        "numpy's 128-byte header"
    );

    let graph = input_net(Shape::spatial(4, 5, 3), None);
    assert_eq!(load_input(&path, &graph, 0).unwrap(), array);
    // H×W×C gains a batch axis.
    let one = array.index_axis(ndarray::Axis(0), 0).to_owned();
    let path = temp_path("hwc.npy");
    write_npy(&path, &one).unwrap();
    assert_eq!(load_input(&path, &graph, 0).unwrap().shape(), &[1, 4, 5, 3]);

    let wrong = input_net(Shape::spatial(5, 4, 3), None);
    let err = load_input(&path, &wrong, 0).unwrap_err();
    assert!(
        err.to_string()
            .contains("holds an array of shape 4×5×3, but input `x` is 5×4×3"),
        "{err}"
    );
}

#[test]
fn npy_of_one_channel_bytes_and_fortran_order() {
    // H×W uint8 for a one-channel input: pixels scaled to [0, 1].
    let header = "{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3), }";
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&[0, 51, 102, 153, 204, 255]);
    let path = temp_path("gray.npy");
    std::fs::write(&path, &bytes).unwrap();
    let graph = input_net(Shape::spatial(2, 3, 1), None);
    let input = load_input(&path, &graph, 0).unwrap();
    assert_close(&input, &[0., 0.2, 0.4, 0.6, 0.8, 1.]);
    // Truncated data is an error.
    std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    assert!(matches!(
        load_input(&path, &graph, 0),
        Err(InputError::Npy {
            source: NpyError::DataLength { .. },
            ..
        })
    ));

    // A Fortran-order float64 array is read in its logical order.
    let header = "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 2), }";
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in [1.0f64, 3.0, 2.0, 4.0] {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    assert_eq!(
        parse_npy(&bytes).unwrap(),
        NpyArray::Float(tensor(&[2, 2], vec![1., 2., 3., 4.]))
    );
}

#[test]
fn malformed_npy_headers_are_errors() {
    let good = npy_bytes(&tensor(&[2], vec![1., 2.]));
    for len in 0..good.len() {
        assert!(parse_npy(&good[..len]).is_err(), "prefix of {len} bytes");
    }
    let with_header = |header: &str| {
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        bytes
    };
    let cases = [
        (
            "{'descr': '<i8', 'fortran_order': False, 'shape': (), }",
            "dtype",
        ),
        ("{'descr': '<f4', 'shape': (1,), }", "fortran_order"),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,2",
            "malformed",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }",
            "malformed",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (65536, 65536), }",
            "limit",
        ),
    ];
    for (header, expected) in cases {
        let err = parse_npy(&with_header(header)).unwrap_err();
        assert!(err.to_string().contains(expected), "{header}: {err}");
    }
}

// ---------------------------------------------------------------------------------------------
// Inputs: images

fn imagenet() -> Preprocess {
    Preprocess {
        resize: Some(32),
        crop: Some(28),
        mean: vec![0.485, 0.456, 0.406],
        std: vec![0.229, 0.224, 0.225],
        pad: 0,
    }
}

#[test]
fn png_and_jpeg_images_are_decoded_and_preprocessed() {
    // A solid 48×40 colour: every preprocessed pixel is (colour/255 − mean)/std.
    let colour = [200u8, 100, 50];
    let picture = image::RgbImage::from_pixel(48, 40, image::Rgb(colour));
    let graph = input_net(Shape::spatial(28, 28, 3), Some(imagenet()));
    let p = imagenet();
    let expected: Vec<f32> = (0..3)
        .map(|c| (colour[c] as f32 / 255.0 - p.mean[c]) / p.std[c])
        .collect();

    for (name, tolerance) in [("solid.png", 1e-5), ("solid.jpg", 0.05)] {
        let path = temp_path(name);
        picture.save(&path).unwrap();
        let input = load_input(&path, &graph, 0).unwrap();
        assert_eq!(input.shape(), &[1, 28, 28, 3]);
        for pixel in input.lanes(ndarray::Axis(3)) {
            for (found, want) in pixel.iter().zip(&expected) {
                assert!(
                    (found - want).abs() < tolerance,
                    "{name}: {found} vs {want}"
                );
            }
        }
    }

    // Grayscale, without preprocessing: resized straight to the input and scaled to [0, 1].
    let path = temp_path("gradient.png");
    image::GrayImage::from_fn(16, 16, |x, _| image::Luma([(x * 17) as u8]))
        .save(&path)
        .unwrap();
    let graph = input_net(Shape::spatial(8, 8, 1), None);
    let input = load_input(&path, &graph, 0).unwrap();
    assert_eq!(input.shape(), &[1, 8, 8, 1]);
    assert!(input.iter().all(|&v| (0.0..=1.0).contains(&v)));
    assert!(
        input[[0, 0, 7, 0]] > input[[0, 0, 0, 0]],
        "the gradient survives resizing"
    );
}

#[test]
fn padded_inputs_get_a_black_border_as_in_training() {
    // A 28×28 gradient on a 32×32 input with `pad: 2`: the image keeps its pixels (no
    // stretching) inside a 2-pixel border of black, and both are normalized, as torchvision's
    // Pad(2) then Normalize do.
    let path = temp_path("digit.png");
    image::GrayImage::from_fn(28, 28, |x, y| image::Luma([(x * 8 + y / 4) as u8]))
        .save(&path)
        .unwrap();
    let (mean, std) = (0.1307f32, 0.3081f32);
    let preprocess = Preprocess {
        pad: 2,
        mean: vec![mean],
        std: vec![std],
        ..Preprocess::default()
    };
    let graph = input_net(Shape::spatial(32, 32, 1), Some(preprocess));
    let input = load_input(&path, &graph, 0).unwrap();
    assert_eq!(input.shape(), &[1, 32, 32, 1]);
    for row in 0..32 {
        for column in 0..32 {
            let inside = (2..30).contains(&row) && (2..30).contains(&column);
            let pixel = if inside {
                ((column - 2) * 8 + (row - 2) / 4) as f32 / 255.0
            } else {
                0.0
            };
            let want = (pixel - mean) / std;
            let found = input[[0, row, column, 0]];
            assert!(
                (found - want).abs() < 1e-5,
                "({row}, {column}): {found} vs {want}"
            );
        }
    }
}

#[test]
fn images_that_cannot_fit_the_input_are_errors() {
    let path = temp_path("wide.png");
    image::RgbImage::from_pixel(60, 30, image::Rgb([1, 2, 3]))
        .save(&path)
        .unwrap();
    // Resize 32 without a crop leaves 32×64, not the 32×32 the network takes.
    let preprocess = Preprocess {
        resize: Some(32),
        ..Preprocess::default()
    };
    let graph = input_net(Shape::spatial(32, 32, 3), Some(preprocess));
    let err = load_input(&path, &graph, 0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "after preprocessing the image is 32×64, but input `x` is 32×32×3"
    );
    let graph = input_net(Shape::spatial(30, 60, 4), None);
    assert!(matches!(
        load_input(&path, &graph, 0),
        Err(InputError::Channels { channels: 4, .. })
    ));
}

#[test]
fn a_text_file_named_png_is_an_error() {
    let path = temp_path("not_an_image.png");
    std::fs::write(&path, "this is not an image\n").unwrap();
    let graph = input_net(Shape::spatial(8, 8, 3), None);
    let err = load_input(&path, &graph, 0).unwrap_err();
    assert!(matches!(err, InputError::UnknownFormat { .. }), "{err}");
    // A PNG signature followed by garbage is a decoding error.
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend_from_slice(&[0xAB; 40]);
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        load_input(&path, &graph, 0),
        Err(InputError::Image { .. })
    ));
    let err = load_input(&temp_path("absent.png"), &graph, 0).unwrap_err();
    assert!(matches!(err, InputError::Unreadable { .. }), "{err}");
}

#[test]
fn synthetic_inputs_are_deterministic() {
    let shape = Shape::spatial(3, 4, 2);
    let a = synthetic_input(shape, 2, 8).unwrap();
    assert_eq!(a.shape(), &[2, 3, 4, 2]);
    assert_eq!(a, synthetic_input(shape, 2, 8).unwrap());
    assert_ne!(a, synthetic_input(shape, 2, 9).unwrap());
    assert!(a.iter().all(|&v| (-1.0..1.0).contains(&v)));
    assert_eq!(
        synthetic_input(Shape::flat(10), 3, 0).unwrap().shape(),
        &[3, 10]
    );
    assert!(matches!(
        synthetic_input(shape, 0, 0),
        Err(InputError::EmptyBatch)
    ));
}
