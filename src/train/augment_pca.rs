//! The principal components of a training set's colours, for AlexNet's colour augmentation
//! (`augment(pca_color: σ)`): the covariance of the channels over every pixel of every
//! training image (before padding, in pixel space), and its eigen-decomposition by Jacobi
//! rotations, which is exact enough for the 3×3 (or C×C) symmetric matrices it sees.

use super::data::Dataset;

/// The eigenvalues λᵢ (descending) and unit eigenvectors pᵢ of the channels' covariance.
#[derive(Clone, Debug, PartialEq)]
pub struct ColorPca {
    pub eigenvalues: Vec<f64>,
    /// `eigenvectors[i]` is pᵢ, of C components.
    pub eigenvectors: Vec<Vec<f64>>,
}

impl ColorPca {
    /// The components of `data`'s pixel colours, computed once before training.
    pub fn of_dataset(data: &Dataset) -> ColorPca {
        let c = data.spec().shape.c;
        let mut accumulator = CovarianceAccumulator::new(c);
        let mut image = Vec::new();
        for position in 0..data.len() {
            data.stored_image(position, &mut image);
            for pixel in image.chunks_exact(c) {
                accumulator.add(pixel);
            }
        }
        ColorPca::of_covariance(&accumulator.covariance(), c)
    }

    /// The components of a C×C covariance matrix (row-major).
    pub fn of_covariance(covariance: &[f64], c: usize) -> ColorPca {
        let (values, vectors) = symmetric_eigen(covariance, c);
        let mut order: Vec<usize> = (0..c).collect();
        order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
        ColorPca {
            eigenvalues: order.iter().map(|&i| values[i]).collect(),
            eigenvectors: order
                .iter()
                .map(|&i| (0..c).map(|row| vectors[row * c + i]).collect())
                .collect(),
        }
    }

    /// `Σᵢ αᵢ λᵢ pᵢ`: the value added to each channel of every pixel of one image.
    pub fn shift(&self, alphas: &[f64]) -> Vec<f32> {
        let c = self.eigenvalues.len();
        (0..c)
            .map(|ch| {
                self.eigenvectors
                    .iter()
                    .zip(&self.eigenvalues)
                    .zip(alphas)
                    .map(|((p, &lambda), &alpha)| alpha * lambda * p[ch])
                    .sum::<f64>() as f32
            })
            .collect()
    }
}

/// Sums for a population covariance, in f64 so millions of pixels add up without drift.
struct CovarianceAccumulator {
    c: usize,
    n: f64,
    sums: Vec<f64>,
    products: Vec<f64>,
}

impl CovarianceAccumulator {
    fn new(c: usize) -> CovarianceAccumulator {
        CovarianceAccumulator {
            c,
            n: 0.0,
            sums: vec![0.0; c],
            products: vec![0.0; c * c],
        }
    }

    fn add(&mut self, pixel: &[f32]) {
        self.n += 1.0;
        for (i, &value) in pixel.iter().enumerate().take(self.c) {
            let vi = f64::from(value);
            self.sums[i] += vi;
            let row = &mut self.products[i * self.c..(i + 1) * self.c];
            for (product, &other) in row.iter_mut().zip(pixel) {
                *product += vi * f64::from(other);
            }
        }
    }

    fn covariance(&self) -> Vec<f64> {
        let n = self.n.max(1.0);
        let c = self.c;
        let mut out = vec![0.0; c * c];
        for i in 0..c {
            for j in 0..c {
                out[i * c + j] = self.products[i * c + j] / n - self.sums[i] * self.sums[j] / n / n;
            }
        }
        out
    }
}

/// The eigenvalues and eigenvectors (as the columns of a row-major C×C matrix) of a
/// symmetric matrix, by cyclic Jacobi rotations until the off-diagonal part vanishes.
pub fn symmetric_eigen(matrix: &[f64], c: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = matrix.to_vec();
    let mut v = vec![0.0; c * c];
    for i in 0..c {
        v[i * c + i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..c)
            .flat_map(|i| (0..c).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * c + j] * a[i * c + j])
            .sum();
        if off < 1e-30 {
            break;
        }
        for p in 0..c {
            for q in p + 1..c {
                let apq = a[p * c + q];
                if apq == 0.0 {
                    continue;
                }
                // The rotation that zeroes a[p][q] (Golub & Van Loan, §8.5.2).
                let theta = (a[q * c + q] - a[p * c + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let cos = 1.0 / (t * t + 1.0).sqrt();
                let sin = t * cos;
                for k in 0..c {
                    let (akp, akq) = (a[k * c + p], a[k * c + q]);
                    a[k * c + p] = cos * akp - sin * akq;
                    a[k * c + q] = sin * akp + cos * akq;
                }
                for k in 0..c {
                    let (apk, aqk) = (a[p * c + k], a[q * c + k]);
                    a[p * c + k] = cos * apk - sin * aqk;
                    a[q * c + k] = sin * apk + cos * aqk;
                }
                for k in 0..c {
                    let (vkp, vkq) = (v[k * c + p], v[k * c + q]);
                    v[k * c + p] = cos * vkp - sin * vkq;
                    v[k * c + q] = sin * vkp + cos * vkq;
                }
            }
        }
    }
    ((0..c).map(|i| a[i * c + i]).collect(), v)
}
