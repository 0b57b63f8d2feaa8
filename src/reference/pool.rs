//! Pooling with PyTorch's exact semantics, since weights and expected outputs come from it.
//!
//! For output row `oy` the window starts at `oy·stride − pad_top` and covers `kernel` rows.
//! Max pooling takes the largest input cell inside the window, never a padding cell (PyTorch
//! pads with −∞). Average pooling follows `avg_pool2d`: the window is first clipped to the
//! padded input (which only matters for `ceil_mode` windows that run past it), and the sum of
//! the real cells is divided by that clipped window's size when `count_include_pad`, or by the
//! number of real cells otherwise.
//!
//! A window holding no input cell at all, which PyTorch forbids by requiring padding of at most
//! half the kernel, gives −∞ for max and 0 for average.

use super::Tensor;
use crate::graph::{PoolAttrs, PoolKind, Shape};
use ndarray::Array4;

/// The window of output index `o` along one axis: the clipped padded extent's length, and the
/// real cells `[start, end)` it covers.
fn window(
    o: usize,
    stride: usize,
    kernel: usize,
    pad_before: usize,
    pad_after: usize,
    n: usize,
) -> (usize, usize, usize) {
    let start = (o * stride) as isize - pad_before as isize;
    let end = (start + kernel as isize).min((n + pad_after) as isize);
    let padded_len = (end - start).max(0) as usize;
    let real_start = start.max(0) as usize;
    let real_end = (end.max(0) as usize).min(n);
    (padded_len, real_start, real_end.max(real_start))
}

pub(super) fn pool(x: &Tensor, attrs: &PoolAttrs, out: Shape) -> Tensor {
    let (batch, in_h, in_w, channels) = x.dim();
    let pad = attrs.pad;
    let mut y = Array4::<f32>::zeros((batch, out.h, out.w, channels));
    for oy in 0..out.h {
        let (rows, y0, y1) = window(
            oy,
            attrs.stride[0],
            attrs.kernel[0],
            pad.top,
            pad.bottom,
            in_h,
        );
        for ox in 0..out.w {
            let (cols, x0, x1) = window(
                ox,
                attrs.stride[1],
                attrs.kernel[1],
                pad.left,
                pad.right,
                in_w,
            );
            let real_cells = (y1 - y0) * (x1 - x0);
            let divisor = if attrs.count_include_pad {
                rows * cols
            } else {
                real_cells
            };
            for n in 0..batch {
                for c in 0..channels {
                    let cells = (y0..y1).flat_map(|iy| (x0..x1).map(move |ix| (iy, ix)));
                    y[[n, oy, ox, c]] = match attrs.kind {
                        PoolKind::Max => cells
                            .map(|(iy, ix)| x[[n, iy, ix, c]])
                            .fold(f32::NEG_INFINITY, f32::max),
                        PoolKind::Avg if divisor == 0 => 0.0,
                        PoolKind::Avg => {
                            let sum: f64 = cells.map(|(iy, ix)| f64::from(x[[n, iy, ix, c]])).sum();
                            (sum / divisor as f64) as f32
                        }
                    };
                }
            }
        }
    }
    y
}

/// Pools each channel over the whole image to 1×1.
pub(super) fn global_pool(x: &Tensor, kind: PoolKind) -> Tensor {
    let (batch, h, w, channels) = x.dim();
    let mut y = Array4::<f32>::zeros((batch, 1, 1, channels));
    for n in 0..batch {
        for c in 0..channels {
            let plane = x.slice(ndarray::s![n, .., .., c]);
            y[[n, 0, 0, c]] = match kind {
                PoolKind::Max => plane.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                PoolKind::Avg => {
                    let sum: f64 = plane.iter().map(|&v| f64::from(v)).sum();
                    (sum / (h * w) as f64) as f32
                }
            };
        }
    }
    y
}

/// PyTorch's `AdaptiveAvgPool2d`: output cell `i` of `out` along an axis of length `n`
/// averages input cells `floor(i·n/out) .. ceil((i+1)·n/out)`.
pub(super) fn adaptive_avg_pool(x: &Tensor, out: [usize; 2]) -> Tensor {
    let (batch, h, w, channels) = x.dim();
    let bounds = |i: usize, n: usize, out: usize| ((i * n) / out, ((i + 1) * n).div_ceil(out));
    let mut y = Array4::<f32>::zeros((batch, out[0], out[1], channels));
    for oy in 0..out[0] {
        let (y0, y1) = bounds(oy, h, out[0]);
        for ox in 0..out[1] {
            let (x0, x1) = bounds(ox, w, out[1]);
            let count = ((y1 - y0) * (x1 - x0)) as f64;
            for n in 0..batch {
                for c in 0..channels {
                    let window = x.slice(ndarray::s![n, y0..y1, x0..x1, c]);
                    let sum: f64 = window.iter().map(|&v| f64::from(v)).sum();
                    y[[n, oy, ox, c]] = (sum / count) as f32;
                }
            }
        }
    }
    y
}
