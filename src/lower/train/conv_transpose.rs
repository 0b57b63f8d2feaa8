//! The backward of a transposed convolution (`y = conv_transpose(x)`, PyTorch's
//! `ConvTranspose2d`), from `∂y` padded as a convolution of the layer's kernel, stride,
//! dilation and padding reads it (`∂ŷ`, zeros where the forward's taps fell outside `y`):
//!
//! - **bias**: `∂b += Σ_pixels ∂y`;
//! - **input**: each input pixel gathers what its taps scattered, `∂x[i][c] = Σ_tap Σ_o
//!   ∂ŷ[i·s + tap·d][o] · W[c][o][tap]`: an ordinary (strided, dilated, grouped) convolution
//!   of `∂y` whose weights are the layer's own, read as they are stored (`[in, out/groups,
//!   kh, kw]` is a conv weight of `in` filters), lowered by the forward's direct kernels;
//! - **weights**: `∂W[c][o][tap] += Σ_i x[i][c] · ∂ŷ[i·s + tap·d][o]`, the conv weight
//!   gradient's correlation (`weight_grad.rs`'s tiles) with the roles exchanged: the input
//!   pixels are the reduction, `∂ŷ` the frame the taps read, `x` the vectors. Ungrouped
//!   layers only (`training_unsupported` declines the others).

use super::super::ir::{Affine, BufferId};
use super::super::pad::WindowRead;
use super::super::program::Orientation;
use super::super::{LowerError, NodeBuffer};
use super::conv::vector_groups;
use super::weight_grad::{row_blocks, weight_grad_block_rows, Sweep, TILE_TAPS};
use super::Backward;
use crate::graph::{ConvAttrs, ConvTransposeAttrs, NodeId};

/// Input-channel vectors per weight-gradient tile (the tile's 2 vectors of `conv.rs`).
const WEIGHT_TILE_VECTORS: usize = 2;

impl Backward<'_> {
    pub(super) fn conv_transpose(
        &mut self,
        id: NodeId,
        attrs: &ConvTransposeAttrs,
        grad: BufferId,
        trainable: bool,
        wants_input: bool,
    ) -> Result<(), LowerError> {
        let x = self.lowering.plain_arg(id, 0)?;
        let (s, out) = (x.shape, self.graph().shape(id));
        let read = WindowRead {
            kernel: attrs.kernel,
            stride: attrs.stride,
            dilation: attrs.dilation,
            pad: attrs.pad,
            out: (s.h, s.w),
            fill: 0.0,
        };
        let dy = NodeBuffer {
            buffer: grad,
            shape: out,
            hwc: None,
            padded: None,
        };
        let frame = self.lowering.pad_input(id, dy, &read);
        let (frame_buffer, frame_w) = (frame.buffer, frame.width);
        if trainable {
            let learned = self.learned(id);
            if learned.contains(&"bias") {
                self.bias_grad(id, grad, out.h * out.w, out.c);
            }
            if learned.contains(&"weight") {
                self.conv_transpose_weight_grad(id, attrs, x.buffer, (frame_buffer, frame_w));
            }
        }
        if wants_input {
            let input = self.graph().nodes[id].inputs[0];
            let gather = ConvAttrs {
                filters: s.c,
                kernel: attrs.kernel,
                stride: attrs.stride,
                dilation: attrs.dilation,
                pad: attrs.pad,
                groups: attrs.groups.max(1),
                depthwise: false,
                bias: false,
                weights: None,
                bias_values: None,
                activation: None,
                residual: false,
            };
            let e = self.grad_epilogue(input);
            self.lowering.direct_conv(
                id,
                &gather,
                frame,
                (out, s),
                false,
                &e,
                Orientation::Flipped,
            );
        }
        Ok(())
    }

    /// `∂W[c][o][ky][kx] += Σ_i x[i][c] · ∂ŷ[i·s + (ky, kx)·d][o]`, accumulated as
    /// `[ky][kx][o][c_padded]` (PyTorch's `[c][o][ky][kx]` once transposed: the conv
    /// layout's `filters` are the input channels here). Parallel over window rows; taps
    /// `(kx, o)` 4 at a time, over blocks of input rows that stay in cache.
    fn conv_transpose_weight_grad(
        &mut self,
        id: NodeId,
        attrs: &ConvTransposeAttrs,
        x: BufferId,
        (frame, frame_w): (BufferId, usize),
    ) {
        let graph = self.graph();
        let (s, out) = (graph.input_shape(id), graph.shape(id));
        let (ci, co) = (s.c, out.c);
        let [kh, kw] = attrs.kernel;
        let [dh, dw] = attrs.dilation;
        let (grad, ci_pad) = self.conv_weight_param(id, ci, co, attrs.kernel);
        let sweep = Sweep {
            src: frame,
            src_pitch: frame_w,
            channels: co,
            stride: attrs.stride,
            dz: x,
            dz_pitch: s.w,
            out_w: s.w,
            co: ci,
            co_pad: ci_pad,
            dw: grad,
            images: None,
        };
        let mut b = self.builder(
            id,
            "weight_grad",
            format!(
                "∂weight {ci}×{co}×{kh}×{kw}: Σ over {}×{} input pixels",
                s.h, s.w
            ),
        );
        let groups = vector_groups(ci, WEIGHT_TILE_VECTORS);
        let block_rows = weight_grad_block_rows(kh * kw * ci * co, s.w * ci + frame_w * co, s.h);
        // The taps `(ky, kx, o + 0..n)`: offset in the frame from the window's first pixel,
        // and row of the gradient.
        let taps = |ky: &Affine, kx: &Affine, o: Affine, n: usize| -> Vec<(Affine, Affine)> {
            (0..n)
                .map(|i| {
                    let channel = o.clone() + i;
                    (
                        ky.clone() * (dh * frame_w * co) + kx.clone() * (dw * co) + channel.clone(),
                        (ky.clone() * kw + kx.clone()) * co + channel,
                    )
                })
                .collect()
        };
        b.parallel(kh, |b, ky| {
            row_blocks(b, s.h, block_rows, &mut |b, first, rows| {
                b.repeat(kw, |b, kx| {
                    b.repeat(co / TILE_TAPS, |b, blk| {
                        let taps = taps(&ky, &kx, blk * TILE_TAPS, TILE_TAPS);
                        for &group in &groups {
                            sweep.tile(b, &taps, group, (first, rows));
                        }
                    });
                    let rest = co % TILE_TAPS;
                    if rest > 0 {
                        let taps = taps(&ky, &kx, Affine::constant(co - rest), rest);
                        for &group in &groups {
                            sweep.tile(b, &taps, group, (first, rows));
                        }
                    }
                });
            });
        });
        self.lowering.emit(b);
    }
}
