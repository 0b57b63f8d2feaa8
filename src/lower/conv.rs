//! Convolution: a register-blocked direct kernel for ordinary and grouped convolutions, a
//! kernel vectorized over channels for depthwise ones, and the padding copy both read from.
//!
//! The direct kernel computes a tile of 4 output pixels × 8 output channels in 8 vector
//! accumulators: per reduction step it loads 2 weight vectors and broadcasts 4 input values,
//! for 8 FMAs. This is the 4×8 shape docs/CRANELIFT.md §6.1 measured fastest (89–92 % of the
//! f32x4 peak); the reduction is unrolled by 4. When there is one group and no dilation, a window
//! row's taps `(kx, in)` are contiguous in both the input and the packed weights, so they
//! form one reduction of length `kw·in` — fewer, longer loops. Tiles at the right edge
//! (fewer than 4 pixels) and at the last channels (fewer than 8) are separate, smaller
//! copies of the same tile, with partial stores for a channel count not a multiple of 4.
//!
//! The epilogue runs on the accumulators before the single store: bias (the accumulators
//! start from it), the residual input of a fused residual conv, then the activation — the
//! order of the unfused `conv → + → relu`.

use super::ir::{Affine, BinaryOp, BufferId, LoopExpr, Reg};
use super::pad::Padded;
use super::program::Orientation;
use super::{ConstSpec, KernelBuilder, LowerError, Lowering, NodeBuffer};
use crate::graph::{Activation, ConvAttrs, NodeId, Shape};

/// Output pixels per tile.
const TILE_PIXELS: usize = 4;
/// Output channel vectors per tile.
const TILE_VECTORS: usize = 2;
/// Output channels per packed weight panel: one tile's worth.
const PANEL: usize = 4 * TILE_VECTORS;
/// The most output pixels a convolution may have for its tiles to run over the whole image
/// as one run of pixels, crossing rows, rather than row by row. LeNet-5's second conv
/// (10×10 pixels) took 0.92× the time so (perf samples, alternated runs): rows of 4 + 4 + 2
/// left a tile of half the accumulators, bound by the FMA latency.
const FLAT_TILING_MAX: usize = 100;
/// Reduction steps per loop iteration.
const UNROLL: usize = 4;
/// Pixels per part of a 1×1 convolution seen as one row (`direct_conv`), split over threads:
/// four tiles, or one for images of fewer than [`MIN_RUNS`] such runs.
const RUN_PIXELS: usize = 4 * TILE_PIXELS;
const MIN_RUNS: usize = 8;

/// Everything a tile's epilogue needs. The output's pixel `(y, x)` starts at element
/// `out_origin + (y·out_pitch + x)·out_stride` (a padded buffer's interior, a slice of a
/// concat's buffer, or a plain tensor with origin 0, pitch `out_width` and stride
/// `out_channels`); the residual is a plain tensor.
pub(super) struct Epilogue {
    pub out: BufferId,
    pub out_origin: usize,
    pub out_pitch: usize,
    pub out_stride: usize,
    pub out_width: usize,
    pub out_channels: usize,
    pub residual: Option<BufferId>,
    pub activation: Option<Activation>,
}

/// A tile: output pixels at `(row, column)` positions (usually consecutive in a row), and
/// `vectors` channel vectors starting at channel `c0` (relative to the group), the last
/// holding `last_lanes` channels.
#[derive(Clone)]
pub(super) struct Tile {
    pub pixels: Vec<(Affine, Affine)>,
    pub c0: Affine,
    pub vectors: usize,
    pub last_lanes: u8,
}

/// `n` consecutive pixels of row `oy` from column `ox0`.
fn row_pixels(oy: &Affine, ox0: &Affine, n: usize) -> Vec<(Affine, Affine)> {
    (0..n).map(|p| (oy.clone(), ox0.clone() + p)).collect()
}

impl Tile {
    fn lanes(&self, v: usize) -> u8 {
        if v + 1 == self.vectors {
            self.last_lanes
        } else {
            4
        }
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Calls `tile` for the channel blocks of `channels`: blocks of 8, then one of the rest.
fn channel_blocks(
    b: &mut KernelBuilder,
    channels: usize,
    tile: &mut impl FnMut(&mut KernelBuilder, Affine, usize, u8),
) {
    let block = 4 * TILE_VECTORS;
    b.repeat(channels / block, |b, i| tile(b, i * block, TILE_VECTORS, 4));
    let rest = channels % block;
    if rest > 0 {
        let vectors = rest.div_ceil(4);
        let last = rest - 4 * (vectors - 1);
        tile(b, Affine::constant(channels - rest), vectors, last as u8);
    }
}

/// Calls `tile` for the pixel blocks of a row of `width`: blocks of 4, then one of the rest.
fn pixel_blocks(
    b: &mut KernelBuilder,
    width: usize,
    tile: &mut impl FnMut(&mut KernelBuilder, Affine, usize),
) {
    pixel_run(b, Affine::default(), width, tile);
}

/// Calls `tile` for the pixel blocks of the `len` pixels of a row from column `start`.
fn pixel_run(
    b: &mut KernelBuilder,
    start: Affine,
    len: usize,
    tile: &mut impl FnMut(&mut KernelBuilder, Affine, usize),
) {
    b.repeat(len / TILE_PIXELS, |b, i| {
        tile(b, start.clone() + i * TILE_PIXELS, TILE_PIXELS)
    });
    let rest = len % TILE_PIXELS;
    if rest > 0 {
        tile(b, start + (len - rest), rest);
    }
}

/// `pixels` rows of accumulators, each starting as a copy of `biases` (one per vector).
pub(super) fn accumulators_from(
    b: &mut KernelBuilder,
    biases: &[Reg],
    pixels: usize,
) -> Vec<Vec<Reg>> {
    (0..pixels)
        .map(|_| {
            biases
                .iter()
                .map(|&r| b.assign(LoopExpr::Copy(r)))
                .collect()
        })
        .collect()
}

/// A reduction of `len` steps, unrolled by [`UNROLL`].
pub(super) fn reduce(
    b: &mut KernelBuilder,
    len: usize,
    step: &mut impl FnMut(&mut KernelBuilder, Affine),
) {
    b.repeat(len / UNROLL, |b, i| {
        for u in 0..UNROLL {
            step(b, i.clone() * UNROLL + u);
        }
    });
    for k in len / UNROLL * UNROLL..len {
        step(b, Affine::constant(k));
    }
}

/// Stores the accumulators `acc[p][v]` of a tile after the epilogue.
pub(super) fn store_tile(
    b: &mut KernelBuilder,
    tile: &Tile,
    group_c0: Affine,
    acc: &[Vec<Reg>],
    e: &Epilogue,
) {
    for ((oy, ox), row) in tile.pixels.iter().zip(acc) {
        for (v, &value) in row.iter().enumerate() {
            let channel = group_c0.clone() + tile.c0.clone() + 4 * v;
            let lanes = tile.lanes(v);
            let mut value = value;
            let pixel = oy.clone() * e.out_pitch + ox.clone();
            let index = pixel * e.out_stride + channel.clone() + e.out_origin;
            if let Some(residual) = e.residual {
                // A result added to what its output already holds (an input gradient with
                // other contributions, possibly one phase's strided pixels of it) reads the
                // sum where it writes it; any other residual is a plain tensor.
                let skip = if residual == e.out {
                    b.load(residual, index.clone(), lanes)
                } else {
                    let pixel = oy.clone() * e.out_width + ox.clone();
                    b.load(residual, pixel * e.out_channels + channel, lanes)
                };
                value = b.binary(BinaryOp::Add, value, skip);
            }
            let value = b.activate(value, e.activation);
            b.store(e.out, index, lanes, value);
        }
    }
}

/// What a direct convolution's tiles share.
struct ConvPlan {
    x: Padded,
    weights: BufferId,
    bias: Option<BufferId>,
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    in_g: usize,
    out_g: usize,
    n_panels: usize,
    merged: bool,
}

/// One tile of a direct convolution: `pixels` output pixels × the tile's channel vectors, in
/// group `g`, from weight panel `panel` (packed `[g][panel][ky][kx][in][8]`).
fn conv_tile(
    b: &mut KernelBuilder,
    plan: &ConvPlan,
    e: &Epilogue,
    tile: &Tile,
    g: Affine,
    panel: Affine,
) {
    let [kh, kw] = plan.kernel;
    let [sh, sw] = plan.stride;
    let [dh, dw] = plan.dilation;
    let (in_g, c) = (plan.in_g, plan.x.channels);
    let taps = kh * kw * in_g;
    let panel_start = (g.clone() * plan.n_panels + panel) * (taps * PANEL);
    let biases: Vec<Reg> = (0..tile.vectors)
        .map(|v| match plan.bias {
            Some(bias) => {
                let index = g.clone() * (plan.n_panels * PANEL) + tile.c0.clone() + 4 * v;
                b.load(bias, index, 4)
            }
            None => b.constant(0.0),
        })
        .collect();
    let acc = accumulators_from(b, &biases, tile.pixels.len());
    // One reduction step: the weights of tap `tap`, the inputs at `x_index(p)`.
    let step = |b: &mut KernelBuilder, x_index: &dyn Fn(usize) -> Affine, tap: Affine| {
        let w: Vec<Reg> = (0..tile.vectors)
            .map(|v| {
                b.load(
                    plan.weights,
                    panel_start.clone() + tap.clone() * PANEL + 4 * v,
                    4,
                )
            })
            .collect();
        for (p, row) in acc.iter().enumerate() {
            let xs = b.splat(plan.x.buffer, x_index(p));
            for (v, &a) in row.iter().enumerate() {
                b.set(a, LoopExpr::Fma(xs, w[v], a));
            }
        }
    };
    b.repeat(kh, |b, ky| {
        let pixel = |p: usize, kx: Affine| {
            let (oy, ox) = &tile.pixels[p];
            let row = oy.clone() * sh + ky.clone() * dh;
            (row * plan.x.width + ox.clone() * sw + kx) * c + plan.x.origin
        };
        if plan.merged {
            reduce(b, kw * in_g, &mut |b, k| {
                let x_index = |p: usize| pixel(p, Affine::default()) + k.clone();
                step(b, &x_index, ky.clone() * (kw * in_g) + k.clone());
            });
        } else {
            b.repeat(kw, |b, kx| {
                reduce(b, in_g, &mut |b, k| {
                    let x_index =
                        |p: usize| pixel(p, kx.clone() * dw) + g.clone() * in_g + k.clone();
                    step(
                        b,
                        &x_index,
                        (ky.clone() * kw + kx.clone()) * in_g + k.clone(),
                    );
                });
            });
        }
    });
    store_tile(b, tile, g * plan.out_g, &acc, e);
}

impl Lowering<'_> {
    pub(super) fn conv(&mut self, id: NodeId, attrs: &ConvAttrs) -> Result<(), LowerError> {
        let x = self.arg(id, 0)?;
        let expected_inputs = if attrs.residual { 2 } else { 1 };
        if self.graph.nodes[id].inputs.len() != expected_inputs {
            return Err(self.malformed(id, "a conv takes one input, and a residual if fused"));
        }
        let residual = if attrs.residual {
            Some(self.arg(id, 1)?)
        } else {
            None
        };
        let input = x.shape;
        let out = self.graph.shape(id);
        let groups = attrs.groups.max(1);
        if !input.c.is_multiple_of(groups)
            || !attrs.filters.is_multiple_of(groups)
            || out.c != attrs.filters
        {
            return Err(self.malformed(id, "the groups do not divide the channels"));
        }
        if residual.is_some_and(|r| r.shape.numel() != out.numel()) {
            return Err(self.malformed(id, "the residual input's shape differs"));
        }
        let read = self
            .window_read(id)
            .ok_or_else(|| self.malformed(id, "not a window op"))?;
        let padded = self.pad_input(id, x, &read);
        self.window_inputs[id] = Some((padded.buffer, padded.width));
        let (result, layout, origin, stride) = if self.slices[id].is_some() {
            let target = self.target(id);
            (target.buffer, None, target.origin, target.stride)
        } else {
            let (result, layout) = self.conv_result(id);
            (result, layout, layout.map_or(0, |l| l.origin(out.c)), out.c)
        };
        let epilogue = Epilogue {
            out: result,
            out_origin: origin,
            out_pitch: layout.map_or(out.w, |l| l.width),
            out_stride: stride,
            out_width: out.w,
            out_channels: out.c,
            residual: residual.map(|r| r.buffer),
            activation: attrs.activation,
        };
        let has_bias = attrs.bias || attrs.bias_values.is_some();
        if groups > 1 && groups == input.c && attrs.filters == input.c {
            self.depthwise(id, attrs, padded, out, has_bias, &epilogue);
        } else if self.winograd_extent(id, attrs).is_some() {
            self.winograd_conv(id, padded, (input, out), has_bias, &epilogue, false);
        } else if super::conv_pairs::applies(attrs, (input, out), &padded, &epilogue) {
            self.paired_conv(id, attrs, padded, (input, out), has_bias, &epilogue);
        } else {
            let shapes = (input, out);
            self.direct_conv(
                id,
                attrs,
                padded,
                shapes,
                has_bias,
                &epilogue,
                Orientation::Forward,
            );
        }
        self.values[id] = Some(NodeBuffer {
            buffer: result,
            shape: out,
            hwc: None,
            padded: layout,
        });
        Ok(())
    }

    /// A direct convolution of `x` (`input`, padded as the kernel reads it) to `out`.
    /// `orientation` other than `Forward`: a convolution computing node `id`'s input gradient
    /// in training, whose `attrs` are then those of that transposed convolution (or of one
    /// phase of it: see [`Orientation`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn direct_conv(
        &mut self,
        id: NodeId,
        attrs: &ConvAttrs,
        x: Padded,
        (input, out): (Shape, Shape),
        has_bias: bool,
        e: &Epilogue,
        orientation: Orientation,
    ) {
        let flipped = orientation != Orientation::Forward;
        let groups = attrs.groups.max(1);
        let [kh, kw] = attrs.kernel;
        let in_g = input.c / groups;
        let out_g = attrs.filters / groups;
        let n_panels = out_g.div_ceil(PANEL);
        let name = self.describe(id);
        let weights = self.add_const(
            format!("{name} weights [g][panel][ky][kx][in][{PANEL}]"),
            groups * n_panels * kh * kw * in_g * PANEL,
            ConstSpec::ConvWeight {
                node: id,
                panel: PANEL,
                orientation,
            },
        );
        let bias = has_bias.then(|| {
            self.add_const(
                format!("{name} bias"),
                groups * n_panels * PANEL,
                ConstSpec::ConvBias {
                    node: id,
                    group_size: out_g,
                    group_stride: n_panels * PANEL,
                },
            )
        });
        let plan = ConvPlan {
            x,
            weights,
            bias,
            kernel: attrs.kernel,
            stride: attrs.stride,
            dilation: attrs.dilation,
            in_g,
            out_g,
            n_panels,
            // One reduction over (kx, in) when those taps are contiguous in memory.
            merged: groups == 1 && attrs.dilation[1] == 1,
        };
        let [sh, sw] = attrs.stride;
        let mut b = self.builder(
            id,
            if flipped { "input_grad" } else { "conv" },
            format!(
                "{}conv {kh}×{kw} stride {sh}×{sw} {}→{} groups {groups}: {}×{}×{} → {out}",
                if flipped { "∂input: transposed " } else { "" },
                input.c,
                out.c,
                input.h,
                input.w,
                input.c
            ),
        );
        let full_panels = out_g / PANEL;
        let rest = out_g % PANEL;
        let tail = (rest > 0).then(|| {
            let vectors = rest.div_ceil(4);
            (vectors, (rest - 4 * (vectors - 1)) as u8)
        });
        // A 1×1 stride-1 convolution that reads its input unpadded and writes rows of its own
        // width computes the same indices if the image is one row of h·w pixels: then no tile
        // is cut short at the end of a row (14 = 4 + 4 + 4 + 2 and 7 = 4 + 3 wasted an eighth
        // to a quarter of the tiles' work; ResNet-50's layer3 1×1s ran 0.92–0.93× the time in
        // paired runs). Rows that are whole tiles keep their loop, which reuses each weight
        // panel over a whole row.
        let one_row = !out.w.is_multiple_of(TILE_PIXELS)
            && kh == 1
            && kw == 1
            && sh == 1
            && sw == 1
            && plan.x.width == out.w
            && plan.x.origin == 0
            && e.out_pitch == out.w
            && out.h > 1;
        let (rows, width) = if one_row {
            (1, out.h * out.w)
        } else {
            (out.h, out.w)
        };
        let run = |b: &mut KernelBuilder,
                   (oy, start, len): (Affine, Affine, usize),
                   g: Affine,
                   panel: Affine,
                   shape: (usize, u8)| {
            pixel_run(b, start, len, &mut |b, ox0, pixels| {
                let tile = Tile {
                    pixels: row_pixels(&oy, &ox0, pixels),
                    c0: panel.clone() * PANEL,
                    vectors: shape.0,
                    last_lanes: shape.1,
                };
                conv_tile(b, &plan, e, &tile, g.clone(), panel.clone());
            });
        };
        let row =
            |b: &mut KernelBuilder, oy: Affine, g: Affine, panel: Affine, shape: (usize, u8)| {
                pixel_blocks(b, width, &mut |b, ox0, pixels| {
                    let tile = Tile {
                        pixels: row_pixels(&oy, &ox0, pixels),
                        c0: panel.clone() * PANEL,
                        vectors: shape.0,
                        last_lanes: shape.1,
                    };
                    conv_tile(b, &plan, e, &tile, g.clone(), panel.clone());
                });
            };
        // Weights larger than the input are better streamed once, panel by panel, each used
        // for the whole image; otherwise rows go outside and the (small) weights stay cached.
        let weight_bytes = kh * kw * input.c * out.c;
        let input_bytes = plan.x.width * plan.x.channels * ((out.h - 1) * sh + kh);
        // (Only for whole panels: the verifier proves panels write disjoint channels when the
        // channel count is a multiple of the panel.)
        if groups == 1 && full_panels > 1 && rest == 0 && weight_bytes > input_bytes {
            let zero = Affine::default;
            // Rows not a multiple of the tile waste a part of the tiles at each row's end;
            // small images are tiled as one run of pixels instead, written out tile by tile.
            let flat =
                !one_row && !out.w.is_multiple_of(TILE_PIXELS) && out.h * out.w <= FLAT_TILING_MAX;
            b.parallel(full_panels, |b, panel| {
                if flat {
                    // The tiles repeat every `period` rows (a whole number of tiles): a loop
                    // over such groups of rows, then the rows left, written out.
                    let period = TILE_PIXELS / gcd(out.w, TILE_PIXELS);
                    let tiles = |b: &mut KernelBuilder, pixels: &[(Affine, Affine)]| {
                        for pixels in pixels.chunks(TILE_PIXELS) {
                            let tile = Tile {
                                pixels: pixels.to_vec(),
                                c0: panel.clone() * PANEL,
                                vectors: TILE_VECTORS,
                                last_lanes: 4,
                            };
                            conv_tile(b, &plan, e, &tile, zero(), panel.clone());
                        }
                    };
                    let rows_at = |first: Affine, rows: usize| -> Vec<(Affine, Affine)> {
                        (0..rows * out.w)
                            .map(|q| (first.clone() + q / out.w, Affine::constant(q % out.w)))
                            .collect()
                    };
                    b.repeat(out.h / period, |b, i| {
                        tiles(b, &rows_at(i * period, period))
                    });
                    let done = out.h / period * period;
                    tiles(b, &rows_at(Affine::constant(done), out.h - done));
                } else {
                    b.repeat(rows, |b, oy| row(b, oy, zero(), panel.clone(), (2, 4)));
                }
            });
        } else if one_row {
            // Runs of pixels are the parts; the pixels left over, the serial part.
            let run_pixels = if width >= MIN_RUNS * RUN_PIXELS {
                RUN_PIXELS
            } else {
                TILE_PIXELS
            };
            let all_panels = |b: &mut KernelBuilder, start: Affine, len: usize| {
                b.repeat(groups, |b, g| {
                    b.repeat(full_panels, |b, panel| {
                        run(
                            b,
                            (Affine::default(), start.clone(), len),
                            g.clone(),
                            panel,
                            (2, 4),
                        )
                    });
                    if let Some(shape) = tail {
                        let at = (Affine::default(), start.clone(), len);
                        run(b, at, g, Affine::constant(full_panels), shape);
                    }
                });
            };
            b.parallel(width / run_pixels, |b, i| {
                all_panels(b, i * run_pixels, run_pixels)
            });
            let rest = width % run_pixels;
            if rest > 0 {
                all_panels(&mut b, Affine::constant(width - rest), rest);
            }
        } else {
            b.parallel(out.h, |b, oy| {
                b.repeat(groups, |b, g| {
                    b.repeat(full_panels, |b, panel| {
                        row(b, oy.clone(), g.clone(), panel, (2, 4))
                    });
                    if let Some(shape) = tail {
                        row(b, oy.clone(), g, Affine::constant(full_panels), shape);
                    }
                });
            });
        }
        self.emit(b);
    }

    fn depthwise(
        &mut self,
        id: NodeId,
        attrs: &ConvAttrs,
        x: Padded,
        out: Shape,
        has_bias: bool,
        e: &Epilogue,
    ) {
        let [kh, kw] = attrs.kernel;
        let [sh, sw] = attrs.stride;
        let [dh, dw] = attrs.dilation;
        let c = out.c;
        let cp = c.next_multiple_of(4);
        let name = self.describe(id);
        let weights = self.add_const(
            format!("{name} weights [ky][kx][c:{cp}]"),
            kh * kw * cp,
            ConstSpec::DepthwiseWeight {
                node: id,
                channels_padded: cp,
            },
        );
        let bias = has_bias.then(|| {
            self.add_const(
                format!("{name} bias"),
                cp,
                ConstSpec::ConvBias {
                    node: id,
                    group_size: c,
                    group_stride: cp,
                },
            )
        });
        let mut b = self.builder(
            id,
            "dwconv",
            format!("depthwise conv {kh}×{kw} stride {sh}×{sw} on {c} channels → {out}"),
        );
        b.parallel(out.h, |b, oy| {
            pixel_blocks(b, out.w, &mut |b, ox0, pixels| {
                channel_blocks(b, c, &mut |b, c0, vectors, last_lanes| {
                    let tile = Tile {
                        pixels: row_pixels(&oy, &ox0, pixels),
                        c0: c0.clone(),
                        vectors,
                        last_lanes,
                    };
                    let biases: Vec<Reg> = (0..vectors)
                        .map(|v| match bias {
                            Some(bias) => b.load(bias, c0.clone() + 4 * v, 4),
                            None => b.constant(0.0),
                        })
                        .collect();
                    let acc = accumulators_from(b, &biases, pixels);
                    b.repeat(kh, |b, ky| {
                        b.repeat(kw, |b, kx| {
                            let tap = (ky.clone() * kw + kx.clone()) * cp;
                            let w: Vec<Reg> = (0..vectors)
                                .map(|v| b.load(weights, tap.clone() + c0.clone() + 4 * v, 4))
                                .collect();
                            for (p, row) in acc.iter().enumerate() {
                                let pixel = (oy.clone() * sh + ky.clone() * dh) * x.width
                                    + (ox0.clone() + p) * sw
                                    + kx.clone() * dw;
                                for (v, &a) in row.iter().enumerate() {
                                    let index = pixel.clone() * c + c0.clone() + 4 * v;
                                    let xs = b.load(x.buffer, index, tile.lanes(v));
                                    b.set(a, LoopExpr::Fma(xs, w[v], a));
                                }
                            }
                        });
                    });
                    store_tile(b, &tile, Affine::default(), &acc, e);
                });
            });
        });
        self.emit(b);
    }
}
