//! Convolution and dense layers, straight from their definitions.
//!
//! Convolution is a cross-correlation (no kernel flip), as in every deep-learning framework:
//! `y[n, oy, ox, f] = bias[f] + Σ x[n, oy·s + ky·d − pad_top, ox·s + kx·d − pad_left, c]
//! · w[f, c − group_start, ky, kx]` over the window and over the input channels of `f`'s group,
//! with cells outside the input counting as zero. A residual conv (fused by the optimizer) then
//! adds its skip tensor, `y += skip[n, oy, ox, f]`, and the optional activation comes last: the
//! epilogue is `activation(acc + bias + skip)`, the order of the unfused `conv → + → relu`.

use super::Tensor;
use crate::graph::{Activation, ConvAttrs, Shape};
use ndarray::{Array4, ArrayView1, CowArray, Ix1, Ix4, IxDyn};

/// Σ a·b in f64, so the oracle's rounding error is negligible next to any backend's.
fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum()
}

/// The epilogue: bias, then the residual `skip` value, then the activation.
fn finish(
    sum: f64,
    bias: Option<&ArrayView1<f32>>,
    idx: usize,
    skip: Option<f32>,
    activation: Option<Activation>,
) -> f32 {
    let with_bias = sum + bias.map_or(0.0, |b| f64::from(b[idx]));
    let value = (with_bias + skip.map_or(0.0, f64::from)) as f32;
    activation.map_or(value, |act| act.apply(value))
}

/// `weight` is `[filters, in/groups, kh, kw]`; `out` is the shape inference computed;
/// `skip`, given for a residual conv, has the output's shape (the caller checked it).
pub(super) fn conv(
    x: &Tensor,
    attrs: &ConvAttrs,
    weight: &CowArray<f32, IxDyn>,
    bias: Option<&CowArray<f32, IxDyn>>,
    skip: Option<&Tensor>,
    out: Shape,
) -> Tensor {
    let (batch, in_h, in_w, in_c) = x.dim();
    let [kh, kw] = attrs.kernel;
    let [sh, sw] = attrs.stride;
    let [dh, dw] = attrs.dilation;
    let groups = attrs.groups.max(1);
    let channels_per_group = in_c / groups;
    let filters_per_group = attrs.filters / groups;

    // Filters as [filter][ky][kx][channel], so one filter tap against one input pixel is a
    // dot product of two contiguous channel slices.
    // `tensor()` checked the weight's shape against the layer; were it not 4-D anyway, the
    // empty result fails `eval`'s shape check and is reported as a malformed graph.
    let Ok(weight4) = weight.view().into_dimensionality::<Ix4>() else {
        return Array4::zeros((0, 0, 0, 0));
    };
    let taps = weight4
        .permuted_axes([0, 2, 3, 1])
        .as_standard_layout()
        .into_owned();
    let taps = taps.as_slice().unwrap_or(&[]);
    let bias = bias.and_then(|b| b.view().into_dimensionality::<Ix1>().ok());
    let x = x.as_standard_layout();
    let x = x.as_slice().unwrap_or(&[]);

    let mut y = Array4::<f32>::zeros((batch, out.h, out.w, attrs.filters));
    for n in 0..batch {
        for oy in 0..out.h {
            for ox in 0..out.w {
                for f in 0..attrs.filters {
                    let group = f / filters_per_group;
                    let first_channel = group * channels_per_group;
                    let mut sum = 0.0f64;
                    for ky in 0..kh {
                        // The input row this tap reads; rows in the padding contribute zero.
                        let iy = (oy * sh + ky * dh) as isize - attrs.pad.top as isize;
                        if iy < 0 || iy >= in_h as isize {
                            continue;
                        }
                        for kx in 0..kw {
                            let ix = (ox * sw + kx * dw) as isize - attrs.pad.left as isize;
                            if ix < 0 || ix >= in_w as isize {
                                continue;
                            }
                            let pixel = ((n * in_h + iy as usize) * in_w + ix as usize) * in_c;
                            let xs = &x[pixel + first_channel..][..channels_per_group];
                            let tap = ((f * kh + ky) * kw + kx) * channels_per_group;
                            let ws = &taps[tap..][..channels_per_group];
                            sum += dot(xs, ws);
                        }
                    }
                    let skip = skip.map(|s| s[[n, oy, ox, f]]);
                    y[[n, oy, ox, f]] = finish(sum, bias.as_ref(), f, skip, attrs.activation);
                }
            }
        }
    }
    y
}

/// `x` is N×1×1×C; `weight` is `[units, C]`, PyTorch's `Linear` layout.
pub(super) fn dense(
    x: &Tensor,
    weight: &CowArray<f32, IxDyn>,
    bias: Option<&CowArray<f32, IxDyn>>,
    activation: Option<Activation>,
) -> Tensor {
    let batch = x.dim().0;
    let (units, features) = (weight.shape()[0], weight.shape()[1]);
    let weight = weight.as_standard_layout();
    let weight = weight.as_slice().unwrap_or(&[]);
    let bias = bias.and_then(|b| b.view().into_dimensionality::<Ix1>().ok());
    let x = x.as_standard_layout();
    let x = x.as_slice().unwrap_or(&[]);

    let mut y = Array4::<f32>::zeros((batch, 1, 1, units));
    for n in 0..batch {
        let row = &x[n * features..][..features];
        for unit in 0..units {
            let sum = dot(row, &weight[unit * features..][..features]);
            y[[n, 0, 0, unit]] = finish(sum, bias.as_ref(), unit, None, activation);
        }
    }
    y
}
