//! Data augmentation declared by `augment(...)` in a network, applied to training images only.
//!
//! Each transform works on one H×W×C image of f32 values in pixel space ([0, 1] for pixels),
//! after the data set has scaled and padded it and before the network's mean/std
//! normalization. The declared transforms run in a fixed order, each drawing its random
//! numbers from the sample's own SplitMix64 stream ([`sample_rng`]: the seed, the epoch and
//! the image's position in the data set), so a batch's images are the same whichever loader
//! thread builds them:
//!
//! 1. `resized_crop: [a, b]`: torchvision's `RandomResizedCrop` (a window of a uniform
//!    fraction in [a, b] of the area and an aspect ratio log-uniform in [3/4, 4/3], ten tries
//!    then a center crop), resized back to H×W bilinearly (half-pixel centers, no
//!    antialiasing);
//! 2. `crop: H, pad: P`: torchvision's `RandomCrop(H, padding=P)`: zero padding of P on each
//!    side, then an H×W window at a uniform offset;
//! 3. `rotate: r`, `shear: s`, `scale: [a, b]`: one affine map about the image's center
//!    (an angle uniform in ±r degrees, a horizontal shear uniform in ±s degrees, a zoom
//!    uniform in [a, b]), sampled bilinearly with 0 outside the image, as `RandomAffine`;
//! 4. `mirror: true`: a horizontal flip with probability 1/2;
//! 5. `color_shift: v`: a value uniform in ±v added to each channel (the same for all the
//!    channel's pixels);
//! 6. `pca_color: σ`: AlexNet's colour augmentation: `Σᵢ αᵢ λᵢ pᵢ` added to every pixel, with
//!    λᵢ, pᵢ the eigenvalues and eigenvectors of the channels' covariance over the training
//!    set (computed once, `augment_pca.rs`) and αᵢ ~ N(0, σ) drawn once per image.
//!
//! Values are not clamped: a shifted pixel may leave [0, 1], as in the AlexNet recipe.

use super::augment_pca::ColorPca;
use super::data::Dataset;
use crate::graph::Shape;
use crate::runtime::rng::SplitMix64;

/// What `augment(...)` declares; every transform is off unless set.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Augmentation {
    pub mirror: bool,
    /// A random crop of the input's size from the image padded with zeros.
    pub crop: Option<RandomCrop>,
    /// The range of the fraction of the area a random resized crop keeps.
    pub resized_crop: Option<(f64, f64)>,
    /// The largest rotation, in degrees (0: none).
    pub rotate: f64,
    /// The largest horizontal shear, in degrees (0: none).
    pub shear: f64,
    /// The range of the zoom factor.
    pub scale: Option<(f64, f64)>,
    /// The largest shift added to a channel.
    pub color_shift: f64,
    /// The standard deviation of AlexNet's αᵢ (0: none).
    pub pca_color: f64,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RandomCrop {
    pub height: usize,
    pub width: usize,
    pub pad: usize,
}

impl Augmentation {
    /// `mirror, crop 32×32 (pad 4), rotate ±10°`, for `check`, `summary` and `train`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some((a, b)) = self.resized_crop {
            parts.push(format!("resized crop (area {a}–{b})"));
        }
        if let Some(crop) = self.crop {
            parts.push(format!(
                "crop {}×{} (pad {})",
                crop.height, crop.width, crop.pad
            ));
        }
        if self.rotate > 0.0 {
            parts.push(format!("rotate ±{}°", self.rotate));
        }
        if self.shear > 0.0 {
            parts.push(format!("shear ±{}°", self.shear));
        }
        if let Some((a, b)) = self.scale {
            parts.push(format!("scale {a}–{b}"));
        }
        if self.mirror {
            parts.push("mirror".to_string());
        }
        if self.color_shift > 0.0 {
            parts.push(format!("colour shift ±{}", self.color_shift));
        }
        if self.pca_color > 0.0 {
            parts.push(format!("PCA colour σ {}", self.pca_color));
        }
        if parts.is_empty() {
            "none".to_string()
        } else {
            parts.join(", ")
        }
    }

    fn has_affine(&self) -> bool {
        self.rotate > 0.0 || self.shear > 0.0 || self.scale.is_some()
    }
}

/// The declared augmentation with what it needs from the training set (the colour PCA).
#[derive(Clone, Debug)]
pub struct Augmenter {
    pub config: Augmentation,
    pub pca: Option<ColorPca>,
}

impl Augmenter {
    /// Prepares `config` for `data`, the training set (the colour PCA is computed over it).
    pub fn new(config: Augmentation, data: &Dataset) -> Augmenter {
        let pca = (config.pca_color > 0.0).then(|| ColorPca::of_dataset(data));
        Augmenter { config, pca }
    }

    /// Applies every declared transform to `image` (H×W×C of `shape`) in place.
    pub(crate) fn apply(&self, image: &mut Vec<f32>, shape: Shape, rng: &mut SplitMix64) {
        let config = &self.config;
        let (h, w, c) = (shape.h, shape.w, shape.c);
        if let Some(range) = config.resized_crop {
            let window = resized_crop_window(h, w, range, rng);
            *image = resize_window(image, h, w, c, window);
        }
        if let Some(crop) = config.crop {
            let span_h = (h + 2 * crop.pad).saturating_sub(crop.height);
            let span_w = (w + 2 * crop.pad).saturating_sub(crop.width);
            let top = uniform_index(rng, span_h);
            let left = uniform_index(rng, span_w);
            *image = padded_crop(image, h, w, c, crop.pad, top, left);
        }
        if config.has_affine() {
            let angle = symmetric(rng, config.rotate);
            let shear = symmetric(rng, config.shear);
            let zoom = match config.scale {
                Some((a, b)) => a + (b - a) * unit_f64(rng),
                None => 1.0,
            };
            *image = affine(image, h, w, c, angle, shear, zoom);
        }
        if config.mirror && rng.next_u64() >> 63 == 1 {
            mirror(image, h, w, c);
        }
        if config.color_shift > 0.0 {
            let shifts: Vec<f32> = (0..c)
                .map(|_| symmetric(rng, config.color_shift) as f32)
                .collect();
            shift_channels(image, &shifts);
        }
        if let Some(pca) = &self.pca {
            let alphas: Vec<f64> = (0..pca.eigenvalues.len())
                .map(|_| config.pca_color * standard_normal(rng))
                .collect();
            shift_channels(image, &pca.shift(&alphas));
        }
    }
}

/// The random stream of one image in one epoch: independent of the order in which images are
/// built, hence of the number of loader threads.
pub(crate) fn sample_rng(seed: u64, epoch: usize, position: usize) -> SplitMix64 {
    SplitMix64::for_stream(seed, &format!("augment epoch {epoch} image {position}"))
}

/// Uniform in [0, 1) with 53 random bits.
fn unit_f64(rng: &mut SplitMix64) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// Uniform in [−limit, limit]; exactly 0 when the limit is 0.
fn symmetric(rng: &mut SplitMix64, limit: f64) -> f64 {
    let u = unit_f64(rng);
    if limit > 0.0 {
        limit * (2.0 * u - 1.0)
    } else {
        0.0
    }
}

/// Uniform in 0..=max (Lemire's multiply-shift, as the shuffle).
fn uniform_index(rng: &mut SplitMix64, max: usize) -> usize {
    ((rng.next_u64() as u128 * (max as u128 + 1)) >> 64) as usize
}

/// N(0, 1) by Box–Muller.
fn standard_normal(rng: &mut SplitMix64) -> f64 {
    let u1 = 1.0 - unit_f64(rng); // in (0, 1], so the log is finite
    let u2 = unit_f64(rng);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Flips an H×W×C image left to right.
pub fn mirror(image: &mut [f32], h: usize, w: usize, c: usize) {
    for row in image.chunks_exact_mut(w * c).take(h) {
        for x in 0..w / 2 {
            for ch in 0..c {
                row.swap(x * c + ch, (w - 1 - x) * c + ch);
            }
        }
    }
}

/// The H×W window at (`top`, `left`) of the image padded by `pad` zeros on each side.
pub fn padded_crop(
    image: &[f32],
    h: usize,
    w: usize,
    c: usize,
    pad: usize,
    top: usize,
    left: usize,
) -> Vec<f32> {
    let mut out = vec![0.0f32; h * w * c];
    for y in 0..h {
        let Some(src_y) = (y + top).checked_sub(pad).filter(|&sy| sy < h) else {
            continue;
        };
        for x in 0..w {
            let Some(src_x) = (x + left).checked_sub(pad).filter(|&sx| sx < w) else {
                continue;
            };
            let src = (src_y * w + src_x) * c;
            let dst = (y * w + x) * c;
            out[dst..dst + c].copy_from_slice(&image[src..src + c]);
        }
    }
    out
}

/// A crop window: top, left, height, width.
pub type Window = (usize, usize, usize, usize);

/// torchvision's `RandomResizedCrop.get_params` with the area fraction in `scale` and the
/// aspect ratio in [3/4, 4/3].
pub(crate) fn resized_crop_window(
    h: usize,
    w: usize,
    (scale_lo, scale_hi): (f64, f64),
    rng: &mut SplitMix64,
) -> Window {
    let area = (h * w) as f64;
    let (log_lo, log_hi) = ((3.0f64 / 4.0).ln(), (4.0f64 / 3.0).ln());
    for _ in 0..10 {
        let target = area * (scale_lo + (scale_hi - scale_lo) * unit_f64(rng));
        let aspect = (log_lo + (log_hi - log_lo) * unit_f64(rng)).exp();
        let cw = (target * aspect).sqrt().round() as usize;
        let ch = (target / aspect).sqrt().round() as usize;
        if (1..=w).contains(&cw) && (1..=h).contains(&ch) {
            let top = uniform_index(rng, h - ch);
            let left = uniform_index(rng, w - cw);
            return (top, left, ch, cw);
        }
    }
    // The fallback: a center crop of the whole image, its ratio clamped to [3/4, 4/3].
    let ratio = w as f64 / h as f64;
    let (ch, cw) = if ratio < 0.75 {
        (((w as f64) / 0.75).round() as usize, w)
    } else if ratio > 4.0 / 3.0 {
        (h, ((h as f64) * 4.0 / 3.0).round() as usize)
    } else {
        (h, w)
    };
    let (ch, cw) = (ch.clamp(1, h), cw.clamp(1, w));
    ((h - ch) / 2, (w - cw) / 2, ch, cw)
}

/// The `window` of an H×W×C image resized to H×W bilinearly, with PyTorch's half-pixel
/// centers (`align_corners=False`): the crop window is the whole image when it is H×W.
pub fn resize_window(image: &[f32], h: usize, w: usize, c: usize, window: Window) -> Vec<f32> {
    let (top, left, wh, ww) = window;
    // Source coordinate and weights along one axis, clamped at the window's edges.
    let taps = |n_out: usize, n_in: usize| -> Vec<(usize, usize, f32)> {
        let ratio = n_in as f64 / n_out as f64;
        (0..n_out)
            .map(|o| {
                let src = ((o as f64 + 0.5) * ratio - 0.5).max(0.0);
                let i0 = (src.floor() as usize).min(n_in - 1);
                let i1 = (i0 + 1).min(n_in - 1);
                (i0, i1, (src - i0 as f64) as f32)
            })
            .collect()
    };
    let rows = taps(h, wh);
    let cols = taps(w, ww);
    let mut out = vec![0.0f32; h * w * c];
    for (y, &(y0, y1, fy)) in rows.iter().enumerate() {
        for (x, &(x0, x1, fx)) in cols.iter().enumerate() {
            for ch in 0..c {
                let at = |yy: usize, xx: usize| image[((top + yy) * w + left + xx) * c + ch];
                let upper = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx;
                let lower = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx;
                out[(y * w + x) * c + ch] = upper * (1.0 - fy) + lower * fy;
            }
        }
    }
    out
}

/// The image under the affine map `zoom · R(angle) · Shear(shear)` about its center (angles in
/// degrees; with y pointing down, a positive angle turns the picture clockwise), sampled
/// bilinearly with 0 outside.
pub fn affine(
    image: &[f32],
    h: usize,
    w: usize,
    c: usize,
    angle: f64,
    shear: f64,
    zoom: f64,
) -> Vec<f32> {
    let (sin, cos) = angle.to_radians().sin_cos();
    let tan = shear.to_radians().tan();
    // Forward: p ↦ zoom · R · S · p with S = [[1, tan], [0, 1]]. Each output pixel q reads
    // from the inverse, S⁻¹ · R⁻¹ · q / zoom = [[a, b], [c, d]] · q.
    // A coefficient within 1e-9 of a whole number is that number, so that a rotation by a
    // right angle (whose cosine is 6e-17, not 0) moves pixels exactly: the coordinates are
    // then whole or half numbers, exact in f64, and need no rounding of their own.
    let (a, b) = (
        snap((cos + tan * sin) / zoom),
        snap((sin - tan * cos) / zoom),
    );
    let (c_x, d) = (snap(-sin / zoom), snap(cos / zoom));
    let (cx, cy) = ((w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0);
    let mut out = vec![0.0f32; h * w * c];
    let row = w * c;
    for (y, out_row) in out.chunks_exact_mut(row).enumerate() {
        let qy = y as f64 - cy;
        let (row_x, row_y) = (b * qy + cx, d * qy + cy);
        // Whole numbers minus `cx` step by 1.0 exactly.
        let mut qx = -cx;
        for dst in out_row.chunks_exact_mut(c) {
            let (sx, sy) = (a * qx + row_x, c_x * qx + row_y);
            qx += 1.0;
            let (x0, y0) = (floor(sx), floor(sy));
            let (fx, fy) = ((sx - x0) as f32, (sy - y0) as f32);
            let weights = [
                (1.0 - fy) * (1.0 - fx),
                (1.0 - fy) * fx,
                fy * (1.0 - fx),
                fy * fx,
            ];
            // `x0`, `y0` are whole numbers; as integers (saturating), one unsigned compare
            // each tells that all four neighbours are inside (most pixels), and slicing the
            // two rows once leaves the channel loop without bounds checks.
            let (ix, iy) = (x0 as i64, y0 as i64);
            if (ix as u64) < (w as u64).saturating_sub(1)
                && (iy as u64) < (h as u64).saturating_sub(1)
            {
                let top = (iy as usize * w + ix as usize) * c;
                let upper = &image[top..top + 2 * c];
                let lower = &image[top + row..top + row + 2 * c];
                let (upper_right, lower_right) = (&upper[c..], &lower[c..]);
                for ch in 0..c {
                    dst[ch] = weights[0] * upper[ch]
                        + weights[1] * upper_right[ch]
                        + weights[2] * lower[ch]
                        + weights[3] * lower_right[ch];
                }
                continue;
            }
            let taps = [
                (y0, x0),
                (y0, x0 + 1.0),
                (y0 + 1.0, x0),
                (y0 + 1.0, x0 + 1.0),
            ];
            for ((ty, tx), weight) in taps.into_iter().zip(weights) {
                if weight == 0.0 || ty < 0.0 || tx < 0.0 || ty >= h as f64 || tx >= w as f64 {
                    continue;
                }
                let src = (ty as usize * w + tx as usize) * c;
                for (value, &pixel) in dst.iter_mut().zip(&image[src..src + c]) {
                    *value += weight * pixel;
                }
            }
        }
    }
    out
}

/// `v`, or the whole number within 1e-9 of it.
fn snap(v: f64) -> f64 {
    let r = floor(v + 0.5);
    if (v - r).abs() < 1e-9 {
        r
    } else {
        v
    }
}

/// `v.floor()` by truncation, which compiles to two instructions where `f64::floor` is a libm
/// call on baseline x86-64 (no SSE4.1); exact for |v| < 2^52, and coordinates far outside the
/// image (a tiny zoom) saturate and stay outside.
fn floor(v: f64) -> f64 {
    let t = v as i64 as f64;
    if t > v {
        t - 1.0
    } else {
        t
    }
}

/// Adds `shifts[ch]` to every value of channel `ch`.
pub fn shift_channels(image: &mut [f32], shifts: &[f32]) {
    let c = shifts.len();
    for pixel in image.chunks_exact_mut(c) {
        for (value, shift) in pixel.iter_mut().zip(shifts) {
            *value += shift;
        }
    }
}

#[cfg(test)]
#[path = "augment_tests.rs"]
mod tests;
