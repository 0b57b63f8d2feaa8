//! The weight gradient of a convolution the forward lowered with Winograd's F(4×4, 3×3)
//! (`lower/winograd.rs`), in the same transformed domain: a quarter of direct reduction's
//! multiplications.
//!
//! The forward computes each 4×4 output tile as `Y = Aᵀ [U ⊙ V] A`, with `U = G g Gᵀ` and
//! `V = Bᵀ d B`. Its gradient with respect to `U` at point `ξ` is the product, summed over the
//! tiles, of `V[ξ]` and the transformed output gradient `P = A ∂Y Aᵀ`; the gradient with
//! respect to the filter is then `Gᵀ ∂U G`. Three kernels per image:
//!
//! 1. **input transform** (`weight_grad_winoin`): `V` again from the padded input the forward
//!    read (the forward's scratch `V` has been reused since), by the forward's own kernel;
//! 2. **gradient transform** (`weight_grad_winodz`): `P`, tiles past the output's edge reading
//!    zeros there. Both are laid out `[ξ][tile][channel]` as the forward's `V`, or, when the
//!    products loop over the images, `[ξ][channel / 4][tile][4]`: a register tile's few tiles
//!    of an image are then a few whole lines of each (on ResNet-18 this took the products of
//!    layer2 and layer3 from 1.35–1.45× the forward's time to 1.1×; layer4's, whose image loop
//!    moves some fifteen pointers for each step of four tiles, from 1.48× to 1.41×);
//! 3. **products and filter transform** (`weight_grad_winomul`), over chunks of input
//!    channels whose `∂U` stays in L2: for each point, `∂U[ξ] = Σ_tiles V[ξ]ᵀ P[ξ]` in register
//!    tiles of 4 input × 8 output channels (the forward's 4×8 shape: 4 broadcasts of `V`, 2
//!    vectors of `P`, 8 FMAs a step, reduced over the tiles unrolled by 4); then `Gᵀ ∂U G`
//!    added to the accumulated gradient. `∂U` is laid out `[in][out / 4][ξ][4]`, so that the
//!    filter transform reads the 36 points of a vector from 576 contiguous bytes: laid out
//!    `[ξ][in][out]`, they were 36 loads 8 KiB apart on ResNet-18's layer4, all in one L1 set,
//!    and its weight gradient took 3.4× longer (194 against 58 ms for 8 images, one thread).
//!
//! Accuracy: `A` has entries up to 8 and `G` down to 1/24, as in the forward; the training
//! differential tests check the gradients at 2e-4 of the largest.

use super::super::conv::reduce;
use super::super::ir::{Affine, BinaryOp, BufferId, LoopExpr, Reg};
use super::super::pad::Padded;
use super::super::winograd::{all_tiles, along, channel_vectors, fma, ALPHA, POINTS, TILE};
use super::super::KernelBuilder;
use super::Backward;
use crate::graph::NodeId;

/// Floats of one chunk's `∂U`: it is written by the products and read back by
/// the filter transform while it is still in L2.
const CHUNK_FLOATS: usize = 64 * 1024;
/// The same when the products sum over the images of a call: `∂U` is then written and read
/// once per call, and what bounds the kernel is rereading the transformed output gradient
/// of every point for each chunk (36 × tiles × images × out floats: 2.3 MB on ResNet-18's
/// layer4 for 8 images), so chunks are made as large as a chunk of `∂U` that still fits in
/// L2.
const BATCHED_CHUNK_FLOATS: usize = 512 * 1024;
/// Input channels per register tile of the products.
const TILE_IN: usize = 4;
/// Output-channel vectors per register tile of the products.
const TILE_VECTORS: usize = 2;

/// The shapes of one weight gradient.
#[derive(Copy, Clone)]
pub(super) struct WinogradGrad {
    /// The padded input the forward read, and its row width in pixels.
    pub frame: BufferId,
    pub frame_w: usize,
    /// The output gradient `∂z`, `[h][w][out]`.
    pub dz: BufferId,
    /// The accumulated gradient, `[ky][kx][in][out_padded]`.
    pub dw: BufferId,
    pub in_c: usize,
    /// Output height, width and channels.
    pub out: (usize, usize, usize),
}

/// Value `r` of `A y` (six values) for the four values `y` of a column or row of a 4×4 tile:
/// `Aᵀ`'s column `r`, factored as the forward's rows are.
fn a_row(b: &mut KernelBuilder, r: usize, y: &[Reg; 4]) -> Reg {
    match r {
        0 => y[0],
        5 => y[3],
        1 | 2 => {
            let even = b.binary(BinaryOp::Add, y[0], y[2]);
            let odd = b.binary(BinaryOp::Add, y[1], y[3]);
            let op = if r == 1 { BinaryOp::Add } else { BinaryOp::Sub };
            b.binary(op, even, odd)
        }
        _ => {
            // y0 + 4·y2 ± (2·y1 + 8·y3).
            let (two, four, eight) = (b.constant(2.0), b.constant(4.0), b.constant(8.0));
            let even = fma(b, four, y[2], y[0]);
            let eight_y3 = b.binary(BinaryOp::Mul, eight, y[3]);
            let odd = fma(b, two, y[1], eight_y3);
            let op = if r == 3 { BinaryOp::Add } else { BinaryOp::Sub };
            b.binary(op, even, odd)
        }
    }
}

/// `Σ_ξ G[ξ][k] · u(ξ)` over the six values `u(0..6)` (fetched only where column `k` of `G`,
/// `lower/winograd.rs`, is not zero), factored.
fn g_column(
    b: &mut KernelBuilder,
    k: usize,
    u: &mut impl FnMut(&mut KernelBuilder, usize) -> Reg,
) -> Reg {
    let (u1, u2, u3, u4) = (u(b, 1), u(b, 2), u(b, 3), u(b, 4));
    match k {
        0 => {
            // u0/4 − (u1 + u2)/6 + (u3 + u4)/24.
            let s12 = b.binary(BinaryOp::Add, u1, u2);
            let s34 = b.binary(BinaryOp::Add, u3, u4);
            let u0 = u(b, 0);
            let quarter = b.constant(0.25);
            let scaled = b.binary(BinaryOp::Mul, quarter, u0);
            let minus_sixth = b.constant(-1.0 / 6.0);
            let partial = fma(b, minus_sixth, s12, scaled);
            let twenty_fourth = b.constant(1.0 / 24.0);
            fma(b, twenty_fourth, s34, partial)
        }
        1 => {
            // (u2 − u1)/6 + (u3 − u4)/12.
            let d21 = b.binary(BinaryOp::Sub, u2, u1);
            let d34 = b.binary(BinaryOp::Sub, u3, u4);
            let twelfth = b.constant(1.0 / 12.0);
            let second = b.binary(BinaryOp::Mul, twelfth, d34);
            let sixth = b.constant(1.0 / 6.0);
            fma(b, sixth, d21, second)
        }
        _ => {
            // ((u3 + u4) − (u1 + u2))/6 + u5.
            let u5 = u(b, 5);
            let s12 = b.binary(BinaryOp::Add, u1, u2);
            let s34 = b.binary(BinaryOp::Add, u3, u4);
            let diff = b.binary(BinaryOp::Sub, s34, s12);
            let sixth = b.constant(1.0 / 6.0);
            fma(b, sixth, diff, u5)
        }
    }
}

impl Backward<'_> {
    /// Emits the three kernels that add node `id`'s weight gradient to `g.dw`, the forward
    /// having read `g.frame` in whole tiles (`winograd_extent`).
    pub(super) fn winograd_weight_grad(&mut self, id: NodeId, g: WinogradGrad) {
        let (height, width, co) = g.out;
        let ci = g.in_c;
        let (tiles_y, tiles_x) = (height.div_ceil(TILE), width.div_ceil(TILE));
        let tiles = tiles_y * tiles_x;
        let in_stride = ci.next_multiple_of(4);
        let co_pad = co.next_multiple_of(4);
        let name = self.lowering.describe(id);
        let what = format!("∂weight {co}×{ci}×3×3 over {tiles_y}×{tiles_x} tiles");
        let batched = self.lowering.winograd_loops_over_images(tiles);
        // Batched, the products read `V` and `P` along the tiles (`[ξ][channel / 4][tile][4]`):
        // their register tile's few tiles per image then come from a few whole lines, where
        // in the forward's layout they were 16 or 32 bytes of lines a row of channels apart.
        // With many tiles (unbatched), the transforms' stores so spread cost more than the
        // products gain (at layer1, 110 against 80 samples for the two transforms, 455
        // against 468 for the products), and the forward's layout stays.
        let vector_major = batched;
        let layout = |name: &str| {
            if vector_major {
                format!("[36][{name} / 4][tile][4]")
            } else {
                format!("[36][tile][{name}]")
            }
        };

        let v = self.lowering.add_temp(
            format!("{name} ∂weight winograd input {}", layout("in")),
            POINTS * tiles * in_stride,
        );
        let x = Padded {
            buffer: g.frame,
            width: g.frame_w,
            channels: ci,
            origin: 0,
        };
        self.lowering.winograd_input_transform(
            id,
            "weight_grad_winoin",
            &x,
            v,
            (tiles_y, tiles_x),
            &what,
            vector_major,
        );

        let p = self.lowering.add_temp(
            format!("{name} ∂weight winograd ∂z {}", layout("out")),
            POINTS * tiles * co_pad,
        );
        let mut b = self.builder(
            id,
            "weight_grad_winodz",
            format!("winograd F(4×4, 3×3) gradient transform A ∂z Aᵀ: {what}"),
        );
        let tile = |b: &mut KernelBuilder,
                    (ty, tx, rows, cols): (&Affine, Affine, usize, usize),
                    c0: &Affine,
                    lanes: u8| {
            let tile = ty.clone() * tiles_x + tx.clone();
            let zero = b.constant(0.0);
            let at = |i: usize, j: usize| {
                ((ty.clone() * TILE + i) * width + tx.clone() * TILE + j) * co + c0.clone()
            };
            for r in 0..ALPHA {
                // Row r of A·∂Y, one column at a time from the ∂Y rows it needs.
                let column: Vec<Reg> = (0..TILE)
                    .map(|j| {
                        let y: [Reg; 4] = std::array::from_fn(|i| {
                            let needed = match r {
                                0 => i == 0,
                                5 => i == 3,
                                _ => true,
                            };
                            if needed && i < rows && j < cols {
                                b.load(g.dz, at(i, j), lanes)
                            } else {
                                zero
                            }
                        });
                        a_row(b, r, &y)
                    })
                    .collect();
                let column: [Reg; 4] = std::array::from_fn(|j| column[j]);
                for l in 0..ALPHA {
                    let value = a_row(b, l, &column);
                    let point = r * ALPHA + l;
                    let index =
                        along(vector_major, tiles, co_pad, &tile, c0) + point * tiles * co_pad;
                    b.store(p, index, 4, value);
                }
            }
        };
        if vector_major {
            // A vector of channels over every tile, as the input transform does.
            channel_vectors(&mut b, co, &mut |b, c0, lanes| {
                all_tiles(b, (height, width), &mut |b, (ty, tx, rows, cols)| {
                    tile(b, (ty, tx.clone(), rows, cols), &c0, lanes)
                });
            });
        } else {
            all_tiles(&mut b, (height, width), &mut |b, (ty, tx, rows, cols)| {
                channel_vectors(b, co, &mut |b, c0, lanes| {
                    tile(b, (ty, tx.clone(), rows, cols), &c0, lanes)
                });
            });
        }
        self.lowering.emit(b);

        let floats = if batched {
            BATCHED_CHUNK_FLOATS
        } else {
            CHUNK_FLOATS
        };
        let chunk = (floats / (POINTS * co_pad)).max(TILE_IN) / TILE_IN * TILE_IN;
        let chunk = chunk.min(in_stride);
        let du = self.lowering.add_temp(
            format!("{name} ∂weight winograd ∂U [in chunk][out / 4][36][4]"),
            POINTS * chunk * co_pad,
        );
        let mut b = self.builder(
            id,
            "weight_grad_winomul",
            format!(
                "winograd F(4×4, 3×3) ∂U = 36 × ({ci} × {tiles}) · ({tiles} × {co}), then Gᵀ ∂U G, \
                 {chunk} input channels at a time: {what}"
            ),
        );
        // One chunk of `n` input channels from `first`.
        let run_chunk = |b: &mut KernelBuilder, first: Affine, n: usize| {
            b.repeat(POINTS, |b, point| {
                let v_at = point.clone() * (tiles * in_stride);
                let p_at = point.clone() * (tiles * co_pad);
                let du_at = point * 4;
                let groups = co_pad / (4 * TILE_VECTORS);
                let group = |b: &mut KernelBuilder, c0: Affine, vectors: usize| {
                    b.repeat(n.div_ceil(TILE_IN), |b, block| {
                        let acc: Vec<Vec<Reg>> = (0..TILE_IN)
                            .map(|_| (0..vectors).map(|_| b.constant(0.0)).collect())
                            .collect();
                        let channel = block * TILE_IN;
                        let over_tiles = |b: &mut KernelBuilder| {
                            reduce(b, tiles, &mut |b, t| {
                                let d: Vec<Reg> = (0..vectors)
                                    .map(|u| {
                                        let c = c0.clone() + 4 * u;
                                        let at = along(vector_major, tiles, co_pad, &t, &c);
                                        b.load(p, p_at.clone() + at, 4)
                                    })
                                    .collect();
                                for (i, row) in acc.iter().enumerate() {
                                    let c = first.clone() + channel.clone();
                                    let at = v_at.clone()
                                        + along(vector_major, tiles, in_stride, &t, &c)
                                        + i;
                                    let x = b.splat(v, at);
                                    for (u, &a) in row.iter().enumerate() {
                                        b.set(a, LoopExpr::Fma(x, d[u], a));
                                    }
                                }
                            })
                        };
                        // With few tiles, the register tile sums over every image of the call
                        // before it is stored: `∂U`, its filter transform and `∂W` are then
                        // touched once per call instead of once per image.
                        if batched {
                            b.images(over_tiles);
                        } else {
                            over_tiles(b);
                        }
                        for (i, row) in acc.iter().enumerate() {
                            for (u, &a) in row.iter().enumerate() {
                                let at = du_at.clone()
                                    + (channel.clone() + i) * (POINTS * co_pad)
                                    + (c0.clone() + 4 * u) * POINTS;
                                b.store(du, at, 4, a);
                            }
                        }
                    });
                };
                b.repeat(groups, |b, gi| {
                    group(b, gi * (4 * TILE_VECTORS), TILE_VECTORS)
                });
                let rest = co_pad % (4 * TILE_VECTORS);
                if rest > 0 {
                    group(b, Affine::constant(co_pad - rest), rest / 4);
                }
            });
            // ∂W[ky][kx][in][out] += Σ G[ξ1][ky] G[ξ2][kx] ∂U[ξ1·6 + ξ2][in][out], one column
            // kx at a time (three accumulators, one per ky) to stay within the registers.
            b.repeat(n, |b, c| {
                b.repeat(co_pad / 4, |b, vector| {
                    let lane0 = vector * 4;
                    for kx in 0..3 {
                        let r: Vec<Reg> = (0..ALPHA)
                            .map(|xi1| {
                                g_column(b, kx, &mut |b, xi2| {
                                    let point = xi1 * ALPHA + xi2;
                                    let at = Affine::constant(point * 4)
                                        + c.clone() * (POINTS * co_pad)
                                        + lane0.clone() * POINTS;
                                    b.load(du, at, 4)
                                })
                            })
                            .collect();
                        for ky in 0..3 {
                            let value = g_column(b, ky, &mut |_, i| r[i]);
                            let row = (first.clone() + c.clone()) + (ky * 3 + kx) * ci;
                            let at = row * co_pad + lane0.clone();
                            let sum = b.load(g.dw, at.clone(), 4);
                            let sum = b.binary(BinaryOp::Add, sum, value);
                            b.store(g.dw, at, 4, sum);
                        }
                    }
                });
            });
        };
        let full = ci / chunk;
        b.repeat(full, |b, k| run_chunk(b, k * chunk, chunk));
        let rest = ci % chunk;
        if rest > 0 {
            run_chunk(&mut b, Affine::constant(ci - rest), rest);
        }
        self.lowering.emit(b);
    }
}
