//! Transposed convolution as a gather: each output pixel sums the taps whose input position
//! `(o + pad − k·d) / s` is a whole number inside the input, so every output is written once
//! by one thread and no scatter needs atomics or a zeroed buffer.
//!
//! Which taps those are depends only on the output's *phase* `o mod s`: outputs
//! `o = m·s + r` of phase `r` use the taps `k ≡ k_r (mod s / gcd(s, d))`, and as `m` grows by
//! one, each tap's input row does too. Taken from the largest such `k` down, tap `j` reads input
//! `m + c_r + j·d/gcd(s, d)`, an affine index with non-negative coefficients once the input
//! has a border of zeros as wide as the most negative `c_r`; the weights are packed flipped
//! (`[kh−1−ky][kw−1−kx][in][out]`) so that tap `j` is at `kr_r + j·s/gcd(s, d)`, affine too.
//! Phases with no tap (a stride larger than the kernel's extent) are the bias alone.
//!
//! One kernel per row phase, parallel over that phase's output rows; inside, each column
//! phase is a copy of the tile loops. A tile is up to 4 output pixels of a row × 8 output
//! channels (2 vectors), as in the direct conv (`conv.rs`); with one input and one output
//! channel per group (depthwise), the vectors run over the channels instead.

use super::conv::{accumulators_from, reduce};
use super::ir::{Affine, BufferId, LoopExpr, Reg};
use super::pad::{Padded, WindowRead};
use super::{ConstSpec, KernelBuilder, LowerError, Lowering};
use crate::graph::{ConvTransposeAttrs, NodeId, Padding};

/// Output pixels per tile.
const TILE_PIXELS: usize = 4;
/// Output channels per tile (two vectors).
const TILE_CHANNELS: usize = 8;

/// The outputs `first + m·stride` of one phase along an axis, and the taps they sum.
#[derive(Clone, Debug, PartialEq)]
struct Phase {
    first: usize,
    count: usize,
    n_taps: usize,
    /// The flipped kernel index (`k − 1 − ky`) of tap 0, and its step between taps.
    first_tap: usize,
    tap_step: usize,
    /// The padded input index tap 0 of output `m = 0` reads, and its step between taps.
    offset: usize,
    input_step: usize,
}

/// One axis of the gather: its phases, and the zero border its input needs before it
/// (`before`) and in all (`extent`, the padded length).
#[derive(Debug, PartialEq)]
struct AxisPlan {
    phases: Vec<Phase>,
    before: usize,
    extent: usize,
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The phases of an axis with input length `n`, output length `out`, and the layer's
/// kernel, stride, dilation and leading padding along it.
fn axis_plan(
    n: usize,
    out: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    pad: usize,
) -> AxisPlan {
    let g = gcd(stride, dilation);
    let (tap_step, input_step) = (stride / g, dilation / g);
    // (first, count, taps: (largest k, number), input index of tap 0 before the border)
    let mut raw = Vec::new();
    for first in 0..stride.min(out) {
        let count = (out - first).div_ceil(stride);
        let hits = |k: &usize| (first + pad) as i64 - (k * dilation) as i64;
        let valid: Vec<usize> = (0..kernel)
            .rev()
            .filter(|k| hits(k).rem_euclid(stride as i64) == 0)
            .collect();
        let start = valid
            .first()
            .map_or(0, |&k| hits(&k).div_euclid(stride as i64));
        raw.push((first, count, valid, start));
    }
    let before = raw
        .iter()
        .filter(|r| !r.2.is_empty())
        .map(|r| (-r.3).max(0) as usize)
        .max()
        .unwrap_or(0);
    let mut extent = n + before;
    let phases = raw
        .into_iter()
        .map(|(first, count, valid, start)| {
            let offset = (start + before as i64).max(0) as usize;
            if let Some(last) = valid.len().checked_sub(1) {
                extent = extent.max(offset + count - 1 + last * input_step + 1);
            }
            Phase {
                first,
                count,
                n_taps: valid.len(),
                first_tap: valid.first().map_or(0, |&k| kernel - 1 - k),
                tap_step,
                offset,
                input_step,
            }
        })
        .collect();
    AxisPlan {
        phases,
        before,
        extent,
    }
}

/// What every tile of one layer shares.
struct Plan {
    x: Padded,
    weights: BufferId,
    bias: Option<BufferId>,
    out: BufferId,
    out_origin: usize,
    out_stride: usize,
    out_width: usize,
    kernel_w: usize,
    stride: [usize; 2],
    in_c: usize,
    in_g: usize,
    out_g: usize,
    /// Each group's outputs in the packed weights and bias (1 for depthwise).
    out_padded: usize,
    depthwise: bool,
}

/// A tile: `pixels` consecutive outputs `m_x0 + p` of row `m_y` in phases `(py, px)`,
/// channels `c0 + [0, lanes)` of group `g` (for depthwise, `g` is 0 and `c0` the channel).
struct Tile<'a> {
    py: &'a Phase,
    px: &'a Phase,
    m_y: Affine,
    m_x0: Affine,
    pixels: usize,
    g: Affine,
    c0: Affine,
    lanes: usize,
}

impl Plan {
    fn tile(&self, b: &mut KernelBuilder, t: &Tile) {
        let vectors = t.lanes.div_ceil(4);
        let lanes = |v: usize| (t.lanes - 4 * v).min(4) as u8;
        // Packed outputs are padded to whole vectors, except a depthwise layer's channels.
        let const_lanes = |v: usize| if self.depthwise { lanes(v) } else { 4 };
        let biases: Vec<Reg> = (0..vectors)
            .map(|v| match self.bias {
                Some(bias) => {
                    let index = t.g.clone() * self.out_padded + t.c0.clone() + 4 * v;
                    b.load(bias, index, const_lanes(v))
                }
                None => b.constant(0.0),
            })
            .collect();
        let acc = accumulators_from(b, &biases, t.pixels);
        let (c, in_g) = (self.in_c, self.in_g);
        b.repeat(t.py.n_taps, |b, jy| {
            b.repeat(t.px.n_taps, |b, jx| {
                let tap = (jy.clone() * t.py.tap_step + t.py.first_tap) * self.kernel_w
                    + jx.clone() * t.px.tap_step
                    + t.px.first_tap;
                let row = t.m_y.clone() + jy * t.py.input_step + t.py.offset;
                let column = |p: usize| t.m_x0.clone() + jx.clone() * t.px.input_step + p;
                let x_pixel = |p: usize| {
                    (row.clone() * self.x.width + column(p) + t.px.offset) * self.x.channels
                };
                if self.depthwise {
                    let w: Vec<Reg> = (0..vectors)
                        .map(|v| {
                            b.load(
                                self.weights,
                                tap.clone() * c + t.c0.clone() + 4 * v,
                                lanes(v),
                            )
                        })
                        .collect();
                    for (p, row) in acc.iter().enumerate() {
                        for (v, &a) in row.iter().enumerate() {
                            let xs =
                                b.load(self.x.buffer, x_pixel(p) + t.c0.clone() + 4 * v, lanes(v));
                            b.set(a, LoopExpr::Fma(xs, w[v], a));
                        }
                    }
                    return;
                }
                reduce(b, in_g, &mut |b, k| {
                    let channel = t.g.clone() * in_g + k;
                    let w_start = (tap.clone() * c + channel.clone()) * self.out_padded;
                    let w: Vec<Reg> = (0..vectors)
                        .map(|v| b.load(self.weights, w_start.clone() + t.c0.clone() + 4 * v, 4))
                        .collect();
                    for (p, row) in acc.iter().enumerate() {
                        let xs = b.splat(self.x.buffer, x_pixel(p) + channel.clone());
                        for (v, &a) in row.iter().enumerate() {
                            b.set(a, LoopExpr::Fma(xs, w[v], a));
                        }
                    }
                });
            });
        });
        let [sh, sw] = self.stride;
        for (p, row) in acc.iter().enumerate() {
            let oy = t.m_y.clone() * sh + t.py.first;
            let ox = (t.m_x0.clone() + p) * sw + t.px.first;
            let pixel = oy * self.out_width + ox;
            for (v, &value) in row.iter().enumerate() {
                let channel = t.g.clone() * self.out_g + t.c0.clone() + 4 * v;
                let index = pixel.clone() * self.out_stride + channel + self.out_origin;
                b.store(self.out, index, lanes(v), value);
            }
        }
    }

    /// The tiles of row `m_y` of row phase `py` in column phase `px`.
    fn row(&self, b: &mut KernelBuilder, py: &Phase, px: &Phase, m_y: Affine, groups: usize) {
        let channels = if self.depthwise {
            self.in_c
        } else {
            self.out_g
        };
        let groups = if self.depthwise { 1 } else { groups };
        b.repeat(groups, |b, g| {
            blocks(b, channels, TILE_CHANNELS, &mut |b, c0, lanes| {
                blocks(b, px.count, TILE_PIXELS, &mut |b, m_x0, pixels| {
                    let tile = Tile {
                        py,
                        px,
                        m_y: m_y.clone(),
                        m_x0,
                        pixels,
                        g: g.clone(),
                        c0: c0.clone(),
                        lanes,
                    };
                    self.tile(b, &tile);
                });
            });
        });
    }
}

/// Calls `f(start, len)` for the blocks of `block` of `0..n`: a loop over the whole ones,
/// then one for the rest.
fn blocks(
    b: &mut KernelBuilder,
    n: usize,
    block: usize,
    f: &mut impl FnMut(&mut KernelBuilder, Affine, usize),
) {
    b.repeat(n / block, |b, i| f(b, i * block, block));
    if !n.is_multiple_of(block) {
        f(b, Affine::constant(n - n % block), n % block);
    }
}

impl Lowering<'_> {
    pub(super) fn conv_transpose(
        &mut self,
        id: NodeId,
        attrs: &ConvTransposeAttrs,
    ) -> Result<(), LowerError> {
        let x = self.plain_arg(id, 0)?;
        let (input, out) = (x.shape, self.graph.shape(id));
        let groups = attrs.groups.max(1);
        if !input.c.is_multiple_of(groups)
            || !attrs.filters.is_multiple_of(groups)
            || out.c != attrs.filters
        {
            return Err(self.malformed(id, "the groups do not divide the channels"));
        }
        let [kh, kw] = attrs.kernel;
        let [sh, sw] = attrs.stride;
        let rows = axis_plan(input.h, out.h, kh, sh, attrs.dilation[0], attrs.pad.top);
        let cols = axis_plan(input.w, out.w, kw, sw, attrs.dilation[1], attrs.pad.left);
        // The zero border as a window read of 1×1 windows over the padded extent.
        let read = WindowRead {
            kernel: [1, 1],
            stride: [1, 1],
            dilation: [1, 1],
            pad: Padding {
                top: rows.before,
                left: cols.before,
                ..Padding::default()
            },
            out: (rows.extent, cols.extent),
            fill: 0.0,
        };
        let padded = self.pad_input(id, x, &read);
        let (in_g, out_g) = (input.c / groups, attrs.filters / groups);
        let depthwise = in_g == 1 && out_g == 1;
        let out_padded = if depthwise {
            1
        } else {
            out_g.next_multiple_of(4)
        };
        let name = self.describe(id);
        let weights = self.add_const(
            format!("{name} weights [flipped ky][flipped kx][in][out:{out_padded}]"),
            kh * kw * input.c * out_padded,
            ConstSpec::ConvTransposeWeight {
                node: id,
                out_padded,
            },
        );
        let bias = attrs.bias.then(|| {
            self.add_const(
                format!("{name} bias"),
                groups * out_padded,
                ConstSpec::ConvBias {
                    node: id,
                    group_size: out_g,
                    group_stride: out_padded,
                },
            )
        });
        let target = self.target(id);
        let plan = Plan {
            x: padded,
            weights,
            bias,
            out: target.buffer,
            out_origin: target.origin,
            out_stride: target.stride,
            out_width: out.w,
            kernel_w: kw,
            stride: attrs.stride,
            in_c: input.c,
            in_g,
            out_g,
            out_padded,
            depthwise,
        };
        for py in &rows.phases {
            let mut b = self.builder(
                id,
                "convt",
                format!(
                    "conv_transpose {kh}×{kw} stride {sh}×{sw} {}→{} groups {groups}, output rows {} + {sh}·i: {input} → {out}",
                    input.c, out.c, py.first
                ),
            );
            b.parallel(py.count, |b, m_y| {
                for px in &cols.phases {
                    plan.row(b, py, px, m_y.clone(), groups);
                }
            });
            self.emit(b);
        }
        self.set_target_value(id, target);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stride 2, kernel 3, pad 1 on 4 inputs gives 7 outputs: even outputs use tap 1 at
    /// input `m`, odd ones taps 2 and 0 at inputs `m` and `m + 1` (PyTorch's
    /// `o = i·2 + k − 1`).
    #[test]
    fn phases_of_a_stride_two_kernel_three() {
        let plan = axis_plan(4, 7, 3, 2, 1, 1);
        assert_eq!(plan.before, 0);
        assert_eq!(plan.phases.len(), 2);
        let even = &plan.phases[0];
        assert_eq!((even.count, even.n_taps, even.first_tap), (4, 1, 1));
        assert_eq!(even.offset, 0);
        let odd = &plan.phases[1];
        assert_eq!((odd.count, odd.n_taps, odd.first_tap), (3, 2, 0));
        assert_eq!((odd.offset, odd.input_step, odd.tap_step), (0, 1, 2));
        // Output 5 (m = 2) reads inputs 2 (tap 2) and 3 (tap 0): the extent is the input.
        assert_eq!(plan.extent, 4);
    }

    /// Stride 1, kernel 3, no padding: the output is the input with a border of 2, read as
    /// a full correlation with the flipped kernel.
    #[test]
    fn stride_one_needs_a_border_of_kernel_minus_one() {
        let plan = axis_plan(5, 7, 3, 1, 1, 0);
        assert_eq!(plan.before, 2);
        assert_eq!(plan.extent, 9);
        assert_eq!(plan.phases[0].n_taps, 3);
    }

    /// A stride beyond the kernel's extent leaves phases without taps.
    #[test]
    fn stride_beyond_the_kernel_leaves_bias_only_phases() {
        let plan = axis_plan(2, 6, 2, 4, 1, 0);
        let taps: Vec<usize> = plan.phases.iter().map(|p| p.n_taps).collect();
        assert_eq!(taps, vec![1, 1, 0, 0]);
    }
}
