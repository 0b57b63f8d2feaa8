//! The backward of conv and dense layers, after the gradient through their fused activation
//! (`∂z`):
//!
//! - **bias**: `∂b += Σ_pixels ∂z`;
//! - **weights**: `∂W[ky][kx][in][out] += Σ_pixels x[pixel·stride + tap] · ∂z[pixel]`
//!   (`weight_grad.rs`);
//! - **input**: a transposed convolution. For a stride-1 ungrouped conv it is an ordinary
//!   convolution of the padded `∂z` with the flipped, transposed filters, lowered by the
//!   forward's own kernels (direct or Winograd). Otherwise it is a scatter: every output pixel
//!   adds `Σ_out ∂z · W` to the input pixels its window read, in the padded frame the forward
//!   read, whose interior is then the input's gradient. A tile is 4 pixels of a row × 2
//!   vectors of input channels for one tap: one tap maps distinct output pixels to distinct
//!   input pixels, so a tile's read-add-writes never collide.
//!
//! Dense layers are the 1×1 case on a flat vector: `∂W[feature][unit] += x · ∂z` (a rank-one
//! update per image) and `∂x = Wᵀ ∂z` with the weights packed by rows.

use super::super::conv::{reduce, Epilogue};
use super::super::ir::{Affine, BinaryOp, BufferId, LoopExpr, Reg};
use super::super::pad::{Padded, WindowRead};
use super::super::program::{ConstSpec, Orientation};
use super::super::NodeBuffer;
use super::super::{KernelBuilder, LowerError};
use super::{Backward, GradLayout};
use crate::graph::{ConvAttrs, DenseAttrs, NodeId, Padding, Shape};

/// Channel vectors per input-gradient tile (input channels) and bias group.
const TILE_VECTORS: usize = 2;
/// Output pixels per input-gradient tile.
const TILE_PIXELS: usize = 4;

/// `(first channel, vectors, lanes of the last)` of the groups of `vectors` channel vectors
/// that cover `channels`.
pub(super) fn vector_groups(channels: usize, vectors: usize) -> Vec<(usize, usize, u8)> {
    let block = 4 * vectors;
    let mut groups = Vec::new();
    let mut c0 = 0;
    while c0 < channels {
        let n = (channels - c0).min(block);
        let vectors = n.div_ceil(4);
        groups.push((c0, vectors, (n - 4 * (vectors - 1)) as u8));
        c0 += n;
    }
    groups
}

pub(super) fn lanes(v: usize, vectors: usize, last: u8) -> u8 {
    if v + 1 == vectors {
        last
    } else {
        4
    }
}

/// The padding of the convolution that computes the input gradient of a stride-1,
/// undilated, ungrouped conv of `attrs` from `input` to `out` (`(k − 1) − pad` on each side),
/// or `None` when its input gradient is a scatter: strided, dilated or grouped, padded by
/// more than `k − 1`, with fewer input channels than a weight panel, or with an input much
/// larger than its output. (The transposed convolution computes every input pixel, the
/// scatter every output pixel: on LeNet-5's 5×5 unpadded conv, 14×14 against 10×10 pixels
/// and 6 channels, the convolution made the training step 1.22× slower.)
fn gather_padding(attrs: &ConvAttrs, input: Shape, out: Shape) -> Option<Padding> {
    if input.c < 8 || 4 * input.h * input.w > 5 * out.h * out.w {
        return None;
    }
    if attrs.stride != [1, 1] || attrs.dilation != [1, 1] || attrs.groups.max(1) != 1 {
        return None;
    }
    let [kh, kw] = attrs.kernel;
    let p = attrs.pad;
    Some(Padding {
        top: (kh - 1).checked_sub(p.top)?,
        bottom: (kh - 1).checked_sub(p.bottom)?,
        left: (kw - 1).checked_sub(p.left)?,
        right: (kw - 1).checked_sub(p.right)?,
    })
}

/// The attributes of the convolution computing the input gradient of a conv of `attrs`,
/// whose input has `in_channels` channels: plain (no bias, activation or residual), padded
/// by `pad`.
fn transposed_attrs(attrs: &ConvAttrs, in_channels: usize, pad: Padding) -> ConvAttrs {
    ConvAttrs {
        filters: in_channels,
        pad,
        bias: false,
        weights: None,
        bias_values: None,
        activation: None,
        residual: false,
        depthwise: false,
        ..attrs.clone()
    }
}

/// One phase `(py, px)` of a strided conv's input gradient: the input pixels
/// `(a·sh + py − top, b·sw + px − left)` for `a` in `rows.0 ..= rows.1` and `b` in
/// `cols.0 ..= cols.1`. Only the taps `ky ≡ py (mod sh)`, `kx ≡ px (mod sw)` reach them, from
/// output pixel `(a − j, b − i)` through tap `(py + sh·j, px + sw·i)`: a stride-1 correlation
/// with those taps flipped (`Orientation::Phase`) of `∂z` padded by `pad` and then cropped
/// by `crop` rows and columns, which the first pixels' windows do not reach.
struct Phase {
    phase: [usize; 2],
    /// The taps per axis.
    kernel: [usize; 2],
    rows: (usize, usize),
    cols: (usize, usize),
    pad: Padding,
    crop: [usize; 2],
}

/// The phases of the input gradient of a strided, undilated, ungrouped conv that have taps
/// and pixels, or `None` when it stays a scatter: stride 1 (`gather_padding`'s case),
/// dilated, grouped, fewer input channels than a weight panel, or rows whose pitch is not a
/// whole number of phase columns.
///
/// The scatter reread every weight for each 4 output pixels; a phase is an ordinary direct
/// convolution whose weight panels serve a whole row, and the phases together do the
/// forward's multiplications (ResNet-18's layer4.0.conv1 took 4× its forward by a scatter).
fn phases(attrs: &ConvAttrs, input: Shape, out: Shape) -> Option<Vec<Phase>> {
    let [sh, sw] = attrs.stride;
    if attrs.stride == [1, 1] || attrs.dilation != [1, 1] || attrs.groups.max(1) != 1 {
        return None;
    }
    if input.c < 8 || !(sh * input.w).is_multiple_of(sw) {
        return None;
    }
    let p = attrs.pad;
    // On an axis of `n` input pixels with `pad` before them: phase `r`'s outputs `a`, and how
    // far before its first window `∂z` starts (padding) or how far into `∂z` (a crop), for
    // `taps` taps; `None` when no input pixel is in the phase.
    let axis = |r: usize, stride: usize, pad: usize, n: usize, taps: usize| {
        let first = pad.saturating_sub(r).div_ceil(stride);
        let last = (pad + n - 1).checked_sub(r)? / stride;
        let reach = taps - 1;
        (first <= last).then_some((
            (first, last),
            reach.saturating_sub(first),
            first.saturating_sub(reach),
        ))
    };
    let mut phases = Vec::new();
    for py in 0..sh {
        for px in 0..sw {
            let kernel = Orientation::Phase {
                stride: attrs.stride,
                phase: [py, px],
            }
            .kernel(attrs.kernel);
            if kernel.contains(&0) {
                continue;
            }
            let Some((rows, top, crop_y)) = axis(py, sh, p.top, input.h, kernel[0]) else {
                continue;
            };
            let Some((cols, left, crop_x)) = axis(px, sw, p.left, input.w, kernel[1]) else {
                continue;
            };
            // What the correlation reads past `∂z`'s last row and column is zero padding.
            let bottom = (rows.1 + 1).saturating_sub(out.h);
            let right = (cols.1 + 1).saturating_sub(out.w);
            phases.push(Phase {
                phase: [py, px],
                kernel,
                rows,
                cols,
                pad: Padding {
                    top,
                    bottom,
                    left,
                    right,
                },
                crop: [crop_y, crop_x],
            });
        }
    }
    Some(phases)
}

impl Backward<'_> {
    /// The suffixes of node `id`'s learned tensors.
    pub(super) fn learned(&self, id: NodeId) -> Vec<&'static str> {
        let graph = self.graph();
        graph
            .params(id)
            .iter()
            .filter(|spec| !spec.is_buffer)
            .map(|spec| spec.name)
            .collect()
    }

    /// `∂b += Σ_pixels ∂z` over `pixels` pixels of `channels`.
    pub(super) fn bias_grad(&mut self, id: NodeId, dz: BufferId, pixels: usize, channels: usize) {
        let padded = channels.next_multiple_of(4);
        let db = self.param_grad(id, "bias", channels, padded, GradLayout::Plain);
        let mut b = self.builder(id, "bias_grad", format!("∂bias: {channels} channels"));
        for (c0, vectors, last) in vector_groups(channels, TILE_VECTORS) {
            let acc: Vec<Reg> = (0..vectors).map(|_| b.constant(0.0)).collect();
            b.repeat(pixels, |b, p| {
                for (v, &a) in acc.iter().enumerate() {
                    let d = b.load(
                        dz,
                        p.clone() * channels + c0 + 4 * v,
                        lanes(v, vectors, last),
                    );
                    b.set(a, LoopExpr::Binary(BinaryOp::Add, a, d));
                }
            });
            for (v, &a) in acc.iter().enumerate() {
                let at = Affine::constant(c0 + 4 * v);
                let sum = b.load(db, at.clone(), 4);
                let sum = b.binary(BinaryOp::Add, sum, a);
                b.store(db, at, 4, sum);
            }
        }
        self.lowering.emit(b);
    }

    pub(super) fn conv(
        &mut self,
        id: NodeId,
        attrs: &ConvAttrs,
        grad: BufferId,
        trainable: bool,
        wants_input: bool,
    ) -> Result<(), LowerError> {
        let out = self.graph().shape(id);
        let dz = self.through_activation(id, attrs.activation, grad)?;
        let (frame, frame_w) = self.lowering.window_inputs[id]
            .ok_or_else(|| self.lowering.malformed(id, "its padded input is unknown"))?;
        let (top, left, frame_h, _) = self.frame_geometry(id)?;
        let geometry = (top, left, frame_h, frame_w);
        if attrs.groups.max(1) > 1 {
            let learned = if trainable {
                self.learned(id)
            } else {
                Vec::new()
            };
            if learned.contains(&"bias") {
                self.bias_grad(id, dz, out.h * out.w, out.c);
            }
            let weight = learned.contains(&"weight");
            return self.depthwise_grads(id, attrs, dz, frame, geometry, weight, wants_input);
        }
        if trainable {
            let learned = self.learned(id);
            if learned.contains(&"bias") {
                self.bias_grad(id, dz, out.h * out.w, out.c);
            }
            if learned.contains(&"weight") {
                self.conv_weight_grad(id, attrs, dz, frame, frame_w);
            }
        }
        if wants_input {
            self.conv_input_grad(id, attrs, dz, geometry);
        }
        Ok(())
    }

    fn conv_input_grad(
        &mut self,
        id: NodeId,
        attrs: &ConvAttrs,
        dz: BufferId,
        (top, left, frame_h, frame_w): (usize, usize, usize, usize),
    ) {
        let graph = self.graph();
        let shapes = (graph.input_shape(id), graph.shape(id));
        if let Some(pad) = gather_padding(attrs, shapes.0, shapes.1) {
            self.conv_input_grad_by_conv(id, attrs, dz, pad);
            return;
        }
        if let Some(phases) = phases(attrs, shapes.0, shapes.1) {
            self.conv_input_grad_by_phases(id, attrs, dz, &phases);
            return;
        }
        let graph = self.graph();
        let input = graph.nodes[id].inputs[0];
        let (s, out) = (graph.shape(input), graph.shape(id));
        let (ci, co) = (s.c, out.c);
        let [kh, kw] = attrs.kernel;
        let [sh, sw] = attrs.stride;
        let [dh, dw] = attrs.dilation;
        let ci_pad = ci.next_multiple_of(4);
        let name = format!(
            "{} weights [ky][kx][out][in] (backward)",
            self.lowering.describe(id)
        );
        let weights = self.lowering.add_const(
            name,
            kh * kw * co * ci_pad,
            ConstSpec::ConvWeightTransposed {
                node: id,
                in_padded: ci_pad,
            },
        );
        let scatter = self.scatter(input, (top, left, frame_h, frame_w));
        let frame = scatter.frame;
        let mut b = self.builder(
            id,
            "input_grad",
            format!("∂input {s}: transposed conv of ∂{out} by a scatter"),
        );
        scatter.begin(&mut b);
        let groups = vector_groups(ci, TILE_VECTORS);
        let tile = |b: &mut KernelBuilder, oy: &Affine, ox0: Affine, pixels: usize| {
            b.repeat(kh, |b, ky| {
                b.repeat(kw, |b, kx| {
                    for &(c0, vectors, last) in &groups {
                        let acc: Vec<Vec<Reg>> = (0..pixels)
                            .map(|_| (0..vectors).map(|_| b.constant(0.0)).collect())
                            .collect();
                        let tap = (ky.clone() * kw + kx.clone()) * co;
                        reduce(b, co, &mut |b, k| {
                            let w: Vec<Reg> = (0..vectors)
                                .map(|v| {
                                    let at = (tap.clone() + k.clone()) * ci_pad + c0 + 4 * v;
                                    b.load(weights, at, 4)
                                })
                                .collect();
                            for (p, row) in acc.iter().enumerate() {
                                let at = (oy.clone() * out.w + ox0.clone() + p) * co + k.clone();
                                let d = b.splat(dz, at);
                                for (v, &a) in row.iter().enumerate() {
                                    b.set(a, LoopExpr::Fma(d, w[v], a));
                                }
                            }
                        });
                        for (p, row) in acc.iter().enumerate() {
                            let pixel = (oy.clone() * sh + ky.clone() * dh) * frame_w
                                + (ox0.clone() + p) * sw
                                + kx.clone() * dw;
                            for (v, &a) in row.iter().enumerate() {
                                let n = lanes(v, vectors, last);
                                let at = pixel.clone() * ci + c0 + 4 * v;
                                let sum = b.load(frame, at.clone(), n);
                                let sum = b.binary(BinaryOp::Add, sum, a);
                                b.store(frame, at, n, sum);
                            }
                        }
                    }
                });
            });
        };
        b.repeat(out.h, |b, oy| {
            b.repeat(out.w / TILE_PIXELS, |b, i| {
                tile(b, &oy, i * TILE_PIXELS, TILE_PIXELS)
            });
            let rest = out.w % TILE_PIXELS;
            if rest > 0 {
                tile(b, &oy, Affine::constant(out.w - rest), rest);
            }
        });
        scatter.finish(&mut b);
        self.lowering.emit(b);
    }

    /// The epilogue of a conv-like kernel that computes node `input`'s gradient, a plain
    /// tensor: it stores its result there, or adds it when another reader has contributed.
    pub(super) fn grad_epilogue(&mut self, input: NodeId) -> Epilogue {
        let s = self.graph().shape(input);
        let (target, accumulate) = self.grad_target(input);
        Epilogue {
            out: target,
            out_origin: 0,
            out_pitch: s.w,
            out_stride: s.c,
            out_width: s.w,
            out_channels: s.c,
            residual: accumulate.then_some(target),
            activation: None,
        }
    }

    /// `∂z` of shape `shape` as a stride-1 window of `kernel` reading it with `pad` for `out`
    /// pixels needs it: itself, or a padded copy.
    pub(super) fn padded_dz(
        &mut self,
        id: NodeId,
        (dz, shape): (BufferId, Shape),
        kernel: [usize; 2],
        pad: Padding,
        out: (usize, usize),
    ) -> Padded {
        let read = WindowRead {
            kernel,
            stride: [1, 1],
            dilation: [1, 1],
            pad,
            out,
            fill: 0.0,
        };
        let dz = NodeBuffer {
            buffer: dz,
            shape,
            hwc: None,
            padded: None,
        };
        self.lowering.pad_input(id, dz, &read)
    }

    /// The input gradient of a strided conv phase by phase (see [`phases`]), each written to
    /// its pixels of the gradient, which is zeroed first when some of its pixels get
    /// nothing (a phase without taps) and no other reader has contributed.
    fn conv_input_grad_by_phases(
        &mut self,
        id: NodeId,
        attrs: &ConvAttrs,
        dz: BufferId,
        phases: &[Phase],
    ) {
        let graph = self.graph();
        let input = graph.nodes[id].inputs[0];
        let (s, out) = (graph.shape(input), graph.shape(id));
        let [sh, sw] = attrs.stride;
        let (target, mut accumulate) = self.grad_target(input);
        let covered: usize = phases
            .iter()
            .map(|p| (p.rows.1 + 1 - p.rows.0) * (p.cols.1 + 1 - p.cols.0))
            .sum();
        if !accumulate && covered < s.h * s.w {
            let mut b = self.builder(id, "input_grad_zero", format!("∂input {s} = 0"));
            b.fill_range(target, Affine::constant(0), s.numel(), 0.0);
            self.lowering.emit(b);
            accumulate = true;
        }
        for phase in phases {
            let (rows, cols) = (
                phase.rows.1 + 1 - phase.rows.0,
                phase.cols.1 + 1 - phase.cols.0,
            );
            let transposed = ConvAttrs {
                kernel: phase.kernel,
                stride: [1, 1],
                ..transposed_attrs(attrs, s.c, phase.pad)
            };
            let [crop_y, crop_x] = phase.crop;
            // The windows of the crop's rows and columns too, so that the padded copy
            // reaches as far as the phase's last window.
            let padded = self.padded_dz(
                id,
                (dz, out),
                phase.kernel,
                phase.pad,
                (crop_y + rows, crop_x + cols),
            );
            let padded = Padded {
                origin: (crop_y * padded.width + crop_x) * padded.channels,
                ..padded
            };
            let [py, px] = phase.phase;
            let y0 = phase.rows.0 * sh + py - attrs.pad.top;
            let x0 = phase.cols.0 * sw + px - attrs.pad.left;
            let e = Epilogue {
                out: target,
                out_origin: (y0 * s.w + x0) * s.c,
                out_pitch: sh * s.w / sw,
                out_stride: sw * s.c,
                out_width: s.w,
                out_channels: s.c,
                residual: accumulate.then_some(target),
                activation: None,
            };
            let orientation = Orientation::Phase {
                stride: attrs.stride,
                phase: phase.phase,
            };
            let shapes = (
                out,
                Shape {
                    h: rows,
                    w: cols,
                    ..s
                },
            );
            self.lowering
                .direct_conv(id, &transposed, padded, shapes, false, &e, orientation);
        }
    }

    /// The input gradient of a stride-1 ungrouped conv as the convolution it is: `∂z`
    /// padded by `pad`, convolved with the flipped, transposed filters
    /// (`ConstSpec::ConvWeight { flipped }`) by the forward's own kernels, Winograd's where
    /// the forward would choose it. Each weight panel then serves a whole row of pixels
    /// (the scatter reread every weight for each 4 pixels), and 3×3s do a quarter of the
    /// multiplications. A gradient that already holds other contributions is the
    /// epilogue's residual: the result is added to it.
    fn conv_input_grad_by_conv(
        &mut self,
        id: NodeId,
        attrs: &ConvAttrs,
        dz: BufferId,
        pad: Padding,
    ) {
        let graph = self.graph();
        let input = graph.nodes[id].inputs[0];
        let (s, out) = (graph.shape(input), graph.shape(id));
        let transposed = transposed_attrs(attrs, s.c, pad);
        let tiles = self.lowering.winograd_tiles(&transposed, out.c, s);
        let out_pixels = tiles.unwrap_or((s.h, s.w));
        let padded = self.padded_dz(id, (dz, out), attrs.kernel, pad, out_pixels);
        let e = self.grad_epilogue(input);
        if tiles.is_some() {
            self.lowering
                .winograd_conv(id, padded, (out, s), false, &e, true);
        } else {
            let shapes = (out, s);
            self.lowering.direct_conv(
                id,
                &transposed,
                padded,
                shapes,
                false,
                &e,
                Orientation::Flipped,
            );
        }
    }

    pub(super) fn dense(
        &mut self,
        id: NodeId,
        attrs: &DenseAttrs,
        grad: BufferId,
        trainable: bool,
        wants_input: bool,
    ) -> Result<(), LowerError> {
        let x = self.lowering.arg(id, 0)?;
        let features = x.shape.numel();
        let units = attrs.units;
        let dz = self.through_activation(id, attrs.activation, grad)?;
        if trainable {
            let learned = self.learned(id);
            if learned.contains(&"bias") {
                self.bias_grad(id, dz, 1, units);
            }
            if learned.contains(&"weight") {
                let units_padded = units.next_multiple_of(4);
                let layout = GradLayout::DenseWeight {
                    units,
                    features,
                    units_padded,
                    hwc: x.hwc,
                };
                let dw = self.param_grad(
                    id,
                    "weight",
                    units * features,
                    features * units_padded,
                    layout,
                );
                let mut b = self.builder(
                    id,
                    "weight_grad",
                    format!("∂weight {units}×{features}: x ∂zᵀ"),
                );
                b.parallel(features, |b, f| {
                    let xs = b.splat(x.buffer, f.clone());
                    for v in 0..units.div_ceil(4) {
                        let n = (units - 4 * v).min(4) as u8;
                        let d = b.load(dz, Affine::constant(4 * v), n);
                        let at = f.clone() * units_padded + 4 * v;
                        let sum = b.load(dw, at.clone(), 4);
                        let sum = b.assign(LoopExpr::Fma(xs, d, sum));
                        b.store(dw, at, 4, sum);
                    }
                });
                self.lowering.emit(b);
            }
        }
        if wants_input {
            let input = self.graph().nodes[id].inputs[0];
            let features_padded = features.next_multiple_of(4);
            let name = format!(
                "{} weights [unit][in] (backward)",
                self.lowering.describe(id)
            );
            let weights = self.lowering.add_const(
                name,
                units * features_padded,
                ConstSpec::DenseWeightTransposed {
                    node: id,
                    features_padded,
                    hwc_input: x.hwc,
                },
            );
            let (target, accumulate) = self.grad_target(input);
            let mut b = self.builder(id, "input_grad", format!("∂input {features}: Wᵀ ∂z"));
            const BLOCK_VECTORS: usize = 8;
            let tile = |b: &mut KernelBuilder, f0: Affine, vectors: usize, last: u8| {
                let acc: Vec<Reg> = (0..vectors).map(|_| b.constant(0.0)).collect();
                reduce(b, units, &mut |b, u| {
                    let d = b.splat(dz, u.clone());
                    for (v, &a) in acc.iter().enumerate() {
                        let w =
                            b.load(weights, u.clone() * features_padded + f0.clone() + 4 * v, 4);
                        b.set(a, LoopExpr::Fma(d, w, a));
                    }
                });
                for (v, &a) in acc.iter().enumerate() {
                    let n = lanes(v, vectors, last);
                    let at = f0.clone() + 4 * v;
                    b.store_or_add(target, at, n, a, accumulate);
                }
            };
            let block = 4 * BLOCK_VECTORS;
            b.parallel(features / block, |b, i| {
                tile(b, i * block, BLOCK_VECTORS, 4)
            });
            let rest = features % block;
            if rest > 0 {
                let vectors = rest.div_ceil(4);
                let last = (rest - 4 * (vectors - 1)) as u8;
                tile(&mut b, Affine::constant(features - rest), vectors, last);
            }
            self.lowering.emit(b);
        }
        Ok(())
    }
}
