//! The weight gradient of an ungrouped convolution, `∂W[ky][kx][in][out] += Σ_pixels
//! x[pixel·stride + tap] · ∂z[pixel]`: a reduction over the output pixels, unrolled by 4, in a
//! register tile of 4 taps × 2 vectors of output channels (4 broadcasts and 2 loads per 8
//! FMAs: the forward's 4×8 shape, which docs/CRANELIFT.md §6.1 found fastest; 4 × 3 spills
//! and was 1.06× slower once the reduction was unrolled).
//!
//! A block of output rows is one run of pixels where it can be: at stride 1, `∂z` is copied to
//! the input frame's row pitch; at a larger stride, the frame is first split into its
//! `stride²` phases (`phase (a, b)` holds the frame pixels `(s·i + a, s·j + b)`), each an image
//! the taps `(ky, kx) ≡ (a, b)` read at stride 1, and `∂z` is copied to the phases' pitch.
//! (Row by row, ResNet-18's 7-pixel rows spent more time in loop overhead than in FMAs.) Large
//! images are reduced in blocks of rows that stay in cache. Taps are all unrolled for a small
//! filter, else `(kx, in)` runs of a window row, unrolled, or looped over blocks of 4 input
//! channels when there are many. A convolution the forward lowered with Winograd's algorithm
//! reduces in its transformed domain instead (`winograd.rs`); one of a small map (undilated,
//! at most 256 output pixels, a gradient larger than L1) over every image of a call in each
//! tile (`weight_grad_images.rs`), from phases laid out by vectors of channels (the frame
//! itself, at stride 1).

use super::super::conv::reduce;
use super::super::ir::{Affine, BinaryOp, BufferId, LoopExpr, Reg};
use super::super::KernelBuilder;
use super::conv::{lanes, vector_groups};
use super::winograd::WinogradGrad;
use super::{Backward, GradLayout};
use crate::graph::{ConvAttrs, NodeId, Padding, Shape};

/// Taps per weight-gradient tile.
pub(super) const TILE_TAPS: usize = 4;
/// Output-channel vectors per weight-gradient tile: 4 taps × 2 vectors is 8 accumulators.
pub(super) const WEIGHT_TILE_VECTORS: usize = 2;
/// Filters with at most this many taps (`kh·kw·in`) have them all unrolled as constants,
/// packed 4 to a tile across window rows, rather than looped row by row: a 5×5 filter on one
/// channel takes 7 sweeps over the pixels instead of 10.
const UNROLLED_TAPS: usize = 64;
/// Floats of `∂z` and input rows a block of the weight gradient's reduction may cover: they
/// stay in L2 while every tile of a window row sweeps them.
const WEIGHT_GRAD_BLOCK_FLOATS: usize = 32 * 1024;

/// Output rows per block of a weight gradient's reduction (of `height` rows, each reading
/// `row_floats` floats, into a gradient of `weight_floats`): as many as fit
/// [`WEIGHT_GRAD_BLOCK_FLOATS`], at least one; all of them when the gradient is larger than the
/// rows, since each block reads and writes the whole gradient once more (ResNet-18's layer4,
/// 9 MiB of gradient for 240 KiB of rows, ran 1.2× slower in blocks).
pub(super) fn weight_grad_block_rows(
    weight_floats: usize,
    row_floats: usize,
    height: usize,
) -> usize {
    if weight_floats > height * row_floats {
        return height.max(1);
    }
    (WEIGHT_GRAD_BLOCK_FLOATS / row_floats.max(1)).clamp(1, height.max(1))
}

/// Whether rows of `width` output pixels read from rows of `pitch` pixels are reduced as one
/// run of pixels (`∂z` copied to that pitch): not where the pitch is much wider than the
/// output (ResNet-18's layer4, 7 pixels a row in a Winograd frame of 10, ran 1.2× slower).
fn one_run(width: usize, pitch: usize) -> bool {
    4 * pitch <= 5 * width
}

/// What one weight-gradient tile reduces: output pixels of `∂z` against the pixels of `src`
/// their window reads at `stride`, added into `dw` (`[tap][out_padded]`).
pub(super) struct Sweep {
    pub(super) src: BufferId,
    /// Pixels per row of `src`, and channels per pixel.
    pub(super) src_pitch: usize,
    pub(super) channels: usize,
    pub(super) stride: [usize; 2],
    pub(super) dz: BufferId,
    /// Pixels per row of `∂z` (the output's width, or `src_pitch` when one run).
    pub(super) dz_pitch: usize,
    pub(super) out_w: usize,
    pub(super) co: usize,
    pub(super) co_pad: usize,
    pub(super) dw: BufferId,
    /// `Some(pixels)` when each tile reduces over every image of the call
    /// (`LoopStmt::Images`), from `∂z` laid out `[out / 4][pixels][4]`; else `∂z` is
    /// `[pixel][co]`.
    pub(super) images: Option<usize>,
}

impl Sweep {
    /// One tile: `taps` (offset in `src` from the window's first pixel, row of `∂W`) × the
    /// channel group `(c0, vectors, lanes of the last)`, reduced over the output rows
    /// `rows.0 + 0..rows.1`.
    pub(super) fn tile(
        &self,
        b: &mut KernelBuilder,
        taps: &[(Affine, Affine)],
        (c0, vectors, last): (usize, usize, u8),
        rows: (&Affine, usize),
    ) {
        self.tile_at(b, taps, (Affine::constant(c0), vectors, last), rows);
    }

    /// [`tile`](Self::tile) with its first output channel computed.
    pub(super) fn tile_at(
        &self,
        b: &mut KernelBuilder,
        taps: &[(Affine, Affine)],
        (c0, vectors, last): (Affine, usize, u8),
        rows: (&Affine, usize),
    ) {
        let (co, ci) = (self.co, self.channels);
        let acc: Vec<Vec<Reg>> = taps
            .iter()
            .map(|_| (0..vectors).map(|_| b.constant(0.0)).collect())
            .collect();
        // One reduction step: output pixel `pixel_out` (in `∂z`) and the `src` pixel its
        // window starts at.
        let step = |b: &mut KernelBuilder, pixel_in: Affine, pixel_out: Affine| {
            let d: Vec<Reg> = (0..vectors)
                .map(|v| {
                    let at = match self.images {
                        Some(pixels) => (c0.clone() + 4 * v) * pixels + pixel_out.clone() * 4,
                        None => pixel_out.clone() * co + c0.clone() + 4 * v,
                    };
                    b.load(self.dz, at, lanes(v, vectors, last))
                })
                .collect();
            for (t, (offset, _)) in taps.iter().enumerate() {
                let x = b.splat(self.src, pixel_in.clone() * ci + offset.clone());
                for (v, &dv) in d.iter().enumerate() {
                    b.set(acc[t][v], LoopExpr::Fma(x, dv, acc[t][v]));
                }
            }
        };
        let [sh, sw] = self.stride;
        let pixels = |b: &mut KernelBuilder| {
            if self.dz_pitch == self.src_pitch && sh == 1 && sw == 1 {
                let first = rows.0.clone() * self.src_pitch;
                let len = (rows.1 - 1) * self.src_pitch + self.out_w;
                reduce(b, len, &mut |b, q| {
                    let pixel = first.clone() + q;
                    step(b, pixel.clone(), pixel)
                });
            } else {
                b.repeat(rows.1, |b, r| {
                    let oy = rows.0.clone() + r;
                    reduce(b, self.out_w, &mut |b, ox| {
                        let pixel_in = oy.clone() * (sh * self.src_pitch) + ox.clone() * sw;
                        step(b, pixel_in, oy.clone() * self.dz_pitch + ox)
                    });
                });
            }
        };
        if self.images.is_some() {
            b.images(pixels);
        } else {
            pixels(b);
        }
        for (t, (_, row)) in taps.iter().enumerate() {
            for (v, &a) in acc[t].iter().enumerate() {
                let at = row.clone() * self.co_pad + c0.clone() + 4 * v;
                let sum = b.load(self.dw, at.clone(), 4);
                let sum = b.binary(BinaryOp::Add, sum, a);
                b.store(self.dw, at, 4, sum);
            }
        }
    }

    /// Every tile of `taps` (grouped 4 to a tile) × every channel group, over the whole
    /// image in blocks of `block_rows` output rows of `height`.
    fn all_taps(
        &self,
        b: &mut KernelBuilder,
        taps: &[(Affine, Affine)],
        height: usize,
        block_rows: usize,
    ) {
        let groups = vector_groups(self.co, WEIGHT_TILE_VECTORS);
        row_blocks(b, height, block_rows, &mut |b, first, rows| {
            for chunk in taps.chunks(TILE_TAPS) {
                for &group in &groups {
                    self.tile(b, chunk, group, (first, rows));
                }
            }
        });
    }
}

/// Calls `f` for each block of `block_rows` rows of `height`: `(first row, rows)`.
pub(super) fn row_blocks(
    b: &mut KernelBuilder,
    height: usize,
    block_rows: usize,
    f: &mut impl FnMut(&mut KernelBuilder, &Affine, usize),
) {
    b.repeat(height / block_rows, |b, i| {
        f(b, &(i * block_rows), block_rows)
    });
    let rest = height % block_rows;
    if rest > 0 {
        f(b, &Affine::constant(height - rest), rest);
    }
}

impl Backward<'_> {
    /// `∂z` (`out`) copied to rows of `pitch` pixels, zeros in the extra columns.
    fn pitched_dz(&mut self, id: NodeId, dz: BufferId, out: Shape, pitch: usize) -> BufferId {
        let pad = Padding {
            right: pitch - out.w,
            ..Padding::default()
        };
        self.padded_dz(id, (dz, out), [1, 1], pad, (out.h, pitch))
            .buffer
    }

    /// The accumulated gradient of node `id`'s `weight` (`filters × in_c × kh × kw` in PyTorch's
    /// layout), laid out `[ky][kx][in][filters padded to 4]`, and that padded count.
    pub(super) fn conv_weight_param(
        &mut self,
        id: NodeId,
        filters: usize,
        in_c: usize,
        kernel: [usize; 2],
    ) -> (BufferId, usize) {
        let padded = filters.next_multiple_of(4);
        let layout = GradLayout::ConvWeight {
            filters,
            in_c,
            kernel,
            out_padded: padded,
        };
        let [kh, kw] = kernel;
        let numel = filters * in_c * kh * kw;
        let grad = self.param_grad(id, "weight", numel, kh * kw * in_c * padded, layout);
        (grad, padded)
    }

    pub(super) fn conv_weight_grad(
        &mut self,
        id: NodeId,
        attrs: &ConvAttrs,
        dz: BufferId,
        frame: BufferId,
        frame_w: usize,
    ) {
        let graph = self.graph();
        let (s, out) = (graph.input_shape(id), graph.shape(id));
        let (ci, co) = (s.c, out.c);
        let [kh, kw] = attrs.kernel;
        let (dw, co_pad) = self.conv_weight_param(id, co, ci, attrs.kernel);
        if self.lowering.winograd_extent(id, attrs).is_some() {
            let g = WinogradGrad {
                frame,
                frame_w,
                dz,
                dw,
                in_c: ci,
                out: (out.h, out.w, co),
            };
            self.winograd_weight_grad(id, g);
            return;
        }
        let [sh, sw] = attrs.stride;
        if attrs.dilation == [1, 1] && self.reduces_over_images(out, kh * kw * ci * co) {
            // Over the images, at stride 1 too: the one phase is the frame.
            self.phased_weight_grad(id, attrs, dz, (frame, frame_w), dw);
            return;
        }
        if (sh, sw) != (1, 1) && attrs.dilation == [1, 1] {
            let pitch = out.w + (kw - 1) / sw;
            if one_run(out.w, pitch) {
                self.phased_weight_grad(id, attrs, dz, (frame, frame_w), dw);
                return;
            }
        }
        let [dh, dil_w] = attrs.dilation;
        let pitched = (sh, sw) == (1, 1) && frame_w > out.w && one_run(out.w, frame_w);
        let dz_pitch = if pitched { frame_w } else { out.w };
        let dz = if pitched {
            self.pitched_dz(id, dz, out, frame_w)
        } else {
            dz
        };
        let sweep = Sweep {
            src: frame,
            src_pitch: frame_w,
            channels: ci,
            stride: attrs.stride,
            dz,
            dz_pitch,
            out_w: out.w,
            co,
            co_pad,
            dw,
            images: None,
        };
        let mut b = self.builder(
            id,
            "weight_grad",
            format!(
                "∂weight {co}×{ci}×{kh}×{kw}: Σ over {}×{} pixels",
                out.h, out.w
            ),
        );
        let groups = vector_groups(co, WEIGHT_TILE_VECTORS);
        let row_taps = kw * ci;
        // The frame offset and the ∂W row of tap `t` of window row `ky`'s `(kx, in)` run.
        let tap = |ky: Affine, t: usize| {
            let within = (t / ci) * dil_w * ci + t % ci;
            (ky.clone() * (dh * frame_w * ci) + within, ky * row_taps + t)
        };
        let blocked = ci.is_multiple_of(TILE_TAPS) && row_taps > 8 * TILE_TAPS;
        if !blocked && kh * row_taps <= UNROLLED_TAPS {
            let all: Vec<(Affine, Affine)> = (0..kh * row_taps)
                .map(|t| tap(Affine::constant(t / row_taps), t % row_taps))
                .collect();
            sweep.all_taps(&mut b, &all, out.h, out.h);
            self.lowering.emit(b);
            return;
        }
        // Every tile of a window row over one block of output rows, then the next block: the
        // block's `∂z` and input rows stay in cache while all the tiles sweep them (each tile
        // sweeping the whole image read them from L3).
        let block_rows =
            weight_grad_block_rows(kh * kw * ci * co, out.w * co + frame_w * ci, out.h);
        let window_row = |b: &mut KernelBuilder, ky: &Affine, rows: (&Affine, usize)| {
            if blocked {
                let row_offset = ky.clone() * (dh * frame_w * ci);
                let row_of = ky.clone() * row_taps;
                b.repeat(kw, |b, kx| {
                    b.repeat(ci / TILE_TAPS, |b, blk| {
                        let taps: Vec<(Affine, Affine)> = (0..TILE_TAPS)
                            .map(|i| {
                                let channel = blk.clone() * TILE_TAPS + i;
                                (
                                    row_offset.clone()
                                        + kx.clone() * (dil_w * ci)
                                        + channel.clone(),
                                    row_of.clone() + kx.clone() * ci + channel,
                                )
                            })
                            .collect();
                        for &group in &groups {
                            sweep.tile(b, &taps, group, rows);
                        }
                    });
                });
            } else {
                let taps: Vec<(Affine, Affine)> =
                    (0..row_taps).map(|t| tap(ky.clone(), t)).collect();
                for taps in taps.chunks(TILE_TAPS) {
                    for &group in &groups {
                        sweep.tile(b, taps, group, rows);
                    }
                }
            }
        };
        b.parallel(kh, |b, ky| {
            b.repeat(out.h / block_rows, |b, block| {
                window_row(b, &ky, (&(block * block_rows), block_rows));
            });
            let rest = out.h % block_rows;
            if rest > 0 {
                window_row(b, &ky, (&Affine::constant(out.h - rest), rest));
            }
        });
        self.lowering.emit(b);
    }

    /// The weight gradient of an undilated strided convolution, phase by phase: the frame
    /// (`frame_h × frame_w`, as the forward read it) split into its `sh·sw` phases of
    /// `ph × pw` pixels, each reduced at stride 1 against `∂z` at the phases' pitch `pw`.
    fn phased_weight_grad(
        &mut self,
        id: NodeId,
        attrs: &ConvAttrs,
        dz: BufferId,
        (frame, frame_w): (BufferId, usize),
        dw: BufferId,
    ) {
        let graph = self.graph();
        let (s, out) = (graph.input_shape(id), graph.shape(id));
        let (ci, co) = (s.c, out.c);
        let [kh, kw] = attrs.kernel;
        let [sh, sw] = attrs.stride;
        let (ph, pw) = (out.h + (kh - 1) / sh, out.w + (kw - 1) / sw);
        let frame_h = (out.h - 1) * sh + kh;
        // Reduced over the images, a tile reads a few channels of each pixel of every image:
        // laid out by vectors of channels, they are a few runs of whole lines per image rather
        // than a line per pixel a row of channels apart.
        let images = self.reduces_over_images(out, kh * kw * ci * co);
        let vectors = ci.div_ceil(4);
        let phase_len = if images {
            ph * pw * 4 * vectors
        } else {
            ph * pw * ci
        };
        // Where channel `channel` (a multiple of 4 when by vectors) of pixel `pixel` of phase
        // `phase` is.
        let at = |phase: usize, pixel: Affine, channel: usize| {
            let within = if images {
                pixel * 4 + (channel / 4) * (4 * ph * pw) + channel % 4
            } else {
                pixel * ci + channel
            };
            within + phase * phase_len
        };
        let name = self.lowering.describe(id);
        let layout = if images {
            format!("[in / 4][{ph}][{pw}][4]")
        } else {
            format!("[{ph}][{pw}][in]")
        };
        let phases = self.lowering.add_temp(
            format!("{name} input in {sh}×{sw} phases [phase]{layout}"),
            sh * sw * phase_len,
        );
        let mut b = self.builder(
            id,
            "phases",
            format!("input frame in {sh}×{sw} phases of {ph}×{pw} pixels"),
        );
        // Pixels `first..first + count` of a phase set to zero.
        let zero = |b: &mut KernelBuilder, phase: usize, first: Affine, count: usize| {
            if images {
                for v in 0..vectors {
                    b.fill_range(phases, at(phase, first.clone(), 4 * v), 4 * count, 0.0);
                }
            } else {
                b.fill_range(phases, at(phase, first, 0), count * ci, 0.0);
            }
        };
        for a in 0..sh {
            for c in 0..sw {
                let phase = a * sw + c;
                // Phase pixels inside the frame (the window's reach), and zeros after them.
                let rows = (frame_h.saturating_sub(a)).div_ceil(sh).min(ph);
                let cols = (frame_w.saturating_sub(c)).div_ceil(sw).min(pw);
                b.repeat(rows, |b, i| {
                    b.repeat(cols, |b, j| {
                        let from = ((i.clone() * sh + a) * frame_w + j.clone() * sw + c) * ci;
                        let to = i.clone() * pw + j;
                        if images {
                            for v in 0..vectors {
                                let lanes = (ci - 4 * v).min(4) as u8;
                                let value = b.load(frame, from.clone() + 4 * v, lanes);
                                b.store(phases, at(phase, to.clone(), 4 * v), lanes, value);
                            }
                        } else {
                            b.copy_range(phases, at(phase, to, 0), frame, from, ci);
                        }
                    });
                    if cols < pw {
                        zero(b, phase, i * pw + cols, pw - cols);
                    }
                });
                if rows < ph {
                    zero(&mut b, phase, Affine::constant(rows * pw), (ph - rows) * pw);
                }
            }
        }
        self.lowering.emit(b);

        if images {
            self.batched_phased_weight_grad(id, attrs, dz, phases, dw);
            return;
        }
        let pitched = pw > out.w;
        let dz = if pitched {
            self.pitched_dz(id, dz, out, pw)
        } else {
            dz
        };
        let co_pad = co.next_multiple_of(4);
        let mut b = self.builder(
            id,
            "weight_grad",
            format!(
                "∂weight {co}×{ci}×{kh}×{kw}: Σ over {}×{} pixels, stride {sh}×{sw} in phases",
                out.h, out.w
            ),
        );
        let block_rows = weight_grad_block_rows(kh * kw * ci * co, pw * (co + ci), out.h);
        for a in 0..sh {
            for c in 0..sw {
                let sweep = Sweep {
                    src: phases,
                    src_pitch: pw,
                    channels: ci,
                    stride: [1, 1],
                    dz,
                    dz_pitch: pw,
                    out_w: out.w,
                    co,
                    co_pad,
                    dw,
                    images: None,
                };
                let base = (a * sw + c) * phase_len;
                // The phase's taps: `(ky, kx) ≡ (a, c)`, at `(ky / sh, kx / sw)` in it.
                let window: Vec<(usize, usize)> = (a..kh)
                    .step_by(sh)
                    .flat_map(|ky| (c..kw).step_by(sw).map(move |kx| (ky, kx)))
                    .collect();
                let offset = |ky: usize, kx: usize| base + ((ky / sh) * pw + kx / sw) * ci;
                if ci.is_multiple_of(TILE_TAPS) && ci >= 2 * TILE_TAPS {
                    // Every tap of the phase over one block of rows, then the next block.
                    let groups = vector_groups(co, WEIGHT_TILE_VECTORS);
                    row_blocks(&mut b, out.h, block_rows, &mut |b, first, rows| {
                        for &(ky, kx) in &window {
                            b.repeat(ci / TILE_TAPS, |b, blk| {
                                let taps: Vec<(Affine, Affine)> = (0..TILE_TAPS)
                                    .map(|i| {
                                        let channel = blk.clone() * TILE_TAPS + i;
                                        (
                                            channel.clone() + offset(ky, kx),
                                            channel + (ky * kw + kx) * ci,
                                        )
                                    })
                                    .collect();
                                for &group in &groups {
                                    sweep.tile(b, &taps, group, (first, rows));
                                }
                            });
                        }
                    });
                } else {
                    let taps: Vec<(Affine, Affine)> = window
                        .iter()
                        .flat_map(|&(ky, kx)| {
                            (0..ci).map(move |i| {
                                (
                                    Affine::constant(offset(ky, kx) + i),
                                    Affine::constant((ky * kw + kx) * ci + i),
                                )
                            })
                        })
                        .collect();
                    sweep.all_taps(&mut b, &taps, out.h, block_rows);
                }
            }
        }
        self.lowering.emit(b);
    }
}
