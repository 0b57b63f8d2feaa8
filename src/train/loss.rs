//! Losses and metrics for classification: softmax cross-entropy with its gradient, top-k
//! accuracy, and a confusion matrix.
//!
//! Scores arrive as a row-major batch, `n_classes` numbers per image (the network's N×C
//! output). Labels are class indices. The loss is the mean over the batch, as
//! `nn.CrossEntropyLoss()` with its default `reduction='mean'` gives:
//!
//! ```text
//! log pᵢₖ = zᵢₖ − mᵢ − log Σⱼ exp(zᵢⱼ − mᵢ)       mᵢ = maxⱼ zᵢⱼ  (log-softmax, stable)
//! L       = −(1/N) Σᵢ log pᵢ,yᵢ                   (NLL of the true class)
//! ∂L/∂zᵢₖ = (pᵢₖ − [k = yᵢ]) / N
//! ```
//!
//! A network that ends in `softmax` is trained on the logits that feed its final softmax,
//! with [`cross_entropy_logits`]: that is PyTorch's log-softmax + NLL, stable for any logits.
//! [`cross_entropy_probabilities`] takes the probabilities themselves (`−log p`, clamped away
//! from 0); it serves to report the loss of a softmax network's output in `eval`, and is not
//! what the trainer should differentiate through, because `log` of a rounded-to-zero
//! probability loses the gradient that the logits still carry.

use std::fmt::Write;
use thiserror::Error;

#[derive(Clone, Debug, Error, PartialEq)]
pub enum LossError {
    #[error(
        "the scores hold {n_scores} numbers, which is not {n_labels} images × {n_classes} classes"
    )]
    ShapeMismatch {
        n_scores: usize,
        n_labels: usize,
        n_classes: usize,
    },
    #[error("image {image_idx} has label {label}, but the network has {n_classes} classes (0–{})", n_classes.saturating_sub(1))]
    LabelOutOfRange {
        image_idx: usize,
        label: u32,
        n_classes: usize,
    },
    #[error("a loss needs at least one image and one class")]
    Empty,
}

/// A batch's mean loss and its gradient with respect to the scores (same layout).
#[derive(Clone, Debug, PartialEq)]
pub struct LossAndGradient {
    pub loss: f32,
    pub grad: Vec<f32>,
}

fn check(scores: &[f32], labels: &[u32], n_classes: usize) -> Result<(), LossError> {
    if labels.is_empty() || n_classes == 0 {
        return Err(LossError::Empty);
    }
    if labels.len().checked_mul(n_classes) != Some(scores.len()) {
        return Err(LossError::ShapeMismatch {
            n_scores: scores.len(),
            n_labels: labels.len(),
            n_classes,
        });
    }
    match labels.iter().position(|&l| l as usize >= n_classes) {
        Some(image_idx) => Err(LossError::LabelOutOfRange {
            image_idx,
            label: labels[image_idx],
            n_classes,
        }),
        None => Ok(()),
    }
}

/// Softmax cross-entropy on logits, mean over the batch, and ∂L/∂logits (module docs).
///
/// Sums and logarithms are taken in f64, so the loss of a batch is accurate to f32 rounding
/// even for logits of 1e4. A NaN or infinite logit gives a NaN loss, which the trainer reports
/// as divergence.
pub fn cross_entropy_logits(
    logits: &[f32],
    labels: &[u32],
    n_classes: usize,
) -> Result<LossAndGradient, LossError> {
    check(logits, labels, n_classes)?;
    let n_images = labels.len() as f64;
    let mut grad = vec![0.0f32; logits.len()];
    let mut total = 0.0f64;
    for ((row, grad_row), &label) in logits
        .chunks_exact(n_classes)
        .zip(grad.chunks_exact_mut(n_classes))
        .zip(labels)
    {
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &z| m.max(z)) as f64;
        let sum_exp: f64 = row.iter().map(|&z| (z as f64 - max).exp()).sum();
        let log_sum_exp = max + sum_exp.ln();
        total += log_sum_exp - row[label as usize] as f64;
        for (class_idx, (&z, g)) in row.iter().zip(grad_row.iter_mut()).enumerate() {
            let probability = (z as f64 - log_sum_exp).exp();
            let target = if class_idx == label as usize {
                1.0
            } else {
                0.0
            };
            *g = ((probability - target) / n_images) as f32;
        }
    }
    Ok(LossAndGradient {
        loss: (total / n_images) as f32,
        grad,
    })
}

/// The smallest probability the log is taken of, so a probability rounded to 0 gives a large
/// finite loss (−ln 1e-12 ≈ 27.6) rather than infinity.
pub const MIN_PROBABILITY: f64 = 1e-12;

/// Cross-entropy of probabilities (a softmax network's output), mean over the batch, and
/// ∂L/∂p = −1/(N·p) at the true class (0 elsewhere). See the module docs for when to use it.
pub fn cross_entropy_probabilities(
    probabilities: &[f32],
    labels: &[u32],
    n_classes: usize,
) -> Result<LossAndGradient, LossError> {
    check(probabilities, labels, n_classes)?;
    let n_images = labels.len() as f64;
    let mut grad = vec![0.0f32; probabilities.len()];
    let mut total = 0.0f64;
    for (image_idx, &label) in labels.iter().enumerate() {
        let at = image_idx * n_classes + label as usize;
        let p = (probabilities[at] as f64).max(MIN_PROBABILITY);
        total -= p.ln();
        grad[at] = (-1.0 / (n_images * p)) as f32;
    }
    Ok(LossAndGradient {
        loss: (total / n_images) as f32,
        grad,
    })
}

/// How many images have their label among the `k` highest scores. Ties are broken toward the
/// lower class index, as the CLI's top-k listing does: the label's rank is the number of
/// classes with a higher score plus those with an equal score and a lower index.
pub fn top_k_correct(
    scores: &[f32],
    labels: &[u32],
    n_classes: usize,
    k: usize,
) -> Result<usize, LossError> {
    check(scores, labels, n_classes)?;
    let correct = scores
        .chunks_exact(n_classes)
        .zip(labels)
        .filter(|(row, &label)| {
            let label = label as usize;
            let own = row[label];
            let rank = row
                .iter()
                .enumerate()
                .filter(|&(idx, &s)| s.total_cmp(&own).is_gt() || (s == own && idx < label))
                .count();
            rank < k
        })
        .count();
    Ok(correct)
}

/// The top-1 class of each image (the first index among equal maxima).
pub fn predictions(scores: &[f32], n_classes: usize) -> Vec<u32> {
    scores
        .chunks_exact(n_classes.max(1))
        .map(|row| {
            let mut best = 0;
            for (idx, &s) in row.iter().enumerate() {
                if s.total_cmp(&row[best]).is_gt() {
                    best = idx;
                }
            }
            best as u32
        })
        .collect()
}

/// Counts of (true class, predicted class) pairs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfusionMatrix {
    n_classes: usize,
    /// Row-major: `counts[true_class * n_classes + predicted_class]`.
    counts: Vec<u64>,
}

/// The most classes [`ConfusionMatrix::render`] draws: wider tables do not read as tables.
pub const MAX_RENDERED_CLASSES: usize = 20;

impl ConfusionMatrix {
    pub fn new(n_classes: usize) -> ConfusionMatrix {
        ConfusionMatrix {
            n_classes,
            counts: vec![0; n_classes * n_classes],
        }
    }

    pub fn n_classes(&self) -> usize {
        self.n_classes
    }

    pub fn count(&self, true_class: usize, predicted_class: usize) -> u64 {
        self.counts[true_class * self.n_classes + predicted_class]
    }

    /// Adds a batch: each image's top-1 prediction against its label.
    pub fn add_batch(&mut self, scores: &[f32], labels: &[u32]) -> Result<(), LossError> {
        check(scores, labels, self.n_classes)?;
        for (predicted, &label) in predictions(scores, self.n_classes).iter().zip(labels) {
            self.counts[label as usize * self.n_classes + *predicted as usize] += 1;
        }
        Ok(())
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The fraction on the diagonal, 0 for an empty matrix.
    pub fn accuracy(&self) -> f64 {
        let correct: u64 = (0..self.n_classes).map(|c| self.count(c, c)).sum();
        match self.total() {
            0 => 0.0,
            total => correct as f64 / total as f64,
        }
    }

    /// A plain-text table: one row per true class (its index and name), one column per
    /// predicted class (by index), and each row's recall. `None` above
    /// [`MAX_RENDERED_CLASSES`] classes. Names beyond `class_names` are left blank.
    pub fn render(&self, class_names: &[String]) -> Option<String> {
        if self.n_classes > MAX_RENDERED_CLASSES || self.n_classes == 0 {
            return None;
        }
        let name = |c: usize| class_names.get(c).map_or("", String::as_str);
        let row_labels: Vec<String> = (0..self.n_classes)
            .map(|c| format!("{c} {}", name(c)).trim_end().to_string())
            .collect();
        let label_width = row_labels
            .iter()
            .map(|l| l.chars().count())
            .chain(["true \\ predicted".len()])
            .max()
            .unwrap_or(0);
        let largest = self.counts.iter().copied().max().unwrap_or(0);
        let cell_width = largest
            .to_string()
            .len()
            .max((self.n_classes - 1).to_string().len());
        let mut out = String::new();
        let _ = write!(out, "{:<label_width$}", "true \\ predicted");
        for c in 0..self.n_classes {
            let _ = write!(out, " {c:>cell_width$}");
        }
        out.push_str("  recall\n");
        for (true_class, label) in row_labels.iter().enumerate() {
            let pad = label_width - label.chars().count();
            let _ = write!(out, "{label}{}", " ".repeat(pad));
            let row = &self.counts[true_class * self.n_classes..][..self.n_classes];
            for count in row {
                let _ = write!(out, " {count:>cell_width$}");
            }
            let n_row: u64 = row.iter().sum();
            match n_row {
                0 => out.push_str("       –\n"),
                n => {
                    let recall = 100.0 * row[true_class] as f64 / n as f64;
                    let _ = writeln!(out, "  {recall:5.1}%");
                }
            }
        }
        Some(out)
    }
}

#[cfg(test)]
#[path = "loss_tests.rs"]
mod tests;
