//! Convolution, ordinary (`conv`) and depthwise (`dwconv`): one op, `Op::Conv`, since a
//! depthwise convolution is a grouped one with a group per input channel.
//!
//! The reference is a cross-correlation (no kernel flip), as in every deep-learning framework:
//! `y[n, oy, ox, f] = bias[f] + Σ x[n, oy·s + ky·d − pad_top, ox·s + kx·d − pad_left, c]
//! · w[f, c − group_start, ky, kx]` over the window and over the input channels of `f`'s group,
//! with cells outside the input counting as zero. A residual conv (fused by the optimizer) then
//! adds its skip tensor, `y += skip[n, oy, ox, f]`, and the optional activation comes last: the
//! epilogue is `activation(acc + bias + skip)`, the order of the unfused `conv → + → relu`.

use super::literal::check_literal;
use super::signature::{ArgValue, Layer, Param, ParamDefault, ParamKind, X};
use super::{param, Activation, Arity, Category, Literal, Op, OpRule, Padding};
use crate::graph::infer::{check_padding, checked_numel, positive, spatial_input, window};
use crate::graph::{Init, ParamSpec, Shape, ShapeError};
use crate::reference::{Forward, RunError, Tensor};
use ndarray::{Array4, ArrayView1, CowArray, Ix1, Ix4, IxDyn};
use std::fmt::Write;

#[derive(Clone, Debug, PartialEq)]
pub struct ConvAttrs {
    pub filters: usize,
    /// `[kh, kw]`.
    pub kernel: [usize; 2],
    /// `[sh, sw]`.
    pub stride: [usize; 2],
    /// `[dh, dw]`; 1 is an ordinary convolution.
    pub dilation: [usize; 2],
    pub pad: Padding,
    pub groups: usize,
    /// Written as `dwconv`: the kind the summary, the dumps and automatic names show, which
    /// follows what the user wrote rather than the groups (they decide a weights file's names).
    pub depthwise: bool,
    pub bias: bool,
    /// Given weights `[out, in/groups, kh, kw]`, instead of a `weight` parameter.
    pub weights: Option<Literal>,
    /// Given bias values `[out]`, instead of a `bias` parameter.
    pub bias_values: Option<Literal>,
    /// An activation fused into the convolution's epilogue by the optimizer.
    pub activation: Option<Activation>,
    /// Set by the optimizer when a following residual `+` is fused into the epilogue: the
    /// conv then takes a second input, the skip tensor of the output's shape, and computes
    /// `activation(acc + bias + skip)`.
    pub residual: bool,
}

const KERNEL: Param = Param::new("kernel", ParamKind::Pair { min: 1 }, ParamDefault::Required);
const STRIDE: Param = Param::new(
    "stride",
    ParamKind::Pair { min: 1 },
    ParamDefault::Pair([1, 1]),
);
const PAD: Param = Param::new("pad", ParamKind::Pad, ParamDefault::Absent);
const BIAS: Param = Param::new("bias", ParamKind::Bias, ParamDefault::Absent);
const WEIGHTS: Param = Param::new("weights", ParamKind::Literal, ParamDefault::Absent);
/// What fills a conv's padding, PyTorch's `padding_mode`. Expansion turns a mode other than
/// zeros into a `pad` layer before the conv (see `ops/pad.rs`), so the builders ignore it.
pub const PAD_MODE: Param = Param::new(
    "pad_mode",
    ParamKind::Choice(super::PAD_MODES),
    ParamDefault::Choice(0),
);
const DILATION: Param = Param::new(
    "dilation",
    ParamKind::Pair { min: 1 },
    ParamDefault::Pair([1, 1]),
);

pub(super) const CONV: Layer<10> = Layer {
    name: "conv",
    params: [
        X,
        Param::new(
            "filters",
            ParamKind::Count { min: 1 },
            ParamDefault::Required,
        ),
        KERNEL,
        STRIDE,
        PAD,
        Param::new(
            "groups",
            ParamKind::Count { min: 1 },
            ParamDefault::Count(1),
        ),
        BIAS,
        WEIGHTS,
        DILATION,
        PAD_MODE,
    ],
    build: |[_, filters, kernel, stride, pad, groups, bias, weights, dilation, _], input| {
        build(Parts {
            filters: filters.count()?,
            groups: groups.count()?,
            depthwise: false,
            kernel,
            stride,
            pad,
            bias,
            weights,
            dilation,
            input,
        })
    },
};

pub(super) const DWCONV: Layer<9> = Layer {
    name: "dwconv",
    params: [
        X,
        KERNEL,
        STRIDE,
        PAD,
        Param::new(
            "multiplier",
            ParamKind::Count { min: 1 },
            ParamDefault::Count(1),
        ),
        BIAS,
        WEIGHTS,
        DILATION,
        PAD_MODE,
    ],
    build: |[_, kernel, stride, pad, multiplier, bias, weights, dilation, _], input| {
        build(Parts {
            filters: input.c.saturating_mul(multiplier.count()?),
            groups: input.c,
            depthwise: true,
            kernel,
            stride,
            pad,
            bias,
            weights,
            dilation,
            input,
        })
    },
};

/// What `conv` and `dwconv` have in common once their filters and groups are known.
struct Parts {
    filters: usize,
    groups: usize,
    depthwise: bool,
    kernel: ArgValue,
    stride: ArgValue,
    pad: ArgValue,
    bias: ArgValue,
    weights: ArgValue,
    dilation: ArgValue,
    input: Shape,
}

fn build(parts: Parts) -> Option<Op> {
    let kernel = parts.kernel.pair()?;
    let stride = parts.stride.pair()?;
    let dilation = parts.dilation.pair()?;
    let pad = parts
        .pad
        .pad()?
        .resolve(parts.input, kernel, stride, dilation);
    let (bias, bias_values) = parts.bias.bias()?;
    Some(Op::Conv(ConvAttrs {
        filters: parts.filters,
        kernel,
        stride,
        dilation,
        pad,
        groups: parts.groups,
        depthwise: parts.depthwise,
        bias,
        weights: parts.weights.literal()?,
        bias_values,
        activation: None,
        residual: false,
    }))
}

impl ConvAttrs {
    /// PyTorch's layout, `[out, in/groups, kh, kw]`, on `input_channels` channels.
    pub fn weight_shape(&self, input_channels: usize) -> [usize; 4] {
        [
            self.filters,
            input_channels / self.groups.max(1),
            self.kernel[0],
            self.kernel[1],
        ]
    }

    fn shape(&self, input: Shape) -> Result<Shape, ShapeError> {
        spatial_input("conv", input)?;
        positive(self.filters, "the number of filters")?;
        positive(self.groups, "groups")?;
        if !input.c.is_multiple_of(self.groups) {
            return Err(ShapeError::GroupsDontDivide {
                groups: self.groups,
                which: "the input channels",
                channels: input.c,
            });
        }
        if !self.filters.is_multiple_of(self.groups) {
            return Err(ShapeError::GroupsDontDivide {
                groups: self.groups,
                which: "the filters",
                channels: self.filters,
            });
        }
        check_padding(
            self.pad,
            [input.h.max(self.kernel[0]), input.w.max(self.kernel[1])],
            "the larger of the input's size and the kernel's",
        )?;
        let (h, w) = window(
            input,
            self.kernel,
            self.stride,
            self.dilation,
            self.pad,
            false,
        )?;
        let expected = self.weight_shape(input.c);
        checked_numel(&expected, "the weight tensor")?;
        check_literal("weights", self.weights.as_ref(), &expected)?;
        check_literal("bias values", self.bias_values.as_ref(), &[self.filters])?;
        checked_numel(&[h, w, self.filters], "the output")?;
        Ok(Shape::spatial(h, w, self.filters))
    }
}

/// An int pair as the dump prints it: `3` for `[3, 3]`, `3×5` otherwise.
pub(super) fn pair(v: [usize; 2]) -> String {
    if v[0] == v[1] {
        v[0].to_string()
    } else {
        format!("{}×{}", v[0], v[1])
    }
}

impl OpRule for ConvAttrs {
    fn name(&self) -> &'static str {
        if self.depthwise {
            DWCONV.name
        } else {
            CONV.name
        }
    }

    fn arity(&self) -> Arity {
        // A fused residual conv reads the skip tensor as its second input.
        if self.residual {
            Arity::Two
        } else {
            Arity::One
        }
    }

    fn output_shape(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let out = self.shape(inputs[0])?;
        // The skip tensor is added elementwise to the output, so it must have its shape.
        match inputs.get(1) {
            Some(&skip) if self.residual && skip != out => Err(ShapeError::AddMismatch {
                left: out,
                right: skip,
            }),
            _ => Ok(out),
        }
    }

    fn params(&self, input: Shape) -> Vec<ParamSpec> {
        let fan_in = Init::Uniform {
            fan_in: input.c / self.groups.max(1) * self.kernel[0] * self.kernel[1],
        };
        let mut out = Vec::new();
        if self.weights.is_none() {
            out.push(param("weight", self.weight_shape(input.c).to_vec(), fan_in));
        }
        if self.bias && self.bias_values.is_none() {
            out.push(param("bias", vec![self.filters], fan_in));
        }
        out
    }

    fn macs(&self, input: Shape, output: Shape) -> u64 {
        let per_output =
            (input.c / self.groups.max(1)) as u64 * self.kernel[0] as u64 * self.kernel[1] as u64;
        output.numel() as u64 * per_output
    }

    fn dump_attrs(&self) -> String {
        let mut s = format!(
            "filters={} kernel={} stride={} pad={}",
            self.filters,
            pair(self.kernel),
            pair(self.stride),
            self.pad
        );
        if self.dilation != [1, 1] {
            let _ = write!(s, " dilation={}", pair(self.dilation));
        }
        if self.groups != 1 {
            let _ = write!(s, " groups={}", self.groups);
        }
        if !self.bias {
            s.push_str(" bias=false");
        }
        if self.weights.is_some() {
            s.push_str(" weights=literal");
        }
        if self.bias_values.is_some() {
            s.push_str(" bias=literal");
        }
        if self.residual {
            s.push_str(" residual");
        }
        if let Some(act) = self.activation {
            let _ = write!(s, " activation={}", act.name());
        }
        s
    }

    fn category(&self) -> Category {
        Category::Weighted
    }

    fn reference_forward(&self, cx: &Forward, args: &[&Tensor]) -> Result<Tensor, RunError> {
        let weight_shape = self.weight_shape(cx.input_shape().c);
        let weight = cx.tensor("weight", &weight_shape)?;
        let bias = cx.bias(self.filters)?;
        let shape = cx.shape;
        // A residual conv's skip tensor must match the output exactly; indexing it with the
        // output's coordinates is then in bounds.
        let skip = if self.residual {
            let skip = cx.arg(args, 1)?;
            if skip.dim() != (cx.batch, shape.h, shape.w, shape.c) {
                return Err(cx.malformed("the residual input's shape differs from the output"));
            }
            Some(skip)
        } else {
            None
        };
        Ok(conv(
            cx.arg(args, 0)?,
            self,
            &weight,
            bias.as_ref(),
            skip,
            shape,
        ))
    }
}

/// Σ a·b in f64, so the oracle's rounding error is negligible next to any backend's.
pub(super) fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum()
}

/// The epilogue: bias, then the residual `skip` value, then the activation.
pub(super) fn finish(
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
fn conv(
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

impl super::gradient::GradRule for ConvAttrs {
    /// Through a fused activation first (at the recomputed pre-activation); the skip tensor
    /// of a residual conv gets that gradient unchanged. Then backward-data, a transposed
    /// convolution (`dx` gathers every output tap that read a cell), backward-weights, a
    /// correlation of `g` with `x` over batch × pixels, and `db = Σ g`.
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
        let weight_shape = self.weight_shape(cx.input_shape().c);
        let weight = cx.tensor("weight", &weight_shape)?;
        let grad = match self.activation {
            Some(act) => {
                let bias = cx.bias(self.filters)?;
                let skip = if self.residual {
                    Some(cx.arg(args, 1)?)
                } else {
                    None
                };
                let linear = ConvAttrs {
                    activation: None,
                    ..self.clone()
                };
                let pre = conv(x, &linear, &weight, bias.as_ref(), skip, cx.shape);
                let mut g = grad.clone();
                g.zip_mut_with(&pre, |g, &p| *g *= act.derivative(p));
                g
            }
            None => grad.clone(),
        };
        let Ok(weight) = weight.view().into_dimensionality::<Ix4>() else {
            return Err(cx.malformed("the weight is not 4-D"));
        };
        let (batch, in_h, in_w, in_c) = x.dim();
        let (_, out_h, out_w, _) = grad.dim();
        let [kh, kw] = self.kernel;
        let groups = self.groups.max(1);
        let channels_per_group = in_c / groups;
        let filters_per_group = self.filters / groups;
        let want_weight = wanted.params && self.weights.is_none();
        // As in the forward, filters as [filter][ky][kx][channel] and flat NHWC slices, so
        // each tap is a loop over contiguous channels.
        let taps = weight
            .permuted_axes([0, 2, 3, 1])
            .as_standard_layout()
            .into_owned();
        let taps = taps.as_slice().unwrap_or(&[]);
        let x_std = x.as_standard_layout();
        let xs = x_std.as_slice().unwrap_or(&[]);
        let grad_std = grad.as_standard_layout();
        let gs = grad_std.as_slice().unwrap_or(&[]);
        let mut dx = vec![0.0f64; if wanted.inputs { xs.len() } else { 0 }];
        let mut dw = vec![0.0f64; if want_weight { taps.len() } else { 0 }];
        for n in 0..batch {
            for oy in 0..out_h {
                for ky in 0..kh {
                    let iy = (oy * self.stride[0] + ky * self.dilation[0]) as isize
                        - self.pad.top as isize;
                    if iy < 0 || iy >= in_h as isize {
                        continue;
                    }
                    for ox in 0..out_w {
                        let out_pixel = ((n * out_h + oy) * out_w + ox) * self.filters;
                        for kx in 0..kw {
                            let ix = (ox * self.stride[1] + kx * self.dilation[1]) as isize
                                - self.pad.left as isize;
                            if ix < 0 || ix >= in_w as isize {
                                continue;
                            }
                            let pixel = ((n * in_h + iy as usize) * in_w + ix as usize) * in_c;
                            for f in 0..self.filters {
                                let g = f64::from(gs[out_pixel + f]);
                                let first = pixel + f / filters_per_group * channels_per_group;
                                let tap = ((f * kh + ky) * kw + kx) * channels_per_group;
                                if wanted.inputs {
                                    let ws = &taps[tap..][..channels_per_group];
                                    let d = &mut dx[first..][..channels_per_group];
                                    for (d, &w) in d.iter_mut().zip(ws) {
                                        *d += g * f64::from(w);
                                    }
                                }
                                if want_weight {
                                    let x_cells = &xs[first..][..channels_per_group];
                                    let d = &mut dw[tap..][..channels_per_group];
                                    for (d, &v) in d.iter_mut().zip(x_cells) {
                                        *d += g * f64::from(v);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        let dx = wanted.inputs.then(|| {
            let values = dx.iter().map(|&v| v as f32).collect();
            Array4::from_shape_vec(x.raw_dim(), values).unwrap_or_default()
        });
        let mut inputs = vec![dx];
        if self.residual {
            inputs.push(wanted.inputs.then(|| grad.clone()));
        }
        let mut params = Vec::new();
        if want_weight {
            let values = dw.iter().map(|&v| v as f32).collect();
            let taps_shape = (self.filters, kh, kw, channels_per_group);
            let dw = Array4::from_shape_vec(taps_shape, values).unwrap_or_default();
            let dw = dw
                .permuted_axes([0, 3, 1, 2])
                .as_standard_layout()
                .into_owned();
            params.push(("weight", dw.into_dyn()));
        }
        if wanted.params && self.bias && self.bias_values.is_none() {
            let mut db = ndarray::Array1::<f64>::zeros(self.filters);
            for ((_, _, _, f), &g) in grad.indexed_iter() {
                db[f] += f64::from(g);
            }
            params.push(("bias", db.mapv(|v| v as f32).into_dyn()));
        }
        Ok(super::gradient::Gradients { inputs, params })
    }
}
