//! Winograd's F(4×4, 3×3) for 3×3 stride-1 convolutions: 36 multiplications for each 4×4
//! output tile and channel pair instead of direct convolution's 144.
//!
//! Direct convolution is bounded by the multiply rate, and Cranelift emits 128-bit FMAs only
//! (CRANELIFT.md §1), half of what the peers' 256-bit kernels do; Winograd's algorithm does
//! four times fewer multiplications. With `U = G g Gᵀ` the transformed filter (6×6, computed
//! when the weights are packed: `lower/winograd_pack.rs`), `V = Bᵀ d B` the transformed 6×6
//! input tile (tiles overlap by 2), and `Y = Aᵀ M A` the 4×4 output tile, the convolution of
//! `Cin` channels is `M[ξ] = Σ_c V[ξ][c] · U[ξ][c][·]` for each of the 36 points `ξ`: 36 matrix
//! products (tiles × Cin) · (Cin × Cout). A convolution is three kernels in the loop-nest IR,
//! so the verifier proves their accesses in bounds like any other:
//!
//! - **input transform** (`winoin`), parallel over rows of tiles: `Bᵀ d B` for every tile and
//!   vector of 4 channels, stored as `V[ξ][tile][in]` in an arena scratch buffer. The input is
//!   read from its padded buffer (`pad.rs`), whose border reaches the last tile's far edge
//!   (`winograd_extent` widens the window read), so no tile needs a special case;
//! - **products** (`winomul`), parallel over the 36 points: register tiles of 4 tiles × 8
//!   output channels in 8 accumulators, 2 weight vectors and 4 broadcasts per reduction step,
//!   unrolled by 4 (the direct kernel's 4×8 shape), over chunks of tiles whose `V` rows stay
//!   in L2 while a weight panel (`Cin × 8`) stays in L1; stored as `M[ξ][tile][out]`;
//! - **output transform** (`winoout`), parallel over rows of whole tiles: `Aᵀ M A`, then the
//!   conv's epilogue (bias, residual, activation) and the store; tiles that reach past the
//!   output's last row or column store only their inside (the last row of tiles is the
//!   kernel's serial part).
//!
//! Each transform works one row of its result at a time from loads (reloading inputs that two
//! rows share), which keeps under 16 vector registers live: Cranelift would spill the 36 values
//! of a whole tile.
//!
//! Accuracy: F(4×4, 3×3)'s transforms have entries up to 8 (in `Aᵀ`) and 1/24 (in `G`), which
//! costs a few bits against direct summation; the differential tests check 1e-4 relative. The
//! larger F(6×6, 3×3) loses more and is not done.

use super::conv::{reduce, store_tile, Epilogue, Tile};
use super::ir::{Affine, BinaryOp, BufferId, LoopExpr, Reg};
use super::pad::Padded;
use super::{ConstSpec, KernelBuilder, Lowering};
use crate::graph::{ConvAttrs, NodeId, Shape};

/// Output pixels per tile side (the `m` of F(m×m, 3×3)).
pub const TILE: usize = 4;
/// Input pixels per tile side, and the side of a transformed tile: `m + 3 − 1`.
pub const ALPHA: usize = TILE + 2;
/// Points of a transformed tile: one matrix product each.
pub(super) const POINTS: usize = ALPHA * ALPHA;
/// Output channels per packed weight panel and per register tile.
const PANEL: usize = 8;
/// Tiles per register tile.
const TILE_ROWS: usize = 4;
/// Bytes of `V` rows one chunk of tiles may take, so that they stay in L2 while every weight
/// panel streams over them.
const CHUNK_BYTES: usize = 128 * 1024;
/// The fewest input and output channels for which `Auto` picks Winograd: with fewer, the
/// products are too short a reduction to pay for writing and reading `M` (3 → 64 channels at
/// 224×224 ran 2.3× slower than direct).
const MIN_CHANNELS: usize = 8;
/// `Auto` picks Winograd when its estimated time relative to direct convolution is at most
/// this (see `estimated_ratio`).
const MAX_RATIO: f64 = 0.75;
/// In a training step, products of convolutions with at most this many tiles per image loop
/// over the images inside each weight panel: with few tiles, one image's products use each
/// weight a handful of times, and streaming the 36 transformed panels per image bounds them.
pub(super) const BATCHED_TILES: usize = 64;
/// The fewest rows of whole tiles the output transform splits over threads; with fewer, it
/// splits the channels instead.
const PARALLEL_TILE_ROWS: usize = 4;

/// Which convolutions Winograd's algorithm lowers.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum Winograd {
    /// None: every convolution is direct (`--no-winograd`).
    Off,
    /// The 3×3 stride-1 ungrouped ones large enough for it to pay (see `winograd_extent`).
    #[default]
    Auto,
    /// Every 3×3 stride-1 ungrouped convolution, however small: for tests.
    Always,
}

/// `Bᵀ`, the input transform, from Lavin &
/// Gray, "Fast Algorithms for Convolutional Neural Networks" (2016), with the points
/// 0, ±1, ±2 and ∞. Used by the tests of the transforms; the kernels use the factored forms
/// of `bt_row` and `at_row`.
pub const BT: [[f32; ALPHA]; ALPHA] = [
    [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
    [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
    [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
    [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
    [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
    [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
];

/// `Aᵀ`, the output transform, for the same points.
pub const AT: [[f32; ALPHA]; TILE] = [
    [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
    [0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
    [0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
    [0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
];

/// `G`, the filter transform, for the same points (applied in f64 at pack time).
pub const G: [[f64; 3]; ALPHA] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// The constants the transforms multiply by, in registers.
struct Constants {
    two: Reg,
    minus_two: Reg,
    four: Reg,
    minus_four: Reg,
    minus_five: Reg,
    eight: Reg,
}

impl Constants {
    fn new(b: &mut KernelBuilder) -> Constants {
        Constants {
            two: b.constant(2.0),
            minus_two: b.constant(-2.0),
            four: b.constant(4.0),
            minus_four: b.constant(-4.0),
            minus_five: b.constant(-5.0),
            eight: b.constant(8.0),
        }
    }
}

fn add(b: &mut KernelBuilder, x: Reg, y: Reg) -> Reg {
    b.binary(BinaryOp::Add, x, y)
}

fn sub(b: &mut KernelBuilder, x: Reg, y: Reg) -> Reg {
    b.binary(BinaryOp::Sub, x, y)
}

pub(super) fn fma(b: &mut KernelBuilder, x: Reg, y: Reg, z: Reg) -> Reg {
    b.assign(LoopExpr::Fma(x, y, z))
}

/// Row `i` of `Bᵀ · d` for the six values `get(0..6)` (fetched only where the row needs them,
/// in increasing order), in the factored form of `BT`.
fn bt_row(
    b: &mut KernelBuilder,
    k: &Constants,
    i: usize,
    get: &mut impl FnMut(&mut KernelBuilder, usize) -> Reg,
) -> Reg {
    match i {
        0 | 5 => {
            // 4·d0 − 5·d2 + d4, and 4·d1 − 5·d3 + d5.
            let first = if i == 0 { 0 } else { 1 };
            let (d0, d2, d4) = (get(b, first), get(b, first + 2), get(b, first + 4));
            let inner = fma(b, k.minus_five, d2, d4);
            fma(b, k.four, d0, inner)
        }
        _ => {
            let (d1, d2, d3, d4) = (get(b, 1), get(b, 2), get(b, 3), get(b, 4));
            match i {
                // −4·(d1 + d2) + (d3 + d4).
                1 => {
                    let s12 = add(b, d1, d2);
                    let s34 = add(b, d3, d4);
                    fma(b, k.minus_four, s12, s34)
                }
                // 4·(d1 − d2) + (d4 − d3).
                2 => {
                    let d12 = sub(b, d1, d2);
                    let d43 = sub(b, d4, d3);
                    fma(b, k.four, d12, d43)
                }
                // ±2·(d3 − d1) + (d4 − d2).
                _ => {
                    let d31 = sub(b, d3, d1);
                    let d42 = sub(b, d4, d2);
                    let factor = if i == 3 { k.two } else { k.minus_two };
                    fma(b, factor, d31, d42)
                }
            }
        }
    }
}

/// Row `r` of `Aᵀ · m` for the six values `get(0..6)`, in the factored form of `AT`.
fn at_row(
    b: &mut KernelBuilder,
    k: &Constants,
    r: usize,
    get: &mut impl FnMut(&mut KernelBuilder, usize) -> Reg,
) -> Reg {
    let m0 = (r == 0).then(|| get(b, 0));
    let (m1, m2, m3, m4) = (get(b, 1), get(b, 2), get(b, 3), get(b, 4));
    match r {
        // m0 + (m1 + m2) + (m3 + m4).
        0 => {
            let s12 = add(b, m1, m2);
            let s34 = add(b, m3, m4);
            let sum = add(b, s12, s34);
            match m0 {
                Some(m0) => add(b, m0, sum),
                None => sum,
            }
        }
        // (m1 + m2) + 4·(m3 + m4).
        2 => {
            let s12 = add(b, m1, m2);
            let s34 = add(b, m3, m4);
            fma(b, k.four, s34, s12)
        }
        // (m1 − m2) + 2·(m3 − m4), and (m1 − m2) + 8·(m3 − m4) + m5.
        _ => {
            let d12 = sub(b, m1, m2);
            let d34 = sub(b, m3, m4);
            if r == 1 {
                fma(b, k.two, d34, d12)
            } else {
                let m5 = get(b, 5);
                let with_m5 = add(b, d12, m5);
                fma(b, k.eight, d34, with_m5)
            }
        }
    }
}

/// Calls `f` for the vectors of `channels`: `(first channel, lanes)`, 4 lanes but the last.
pub(super) fn channel_vectors(
    b: &mut KernelBuilder,
    channels: usize,
    f: &mut impl FnMut(&mut KernelBuilder, Affine, u8),
) {
    b.repeat(channels / 4, |b, i| f(b, i * 4, 4));
    let rest = channels % 4;
    if rest > 0 {
        f(b, Affine::constant(channels - rest), rest as u8);
    }
}

/// Winograd's time over direct convolution's, estimated: a quarter of the multiplications,
/// plus the transforms, whose cost per output grows as `1/in` (output transform, relative to
/// a reduction over `in`) and `1/out` (input transform, shared by every output channel),
/// times the share of the tiles' pixels that fall inside the output. The two constants are
/// fitted to single-layer measurements on a Zen 3 (1 thread, paired runs, ratio of medians):
/// 8 → 8 channels at 56×56 0.47, 4 → 4 at 56×56 0.8–1.1, 64 → 64 at 5×5 0.72, 64 → 64 at 4×4
/// 0.57, 16 → 16 at 8×8 0.41, 64 → 64 at 56×56 0.19–0.30.
fn estimated_ratio(in_channels: usize, out: Shape) -> f64 {
    let covered = out.h.next_multiple_of(TILE) * out.w.next_multiple_of(TILE);
    let waste = covered as f64 / (out.h * out.w).max(1) as f64;
    waste * (0.25 + 1.3 / out.c.max(1) as f64 + 1.2 / in_channels.max(1) as f64)
}

/// The buffers and sizes the three kernels of one convolution share.
struct Plan {
    /// `U[ξ][panel][in][PANEL]`.
    weights: BufferId,
    bias: Option<BufferId>,
    /// `V[ξ][tile][in_stride]`.
    transformed: BufferId,
    /// `M[ξ][tile][out_stride]`.
    products: BufferId,
    in_channels: usize,
    in_stride: usize,
    out_stride: usize,
    n_panels: usize,
    tiles_x: usize,
    tiles: usize,
    /// Whether the products loop over the images inside each weight panel.
    images: bool,
}

impl Plan {
    /// `M[ξ][tile][channel]`'s index.
    fn m(&self, point: Affine, tile: Affine, channel: Affine) -> Affine {
        point * (self.tiles * self.out_stride) + tile * self.out_stride + channel
    }
}

/// Where an input transform reads and writes: `V[ξ][tile][in_stride]` of `tiles` tiles.
struct Transform<'a> {
    x: &'a Padded,
    transformed: BufferId,
    in_stride: usize,
    tiles: usize,
}

/// `Bᵀ d B` for the vector of `lanes` channels at element `at` of the input (the tile's top
/// left pixel), stored to `V` at `tile`, `channel`.
fn input_tile(
    b: &mut KernelBuilder,
    t: &Transform,
    at: &Affine,
    lanes: u8,
    tile: &Affine,
    c0: &Affine,
) {
    let k = Constants::new(b);
    let (width, c) = (t.x.width, t.x.channels);
    for i in 0..ALPHA {
        // Row i of Bᵀ·d, one column at a time from the input rows it needs.
        let row: Vec<Reg> = (0..ALPHA)
            .map(|j| {
                bt_row(b, &k, i, &mut |b, y| {
                    b.load(t.x.buffer, at.clone() + (y * width + j) * c, lanes)
                })
            })
            .collect();
        for l in 0..ALPHA {
            let value = bt_row(b, &k, l, &mut |_, j| row[j]);
            let index =
                tile.clone() * t.in_stride + c0.clone() + (i * ALPHA + l) * t.tiles * t.in_stride;
            b.store(t.transformed, index, 4, value);
        }
    }
}

/// `rows` consecutive tiles from `t0` × the 8 output channels of `panel`, for point `point`:
/// `M = V · U`, reduced over the input channels.
fn product_tile(
    b: &mut KernelBuilder,
    p: &Plan,
    point: &Affine,
    t0: Affine,
    rows: usize,
    panel: &Affine,
) {
    let acc: Vec<[Reg; 2]> = (0..rows)
        .map(|_| [b.constant(0.0), b.constant(0.0)])
        .collect();
    let panel_start = (point.clone() * p.n_panels + panel.clone()) * (p.in_channels * PANEL);
    let v_start = point.clone() * (p.tiles * p.in_stride) + t0.clone() * p.in_stride;
    reduce(b, p.in_channels, &mut |b, ci| {
        let w = [0, 1].map(|v| {
            b.load(
                p.weights,
                panel_start.clone() + ci.clone() * PANEL + 4 * v,
                4,
            )
        });
        for (q, row) in acc.iter().enumerate() {
            let xs = b.splat(
                p.transformed,
                v_start.clone() + q * p.in_stride + ci.clone(),
            );
            for (v, &a) in row.iter().enumerate() {
                b.set(a, LoopExpr::Fma(xs, w[v], a));
            }
        }
    });
    for (q, row) in acc.iter().enumerate() {
        for (v, &value) in row.iter().enumerate() {
            let index = p.m(point.clone(), t0.clone() + q, panel.clone() * PANEL + 4 * v);
            b.store(p.products, index, 4, value);
        }
    }
}

/// The products of `n` tiles from `t0`, panel by panel (and image by image inside a panel,
/// when the plan loops over images).
fn product_tiles(b: &mut KernelBuilder, p: &Plan, point: &Affine, t0: Affine, n: usize) {
    b.repeat(p.n_panels, |b, panel| {
        if p.images {
            b.images(|b| panel_tiles(b, p, point, t0.clone(), n, &panel));
        } else {
            panel_tiles(b, p, point, t0.clone(), n, &panel);
        }
    });
}

/// The products of `n` tiles from `t0` with one panel of weights.
fn panel_tiles(
    b: &mut KernelBuilder,
    p: &Plan,
    point: &Affine,
    t0: Affine,
    n: usize,
    panel: &Affine,
) {
    b.repeat(n / TILE_ROWS, |b, block| {
        let t = t0.clone() + block * TILE_ROWS;
        product_tile(b, p, point, t, TILE_ROWS, panel);
    });
    let rest = n % TILE_ROWS;
    if rest > 0 {
        product_tile(b, p, point, t0.clone() + (n - rest), rest, panel);
    }
}

/// `Aᵀ M A` plus the epilogue for the vector of `lanes` channels from `c0` of tile
/// (`ty`, `tx`), storing its top-left `rows × cols` pixels.
fn output_tile(
    b: &mut KernelBuilder,
    p: &Plan,
    e: &Epilogue,
    (ty, tx, rows, cols): (&Affine, &Affine, usize, usize),
    c0: &Affine,
    lanes: u8,
) {
    let tile = ty.clone() * p.tiles_x + tx.clone();
    let k = Constants::new(b);
    let bias = p.bias.map(|bias| b.load(bias, c0.clone(), 4));
    for r in 0..rows {
        // Row r of Aᵀ·M, one column at a time.
        let row: Vec<Reg> = (0..ALPHA)
            .map(|j| {
                at_row(b, &k, r, &mut |b, y| {
                    let index = p.m(Affine::constant(y * ALPHA + j), tile.clone(), c0.clone());
                    b.load(p.products, index, 4)
                })
            })
            .collect();
        let values: Vec<Vec<Reg>> = (0..cols)
            .map(|col| {
                let value = at_row(b, &k, col, &mut |_, j| row[j]);
                vec![match bias {
                    Some(bias) => add(b, value, bias),
                    None => value,
                }]
            })
            .collect();
        let pixels = (0..cols)
            .map(|col| (ty.clone() * TILE + r, tx.clone() * TILE + col))
            .collect();
        let out_tile = Tile {
            pixels,
            c0: c0.clone(),
            vectors: 1,
            last_lanes: lanes,
        };
        store_tile(b, &out_tile, Affine::default(), &values, e);
    }
}

/// Calls `f` for the tiles of row `ty` of tiles, `rows` high: `(ty, tx, rows, cols)`.
fn tiles_of_row(
    b: &mut KernelBuilder,
    width: usize,
    ty: &Affine,
    rows: usize,
    f: &mut impl FnMut(&mut KernelBuilder, (&Affine, &Affine, usize, usize)),
) {
    b.repeat(width / TILE, |b, tx| f(b, (ty, &tx, rows, TILE)));
    if !width.is_multiple_of(TILE) {
        f(b, (ty, &Affine::constant(width / TILE), rows, width % TILE));
    }
}

/// Calls `f` for every tile of an output of `height × width`.
pub(super) fn all_tiles(
    b: &mut KernelBuilder,
    (height, width): (usize, usize),
    f: &mut impl FnMut(&mut KernelBuilder, (&Affine, &Affine, usize, usize)),
) {
    b.repeat(height / TILE, |b, ty| tiles_of_row(b, width, &ty, TILE, f));
    if !height.is_multiple_of(TILE) {
        let ty = Affine::constant(height / TILE);
        tiles_of_row(b, width, &ty, height % TILE, f);
    }
}

impl Lowering<'_> {
    /// For a convolution Winograd's algorithm lowers, the output extent its tiles cover:
    /// its size rounded up to whole tiles, which its input's padded buffer must reach.
    pub(super) fn winograd_extent(&self, id: NodeId, attrs: &ConvAttrs) -> Option<(usize, usize)> {
        let (input, out) = (self.graph.input_shape(id), self.graph.shape(id));
        self.winograd_tiles(attrs, input.c, out)
    }

    /// [`winograd_extent`](Self::winograd_extent) for a convolution of `attrs` from `in_c`
    /// channels to `out`, which need not be a node's (a training step's input gradient).
    pub(super) fn winograd_tiles(
        &self,
        attrs: &ConvAttrs,
        in_c: usize,
        out: Shape,
    ) -> Option<(usize, usize)> {
        let fits = attrs.kernel == [3, 3]
            && attrs.stride == [1, 1]
            && attrs.dilation == [1, 1]
            && attrs.groups.max(1) == 1;
        if !fits {
            return None;
        }
        let chosen = match self.options.winograd {
            Winograd::Off => false,
            Winograd::Always => true,
            Winograd::Auto => {
                in_c.min(out.c) >= MIN_CHANNELS && estimated_ratio(in_c, out) <= MAX_RATIO
            }
        };
        chosen.then(|| (out.h.next_multiple_of(TILE), out.w.next_multiple_of(TILE)))
    }

    /// Emits the kernel `kind` that writes `V = Bᵀ d B` of `x` (read from its padded buffer in
    /// whole tiles, `tiles_y × tiles_x` of them) to `transformed`, `V[ξ][tile][in]` with the
    /// channels padded to a multiple of 4 (the padding lanes zero). The forward's first kernel,
    /// and the first of a training step's weight gradient (`train::winograd`).
    pub(super) fn winograd_input_transform(
        &mut self,
        id: NodeId,
        kind: &str,
        x: &Padded,
        transformed: BufferId,
        (tiles_y, tiles_x): (usize, usize),
        what: &str,
    ) {
        let cin = x.channels;
        let t = Transform {
            x,
            transformed,
            in_stride: cin.next_multiple_of(4),
            tiles: tiles_y * tiles_x,
        };
        let mut b = self.builder(
            id,
            kind,
            format!("winograd F(4×4, 3×3) input transform, {tiles_y}×{tiles_x} tiles: {what}"),
        );
        b.parallel(tiles_y, |b, ty| {
            b.repeat(tiles_x, |b, tx| {
                let tile = ty.clone() * tiles_x + tx.clone();
                let corner = (ty.clone() * (TILE * x.width) + tx * TILE) * cin;
                channel_vectors(b, cin, &mut |b, c0, lanes| {
                    input_tile(b, &t, &(corner.clone() + c0.clone()), lanes, &tile, &c0);
                });
            });
        });
        self.emit(b);
    }

    /// Lowers a convolution chosen by `winograd_extent` to its three kernels; `flipped` as
    /// for `direct_conv` (node `id`'s input gradient, from `input` = its output's gradient).
    pub(super) fn winograd_conv(
        &mut self,
        id: NodeId,
        x: Padded,
        (input, out): (Shape, Shape),
        has_bias: bool,
        e: &Epilogue,
        flipped: bool,
    ) {
        let (tiles_y, tiles_x) = (out.h.div_ceil(TILE), out.w.div_ceil(TILE));
        let tiles = tiles_y * tiles_x;
        let (cin, cout) = (input.c, out.c);
        let n_panels = cout.div_ceil(PANEL);
        let name = self.describe(id);
        let weights = self.add_const(
            format!("{name} winograd weights [36][panel][in][{PANEL}]"),
            POINTS * n_panels * cin * PANEL,
            ConstSpec::WinogradWeight {
                node: id,
                panel: PANEL,
                flipped,
            },
        );
        let bias = has_bias.then(|| {
            self.add_const(
                format!("{name} bias"),
                n_panels * PANEL,
                ConstSpec::ConvBias {
                    node: id,
                    group_size: cout,
                    group_stride: n_panels * PANEL,
                },
            )
        });
        let in_stride = cin.next_multiple_of(4);
        let out_stride = n_panels * PANEL;
        let transformed = self.add_temp(
            format!("{name} winograd input [36][tile][in]"),
            POINTS * tiles * in_stride,
        );
        let products = self.add_temp(
            format!("{name} winograd products [36][tile][out]"),
            POINTS * tiles * out_stride,
        );
        let p = Plan {
            weights,
            bias,
            transformed,
            products,
            in_channels: cin,
            in_stride,
            out_stride,
            n_panels,
            tiles_x,
            tiles,
            images: self.batched && tiles <= BATCHED_TILES,
        };
        let what = format!("{}×{}×{cin} → {out}", input.h, input.w);
        let kind = |k: &str| {
            if flipped {
                format!("input_grad_{k}")
            } else {
                k.to_string()
            }
        };

        let tiling = (tiles_y, tiles_x);
        self.winograd_input_transform(id, &kind("winoin"), &x, transformed, tiling, &what);

        let chunk = (CHUNK_BYTES / (4 * in_stride)).max(TILE_ROWS) / TILE_ROWS * TILE_ROWS;
        let mut b = self.builder(
            id,
            &kind("winomul"),
            format!(
                "winograd F(4×4, 3×3) products, 36 × ({tiles} × {cin}) · ({cin} × {cout}): {what}"
            ),
        );
        b.parallel(POINTS, |b, point| {
            b.repeat(tiles / chunk, |b, c| {
                product_tiles(b, &p, &point, c * chunk, chunk);
            });
            let rest = tiles % chunk;
            if rest > 0 {
                product_tiles(b, &p, &point, Affine::constant(tiles - rest), rest);
            }
        });
        self.emit(b);

        let mut b = self.builder(
            id,
            &kind("winoout"),
            format!("winograd F(4×4, 3×3) output transform and epilogue: {what}"),
        );
        let (height, width) = (out.h, out.w);
        if height / TILE >= PARALLEL_TILE_ROWS {
            // Rows of whole tiles in parallel, all channels of a tile at once: `M` is read
            // a cache line at a time. The last, partial row of tiles is the serial part.
            b.parallel(height / TILE, |b, ty| {
                tiles_of_row(b, width, &ty, TILE, &mut |b, at| {
                    channel_vectors(b, cout, &mut |b, c0, lanes| {
                        output_tile(b, &p, e, at, &c0, lanes);
                    });
                });
            });
            if !height.is_multiple_of(TILE) {
                let ty = Affine::constant(height / TILE);
                tiles_of_row(&mut b, width, &ty, height % TILE, &mut |b, at| {
                    channel_vectors(b, cout, &mut |b, c0, lanes| {
                        output_tile(b, &p, e, at, &c0, lanes);
                    });
                });
            }
        } else {
            // Too few rows of tiles to share: vectors of channels in parallel instead.
            b.parallel(cout / 4, |b, v| {
                all_tiles(b, (height, width), &mut |b, at| {
                    output_tile(b, &p, e, at, &(v.clone() * 4), 4);
                });
            });
            if !cout.is_multiple_of(4) {
                let c0 = Affine::constant(cout / 4 * 4);
                all_tiles(&mut b, (height, width), &mut |b, at| {
                    output_tile(b, &p, e, at, &c0, (cout % 4) as u8);
                });
            }
        }
        self.emit(b);
    }
}

#[cfg(test)]
mod tests {
    use super::{ALPHA, AT, BT, G, TILE};

    /// `Aᵀ [(G g) ⊙ (Bᵀ d)]` is the correlation of `d` with `g`, for arbitrary values: the
    /// three matrices are a correct F(4, 3), checked against the sum that defines it.
    #[test]
    fn the_matrices_compute_a_correlation() {
        let d = [0.3, -1.2, 2.5, 0.7, -0.4, 1.9];
        let g = [0.8, -0.35, 1.3];
        let gg: Vec<f64> = G
            .iter()
            .map(|row| (0..3).map(|k| row[k] * g[k]).sum())
            .collect();
        let bd: Vec<f64> = BT
            .iter()
            .map(|row| (0..ALPHA).map(|k| f64::from(row[k]) * d[k]).sum())
            .collect();
        for (y, row) in AT.iter().enumerate().take(TILE) {
            let winograd: f64 = (0..ALPHA).map(|k| f64::from(row[k]) * gg[k] * bd[k]).sum();
            let direct: f64 = (0..3).map(|k| d[y + k] * g[k]).sum();
            assert!(
                (winograd - direct).abs() < 1e-12,
                "{y}: {winograd} vs {direct}"
            );
        }
    }
}
