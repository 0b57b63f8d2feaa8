//! The weight gradient of a small undilated convolution, reduced over every image of a call
//! inside each register tile (`LoopStmt::Images`): the tile's accumulators stay in registers
//! over the images × pixels, and the gradient is read and written once per call.
//!
//! Image by image (`weight_grad.rs`), a tile of a 7×7 map reduces 49 pixels, then adds into
//! the gradient, which for ResNet-18's layer4.0.conv1 is 4.7 MB, read and written from L3 once
//! per image: that weight gradient took 1.4× its forward's time for the same MACs. Over the
//! images, a tile reads a few channels of every pixel of every image, whose arenas lie far
//! apart; in the per-image layouts those were one line per pixel, a row of channels apart
//! (tiles reducing over the images from them were 1.4× slower than image by image). So the
//! input's phases (the frame itself at stride 1) and `∂z` are first copied, image by image,
//! by vectors of channels (`[in / 4][pixel][4]`, `[out / 4][pixel][4]`): a tile's data of one
//! image is then a few runs of whole lines. The tiles go over blocks of output channels whose
//! `∂z` of every image stays in L2 while every tap's tiles sweep it.
//!
//! Measured (ResNet-18, batch 16, one thread, medians of runs alternated with the binary
//! before): layer4.0.conv1's weight gradient 50.5 → 38.7 ms (its forward 36.6),
//! layer3.0.conv1's 41.7 → 37.8 ms (forward 37.0); layer2.0.conv1 (28×28, 784 pixels) ran
//! 1.15× slower over the images than image by image, and stays so ([`BATCHED_PIXELS`]).

use super::super::ir::{Affine, BufferId};
use super::super::KernelBuilder;
use super::conv::vector_groups;
use super::weight_grad::{Sweep, TILE_TAPS, WEIGHT_TILE_VECTORS};
use super::Backward;
use crate::graph::{ConvAttrs, NodeId, Shape};

/// An undilated convolution of at most this many output pixels has each register tile reduce
/// over every image of the call: ResNet-18's layer3 and layer4 (14×14 and 7×7), whose tiles
/// reduced over 196 and 49 pixels an image. Layer2's 28×28 ran 1.15× slower so: its images'
/// rows no longer stay in cache while every tile sweeps them.
const BATCHED_PIXELS: usize = 256;
/// ... and a gradient of at least this many floats, larger than L1: a smaller one costs
/// little to add to once per image, and a network with no other kernel over the images would
/// otherwise need an arena per image (LeNet-5's conv2, 10×10 pixels, 2,400 floats).
const BATCHED_WEIGHT_FLOATS: usize = 16 * 1024;
/// Floats of one image's `∂z` a block of output channels covers when the tiles reduce over
/// the images: the block's `∂z` of every image stays in L2 while every tap's tiles sweep it.
const BATCHED_BLOCK_FLOATS: usize = 8 * 1024;

/// Output channels per block of a weight gradient reduced over the images of a call, for
/// `pixels` pixels of `∂z` per image: as many tiles' channels as fit [`BATCHED_BLOCK_FLOATS`],
/// at least one tile's.
fn batched_block_channels(co: usize, pixels: usize) -> usize {
    let tile = 4 * WEIGHT_TILE_VECTORS;
    (BATCHED_BLOCK_FLOATS / pixels.max(1) / tile * tile).clamp(tile, co.next_multiple_of(tile))
}

impl Backward<'_> {
    /// Whether the weight gradient of a convolution with output `out` and `weight_floats`
    /// weights reduces over the images of a call ([`BATCHED_PIXELS`],
    /// [`BATCHED_WEIGHT_FLOATS`]).
    pub(super) fn reduces_over_images(&self, out: Shape, weight_floats: usize) -> bool {
        self.lowering.batched
            && out.h * out.w <= BATCHED_PIXELS
            && weight_floats >= BATCHED_WEIGHT_FLOATS
    }

    /// [`phased_weight_grad`](Self::phased_weight_grad) reduced over every image of the call
    /// in each register tile, from `phases` laid out `[phase][in / 4][ph][pw][4]`: the
    /// gradient is read and written once per call, not once per image.
    pub(super) fn batched_phased_weight_grad(
        &mut self,
        id: NodeId,
        attrs: &ConvAttrs,
        dz: BufferId,
        phases: BufferId,
        dw: BufferId,
    ) {
        let graph = self.graph();
        let (s, out) = (graph.input_shape(id), graph.shape(id));
        let (ci, co) = (s.c, out.c);
        let [kh, kw] = attrs.kernel;
        let [sh, sw] = attrs.stride;
        let (ph, pw) = (out.h + (kh - 1) / sh, out.w + (kw - 1) / sw);
        let plane = 4 * ph * pw;
        let phase_len = plane * ci.div_ceil(4);
        let co_pad = co.next_multiple_of(4);
        let pixels = out.h * pw;
        let name = self.lowering.describe(id);
        let dz_vectors = self.lowering.add_temp(
            format!("{name} ∂z [out / 4][{}][{pw}][4]", out.h),
            co_pad * pixels,
        );
        let mut b = self.builder(
            id,
            "weight_grad_dz",
            format!("∂z {out} by vectors of channels, rows of {pw} pixels"),
        );
        // Zeros in the columns past the output's width: the tiles reduce over one run of
        // pixels, rows of `pw`, whose extra columns must add nothing.
        let zero = b.constant(0.0);
        b.repeat(out.h, |b, y| {
            b.repeat(out.w, |b, x| {
                let to = (y.clone() * pw + x.clone()) * 4;
                let from = (y.clone() * out.w + x) * co;
                for v in 0..co_pad / 4 {
                    let lanes = (co - 4 * v).min(4) as u8;
                    let value = b.load(dz, from.clone() + 4 * v, lanes);
                    b.store(dz_vectors, to.clone() + v * 4 * pixels, lanes, value);
                }
            });
            b.repeat(pw - out.w, |b, x| {
                let to = (y.clone() * pw + x + out.w) * 4;
                for v in 0..co_pad / 4 {
                    b.store(dz_vectors, to.clone() + v * 4 * pixels, 4, zero);
                }
            });
        });
        self.lowering.emit(b);

        let sweep = Sweep {
            src: phases,
            src_pitch: pw,
            channels: 4,
            stride: [1, 1],
            dz: dz_vectors,
            dz_pitch: pw,
            out_w: out.w,
            co,
            co_pad,
            dw,
            images: Some(pixels),
        };
        let mut b = self.builder(
            id,
            "weight_grad",
            format!(
                "∂weight {co}×{ci}×{kh}×{kw}: Σ over the images' {}×{} pixels, stride {sh}×{sw} \
                 in phases",
                out.h, out.w
            ),
        );
        // Every phase's taps, as (offset in `phases` of channel 0, row of ∂W).
        let taps: Vec<(usize, usize)> = (0..sh * sw)
            .flat_map(|phase| {
                let (a, c) = (phase / sw, phase % sw);
                (a..kh).step_by(sh).flat_map(move |ky| {
                    (c..kw).step_by(sw).map(move |kx| {
                        let offset = phase * phase_len + ((ky / sh) * pw + kx / sw) * 4;
                        (offset, (ky * kw + kx) * ci)
                    })
                })
            })
            .collect();
        let block = batched_block_channels(co, pixels);
        let channels = |b: &mut KernelBuilder, first: Affine, n: usize| {
            let groups = |b: &mut KernelBuilder, taps: &[(Affine, Affine)]| {
                let rows = (&Affine::constant(0), out.h);
                let full = 4 * WEIGHT_TILE_VECTORS;
                b.repeat(n / full, |b, g| {
                    let c0 = first.clone() + g * full;
                    sweep.tile_at(b, taps, (c0, WEIGHT_TILE_VECTORS, 4), rows);
                });
                for (c0, vectors, last) in vector_groups(n % full, WEIGHT_TILE_VECTORS) {
                    let c0 = first.clone() + (n - n % full + c0);
                    sweep.tile_at(b, taps, (c0, vectors, last), rows);
                }
            };
            // Whole vectors of input channels in a loop, then every tap's last few together.
            for &(offset, row) in &taps {
                b.repeat(ci / TILE_TAPS, |b, blk| {
                    let chunk: Vec<(Affine, Affine)> = (0..TILE_TAPS)
                        .map(|i| (blk.clone() * plane + offset + i, blk.clone() * 4 + row + i))
                        .collect();
                    groups(b, &chunk);
                });
            }
            let whole = ci - ci % TILE_TAPS;
            let rest: Vec<(Affine, Affine)> = taps
                .iter()
                .flat_map(|&(offset, row)| {
                    (whole..ci).map(move |i| {
                        let at = offset + (i / 4) * plane + i % 4;
                        (Affine::constant(at), Affine::constant(row + i))
                    })
                })
                .collect();
            for chunk in rest.chunks(TILE_TAPS) {
                groups(b, chunk);
            }
        };
        b.repeat(co / block, |b, k| channels(b, k * block, block));
        if co % block > 0 {
            channels(&mut b, Affine::constant(co - co % block), co % block);
        }
        self.lowering.emit(b);
    }
}
