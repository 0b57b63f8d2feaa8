//! Upsampling as PyTorch's `nn.Upsample(scale_factor=s, mode=…)` with `align_corners=False`,
//! or `nn.Upsample(size=[h, w], …)`: `nearest` repeats each pixel `s × s` times; `bilinear`
//! interpolates between the two nearest input pixels along each axis, sampling the input at
//! `(o + 0.5) / s − 0.5` (clamped below at 0, and to the last pixel above).
//!
//! A `size` that is not the input's times whole factors (or smaller than the input) uses
//! PyTorch's general rule along each axis of `n` inputs and `m` outputs, with the f32 scale
//! `r = n / m`: nearest reads input `min(⌊o · r⌋, n − 1)`; bilinear samples at
//! `max(r · (o + 0.5) − 0.5, 0)`, as `upsample_nearest2d` and `upsample_bilinear2d` compute it.

use super::signature::{ArgValue, Layer, Param, ParamDefault, ParamKind, X};
use super::{Arity, Category, Op, OpRule};
use crate::graph::infer::checked_numel;
use crate::graph::{ParamSpec, Shape, ShapeError};
use crate::reference::{Forward, RunError, Tensor};
use ndarray::Array4;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum UpsampleMode {
    Nearest,
    Bilinear,
}

const MODES: &[&str] = &["nearest", "bilinear"];

/// The largest factor per axis. Bilinear code has one loop per phase of the factor, so the
/// factor bounds the code's size; no network upsamples by more in one layer.
pub const MAX_SCALE: usize = 64;

/// `Op::Upsample`: the factors along height and width, and the mode.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct UpsampleAttrs {
    pub scale: [usize; 2],
    pub mode: UpsampleMode,
    /// The output's height and width when the source asked for a `size`. With a `scale`
    /// written beside it the shape rule checks that it gives the size; with a `size` alone
    /// `scale` is `[0, 0]` and [`UpsampleAttrs::factors`] gives the factors, if whole.
    pub size: Option<[usize; 2]>,
}

/// `scale` when only a `size` was written.
const FROM_SIZE: [usize; 2] = [0, 0];

/// The default factor when neither `scale` nor `size` is given.
const DEFAULT_SCALE: [usize; 2] = [2, 2];

pub(super) const UPSAMPLE: Layer<4> = Layer {
    name: "upsample",
    params: [
        X,
        Param::new("scale", ParamKind::Pair { min: 1 }, ParamDefault::Absent),
        Param::new("mode", ParamKind::Choice(MODES), ParamDefault::Choice(0)),
        Param::new("size", ParamKind::Pair { min: 1 }, ParamDefault::Absent),
    ],
    build: |[_, scale, mode, size], _| {
        let mode = match mode.choice()? {
            0 => UpsampleMode::Nearest,
            _ => UpsampleMode::Bilinear,
        };
        let size = match size {
            ArgValue::Absent => None,
            given => Some(given.pair()?),
        };
        // A size alone decides the output; a `scale` written beside it must give the size.
        let scale = match (scale, size) {
            (ArgValue::Absent, Some(_)) => FROM_SIZE,
            (scale, _) => scale.pair_or(DEFAULT_SCALE)?,
        };
        Some(Op::Upsample(UpsampleAttrs { scale, mode, size }))
    },
};

impl UpsampleAttrs {
    /// The output's height and width on an input of `input`'s.
    pub fn output_size(&self, input: Shape) -> [usize; 2] {
        self.size.unwrap_or([
            input.h.saturating_mul(self.scale[0]),
            input.w.saturating_mul(self.scale[1]),
        ])
    }

    /// The whole factors from the input to the output, when both axes have one; `None` when
    /// the output is a `size` that is not the input's times whole factors (the general rule).
    pub fn factors(&self, input: Shape) -> Option<[usize; 2]> {
        let Some(size) = self.size else {
            return Some(self.scale);
        };
        let whole = |n: usize, m: usize| (n > 0 && m >= n && m.is_multiple_of(n)).then(|| m / n);
        Some([whole(input.h, size[0])?, whole(input.w, size[1])?])
    }

    /// Along an axis of `n` inputs and `m` outputs, what each output reads: two input indices
    /// and their weights (nearest: the one pixel, weight 1 and 0). Whole factors use the
    /// exact rule of [`bilinear_source`]; other sizes PyTorch's f32 rule (module doc).
    pub fn taps(&self, n: usize, m: usize) -> Vec<(usize, usize, f32, f32)> {
        let whole = (n > 0 && m >= n && m.is_multiple_of(n)).then(|| m / n);
        let last = n.saturating_sub(1);
        let ratio = n as f32 / m.max(1) as f32;
        (0..m)
            .map(|o| match (self.mode, whole) {
                (UpsampleMode::Nearest, Some(s)) => (o / s, o / s, 1.0, 0.0),
                (UpsampleMode::Nearest, None) => {
                    let i = ((o as f32 * ratio).floor() as usize).min(last);
                    (i, i, 1.0, 0.0)
                }
                (UpsampleMode::Bilinear, Some(s)) => bilinear_source(n, s, o),
                (UpsampleMode::Bilinear, None) => {
                    let source = (ratio * (o as f32 + 0.5) - 0.5).max(0.0);
                    let first = (source.floor() as usize).min(last);
                    let second = if first < last { first + 1 } else { first };
                    let lambda = (source - first as f32).clamp(0.0, 1.0);
                    (first, second, 1.0 - lambda, lambda)
                }
            })
            .collect()
    }
}

/// Where output index `o` samples an axis of `n` inputs upsampled `s` times, in PyTorch's
/// bilinear rule (`area_pixel_compute_source_index` with `align_corners=False`): the two input
/// indices and their weights. At the borders both indices may be the same pixel.
pub fn bilinear_source(n: usize, s: usize, o: usize) -> (usize, usize, f32, f32) {
    let source = ((o as f64 + 0.5) / s as f64 - 0.5).max(0.0);
    let first = (source as usize).min(n.saturating_sub(1));
    let second = if first + 1 < n { first + 1 } else { first };
    let lambda = (source - first as f64) as f32;
    (first, second, 1.0 - lambda, lambda)
}

impl OpRule for UpsampleAttrs {
    fn name(&self) -> &'static str {
        UPSAMPLE.name
    }

    fn arity(&self) -> Arity {
        Arity::One
    }

    fn output_shape(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let input = inputs[0];
        if input.flat {
            return Err(ShapeError::NeedsSpatial {
                op: UPSAMPLE.name,
                shape: input,
            });
        }
        if let Some(size) = self.size {
            let scaled = [
                input.h.checked_mul(self.scale[0]),
                input.w.checked_mul(self.scale[1]),
            ];
            if self.scale != FROM_SIZE && scaled != [Some(size[0]), Some(size[1])] {
                return Err(ShapeError::UpsampleSize {
                    input: [input.h, input.w],
                    size,
                    scale: self.scale,
                });
            }
            // The code's size grows with the ratio, as with a scale.
            for (n, m) in [(input.h, size[0]), (input.w, size[1])] {
                let ratio = m.div_ceil(n.max(1));
                if ratio > MAX_SCALE {
                    return Err(ShapeError::ScaleTooLarge {
                        scale: ratio,
                        limit: MAX_SCALE,
                    });
                }
            }
            if size.contains(&0) {
                return Err(ShapeError::NotPositive {
                    what: "the upsampled size",
                });
            }
            checked_numel(&[size[0], size[1], input.c], "the upsampled output")?;
            return Ok(Shape::spatial(size[0], size[1], input.c));
        }
        if self.scale.contains(&0) {
            return Err(ShapeError::NotPositive {
                what: "the upsampling scale",
            });
        }
        if let Some(&scale) = self.scale.iter().find(|&&s| s > MAX_SCALE) {
            return Err(ShapeError::ScaleTooLarge {
                scale,
                limit: MAX_SCALE,
            });
        }
        let h = input.h.checked_mul(self.scale[0]);
        let w = input.w.checked_mul(self.scale[1]);
        let (Some(h), Some(w)) = (h, w) else {
            return Err(ShapeError::TooLarge {
                what: "the upsampled output".into(),
                elements: None,
            });
        };
        checked_numel(&[h, w, input.c], "the upsampled output")?;
        Ok(Shape::spatial(h, w, input.c))
    }

    fn params(&self, _input: Shape) -> Vec<ParamSpec> {
        Vec::new()
    }

    fn macs(&self, _input: Shape, _output: Shape) -> u64 {
        0
    }

    fn dump_attrs(&self) -> String {
        let mode = match self.mode {
            UpsampleMode::Nearest => "nearest",
            UpsampleMode::Bilinear => "bilinear",
        };
        match self.size {
            Some([h, w]) if self.scale == FROM_SIZE => format!("size={h}x{w} mode={mode}"),
            _ => format!("scale={}x{} mode={mode}", self.scale[0], self.scale[1]),
        }
    }

    fn category(&self) -> Category {
        Category::Other
    }

    fn reference_forward(&self, cx: &Forward, args: &[&Tensor]) -> Result<Tensor, RunError> {
        let x = cx.arg(args, 0)?;
        let (batch, h, w, c) = x.dim();
        let [oh, ow] = self.output_size(Shape::spatial(h, w, c));
        if oh == 0 || ow == 0 || h == 0 || w == 0 {
            return Err(cx.malformed("an empty upsampling"));
        }
        let (rows, cols) = (self.taps(h, oh), self.taps(w, ow));
        // PyTorch's order: h0λ·(w0λ·x00 + w1λ·x01) + h1λ·(w0λ·x10 + w1λ·x11), in f32; nearest
        // reads one pixel.
        Ok(Array4::from_shape_fn(
            (batch, oh, ow, c),
            |(n, y, xx, ch)| {
                let (y0, y1, hl0, hl1) = rows[y];
                let (x0, x1, wl0, wl1) = cols[xx];
                match self.mode {
                    UpsampleMode::Nearest => x[[n, y0, x0, ch]],
                    UpsampleMode::Bilinear => {
                        let row = |yy: usize| wl0 * x[[n, yy, x0, ch]] + wl1 * x[[n, yy, x1, ch]];
                        hl0 * row(y0) + hl1 * row(y1)
                    }
                }
            },
        ))
    }
}

impl super::gradient::GradRule for UpsampleAttrs {
    /// Each output's gradient goes back to the input pixels it was computed from, with the
    /// same weights.
    fn reference_backward(
        &self,
        cx: &Forward,
        _mode: super::gradient::TrainingMode,
        args: &[&Tensor],
        _output: &Tensor,
        grad: &Tensor,
        wanted: super::gradient::Wanted,
    ) -> Result<super::gradient::Gradients, RunError> {
        let x = cx.arg(args, 0)?;
        let (_, h, w, c) = x.dim();
        let [oh, ow] = self.output_size(Shape::spatial(h, w, c));
        let (rows, cols) = (self.taps(h, oh), self.taps(w, ow));
        Ok(super::gradient::one_input(wanted, || {
            let mut dx = Array4::zeros(x.dim());
            for ((n, y, xx, ch), &g) in grad.indexed_iter() {
                let (y0, y1, hl0, hl1) = rows[y];
                let (x0, x1, wl0, wl1) = cols[xx];
                match self.mode {
                    UpsampleMode::Nearest => dx[[n, y0, x0, ch]] += g,
                    UpsampleMode::Bilinear => {
                        dx[[n, y0, x0, ch]] += hl0 * wl0 * g;
                        dx[[n, y0, x1, ch]] += hl0 * wl1 * g;
                        dx[[n, y1, x0, ch]] += hl1 * wl0 * g;
                        dx[[n, y1, x1, ch]] += hl1 * wl1 * g;
                    }
                }
            }
            dx
        }))
    }
}
