//! Max and average pooling over a window, with PyTorch's exact semantics, since weights and
//! expected outputs come from it.
//!
//! For output row `oy` the window starts at `oy·stride − pad_top` and covers `kernel` rows.
//! Max pooling takes the largest input cell inside the window, never a padding cell (PyTorch
//! pads with −∞). Average pooling follows `avg_pool2d`: the window is first clipped to the
//! padded input (which only matters for `ceil_mode` windows that run past it), and the sum of
//! the real cells is divided by that clipped window's size when `count_include_pad`, or by the
//! number of real cells otherwise.
//!
//! Padding is at most half the kernel on each side, as PyTorch requires, so that every window
//! holds at least one input cell (one wholly in padding would give −∞ for max, 0 for average).
//!
//! Max pooling takes a `dilation`, as `nn.MaxPool2d`: the window's cells are `dilation` apart,
//! `oy·stride − pad_top + ky·dilation` for `ky < kernel`. Average pooling has none, as
//! `nn.AvgPool2d`.

use super::conv::pair;
use super::signature::{Layer, Param, ParamDefault, ParamKind, X};
use super::{Arity, Category, Op, OpRule, Padding};
use crate::graph::infer::{check_padding, spatial_input, window};
use crate::graph::{ParamSpec, Shape, ShapeError};
use crate::reference::{Forward, RunError, Tensor};
use ndarray::Array4;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Avg,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PoolAttrs {
    pub kind: PoolKind,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub pad: Padding,
    /// Round the output size up, as PyTorch's `ceil_mode=True` (GoogLeNet).
    pub ceil_mode: bool,
    /// Average pooling divides by the full window, padded cells included (PyTorch's default).
    pub count_include_pad: bool,
    /// The spacing of a max-pooling window's cells (`[1, 1]`: adjacent; always so for
    /// average pooling).
    pub dilation: [usize; 2],
}

const KERNEL: Param = Param::new("kernel", ParamKind::Pair { min: 1 }, ParamDefault::Required);
/// Left out, the stride is the kernel: windows that tile the input.
const STRIDE: Param = Param::new("stride", ParamKind::Pair { min: 1 }, ParamDefault::Absent);
const PAD: Param = Param::new("pad", ParamKind::Pad, ParamDefault::Absent);
const CEIL_MODE: Param = Param::new("ceil_mode", ParamKind::Flag, ParamDefault::Flag(false));
const DILATION: Param = Param::new("dilation", ParamKind::Pair { min: 1 }, ParamDefault::Absent);

pub(super) const MAXPOOL: Layer<6> = Layer {
    name: "maxpool",
    params: [X, KERNEL, STRIDE, PAD, CEIL_MODE, DILATION],
    build: |[_, kernel, stride, pad, ceil_mode, dilation], input| {
        let dilation = dilation.pair_or([1, 1])?;
        build(
            PoolKind::Max,
            [kernel, stride, pad],
            ceil_mode.flag()?,
            true,
            dilation,
            input,
        )
    },
};

pub(super) const AVGPOOL: Layer<6> = Layer {
    name: "avgpool",
    params: [
        X,
        KERNEL,
        STRIDE,
        PAD,
        CEIL_MODE,
        Param::new(
            "count_include_pad",
            ParamKind::Flag,
            ParamDefault::Flag(true),
        ),
    ],
    build: |[_, kernel, stride, pad, ceil_mode, count_include_pad], input| {
        build(
            PoolKind::Avg,
            [kernel, stride, pad],
            ceil_mode.flag()?,
            count_include_pad.flag()?,
            [1, 1],
            input,
        )
    },
};

fn build(
    kind: PoolKind,
    [kernel, stride, pad]: [super::signature::ArgValue; 3],
    ceil_mode: bool,
    count_include_pad: bool,
    dilation: [usize; 2],
    input: Shape,
) -> Option<Op> {
    let kernel = kernel.pair()?;
    let stride = stride.pair_or(kernel)?;
    let pad = pad.pad()?.resolve(input, kernel, stride, dilation);
    Some(Op::Pool(PoolAttrs {
        kind,
        kernel,
        stride,
        pad,
        ceil_mode,
        count_include_pad,
        dilation,
    }))
}

impl OpRule for PoolAttrs {
    fn name(&self) -> &'static str {
        match self.kind {
            PoolKind::Max => MAXPOOL.name,
            PoolKind::Avg => AVGPOOL.name,
        }
    }

    fn arity(&self) -> Arity {
        Arity::One
    }

    fn output_shape(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let input = inputs[0];
        spatial_input(self.name(), input)?;
        let sides = [
            (self.pad.top, self.kernel[0]),
            (self.pad.bottom, self.kernel[0]),
            (self.pad.left, self.kernel[1]),
            (self.pad.right, self.kernel[1]),
        ];
        if let Some(&(pad, kernel)) = sides.iter().find(|&&(pad, kernel)| pad > kernel / 2) {
            return Err(ShapeError::PoolPaddingTooLarge {
                pad,
                kernel: self.kernel,
                limit: kernel / 2,
            });
        }
        // Within half the kernel, the padding could still dwarf the input when the kernel does.
        check_padding(self.pad, [input.h, input.w], "the input's size")?;
        let (h, w) = window(
            input,
            self.kernel,
            self.stride,
            self.dilation,
            self.pad,
            self.ceil_mode,
        )?;
        Ok(Shape::spatial(h, w, input.c))
    }

    fn params(&self, _input: Shape) -> Vec<ParamSpec> {
        Vec::new()
    }

    fn macs(&self, _input: Shape, _output: Shape) -> u64 {
        0
    }

    fn dump_attrs(&self) -> String {
        let mut s = format!(
            "kernel={} stride={} pad={}",
            pair(self.kernel),
            pair(self.stride),
            self.pad
        );
        if self.ceil_mode {
            s.push_str(" ceil_mode");
        }
        if self.dilation != [1, 1] {
            s.push_str(&format!(" dilation={}", pair(self.dilation)));
        }
        if !self.count_include_pad {
            s.push_str(" exclude_pad");
        }
        s
    }

    fn category(&self) -> Category {
        Category::Other
    }

    fn reference_forward(&self, cx: &Forward, args: &[&Tensor]) -> Result<Tensor, RunError> {
        Ok(pool(cx.arg(args, 0)?, self, cx.shape))
    }
}

/// The window of output index `o` along one axis: the clipped padded extent's length, and the
/// real cells `[start, end)` it covers.
fn window_cells(
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
/// PyTorch's max pooling step: `if (val > maxval || isnan(val)) maxval = val`, so a NaN in the
/// window is the result (`f32::max` would drop it).
pub(super) fn max_keeping_nan(max: f32, value: f32) -> f32 {
    if value > max || value.is_nan() {
        value
    } else {
        max
    }
}

/// The real input cells of output index `o`'s dilated max-pooling window along one axis, in
/// order: `o·stride − pad_before + k·dilation` for `k < kernel`, those inside `[0, n)`.
fn dilated_cells(
    o: usize,
    stride: usize,
    kernel: usize,
    dilation: usize,
    pad_before: usize,
    n: usize,
) -> Vec<usize> {
    (0..kernel)
        .filter_map(|k| (o * stride + k * dilation).checked_sub(pad_before))
        .filter(|&i| i < n)
        .collect()
}

/// Dilated max pooling, and its gradient to each window's first maximum in row-major order.
fn dilated_max(
    x: &Tensor,
    attrs: &PoolAttrs,
    out: (usize, usize),
    grad: Option<&Tensor>,
) -> Tensor {
    let (batch, in_h, in_w, channels) = x.dim();
    let pad = attrs.pad;
    let mut result = match grad {
        Some(_) => Array4::<f32>::zeros(x.raw_dim()),
        None => Array4::<f32>::zeros((batch, out.0, out.1, channels)),
    };
    for oy in 0..out.0 {
        let rows = dilated_cells(
            oy,
            attrs.stride[0],
            attrs.kernel[0],
            attrs.dilation[0],
            pad.top,
            in_h,
        );
        for ox in 0..out.1 {
            let cols = dilated_cells(
                ox,
                attrs.stride[1],
                attrs.kernel[1],
                attrs.dilation[1],
                pad.left,
                in_w,
            );
            for n in 0..batch {
                for c in 0..channels {
                    let cells = rows
                        .iter()
                        .flat_map(|&iy| cols.iter().map(move |&ix| (iy, ix)));
                    match grad {
                        None => {
                            result[[n, oy, ox, c]] = cells
                                .map(|(iy, ix)| x[[n, iy, ix, c]])
                                .fold(f32::NEG_INFINITY, max_keeping_nan);
                        }
                        Some(grad) => {
                            let mut best: Option<(usize, usize, f32)> = None;
                            for (iy, ix) in cells {
                                let v = x[[n, iy, ix, c]];
                                if best.is_none_or(|(_, _, b)| v > b) {
                                    best = Some((iy, ix, v));
                                }
                            }
                            if let Some((iy, ix, _)) = best {
                                result[[n, iy, ix, c]] += grad[[n, oy, ox, c]];
                            }
                        }
                    }
                }
            }
        }
    }
    result
}

fn pool(x: &Tensor, attrs: &PoolAttrs, out: Shape) -> Tensor {
    if attrs.dilation != [1, 1] {
        return dilated_max(x, attrs, (out.h, out.w), None);
    }
    let (batch, in_h, in_w, channels) = x.dim();
    let pad = attrs.pad;
    let mut y = Array4::<f32>::zeros((batch, out.h, out.w, channels));
    for oy in 0..out.h {
        let (rows, y0, y1) = window_cells(
            oy,
            attrs.stride[0],
            attrs.kernel[0],
            pad.top,
            pad.bottom,
            in_h,
        );
        for ox in 0..out.w {
            let (cols, x0, x1) = window_cells(
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
                            .fold(f32::NEG_INFINITY, max_keeping_nan),
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

impl super::gradient::GradRule for PoolAttrs {
    /// Max: each window's gradient to its first maximum in row-major order (PyTorch's
    /// choice on ties). Avg: spread over the window's real cells, divided by the forward's
    /// divisor (which counts padding cells when `count_include_pad`).
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
        Ok(super::gradient::one_input(wanted, || {
            pool_backward(x, self, grad)
        }))
    }
}

fn pool_backward(x: &Tensor, attrs: &PoolAttrs, grad: &Tensor) -> Tensor {
    let (batch, in_h, in_w, channels) = x.dim();
    let (_, out_h, out_w, _) = grad.dim();
    if attrs.dilation != [1, 1] {
        return dilated_max(x, attrs, (out_h, out_w), Some(grad));
    }
    let pad = attrs.pad;
    let mut dx = Array4::<f32>::zeros(x.raw_dim());
    for oy in 0..out_h {
        let (rows, y0, y1) = window_cells(
            oy,
            attrs.stride[0],
            attrs.kernel[0],
            pad.top,
            pad.bottom,
            in_h,
        );
        for ox in 0..out_w {
            let (cols, x0, x1) = window_cells(
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
                    let g = grad[[n, oy, ox, c]];
                    match attrs.kind {
                        PoolKind::Max => {
                            let mut best: Option<(usize, usize, f32)> = None;
                            for iy in y0..y1 {
                                for ix in x0..x1 {
                                    let v = x[[n, iy, ix, c]];
                                    if best.is_none_or(|(_, _, b)| v > b) {
                                        best = Some((iy, ix, v));
                                    }
                                }
                            }
                            if let Some((iy, ix, _)) = best {
                                dx[[n, iy, ix, c]] += g;
                            }
                        }
                        PoolKind::Avg if divisor == 0 => {}
                        PoolKind::Avg => {
                            let share = (f64::from(g) / divisor as f64) as f32;
                            for iy in y0..y1 {
                                for ix in x0..x1 {
                                    dx[[n, iy, ix, c]] += share;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    dx
}
