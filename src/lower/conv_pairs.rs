//! A convolution of one input channel to 2, 6 or 10 output channels (LeNet-5's first layer,
//! 1 → 6), vectorized over pairs of pixels rather than over channels alone.
//!
//! The direct kernel puts each pixel's channels in vectors of 4, so 6 channels fill two
//! vectors of which a quarter of the lanes compute nothing. Two neighbouring pixels' channels
//! are 12 consecutive elements of the output, three whole vectors: `[p₀c₀‥p₀c₃]`,
//! `[p₀c₄ p₀c₅ p₁c₀ p₁c₁]`, `[p₁c₂‥p₁c₅]`. Each vector's lanes all read the same input
//! value (a broadcast) but the middle one's, which reads `[a a b b]` for the two pixels'
//! inputs `a`, `b`. A small kernel first writes the input with every element doubled, where
//! a vector load at element `2q` is exactly `[x_q x_q x_{q+1} x_{q+1}]`; the weights and bias
//! are packed twice over (`[w₀‥w₅ w₀‥w₅]` per tap), so the three vectors' weights are loads
//! at 0, 4 and 8. The pairs' stores are whole vectors, with no partial store.
//!
//! Measured on LeNet-5 (perf samples, loaded 2-vCPU host): its first conv 5.5 → 4.9 µs plus
//! 0.2 µs for the doubling, the network 0.98× in alternated runs. A quarter fewer FMAs gain
//! less than a quarter because every FMA now has its own input load (a broadcast or the
//! doubled pair) where the direct kernel shares one broadcast between two.

use super::conv::{accumulators_from, reduce, Epilogue};
use super::ir::{Affine, LoopExpr, Reg};
use super::pad::Padded;
use super::{ConstSpec, KernelBuilder, Lowering};
use crate::graph::{ConvAttrs, NodeId, Shape};

/// Vector accumulators a tile aims at: enough independent FMA chains to hide their latency,
/// with room in the 16 vector registers for a weight and an input.
const ACCUMULATORS: usize = 12;

/// Whether the convolution is one the paired kernel computes: one group of one input channel,
/// 2, 6 or 10 output channels, stride 1 along rows, an even output width (whole pairs in
/// every row), no residual, and an output whose pixels' channels are contiguous.
pub(super) fn applies(
    attrs: &ConvAttrs,
    (input, out): (Shape, Shape),
    x: &Padded,
    e: &Epilogue,
) -> bool {
    attrs.groups.max(1) == 1
        && input.c == 1
        && x.channels == 1
        && matches!(out.c, 2 | 6 | 10)
        && attrs.stride[1] == 1
        && out.w.is_multiple_of(2)
        && e.residual.is_none()
        && e.out_stride == out.c
}

impl Lowering<'_> {
    /// The paired kernel (see the module's header) for node `id`, whose input `x` is read
    /// as `input` and output written as `e` says.
    pub(super) fn paired_conv(
        &mut self,
        id: NodeId,
        attrs: &ConvAttrs,
        x: Padded,
        (input, out): (Shape, Shape),
        has_bias: bool,
        e: &Epilogue,
    ) {
        let c = out.c;
        let [kh, kw] = attrs.kernel;
        let [sh, _] = attrs.stride;
        let [dh, dw] = attrs.dilation;
        let name = self.describe(id);
        let weights = self.add_const(
            format!("{name} weights [ky][kx][2×{c}]"),
            kh * kw * 2 * c,
            ConstSpec::PairedConvWeight { node: id },
        );
        let bias = has_bias.then(|| {
            self.add_const(
                format!("{name} bias [2×{c}]"),
                2 * c,
                ConstSpec::PairedConvBias { node: id },
            )
        });
        // The input with every element doubled: `[x₀ x₀ x₁ x₁ …]`.
        let len = self.buffers[x.buffer].len;
        let doubled = self.add_temp(format!("{name} input doubled"), 2 * len);
        let mut b = self.builder(id, "double", format!("input of {name} doubled"));
        let unroll = 4;
        b.repeat(len / unroll, |b, i| {
            for u in 0..unroll {
                let q = i.clone() * unroll + u;
                let value = b.splat(x.buffer, q.clone());
                b.store(doubled, q * 2, 2, value);
            }
        });
        for q in len / unroll * unroll..len {
            let value = b.splat(x.buffer, Affine::constant(q));
            b.store(doubled, Affine::constant(2 * q), 2, value);
        }
        self.emit(b);

        let vectors = c / 2;
        let pairs_per_tile = (ACCUMULATORS / vectors).max(1);
        let mut b = self.builder(
            id,
            "conv",
            format!("conv {kh}×{kw} stride {sh}×1 1→{c} in pixel pairs: {input} → {out}"),
        );
        let pairs = out.w / 2;
        b.parallel(out.h, |b, oy| {
            let tile = |b: &mut KernelBuilder, first: Affine, n: usize| {
                let biases: Vec<Reg> = (0..vectors)
                    .map(|j| match bias {
                        Some(bias) => b.load(bias, Affine::constant(4 * j), 4),
                        None => b.constant(0.0),
                    })
                    .collect();
                let acc = accumulators_from(b, &biases, n);
                b.repeat(kh, |b, ky| {
                    reduce(b, kw, &mut |b, kx| {
                        let tap = ky.clone() * kw + kx.clone();
                        let w: Vec<Reg> = (0..vectors)
                            .map(|j| b.load(weights, tap.clone() * (2 * c) + 4 * j, 4))
                            .collect();
                        for (p, row) in acc.iter().enumerate() {
                            // The first pixel's input element (one channel: its index).
                            let ox = (first.clone() + p) * 2;
                            let q = (oy.clone() * sh + ky.clone() * dh) * x.width
                                + ox
                                + kx.clone() * dw
                                + x.origin;
                            for (j, &a) in row.iter().enumerate() {
                                // Each input once per FMA: a broadcast used once is a load
                                // folded into `vbroadcastss`, and nothing is copied.
                                let input = if 4 * j + 4 <= c {
                                    b.splat(x.buffer, q.clone())
                                } else if 4 * j >= c {
                                    b.splat(x.buffer, q.clone() + 1)
                                } else {
                                    b.load(doubled, q.clone() * 2, 4)
                                };
                                b.set(a, LoopExpr::Fma(input, w[j], a));
                            }
                        }
                    });
                });
                for (p, row) in acc.iter().enumerate() {
                    let ox = (first.clone() + p) * 2;
                    let pixel = oy.clone() * e.out_pitch + ox;
                    for (j, &value) in row.iter().enumerate() {
                        let value = b.activate(value, e.activation);
                        let index = pixel.clone() * c + 4 * j + e.out_origin;
                        b.store(e.out, index, 4, value);
                    }
                }
            };
            b.repeat(pairs / pairs_per_tile, |b, i| {
                tile(b, i * pairs_per_tile, pairs_per_tile)
            });
            let rest = pairs % pairs_per_tile;
            if rest > 0 {
                tile(b, Affine::constant(pairs - rest), rest);
            }
        });
        self.emit(b);
    }
}
