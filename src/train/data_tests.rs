//! Batches built by hand-checked preprocessing; shuffling, batching and splits.

use super::*;

fn spec(shape: Shape, mean: Vec<f32>, std: Vec<f32>, pad: usize) -> InputSpec {
    InputSpec {
        name: "image".into(),
        shape,
        preprocess: Some(Preprocess {
            mean,
            std,
            ..Preprocess::default()
        }),
        pad,
    }
}

fn dataset(values: SampleValues, labels: Vec<u32>, spec: InputSpec, n_classes: usize) -> Dataset {
    let stored = spec.unpadded().expect("pad fits");
    let samples = Samples {
        values,
        labels,
        stored,
        source: PathBuf::from("test"),
    };
    Dataset::new(samples, spec, Vec::new(), n_classes).expect("valid")
}

#[test]
fn pixels_are_scaled_padded_black_and_normalized() {
    // A 2×2 image of bytes 0, 255 / 51, 102 is 0, 1 / 0.2, 0.4; with mean 0.5 and std 0.25
    // that is −2, 2 / −1.2, −0.4, and the black border is (0 − 0.5)/0.25 = −2.
    let spec = spec(Shape::spatial(4, 4, 1), vec![0.5], vec![0.25], 1);
    let data = dataset(
        SampleValues::Pixels(vec![0, 255, 51, 102]),
        vec![1],
        spec,
        2,
    );
    let batch = data.batch(&[0]);
    assert_eq!(batch.images.shape(), [1, 4, 4, 1]);
    let expected = [
        -2.0, -2.0, -2.0, -2.0, //
        -2.0, -2.0, 2.0, -2.0, //
        -2.0, -1.2, -0.4, -2.0, //
        -2.0, -2.0, -2.0, -2.0,
    ];
    for (found, expected) in batch.images.iter().zip(expected) {
        assert!((found - expected).abs() < 1e-6, "{:?}", batch.images);
    }
    assert_eq!(batch.labels, [1]);
}

#[test]
fn channels_get_their_own_mean_and_std() {
    // One 1×1 RGB pixel of unit values 0.5, 0.5, 0.5 with means 0, 0.5, 1 and stds 1, 2, 0.5:
    // 0.5, 0, −1.
    let spec = spec(
        Shape::spatial(1, 1, 3),
        vec![0.0, 0.5, 1.0],
        vec![1.0, 2.0, 0.5],
        0,
    );
    let data = dataset(SampleValues::Unit(vec![0.5, 0.5, 0.5]), vec![0], spec, 1);
    let images = data.batch(&[0]).images;
    assert_eq!(images.iter().copied().collect::<Vec<_>>(), [0.5, 0.0, -1.0]);
}

#[test]
fn byte_pixels_of_several_channels_are_normalized_bit_for_bit() {
    // Batches of bytes go through a table of each byte's normalized value; every value must
    // be exactly `(b / 255 − mean) / std` in f32, the border that of byte 0.
    let (mean, std) = (vec![0.485f32, 0.456, 0.406], vec![0.229f32, 0.224, 0.225]);
    let spec = spec(Shape::spatial(4, 5, 3), mean.clone(), std.clone(), 1);
    let bytes: Vec<u8> = (0..2 * 2 * 3 * 3).map(|i| (i * 37 % 256) as u8).collect();
    let data = dataset(SampleValues::Pixels(bytes.clone()), vec![0, 1], spec, 2);
    let batch = data.batch(&[1, 0]);
    assert_eq!(batch.images.shape(), [2, 4, 5, 3]);
    let normalized = |b: u8, ch: usize| (f32::from(b) / 255.0 - mean[ch]) / std[ch];
    for (n, image) in [1usize, 0].into_iter().enumerate() {
        for y in 0..4 {
            for x in 0..5 {
                for ch in 0..3 {
                    let inside = (1..3).contains(&y) && (1..4).contains(&x);
                    let byte = if inside {
                        bytes[((image * 2 + y - 1) * 3 + x - 1) * 3 + ch]
                    } else {
                        0
                    };
                    let found = batch.images[[n, y, x, ch]];
                    assert_eq!(
                        found.to_bits(),
                        normalized(byte, ch).to_bits(),
                        "{n} {y} {x} {ch}"
                    );
                }
            }
        }
    }
}

#[test]
fn raw_floats_are_only_padded_with_zero() {
    let spec = spec(Shape::spatial(3, 3, 1), vec![0.5], vec![0.25], 1);
    let data = dataset(SampleValues::Raw(vec![7.0]), vec![0], spec, 1);
    let images: Vec<f32> = data.batch(&[0]).images.iter().copied().collect();
    assert_eq!(images, [0.0, 0.0, 0.0, 0.0, 7.0, 0.0, 0.0, 0.0, 0.0]);
}

/// Ten 1×1 one-channel images whose value is their index; label = index mod 3.
fn ten() -> Dataset {
    let spec = spec(Shape::spatial(1, 1, 1), vec![], vec![], 0);
    let values = SampleValues::Raw((0..10).map(|v| v as f32).collect());
    dataset(values, (0..10).map(|i| i % 3).collect(), spec, 3)
}

#[test]
fn batches_follow_the_order_and_keep_the_last_partial_batch() {
    let data = ten();
    let order = [9, 0, 1, 2, 3, 4, 5, 6, 7, 8];
    let batches: Vec<Batch> = data.batches(&order, 4).expect("valid").collect();
    let sizes: Vec<usize> = batches.iter().map(|b| b.labels.len()).collect();
    assert_eq!(sizes, [4, 4, 2]);
    let first: Vec<f32> = batches[0].images.iter().copied().collect();
    assert_eq!(first, [9.0, 0.0, 1.0, 2.0]);
    assert_eq!(batches[0].labels, [0, 0, 1, 2]);
    assert_eq!(batches[2].images.shape(), [2, 1, 1, 1]);
    assert!(data.batches(&order, 0).is_err());
    assert_eq!(data.label_histogram(), [4, 3, 3]);
}

#[test]
fn shuffling_is_a_deterministic_permutation_per_epoch() {
    let data = ten();
    let first = data.epoch_order(42, 0, true);
    assert_eq!(first, data.epoch_order(42, 0, true));
    assert_ne!(first, data.epoch_order(42, 1, true));
    assert_ne!(first, data.epoch_order(43, 0, true));
    let mut sorted = first.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..10).collect::<Vec<_>>());
    assert_eq!(data.epoch_order(42, 0, false), sorted);
}

#[test]
fn shuffling_puts_each_image_everywhere_about_equally_often() {
    // Over 4,000 epochs of 4 images, image 0 lands at each position 1,000 times on average;
    // the standard deviation is √(4000·¼·¾) ≈ 27, so 150 is more than 5 of them.
    let spec = spec(Shape::spatial(1, 1, 1), vec![], vec![], 0);
    let data = dataset(SampleValues::Raw(vec![0.0; 4]), vec![0; 4], spec, 1);
    let mut counts = [0usize; 4];
    for epoch in 0..4000 {
        let order = data.epoch_order(7, epoch, true);
        let at = order.iter().position(|&p| p == 0).expect("a permutation");
        counts[at] += 1;
    }
    for count in counts {
        assert!((850..=1150).contains(&count), "{counts:?}");
    }
}

#[test]
fn validation_split_is_deterministic_disjoint_and_complete() {
    let data = ten();
    let (train, val) = data.split_validation(0.2, 5).expect("valid");
    assert_eq!((train.len(), val.len()), (8, 2));
    let values = |d: &Dataset| -> Vec<f32> {
        let order = d.epoch_order(0, 0, false);
        d.batch(&order).images.iter().copied().collect()
    };
    let (train_values, val_values) = (values(&train), values(&val));
    let mut all: Vec<f32> = train_values.iter().chain(&val_values).copied().collect();
    all.sort_by(f32::total_cmp);
    assert_eq!(all, (0..10).map(|v| v as f32).collect::<Vec<_>>());
    // Each part keeps the original order.
    assert!(train_values.windows(2).all(|w| w[0] < w[1]));
    let (_, again) = data.split_validation(0.2, 5).expect("valid");
    assert_eq!(values(&again), val_values);
    // Labels travel with their images.
    for (position, value) in val_values.iter().enumerate() {
        assert_eq!(val.label(position), *value as u32 % 3);
    }
}

#[test]
fn bad_splits_are_errors() {
    let data = ten();
    assert_eq!(
        data.split_validation(1.0, 0).unwrap_err().to_string(),
        "the validation fraction is 1; it must be between 0 and 1"
    );
    assert_eq!(
        data.split_validation(0.01, 0).unwrap_err().to_string(),
        "a validation fraction of 0.01 of 10 images leaves 0 for validation and 10 for \
         training; both need at least one"
    );
    assert!(data.split_validation(f64::NAN, 0).is_err());
}

#[test]
fn padding_must_fit_the_input() {
    let too_much = spec(Shape::spatial(4, 4, 1), vec![], vec![], 2);
    assert_eq!(
        too_much.unpadded().unwrap_err().to_string(),
        "a padding of 2 on each side does not fit input `image` (4×4×1)"
    );
    let fits = spec(Shape::spatial(32, 32, 1), vec![], vec![], 2);
    assert_eq!(fits.unpadded().expect("fits"), Shape::spatial(28, 28, 1));
}
