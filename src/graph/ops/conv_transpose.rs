//! Transposed convolution (`conv_transpose`), PyTorch's `nn.ConvTranspose2d`: the gradient of
//! a convolution with respect to its input, used as a learned upsampling in decoders.
//!
//! Each input pixel scatters its channels, through the kernel, onto a window of the output:
//! `y[n, iy·s + ky·d − pad_top, ix·s + kx·d − pad_left, g·out_g + o] += x[n, iy, ix, c]
//! · w[c, o, ky, kx]` for every input channel `c` of group `g`, taps landing outside the output
//! dropped; then `y += bias`. The weight is `[in, out/groups, kh, kw]` and the output size
//! `(in − 1)·s − pad_before − pad_after + d·(k − 1) + output_padding + 1` per axis, both as
//! PyTorch, so its state dicts load unchanged. `output_padding` only lengthens the output
//! (the extra rows and columns get what lands there, else the bias); PyTorch requires it to be
//! smaller than the stride or the dilation, which is what makes it pick one of the input
//! sizes a strided conv maps to the same output size.

use super::conv::{dot, pair};
use super::signature::{Layer, PadSpec, Param, ParamDefault, ParamKind, X};
use super::{param, Arity, Category, Op, OpRule, Padding};
use crate::graph::infer::{checked_numel, positive, spatial_input};
use crate::graph::{Init, ParamSpec, Shape, ShapeError};
use crate::reference::{Forward, RunError, Tensor};
use ndarray::{Array4, CowArray, Ix1, Ix4, IxDyn};
use std::fmt::Write;

/// The largest stride per axis: the compiled kernel is written out once per output phase
/// (stride_h × stride_w of them), so the stride bounds its code size.
pub const MAX_TRANSPOSE_STRIDE: usize = 64;

/// The `Op::ConvTranspose` variant's payload.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvTransposeAttrs {
    /// Output channels.
    pub filters: usize,
    /// `[kh, kw]`.
    pub kernel: [usize; 2],
    /// `[sh, sw]`: the upsampling factor.
    pub stride: [usize; 2],
    /// `[dh, dw]`.
    pub dilation: [usize; 2],
    /// Rows and columns removed from each side of the full output.
    pub pad: Padding,
    /// Rows and columns added at the bottom and right, `[oph, opw]`.
    pub output_padding: [usize; 2],
    pub groups: usize,
    pub bias: bool,
    /// `pad: same` was written; a transposed convolution has no such padding (PyTorch
    /// refuses it too), and the shape rule says so.
    pub same_pad: bool,
}

pub(super) const CONV_TRANSPOSE: Layer<9> = Layer {
    name: "conv_transpose",
    params: [
        X,
        Param::new(
            "filters",
            ParamKind::Count { min: 1 },
            ParamDefault::Required,
        ),
        Param::new("kernel", ParamKind::Pair { min: 1 }, ParamDefault::Required),
        Param::new(
            "stride",
            ParamKind::Pair { min: 1 },
            ParamDefault::Pair([1, 1]),
        ),
        Param::new("pad", ParamKind::Pad, ParamDefault::Absent),
        Param::new(
            "output_padding",
            ParamKind::Pair { min: 0 },
            ParamDefault::Pair([0, 0]),
        ),
        Param::new(
            "dilation",
            ParamKind::Pair { min: 1 },
            ParamDefault::Pair([1, 1]),
        ),
        Param::new(
            "groups",
            ParamKind::Count { min: 1 },
            ParamDefault::Count(1),
        ),
        Param::new("bias", ParamKind::Flag, ParamDefault::Flag(true)),
    ],
    build: |[_, filters, kernel, stride, pad, output_padding, dilation, groups, bias], _| {
        let (pad, same_pad) = match pad.pad()? {
            PadSpec::Explicit(pad) => (pad, false),
            PadSpec::Same => (Padding::default(), true),
        };
        Some(Op::ConvTranspose(ConvTransposeAttrs {
            filters: filters.count()?,
            kernel: kernel.pair()?,
            stride: stride.pair()?,
            dilation: dilation.pair()?,
            pad,
            output_padding: output_padding.pair()?,
            groups: groups.count()?,
            bias: bias.flag()?,
            same_pad,
        }))
    },
};

impl ConvTransposeAttrs {
    /// PyTorch's layout, `[in, out/groups, kh, kw]`, on `input_channels` channels.
    pub fn weight_shape(&self, input_channels: usize) -> [usize; 4] {
        [
            input_channels,
            self.filters / self.groups.max(1),
            self.kernel[0],
            self.kernel[1],
        ]
    }

    /// The output size along one axis (0: height, 1: width) of an input of `n`, before the
    /// padding is taken away: `(n − 1)·s + d·(k − 1) + output_padding + 1`.
    fn full_extent(&self, n: usize, axis: usize) -> Option<usize> {
        n.checked_sub(1)?
            .checked_mul(self.stride[axis])?
            .checked_add(self.dilation[axis].checked_mul(self.kernel[axis].checked_sub(1)?)?)?
            .checked_add(self.output_padding[axis])?
            .checked_add(1)
    }

    fn shape(&self, input: Shape) -> Result<Shape, ShapeError> {
        spatial_input("conv_transpose", input)?;
        positive(self.filters, "the number of filters")?;
        positive(self.groups, "groups")?;
        positive(self.kernel[0].min(self.kernel[1]), "the kernel size")?;
        positive(self.stride[0].min(self.stride[1]), "the stride")?;
        positive(self.dilation[0].min(self.dilation[1]), "the dilation")?;
        if self.same_pad {
            return Err(ShapeError::TransposeSamePadding);
        }
        if let Some(&stride) = self.stride.iter().find(|&&s| s > MAX_TRANSPOSE_STRIDE) {
            return Err(ShapeError::StrideTooLarge {
                stride,
                limit: MAX_TRANSPOSE_STRIDE,
            });
        }
        for axis in 0..2 {
            let (op, s, d) = (
                self.output_padding[axis],
                self.stride[axis],
                self.dilation[axis],
            );
            if op >= s && op >= d {
                return Err(ShapeError::OutputPadding {
                    output_padding: op,
                    stride: s,
                    dilation: d,
                });
            }
        }
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
        let too_large = || ShapeError::TooLarge {
            what: "the output".into(),
            elements: None,
        };
        let full_h = self.full_extent(input.h, 0).ok_or_else(too_large)?;
        let full_w = self.full_extent(input.w, 1).ok_or_else(too_large)?;
        let pad_h = self.pad.top.saturating_add(self.pad.bottom);
        let pad_w = self.pad.left.saturating_add(self.pad.right);
        if pad_h >= full_h || pad_w >= full_w {
            return Err(ShapeError::TransposePaddingTooLarge {
                full: [full_h, full_w],
                pad: [pad_h, pad_w],
            });
        }
        // The compiled kernel reads a zero-bordered input of a few times the uncropped
        // output's extent (`lower/conv_transpose.rs`), so that is bounded too, with the wider
        // of the input's and the output's channels.
        checked_numel(
            &[full_h, full_w, input.c.max(self.filters)],
            "the transposed convolution before its padding is cropped",
        )?;
        let (h, w) = (full_h - pad_h, full_w - pad_w);
        checked_numel(&self.weight_shape(input.c), "the weight tensor")?;
        checked_numel(&[h, w, self.filters], "the output")?;
        Ok(Shape::spatial(h, w, self.filters))
    }
}

impl OpRule for ConvTransposeAttrs {
    fn name(&self) -> &'static str {
        CONV_TRANSPOSE.name
    }

    fn arity(&self) -> Arity {
        Arity::One
    }

    fn output_shape(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        self.shape(inputs[0])
    }

    fn params(&self, input: Shape) -> Vec<ParamSpec> {
        // PyTorch computes the fan-in from the weight's second dimension, out/groups.
        let fan_in = Init::Uniform {
            fan_in: self.filters / self.groups.max(1) * self.kernel[0] * self.kernel[1],
        };
        let mut out = vec![param("weight", self.weight_shape(input.c).to_vec(), fan_in)];
        if self.bias {
            out.push(param("bias", vec![self.filters], fan_in));
        }
        out
    }

    /// Every input cell meets every tap of its group's filters once (taps that land in the
    /// padding included, as PyTorch's and torchinfo's counts do).
    fn macs(&self, input: Shape, _output: Shape) -> u64 {
        let per_input = (self.filters / self.groups.max(1)) as u64
            * self.kernel[0] as u64
            * self.kernel[1] as u64;
        input.numel() as u64 * per_input
    }

    fn dump_attrs(&self) -> String {
        let mut s = format!(
            "filters={} kernel={} stride={} pad={}",
            self.filters,
            pair(self.kernel),
            pair(self.stride),
            self.pad
        );
        if self.output_padding != [0, 0] {
            let _ = write!(s, " output_padding={}", pair(self.output_padding));
        }
        if self.dilation != [1, 1] {
            let _ = write!(s, " dilation={}", pair(self.dilation));
        }
        if self.groups != 1 {
            let _ = write!(s, " groups={}", self.groups);
        }
        if !self.bias {
            s.push_str(" bias=false");
        }
        s
    }

    fn category(&self) -> Category {
        Category::Weighted
    }

    fn reference_forward(&self, cx: &Forward, args: &[&Tensor]) -> Result<Tensor, RunError> {
        let x = cx.arg(args, 0)?;
        let weight = cx.tensor("weight", &self.weight_shape(cx.input_shape().c))?;
        let bias = cx.bias(self.filters)?;
        let weight = weight4(cx, &weight)?;
        let bias = match &bias {
            Some(b) => Some(
                b.view()
                    .into_dimensionality::<Ix1>()
                    .map_err(|_| cx.malformed("the bias is not 1-D"))?
                    .to_vec(),
            ),
            None => None,
        };
        let shape = cx.shape;
        let mut y = vec![0.0f64; cx.batch * shape.numel()];
        self.for_each_tap(x.dim(), (shape.h, shape.w), |tap| {
            let xs = &tap.x_pixel(x);
            for o in 0..tap.out_g {
                let f = tap.first_filter + o;
                let ws = tap.weights(&weight, o);
                y[tap.y_pixel * self.filters + f] += dot(xs, &ws);
            }
        });
        let values = y
            .chunks(self.filters)
            .flat_map(|pixel| {
                pixel
                    .iter()
                    .enumerate()
                    .map(|(f, &v)| (v + bias.as_ref().map_or(0.0, |b| f64::from(b[f]))) as f32)
            })
            .collect();
        Array4::from_shape_vec((cx.batch, shape.h, shape.w, shape.c), values)
            .map_err(|_| cx.malformed("the output has the wrong size"))
    }
}

/// The weight as a 4-D array `[in, out/groups, kh, kw]`.
fn weight4(cx: &Forward, weight: &CowArray<f32, IxDyn>) -> Result<Array4<f32>, RunError> {
    weight
        .view()
        .into_dimensionality::<Ix4>()
        .map(|w| w.to_owned())
        .map_err(|_| cx.malformed("the weight is not 4-D"))
}

/// One (input pixel, tap) pair whose tap lands inside the output, for one group.
struct Tap {
    /// The input pixel's index in N×H×W order.
    x_pixel: usize,
    /// The output pixel's index in N×H×W order.
    y_pixel: usize,
    ky: usize,
    kx: usize,
    /// The group's first input channel and input channels per group.
    first_channel: usize,
    in_g: usize,
    first_filter: usize,
    out_g: usize,
}

impl Tap {
    /// The group's channels of the input pixel.
    fn x_pixel(&self, x: &Tensor) -> Vec<f32> {
        let (_, h, w, _) = x.dim();
        let (n, rest) = (self.x_pixel / (h * w), self.x_pixel % (h * w));
        let (iy, ix) = (rest / w, rest % w);
        (0..self.in_g)
            .map(|k| x[[n, iy, ix, self.first_channel + k]])
            .collect()
    }

    /// The tap's weights from the group's input channels to its output channel `o`.
    fn weights(&self, weight: &Array4<f32>, o: usize) -> Vec<f32> {
        (0..self.in_g)
            .map(|k| weight[[self.first_channel + k, o, self.ky, self.kx]])
            .collect()
    }
}

impl ConvTransposeAttrs {
    /// Calls `visit` for every input pixel, group and tap that lands inside the `out` output:
    /// the one loop nest forward and backward share.
    fn for_each_tap(
        &self,
        (batch, in_h, in_w, in_c): (usize, usize, usize, usize),
        (out_h, out_w): (usize, usize),
        mut visit: impl FnMut(&Tap),
    ) {
        let groups = self.groups.max(1);
        let (in_g, out_g) = (in_c / groups, self.filters / groups);
        let [kh, kw] = self.kernel;
        let landing = |i: usize, k: usize, axis: usize, before: usize, len: usize| {
            let o = (i * self.stride[axis] + k * self.dilation[axis]) as isize - before as isize;
            (o >= 0 && (o as usize) < len).then_some(o as usize)
        };
        for n in 0..batch {
            for iy in 0..in_h {
                for ix in 0..in_w {
                    for ky in 0..kh {
                        let Some(oy) = landing(iy, ky, 0, self.pad.top, out_h) else {
                            continue;
                        };
                        for kx in 0..kw {
                            let Some(ox) = landing(ix, kx, 1, self.pad.left, out_w) else {
                                continue;
                            };
                            for g in 0..groups {
                                visit(&Tap {
                                    x_pixel: (n * in_h + iy) * in_w + ix,
                                    y_pixel: (n * out_h + oy) * out_w + ox,
                                    ky,
                                    kx,
                                    first_channel: g * in_g,
                                    in_g,
                                    first_filter: g * out_g,
                                    out_g,
                                });
                            }
                        }
                    }
                }
            }
        }
    }
}

impl super::gradient::GradRule for ConvTransposeAttrs {
    /// The input gradient is a forward convolution of the output gradient with the same
    /// weights (each input cell gathers what its taps scattered), the weight gradient the
    /// correlation of the input with the output gradient over batch × pixels, and
    /// `db = Σ g`; all three follow the forward's (input pixel, tap) pairs.
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
        let weight = weight4(cx, &cx.tensor("weight", &weight_shape)?)?;
        let (_, out_h, out_w, _) = grad.dim();
        let g = grad.as_standard_layout();
        let gs = g.as_slice().unwrap_or(&[]);
        let in_c = x.dim().3;
        let mut dx = vec![0.0f64; if wanted.inputs { x.len() } else { 0 }];
        let mut dw = Array4::<f64>::zeros(if wanted.params {
            (
                weight_shape[0],
                weight_shape[1],
                weight_shape[2],
                weight_shape[3],
            )
        } else {
            (0, 0, 0, 0)
        });
        self.for_each_tap(x.dim(), (out_h, out_w), |tap| {
            let xs = tap.x_pixel(x);
            for o in 0..tap.out_g {
                let gy = f64::from(gs[tap.y_pixel * self.filters + tap.first_filter + o]);
                for (k, &x_value) in xs.iter().enumerate() {
                    let c = tap.first_channel + k;
                    if wanted.inputs {
                        let w = f64::from(weight[[c, o, tap.ky, tap.kx]]);
                        dx[tap.x_pixel * in_c + c] += gy * w;
                    }
                    if wanted.params {
                        dw[[c, o, tap.ky, tap.kx]] += gy * f64::from(x_value);
                    }
                }
            }
        });
        let dx = wanted.inputs.then(|| {
            let values = dx.iter().map(|&v| v as f32).collect();
            Array4::from_shape_vec(x.raw_dim(), values).unwrap_or_default()
        });
        let mut params = Vec::new();
        if wanted.params {
            params.push(("weight", dw.mapv(|v| v as f32).into_dyn()));
            if self.bias {
                let mut db = ndarray::Array1::<f64>::zeros(self.filters);
                for ((_, _, _, f), &v) in grad.indexed_iter() {
                    db[f] += f64::from(v);
                }
                params.push(("bias", db.mapv(|v| v as f32).into_dyn()));
            }
        }
        Ok(super::gradient::Gradients {
            inputs: vec![dx],
            params,
        })
    }
}
