//! Winograd's F(4×4, 3×3) and F(2×2, 3×3) for 3×3 stride-1 convolutions: 36 multiplications
//! for each 4×4 output tile and channel pair instead of direct convolution's 144, or 16 for
//! each 2×2 tile instead of 36. The text below is F(4×4)'s; F(2×2)'s kernels are the same with
//! 4×4 transformed tiles of 16 points (`winograd_transforms.rs` has both sets of transforms).
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
//! F(2×2, 3×3) is for maps too small for F(4×4)'s weights to pay: at batch 1 each products
//! kernel streams `points × in × out` transformed weights once, for few tiles on a 7×7 map
//! (4 of F(4×4)'s, 16 of F(2×2)'s), so it is bounded by that traffic, 2.25× less with 16
//! points. `Auto` picks among direct, F(2×2) and F(4×4) (`winograd_choice.rs`); F(2×2) only at
//! inference (`Lowering::winograd_f2`): a training step's backward differentiates F(4×4)
//! convolutions alone (`train/winograd.rs`).
//!
//! Accuracy: F(4×4, 3×3)'s transforms have entries up to 8 (in `Aᵀ`) and 1/24 (in `G`), which
//! costs a few bits against direct summation; the differential tests check 1e-4 relative.
//! F(2×2)'s entries are 0, ±1 and ±1/2, close to direct's accuracy. The larger F(6×6, 3×3)
//! loses more and is not done.

use super::conv::{reduce, store_tile, Epilogue, Tile};
use super::ir::{Affine, BufferId, LoopExpr, Reg};
use super::pad::Padded;
pub(super) use super::winograd_transforms::fma;
use super::winograd_transforms::{add, at_row, bt_row, Constants};
pub use super::winograd_transforms::{TileSize, AT, AT2, BT, BT2, G, G2};
use super::{ConstSpec, KernelBuilder, Lowering};
use crate::graph::{ConvAttrs, NodeId, Shape};

/// F(4×4, 3×3)'s output pixels per tile side, the only size a training step differentiates.
pub const TILE: usize = TileSize::F4.m();
/// F(4×4, 3×3)'s input pixels per tile side, and the side of a transformed tile.
pub const ALPHA: usize = TileSize::F4.alpha();
/// F(4×4, 3×3)'s points of a transformed tile: one matrix product each.
pub(super) const POINTS: usize = TileSize::F4.points();
/// Output channels per packed weight panel and per register tile.
pub(super) const PANEL: usize = 8;
/// Tiles per register tile.
const TILE_ROWS: usize = 4;
/// Bytes of `V` rows one chunk of tiles may take, so that they stay in L2 while every weight
/// panel streams over them.
const CHUNK_BYTES: usize = 128 * 1024;
/// In a training step, products of convolutions with at most this many tiles per image loop
/// over the images inside each weight panel: with few tiles, one image's products use each
/// weight a handful of times, and streaming the 36 transformed panels per image bounds them.
const BATCHED_TILES: usize = 64;
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
    /// Every 3×3 stride-1 ungrouped convolution, however small, as F(4×4, 3×3): for tests.
    Always,
    /// Every 3×3 stride-1 ungrouped convolution as F(2×2, 3×3): for tests. As `Always` in a
    /// training step, which differentiates F(4×4) alone.
    AlwaysF2,
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

/// The buffers and sizes the three kernels of one convolution share.
struct Plan {
    size: TileSize,
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

/// Where an input transform reads and writes: `V[ξ][tile][in_stride]` of `tiles` tiles, or
/// `V[ξ][in_stride / 4][tile][4]` when `vector_major`.
struct Transform<'a> {
    size: TileSize,
    x: &'a Padded,
    transformed: BufferId,
    in_stride: usize,
    tiles: usize,
    vector_major: bool,
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
    let k = Constants::new(b, t.size);
    let (width, c, alpha) = (t.x.width, t.x.channels, t.size.alpha());
    for i in 0..alpha {
        // Row i of Bᵀ·d, one column at a time from the input rows it needs.
        let row: Vec<Reg> = (0..alpha)
            .map(|j| {
                bt_row(b, k.as_ref(), i, &mut |b, y| {
                    b.load(t.x.buffer, at.clone() + (y * width + j) * c, lanes)
                })
            })
            .collect();
        for l in 0..alpha {
            let value = bt_row(b, k.as_ref(), l, &mut |_, j| row[j]);
            let index = along(t.vector_major, t.tiles, t.in_stride, tile, c0)
                + (i * alpha + l) * t.tiles * t.in_stride;
            b.store(t.transformed, index, 4, value);
        }
    }
}

/// Where the vector of channels from `c0` (a multiple of 4) of `tile` is within one point of
/// a transformed buffer of `tiles` tiles and `stride` channels: `[tile][stride]`, or
/// `[stride / 4][tile][4]` when `vector_major`.
pub(super) fn along(
    vector_major: bool,
    tiles: usize,
    stride: usize,
    tile: &Affine,
    c0: &Affine,
) -> Affine {
    if vector_major {
        c0.clone() * tiles + tile.clone() * 4
    } else {
        tile.clone() * stride + c0.clone()
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
    let k = Constants::new(b, p.size);
    let (m, alpha) = (p.size.m(), p.size.alpha());
    let bias = p.bias.map(|bias| b.load(bias, c0.clone(), 4));
    for r in 0..rows {
        // Row r of Aᵀ·M, one column at a time.
        let row: Vec<Reg> = (0..alpha)
            .map(|j| {
                at_row(b, k.as_ref(), r, &mut |b, y| {
                    let index = p.m(Affine::constant(y * alpha + j), tile.clone(), c0.clone());
                    b.load(p.products, index, 4)
                })
            })
            .collect();
        let values: Vec<Vec<Reg>> = (0..cols)
            .map(|col| {
                let value = at_row(b, k.as_ref(), col, &mut |_, j| row[j]);
                vec![match bias {
                    Some(bias) => add(b, value, bias),
                    None => value,
                }]
            })
            .collect();
        let pixels = (0..cols)
            .map(|col| (ty.clone() * m + r, tx.clone() * m + col))
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

/// Calls `f` for the `m × m` tiles of row `ty` of tiles, `rows` high: `(ty, tx, rows, cols)`.
fn tiles_of_row(
    b: &mut KernelBuilder,
    (m, width): (usize, usize),
    ty: &Affine,
    rows: usize,
    f: &mut impl FnMut(&mut KernelBuilder, (&Affine, &Affine, usize, usize)),
) {
    b.repeat(width / m, |b, tx| f(b, (ty, &tx, rows, m)));
    if !width.is_multiple_of(m) {
        f(b, (ty, &Affine::constant(width / m), rows, width % m));
    }
}

/// Calls `f` for every F(4×4) tile of an output of `height × width`.
pub(super) fn all_tiles(
    b: &mut KernelBuilder,
    extent: (usize, usize),
    f: &mut impl FnMut(&mut KernelBuilder, (&Affine, &Affine, usize, usize)),
) {
    all_tiles_of(b, TILE, extent, f);
}

/// Calls `f` for every `m × m` tile of an output of `height × width`.
fn all_tiles_of(
    b: &mut KernelBuilder,
    m: usize,
    (height, width): (usize, usize),
    f: &mut impl FnMut(&mut KernelBuilder, (&Affine, &Affine, usize, usize)),
) {
    b.repeat(height / m, |b, ty| tiles_of_row(b, (m, width), &ty, m, f));
    if !height.is_multiple_of(m) {
        let ty = Affine::constant(height / m);
        tiles_of_row(b, (m, width), &ty, height % m, f);
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
        let m = self.winograd_size(in_c, out)?.m();
        Some((out.h.next_multiple_of(m), out.w.next_multiple_of(m)))
    }

    /// Emits the kernel `kind` that writes F(4×4)'s `V = Bᵀ d B` of `x` (read from its padded
    /// buffer in whole tiles, `tiles_y × tiles_x` of them) to `transformed`, `V[ξ][tile][in]`,
    /// or `V[ξ][in / 4][tile][4]` when `vector_major` ([`along`]), with the channels padded to
    /// a multiple of 4 (the padding lanes zero): the first kernel of a training step's weight
    /// gradient (`train::winograd`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn winograd_input_transform(
        &mut self,
        id: NodeId,
        kind: &str,
        x: &Padded,
        transformed: BufferId,
        tiling: (usize, usize),
        what: &str,
        vector_major: bool,
    ) {
        let size = TileSize::F4;
        self.winograd_input_transform_of(
            size,
            id,
            kind,
            x,
            transformed,
            tiling,
            what,
            vector_major,
        );
    }

    /// [`winograd_input_transform`](Self::winograd_input_transform) for tiles of `size`: the
    /// forward's first kernel.
    #[allow(clippy::too_many_arguments)]
    fn winograd_input_transform_of(
        &mut self,
        size: TileSize,
        id: NodeId,
        kind: &str,
        x: &Padded,
        transformed: BufferId,
        (tiles_y, tiles_x): (usize, usize),
        what: &str,
        vector_major: bool,
    ) {
        let cin = x.channels;
        let m = size.m();
        let t = Transform {
            size,
            x,
            transformed,
            in_stride: cin.next_multiple_of(4),
            tiles: tiles_y * tiles_x,
            vector_major,
        };
        let mut b = self.builder(
            id,
            kind,
            format!(
                "winograd {} input transform, {tiles_y}×{tiles_x} tiles: {what}",
                size.name()
            ),
        );
        let tile = |b: &mut KernelBuilder, ty: &Affine, tx: Affine, c0: &Affine, lanes: u8| {
            let tile = ty.clone() * tiles_x + tx.clone();
            let corner = (ty.clone() * (m * x.width) + tx * m) * cin;
            input_tile(b, &t, &(corner + c0.clone()), lanes, &tile, c0);
        };
        if vector_major {
            // A vector of channels over every tile: each point's stores then run along the
            // tiles, within a page or two. Tile by tile they were 16 bytes in each of
            // 36 × in / 4 lines, and a vector at a time along a row of tiles, the input lines
            // were read again for each vector: either order took 1.5–2× the forward order's
            // time (ResNet-18's layer1 and layer2).
            let all = |b: &mut KernelBuilder, c0: &Affine, lanes: u8| {
                b.repeat(tiles_y, |b, ty| {
                    b.repeat(tiles_x, |b, tx| tile(b, &ty, tx, c0, lanes));
                });
            };
            b.parallel(cin / 4, |b, v| all(b, &(v * 4), 4));
            if !cin.is_multiple_of(4) {
                all(&mut b, &Affine::constant(cin / 4 * 4), (cin % 4) as u8);
            }
        } else {
            b.parallel(tiles_y, |b, ty| {
                b.repeat(tiles_x, |b, tx| {
                    channel_vectors(b, cin, &mut |b, c0, lanes| {
                        tile(b, &ty, tx.clone(), &c0, lanes)
                    });
                });
            });
        }
        self.emit(b);
    }

    /// Whether a Winograd convolution of `tiles` tiles per image has its products (and, in
    /// training, its weight gradient's) loop over the images of a call ([`BATCHED_TILES`]).
    pub(super) fn winograd_loops_over_images(&self, tiles: usize) -> bool {
        self.batched && tiles <= BATCHED_TILES
    }

    /// Lowers a convolution chosen by `winograd_extent` to its three kernels, with the tile
    /// size chosen there; `flipped` as for `direct_conv` (node `id`'s input gradient, from
    /// `input` = its output's gradient).
    pub(super) fn winograd_conv(
        &mut self,
        id: NodeId,
        x: Padded,
        (input, out): (Shape, Shape),
        has_bias: bool,
        e: &Epilogue,
        flipped: bool,
    ) {
        // Chosen, so `Some`.
        let size = self.winograd_size(input.c, out).unwrap_or(TileSize::F4);
        let (m, points) = (size.m(), size.points());
        let (tiles_y, tiles_x) = (out.h.div_ceil(m), out.w.div_ceil(m));
        let tiles = tiles_y * tiles_x;
        let (cin, cout) = (input.c, out.c);
        let n_panels = cout.div_ceil(PANEL);
        let name = self.describe(id);
        let weights = self.add_const(
            format!("{name} winograd weights [{points}][panel][in][{PANEL}]"),
            points * n_panels * cin * PANEL,
            ConstSpec::WinogradWeight {
                node: id,
                size,
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
            format!("{name} winograd input [{points}][tile][in]"),
            points * tiles * in_stride,
        );
        let products = self.add_temp(
            format!("{name} winograd products [{points}][tile][out]"),
            points * tiles * out_stride,
        );
        let p = Plan {
            size,
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
            images: self.winograd_loops_over_images(tiles),
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
        let winoin = kind("winoin");
        self.winograd_input_transform_of(size, id, &winoin, &x, transformed, tiling, &what, false);

        let chunk = (CHUNK_BYTES / (4 * in_stride)).max(TILE_ROWS) / TILE_ROWS * TILE_ROWS;
        let mut b = self.builder(
            id,
            &kind("winomul"),
            format!(
                "winograd {} products, {points} × ({tiles} × {cin}) · ({cin} × {cout}): {what}",
                size.name()
            ),
        );
        b.parallel(points, |b, point| {
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
            format!(
                "winograd {} output transform and epilogue: {what}",
                size.name()
            ),
        );
        let (height, width) = (out.h, out.w);
        if height / m >= PARALLEL_TILE_ROWS {
            // Rows of whole tiles in parallel, all channels of a tile at once: `M` is read
            // a cache line at a time. The last, partial row of tiles is the serial part.
            b.parallel(height / m, |b, ty| {
                tiles_of_row(b, (m, width), &ty, m, &mut |b, at| {
                    channel_vectors(b, cout, &mut |b, c0, lanes| {
                        output_tile(b, &p, e, at, &c0, lanes);
                    });
                });
            });
            if !height.is_multiple_of(m) {
                let ty = Affine::constant(height / m);
                tiles_of_row(&mut b, (m, width), &ty, height % m, &mut |b, at| {
                    channel_vectors(b, cout, &mut |b, c0, lanes| {
                        output_tile(b, &p, e, at, &c0, lanes);
                    });
                });
            }
        } else {
            // Too few rows of tiles to share: vectors of channels in parallel instead.
            b.parallel(cout / 4, |b, v| {
                all_tiles_of(b, m, (height, width), &mut |b, at| {
                    output_tile(b, &p, e, at, &(v.clone() * 4), 4);
                });
            });
            if !cout.is_multiple_of(4) {
                let c0 = Affine::constant(cout / 4 * 4);
                all_tiles_of(&mut b, m, (height, width), &mut |b, at| {
                    output_tile(b, &p, e, at, &c0, (cout % 4) as u8);
                });
            }
        }
        self.emit(b);
    }
}
