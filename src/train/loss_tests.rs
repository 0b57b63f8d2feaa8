//! Losses against hand-computed values and finite differences; metrics on small hand cases.

use super::*;

#[test]
fn cross_entropy_by_hand() {
    // logits 1, 2, 3 with label 2: log Σ exp = 3 + ln(e⁻² + e⁻¹ + 1) = 3 + ln 1.5032147
    // = 3.4076060, so the loss is 0.4076060; softmax = 0.0900306, 0.2447285, 0.6652410.
    let out = cross_entropy_logits(&[1.0, 2.0, 3.0], &[2], 3).expect("valid");
    assert!((out.loss - 0.407_606).abs() < 1e-6, "{}", out.loss);
    let expected = [0.090_030_6, 0.244_728_5, 0.665_241 - 1.0];
    for (g, e) in out.grad.iter().zip(expected) {
        assert!((g - e).abs() < 1e-6, "{:?}", out.grad);
    }
    // Two images: the mean loss, and each gradient row divided by 2. Equal logits give
    // ln 3 = 1.0986123 whatever the label.
    let out = cross_entropy_logits(&[1.0, 2.0, 3.0, 0.0, 0.0, 0.0], &[2, 0], 3).expect("valid");
    assert!((out.loss - (0.407_606 + 1.098_612_3) / 2.0).abs() < 1e-6);
    assert!((out.grad[3] - (1.0 / 3.0 - 1.0) / 2.0).abs() < 1e-7);
    assert!((out.grad[0] - 0.090_030_6 / 2.0).abs() < 1e-7);
}

#[test]
fn cross_entropy_is_stable_for_huge_logits() {
    // exp(1e4) overflows any float; with the maximum subtracted, the right class gives
    // loss 0 (e^-1e4 underflows to 0) and the wrong one exactly the logit gap, 1e4.
    let logits = [1e4f32, 0.0, -1e4];
    let right = cross_entropy_logits(&logits, &[0], 3).expect("valid");
    assert_eq!(right.loss, 0.0);
    assert_eq!(right.grad, [0.0, 0.0, 0.0]);
    let wrong = cross_entropy_logits(&logits, &[1], 3).expect("valid");
    assert_eq!(wrong.loss, 1e4);
    assert_eq!(wrong.grad, [1.0, -1.0, 0.0]);
    // All equal and huge: still ln 3.
    let equal = cross_entropy_logits(&[1e4; 3], &[2], 3).expect("valid");
    assert!((equal.loss - 3f32.ln()).abs() < 1e-6);
    let negative = cross_entropy_logits(&[-1e4, -1e4 + 2.0], &[0], 2).expect("valid");
    // −log σ(−2) = ln(1 + e²) = 2.1269280.
    assert!(
        (negative.loss - 2.126_928).abs() < 1e-5,
        "{}",
        negative.loss
    );
}

#[test]
fn cross_entropy_gradient_matches_finite_differences() {
    let n_classes = 7;
    let labels = [3u32, 0, 6, 3];
    let logits: Vec<f32> = (0..labels.len() * n_classes)
        .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.4)
        .collect();
    let analytic = cross_entropy_logits(&logits, &labels, n_classes).expect("valid");
    let h = 1e-2f32;
    for idx in 0..logits.len() {
        let mut plus = logits.clone();
        plus[idx] += h;
        let mut minus = logits.clone();
        minus[idx] -= h;
        let loss = |z: &[f32]| {
            cross_entropy_logits(z, &labels, n_classes)
                .expect("valid")
                .loss
        };
        let numeric = (loss(&plus) - loss(&minus)) / (2.0 * h);
        assert!(
            (numeric - analytic.grad[idx]).abs() < 2e-4,
            "logit {idx}: numeric {numeric}, analytic {}",
            analytic.grad[idx]
        );
    }
}

#[test]
fn probabilities_loss_agrees_with_logits_loss() {
    // The softmax of 1, 2, 3 (see `cross_entropy_by_hand`) with label 2: −ln 0.6652410.
    let probabilities = [0.090_030_57f32, 0.244_728_47, 0.665_240_96];
    let out = cross_entropy_probabilities(&probabilities, &[2], 3).expect("valid");
    assert!((out.loss - 0.407_606).abs() < 1e-6);
    assert_eq!(out.grad[0], 0.0);
    assert!((out.grad[2] - (-1.0 / 0.665_241)).abs() < 1e-5);
    // A probability of 0 is clamped: −ln 1e-12 = 27.631021.
    let zero = cross_entropy_probabilities(&[1.0, 0.0], &[1], 2).expect("valid");
    assert!((zero.loss - 27.631_021).abs() < 1e-4);
    assert!(zero.grad[1].is_finite());
}

#[test]
fn bad_shapes_and_labels_are_errors() {
    assert_eq!(
        cross_entropy_logits(&[0.0; 5], &[0, 1], 3)
            .unwrap_err()
            .to_string(),
        "the scores hold 5 numbers, which is not 2 images × 3 classes"
    );
    assert_eq!(
        cross_entropy_logits(&[0.0; 6], &[0, 3], 3)
            .unwrap_err()
            .to_string(),
        "image 1 has label 3, but the network has 3 classes (0–2)"
    );
    assert_eq!(
        cross_entropy_probabilities(&[], &[], 3),
        Err(LossError::Empty)
    );
    assert!(top_k_correct(&[0.0; 4], &[9, 0], 2, 1).is_err());
}

#[test]
fn top_k_counts_ranks_with_ties_toward_the_lower_index() {
    let scores = [
        0.1, 0.5, 0.4, // label 1: top-1
        0.1, 0.5, 0.4, // label 2: second
        0.1, 0.5, 0.4, // label 0: third
        0.3, 0.3, 0.3, // label 1: a three-way tie, ranked second
    ];
    let labels = [1, 2, 0, 1];
    assert_eq!(top_k_correct(&scores, &labels, 3, 1), Ok(1));
    assert_eq!(top_k_correct(&scores, &labels, 3, 2), Ok(3));
    assert_eq!(top_k_correct(&scores, &labels, 3, 3), Ok(4));
    assert_eq!(predictions(&scores, 3), [1, 1, 1, 0]);
}

#[test]
fn confusion_matrix_counts_and_renders() {
    let mut matrix = ConfusionMatrix::new(3);
    let scores = [
        0.9, 0.0, 0.1, // true 0 → 0
        0.9, 0.0, 0.1, // true 1 → 0
        0.0, 0.8, 0.2, // true 1 → 1
        0.0, 0.1, 0.9, // true 2 → 2
        0.0, 0.1, 0.9, // true 2 → 2
    ];
    matrix
        .add_batch(&scores, &[0, 1, 1, 2, 2])
        .expect("valid batch");
    assert_eq!(matrix.count(1, 0), 1);
    assert_eq!(matrix.count(2, 2), 2);
    assert_eq!(matrix.total(), 5);
    assert!((matrix.accuracy() - 0.8).abs() < 1e-12);
    let names = ["cat".to_string(), "dog".to_string()];
    let text = matrix.render(&names).expect("3 classes render");
    insta::assert_snapshot!(text, @r"
    true \ predicted 0 1 2  recall
    0 cat            1 0 0  100.0%
    1 dog            1 1 0   50.0%
    2                0 0 2  100.0%
    ");
    assert_eq!(ConfusionMatrix::new(21).render(&[]), None);
    let mut empty_row = ConfusionMatrix::new(2);
    empty_row.add_batch(&[1.0, 0.0], &[0]).expect("valid");
    assert!(empty_row
        .render(&[])
        .expect("renders")
        .ends_with("       –\n"));
}
