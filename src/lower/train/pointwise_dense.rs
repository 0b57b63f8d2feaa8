//! The backward of a dense layer applied at every pixel (`pointwise_dense`, ConvNeXt's
//! inverted bottleneck), a 1×1 convolution of `[units, features]` weights:
//!
//! - **bias**: `∂b += Σ_pixels ∂y`;
//! - **weights**: `∂W[f][u] += Σ_pixels x[f] · ∂y[u]`, the conv weight gradient's tiles
//!   (`weight_grad.rs`) over the pixels as one run, 4 features × 2 vectors of units a tile,
//!   accumulated `[feature][units_padded]` (PyTorch's `[units, features]` once transposed,
//!   as a dense layer's);
//! - **input**: `∂x = ∂y Wᵀ` at every pixel, a 1×1 convolution of `∂y` with the transposed
//!   weights (`ConstSpec::ConvWeight { flipped }`), lowered by the forward's direct kernels.

use super::super::ir::{Affine, BufferId};
use super::super::pad::Padded;
use super::super::program::Orientation;
use super::super::LowerError;
use super::conv::vector_groups;
use super::weight_grad::{row_blocks, weight_grad_block_rows, Sweep, TILE_TAPS};
use super::{Backward, GradLayout};
use crate::graph::{ConvAttrs, NodeId, Padding, PointwiseDenseAttrs};

/// Unit vectors per weight-gradient tile (the tile's 2 vectors of `weight_grad.rs`).
const WEIGHT_TILE_VECTORS: usize = 2;

impl Backward<'_> {
    pub(super) fn pointwise_dense(
        &mut self,
        id: NodeId,
        attrs: PointwiseDenseAttrs,
        grad: BufferId,
        trainable: bool,
        wants_input: bool,
    ) -> Result<(), LowerError> {
        let x = self.lowering.plain_arg(id, 0)?;
        let (s, out) = (x.shape, self.graph().shape(id));
        let (features, units, pixels) = (s.c, attrs.units, s.h * s.w);
        if trainable {
            let learned = self.learned(id);
            if learned.contains(&"bias") {
                self.bias_grad(id, grad, pixels, units);
            }
            if learned.contains(&"weight") {
                self.pointwise_weight_grad(id, x.buffer, grad, ((s.h, s.w), features, units));
            }
        }
        if wants_input {
            let input = self.graph().nodes[id].inputs[0];
            let gather = ConvAttrs {
                filters: features,
                kernel: [1, 1],
                stride: [1, 1],
                dilation: [1, 1],
                pad: Padding::default(),
                groups: 1,
                depthwise: false,
                bias: false,
                weights: None,
                bias_values: None,
                activation: None,
                residual: false,
            };
            let e = self.grad_epilogue(input);
            let dy = Padded {
                buffer: grad,
                width: out.w,
                channels: units,
                origin: 0,
            };
            self.lowering
                .direct_conv(id, &gather, dy, (out, s), false, &e, Orientation::Flipped);
        }
        Ok(())
    }

    /// `∂W[f][u] += Σ_pixels x[f] · ∂y[u]`, 4 features a tile, over blocks of `(h, w)`'s
    /// rows that stay in cache while every tile sweeps them (each block one run of pixels).
    fn pointwise_weight_grad(
        &mut self,
        id: NodeId,
        x: BufferId,
        dy: BufferId,
        ((h, w), features, units): ((usize, usize), usize, usize),
    ) {
        let units_padded = units.next_multiple_of(4);
        let layout = GradLayout::DenseWeight {
            units,
            features,
            units_padded,
            hwc: None,
        };
        let numel = units * features;
        let dw = self.param_grad(id, "weight", numel, features * units_padded, layout);
        let sweep = Sweep {
            src: x,
            src_pitch: w,
            channels: features,
            stride: [1, 1],
            dz: dy,
            dz_pitch: w,
            out_w: w,
            co: units,
            co_pad: units_padded,
            dw,
            images: None,
        };
        let mut b = self.builder(
            id,
            "weight_grad",
            format!("∂weight {units}×{features}: Σ over {h}×{w} pixels"),
        );
        let groups = vector_groups(units, WEIGHT_TILE_VECTORS);
        let taps = |f0: Affine, n: usize| -> Vec<(Affine, Affine)> {
            (0..n).map(|i| (f0.clone() + i, f0.clone() + i)).collect()
        };
        let block_rows = weight_grad_block_rows(numel, w * (features + units), h);
        row_blocks(&mut b, h, block_rows, &mut |b, first, rows| {
            b.repeat(features / TILE_TAPS, |b, blk| {
                let taps = taps(blk * TILE_TAPS, TILE_TAPS);
                for &group in &groups {
                    sweep.tile(b, &taps, group, (first, rows));
                }
            });
            let rest = features % TILE_TAPS;
            if rest > 0 {
                let taps = taps(Affine::constant(features - rest), rest);
                for &group in &groups {
                    sweep.tile(b, &taps, group, (first, rows));
                }
            }
        });
        self.lowering.emit(b);
    }
}
