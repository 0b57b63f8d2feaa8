//! Each transform on small images whose results are worked out by hand; the colour PCA of a
//! known covariance; the random parameters within their declared ranges.

use super::*;
use crate::train::augment_pca::{symmetric_eigen, ColorPca};

/// A 1-channel image of `h` rows given as a flat row-major list.
fn ramp(n: usize) -> Vec<f32> {
    (0..n).map(|v| v as f32).collect()
}

#[test]
fn mirror_flips_each_row_and_keeps_the_channels_together() {
    // 2×3 pixels of 2 channels: (0,1) (2,3) (4,5) / (6,7) (8,9) (10,11).
    let mut image = ramp(12);
    mirror(&mut image, 2, 3, 2);
    assert_eq!(
        image,
        [4.0, 5.0, 2.0, 3.0, 0.0, 1.0, 10.0, 11.0, 8.0, 9.0, 6.0, 7.0]
    );
    mirror(&mut image, 2, 3, 2);
    assert_eq!(image, ramp(12));
}

#[test]
fn a_crop_of_the_full_size_without_padding_is_the_identity() {
    let image = ramp(3 * 4 * 2);
    assert_eq!(padded_crop(&image, 3, 4, 2, 0, 0, 0), image);
}

#[test]
fn a_padded_crop_shifts_the_image_and_fills_with_zeros() {
    // 3×3 image 1..9 padded by 1: the window at (0, 0) moves the picture one pixel down and
    // right; at (2, 1) one pixel up, not sideways.
    let image: Vec<f32> = (1..=9).map(|v| v as f32).collect();
    assert_eq!(
        padded_crop(&image, 3, 3, 1, 1, 0, 0),
        [0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 0.0, 4.0, 5.0]
    );
    assert_eq!(
        padded_crop(&image, 3, 3, 1, 1, 2, 1),
        [4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 0.0, 0.0, 0.0]
    );
}

#[test]
fn rotate_0_shear_0_scale_1_is_the_identity() {
    let image = ramp(5 * 4 * 3);
    assert_eq!(affine(&image, 5, 4, 3, 0.0, 0.0, 1.0), image);
}

#[test]
fn a_90_degree_rotation_is_the_transposed_then_mirrored_array() {
    // With y pointing down, +90° sends the pixel at (row i, column j) to (row j, column
    // n − 1 − i): out[r][s] = in[n − 1 − s][r], the transpose flipped left to right.
    for n in [3usize, 4] {
        let image = ramp(n * n);
        let rotated = affine(&image, n, n, 1, 90.0, 0.0, 1.0);
        for r in 0..n {
            for s in 0..n {
                assert_eq!(rotated[r * n + s], image[(n - 1 - s) * n + r], "n {n}");
            }
        }
        // And −90° undoes it.
        assert_eq!(affine(&rotated, n, n, 1, -90.0, 0.0, 1.0), image);
    }
}

#[test]
fn a_zoom_of_2_doubles_distances_from_the_center() {
    // 5×5 with the center at (2, 2): the output pixel at (2, 4) reads the input at (2, 3),
    // and (0, 0) reads (1, 1).
    let image = ramp(25);
    let zoomed = affine(&image, 5, 5, 1, 0.0, 0.0, 2.0);
    assert_eq!(zoomed[2 * 5 + 4], image[2 * 5 + 3]);
    assert_eq!(zoomed[0], image[5 + 1]);
    // Between pixels it interpolates: (2, 3) reads (2, 2.5).
    assert_eq!(zoomed[2 * 5 + 3], (image[12] + image[13]) / 2.0);
}

#[test]
fn a_shear_moves_rows_in_proportion_to_their_distance_from_the_center() {
    // tan 45° = 1: the row one below the center reads one pixel to the left, so its values
    // move one to the right; the center row stays; pixels from outside are 0.
    let image = ramp(9);
    let sheared = affine(&image, 3, 3, 1, 0.0, 45.0, 1.0);
    assert_eq!(&sheared[3..6], &image[3..6]);
    assert_eq!(&sheared[6..9], &[0.0, 6.0, 7.0]);
    assert_eq!(&sheared[0..3], &[1.0, 2.0, 0.0]);
}

#[test]
fn resizing_the_whole_image_is_the_identity_and_upscaling_is_pytorch_bilinear() {
    let image = ramp(4 * 3 * 2);
    assert_eq!(resize_window(&image, 4, 3, 2, (0, 0, 4, 3)), image);
    // The top-left 1×2 window [a, b] = [0, 1] of a 4×4 image, stretched to 4×4: each row is
    // PyTorch's interpolate([a, b], 4, bilinear, align_corners=False) =
    // [a, 0.75a + 0.25b, 0.25a + 0.75b, b].
    let image = ramp(16);
    let out = resize_window(&image, 4, 4, 1, (0, 0, 1, 2));
    for row in out.chunks(4) {
        assert_eq!(row, [0.0, 0.25, 0.75, 1.0]);
    }
}

#[test]
fn resized_crop_windows_stay_inside_with_the_declared_area_and_aspect() {
    let mut rng = SplitMix64::new(7);
    for _ in 0..1000 {
        let (top, left, h, w) = resized_crop_window(32, 24, (0.08, 1.0), &mut rng);
        assert!(h >= 1 && w >= 1 && top + h <= 32 && left + w <= 24);
        let fallback = (top, left, h, w) == (0, 0, 32, 24);
        if !fallback {
            let area = (h * w) as f64 / (32.0 * 24.0);
            // Rounding each side to whole pixels moves the area and aspect a little.
            assert!((0.06..=1.0).contains(&area), "area {area}");
            let aspect = w as f64 / h as f64;
            assert!((0.6..=1.6).contains(&aspect), "aspect {aspect}");
        }
    }
}

fn augmenter(config: Augmentation) -> Augmenter {
    Augmenter { config, pca: None }
}

#[test]
fn a_colour_shift_adds_one_value_per_channel_within_its_bound() {
    let shape = Shape::spatial(4, 5, 3);
    let original: Vec<f32> = (0..60).map(|v| (v % 7) as f32 / 7.0).collect();
    let augment = augmenter(Augmentation {
        color_shift: 0.1,
        ..Augmentation::default()
    });
    let mut all_zero = true;
    for seed in 0..50 {
        let mut image = original.clone();
        augment.apply(&mut image, shape, &mut SplitMix64::new(seed));
        let shifts: Vec<f32> = (0..3).map(|ch| image[ch] - original[ch]).collect();
        for (idx, (&new, &old)) in image.iter().zip(&original).enumerate() {
            let shift = shifts[idx % 3];
            assert!(shift.abs() <= 0.1 + 1e-6, "shift {shift}");
            assert!((new - old - shift).abs() < 1e-6);
        }
        all_zero &= shifts.iter().all(|&s| s == 0.0);
    }
    assert!(!all_zero);
}

#[test]
fn nothing_declared_changes_nothing_and_mirror_flips_about_half_the_images() {
    let shape = Shape::spatial(2, 3, 1);
    let original = ramp(6);
    let mut image = original.clone();
    augmenter(Augmentation::default()).apply(&mut image, shape, &mut SplitMix64::new(1));
    assert_eq!(image, original);
    let mirror_only = augmenter(Augmentation {
        mirror: true,
        ..Augmentation::default()
    });
    let mut flipped = original.clone();
    mirror(&mut flipped, 2, 3, 1);
    let mut n_flipped = 0;
    for seed in 0..1000 {
        let mut image = original.clone();
        mirror_only.apply(&mut image, shape, &mut SplitMix64::new(seed));
        if image == flipped {
            n_flipped += 1;
        } else {
            assert_eq!(image, original);
        }
    }
    // Binomial(1000, 1/2): 440..560 is more than 3.7 standard deviations wide each side.
    assert!((440..560).contains(&n_flipped), "{n_flipped}");
}

#[test]
fn the_same_stream_gives_the_same_augmentation() {
    let shape = Shape::spatial(8, 8, 3);
    let original: Vec<f32> = (0..192).map(|v| (v % 11) as f32 / 11.0).collect();
    let augment = augmenter(Augmentation {
        mirror: true,
        crop: Some(RandomCrop {
            height: 8,
            width: 8,
            pad: 2,
        }),
        resized_crop: Some((0.5, 1.0)),
        rotate: 10.0,
        shear: 5.0,
        scale: Some((0.9, 1.1)),
        color_shift: 0.1,
        pca_color: 0.0,
    });
    let run = |position| {
        let mut image = original.clone();
        augment.apply(&mut image, shape, &mut sample_rng(3, 1, position));
        image
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5), run(6));
    assert!(run(5).iter().all(|v| v.is_finite()));
}

#[test]
fn jacobi_finds_the_eigenvectors_of_a_known_covariance() {
    // [[2, 1, 0], [1, 2, 0], [0, 0, 0.5]]: 3 along (1, 1, 0)/√2, 1 along (1, −1, 0)/√2,
    // 0.5 along (0, 0, 1).
    let covariance = [2.0, 1.0, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0, 0.5];
    let pca = ColorPca::of_covariance(&covariance, 3);
    let h = std::f64::consts::FRAC_1_SQRT_2;
    let expected = [
        (3.0, [h, h, 0.0]),
        (1.0, [h, -h, 0.0]),
        (0.5, [0.0, 0.0, 1.0]),
    ];
    for (i, (value, vector)) in expected.iter().enumerate() {
        assert!((pca.eigenvalues[i] - value).abs() < 1e-12);
        // An eigenvector's sign is arbitrary.
        let dot: f64 = pca.eigenvectors[i]
            .iter()
            .zip(vector)
            .map(|(a, b)| a * b)
            .sum();
        assert!((dot.abs() - 1.0).abs() < 1e-12, "{:?}", pca.eigenvectors[i]);
    }
    // α = (1, 0, 0) adds λ₁p₁ = 3·(1, 1, 0)/√2 to every pixel (up to p₁'s sign).
    let shift = pca.shift(&[1.0, 0.0, 0.0]);
    let magnitude = (3.0 * h) as f32;
    assert!((shift[0].abs() - magnitude).abs() < 1e-6 && shift[0] == shift[1]);
    assert_eq!(shift[2], 0.0);
}

#[test]
fn jacobi_diagonalizes_a_full_matrix() {
    // A·v = λ·v for each pair, on a matrix without zeros.
    let a = [4.0, 1.0, 2.0, 1.0, 3.0, 0.5, 2.0, 0.5, 5.0];
    let (values, vectors) = symmetric_eigen(&a, 3);
    for k in 0..3 {
        for row in 0..3 {
            let av: f64 = (0..3)
                .map(|col| a[row * 3 + col] * vectors[col * 3 + k])
                .sum();
            assert!((av - values[k] * vectors[row * 3 + k]).abs() < 1e-10);
        }
    }
    // The trace is kept: 4 + 3 + 5.
    assert!((values.iter().sum::<f64>() - 12.0).abs() < 1e-10);
}
