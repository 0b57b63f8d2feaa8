//! The loader's batches are the one-thread batches, bit for bit, for any number of threads;
//! it stops cleanly when dropped early or when a thread fails; augmentation reaches training
//! batches only, never evaluation; the colour PCA of a data set of known pixels.

use super::*;
use crate::graph::{Preprocess, Shape};
use crate::train::augment::{Augmentation, Augmenter, RandomCrop};
use crate::train::augment_pca::ColorPca;
use crate::train::data::{InputSpec, SampleValues, Samples};
use std::path::PathBuf;

/// `n` RGB images of 6×6 bytes (a different pattern each), padded by 1 to 8×8, normalized
/// with mean 0.5 and std 0.25.
fn dataset(n: usize) -> Dataset {
    let spec = InputSpec {
        name: "image".into(),
        shape: Shape::spatial(8, 8, 3),
        preprocess: Some(Preprocess {
            mean: vec![0.5],
            std: vec![0.25],
            ..Preprocess::default()
        }),
        pad: 1,
    };
    let bytes: Vec<u8> = (0..n * 6 * 6 * 3).map(|v| (v * 37 % 256) as u8).collect();
    let samples = Samples {
        values: SampleValues::Pixels(bytes),
        labels: (0..n).map(|i| (i % 4) as u32).collect(),
        stored: Shape::spatial(6, 6, 3),
        source: PathBuf::from("test"),
    };
    Dataset::new(samples, spec, Vec::new(), 4).expect("valid")
}

fn everything() -> Augmentation {
    Augmentation {
        mirror: true,
        crop: Some(RandomCrop {
            height: 8,
            width: 8,
            pad: 2,
        }),
        resized_crop: Some((0.3, 1.0)),
        rotate: 15.0,
        shear: 5.0,
        scale: Some((0.9, 1.1)),
        color_shift: 0.1,
        pca_color: 0.5,
    }
}

fn augmented(n: usize) -> Dataset {
    let data = dataset(n);
    let augmenter = Augmenter::new(everything(), &data);
    data.with_augmentation(Some(Arc::new(augmenter)))
}

fn collect(data: &Dataset, order: &[usize], batch: usize, threads: usize) -> Vec<Batch> {
    BatchLoader::start(data, order, batch, 9, 2, threads)
        .expect("starts")
        .collect::<Result<Vec<Batch>, DataError>>()
        .expect("every batch is built")
}

#[test]
fn batches_are_bit_identical_with_one_and_three_loader_threads() {
    let data = augmented(23);
    let order = data.epoch_order(9, 2, true);
    let one = collect(&data, &order, 4, 1);
    let three = collect(&data, &order, 4, 3);
    assert_eq!(one.len(), 6); // 5 of 4 and the last of 3
    assert_eq!(one[5].labels.len(), 3);
    for (a, b) in one.iter().zip(&three) {
        assert_eq!(a.labels, b.labels);
        let (a, b): (Vec<u32>, Vec<u32>) = (
            a.images.iter().map(|v| v.to_bits()).collect(),
            b.images.iter().map(|v| v.to_bits()).collect(),
        );
        assert_eq!(a, b);
    }
    // And they are the batches one thread builds in order, without a loader.
    for (k, batch) in one.iter().enumerate() {
        let positions = &order[k * 4..(k * 4 + 4).min(order.len())];
        assert_eq!(*batch, data.training_batch(positions, 9, 2));
    }
}

#[test]
fn more_threads_than_batches_and_an_empty_epoch_are_fine() {
    let data = augmented(5);
    let order = data.epoch_order(0, 0, false);
    assert_eq!(collect(&data, &order, 4, 8).len(), 2);
    assert!(collect(&data, &[], 4, 2).is_empty());
    assert!(matches!(
        BatchLoader::start(&data, &order, 0, 0, 0, 1),
        Err(DataError::ZeroBatch)
    ));
}

#[test]
fn dropping_the_loader_early_stops_its_threads() {
    let data = augmented(200);
    let order = data.epoch_order(0, 0, true);
    let mut loader = BatchLoader::start(&data, &order, 2, 0, 0, 3).expect("starts");
    assert!(loader.next().is_some());
    // The threads are blocked on full queues; the drop must not hang.
    drop(loader);
}

#[test]
fn a_failing_loader_thread_is_an_error_not_a_hang() {
    // A position past the data set's end makes the building thread panic (positions never
    // come from users; this stands for any bug in a loader thread).
    let data = dataset(4);
    let results: Vec<Result<Batch, DataError>> =
        BatchLoader::start(&data, &[0, 1, 99, 2], 2, 0, 0, 2)
            .expect("starts")
            .collect();
    assert!(results[0].is_ok());
    let failure = results[1].as_ref().expect_err("the second batch fails");
    assert!(
        failure.to_string().contains("a loader thread stopped"),
        "{failure}"
    );
    assert_eq!(results.len(), 2);
}

#[test]
fn augmentation_reaches_training_batches_only() {
    let plain = dataset(6);
    let data = augmented(6);
    let positions = [0, 1, 2, 3, 4, 5];
    // Evaluation batches (`batch`, used by `evaluate` and validation) are never augmented.
    assert_eq!(data.batch(&positions), plain.batch(&positions));
    assert_ne!(
        data.training_batch(&positions, 0, 0),
        plain.training_batch(&positions, 0, 0)
    );
    assert_eq!(
        plain.training_batch(&positions, 0, 0),
        plain.batch(&positions)
    );
    let mut seen = Vec::new();
    let mut forward = |images: &ndarray::ArrayD<f32>| {
        seen.push(images.clone());
        Ok(ndarray::ArrayD::zeros(ndarray::IxDyn(&[
            images.shape()[0],
            4,
        ])))
    };
    crate::train::trainer::evaluate(&data, 6, false, &mut forward).expect("evaluates");
    assert_eq!(seen, [plain.batch(&positions).images]);
}

#[test]
fn the_colour_pca_of_a_data_set_is_its_pixels_covariance() {
    // Two 1×1 RGB images, bytes (0, 0, 0) and (102, 102, 102) = 0.4: every channel has
    // variance 0.04 and every pair covariance 0.04, so λ = 0.12, 0, 0 with p₁ = (1, 1, 1)/√3.
    let spec = InputSpec {
        name: "image".into(),
        shape: Shape::spatial(1, 1, 3),
        preprocess: None,
        pad: 0,
    };
    let samples = Samples {
        values: SampleValues::Pixels(vec![0, 0, 0, 102, 102, 102]),
        labels: vec![0, 1],
        stored: Shape::spatial(1, 1, 3),
        source: PathBuf::from("test"),
    };
    let data = Dataset::new(samples, spec, Vec::new(), 2).expect("valid");
    let pca = ColorPca::of_dataset(&data);
    let variance = f64::from(102.0f32 / 255.0).powi(2) / 4.0;
    assert!(
        (pca.eigenvalues[0] - 3.0 * variance).abs() < 1e-9,
        "{pca:?}"
    );
    assert!(pca.eigenvalues[1].abs() < 1e-9 && pca.eigenvalues[2].abs() < 1e-9);
    let third = 1.0 / 3.0f64.sqrt();
    for &p in &pca.eigenvectors[0] {
        assert!((p.abs() - third).abs() < 1e-9);
    }
}
