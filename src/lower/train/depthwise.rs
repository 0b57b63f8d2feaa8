//! The backward of depthwise convolutions (one filter per channel), vectorized over the
//! channels like the forward:
//!
//! - **weights**: `∂W[ky][kx][c] += Σ_pixels x[pixel·stride + tap][c] · ∂z[pixel][c]`, a row of
//!   taps × 2 channel vectors of accumulators per reduction over the output pixels;
//! - **input**: each output pixel adds `W[tap][c] · ∂z[pixel][c]` to the input pixel each tap
//!   read, in the padded frame, whose interior is then the input's gradient.

use super::super::elementwise::channel_vectors;
use super::super::ir::{Affine, BinaryOp, BufferId, LoopExpr, Reg};
use super::super::program::ConstSpec;
use super::super::LowerError;
use super::{Backward, GradLayout};
use crate::graph::{ConvAttrs, NodeId};

impl Backward<'_> {
    /// The weight and input gradients of depthwise conv `id`, given `∂z` (after its
    /// activation); `frame` is the padded input the forward read, `(top, left, height,
    /// width)` where its interior sits.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn depthwise_grads(
        &mut self,
        id: NodeId,
        attrs: &ConvAttrs,
        dz: BufferId,
        frame: BufferId,
        (top, left, frame_h, frame_w): (usize, usize, usize, usize),
        weight: bool,
        wants_input: bool,
    ) -> Result<(), LowerError> {
        let graph = self.graph();
        let input = graph.nodes[id].inputs[0];
        let (s, out) = (graph.shape(input), graph.shape(id));
        let c = out.c;
        let cp = c.next_multiple_of(4);
        let [kh, kw] = attrs.kernel;
        let [sh, sw] = attrs.stride;
        let [dh, dw] = attrs.dilation;
        let tap_at = move |oy: &Affine, ox: &Affine, ky: Affine, kx: Affine| {
            ((oy.clone() * sh + ky * dh) * frame_w + ox.clone() * sw + kx * dw) * c
        };
        if weight {
            let layout = GradLayout::Depthwise {
                channels: c,
                kernel: attrs.kernel,
                channels_padded: cp,
            };
            let dwb = self.param_grad(id, "weight", c * kh * kw, kh * kw * cp, layout);
            let mut b = self.builder(
                id,
                "weight_grad",
                format!(
                    "∂weight depthwise {c}×1×{kh}×{kw}: Σ over {}×{} pixels",
                    out.h, out.w
                ),
            );
            b.parallel(kh, |b, ky| {
                let groups: Vec<Vec<(usize, u8)>> = channel_vectors(c)
                    .collect::<Vec<_>>()
                    .chunks(2)
                    .map(<[_]>::to_vec)
                    .collect();
                for group in &groups {
                    let acc: Vec<Vec<Reg>> = (0..kw)
                        .map(|_| group.iter().map(|_| b.constant(0.0)).collect())
                        .collect();
                    b.repeat(out.h, |b, oy| {
                        b.repeat(out.w, |b, ox| {
                            let pixel = (oy.clone() * out.w + ox.clone()) * c;
                            let d: Vec<Reg> = group
                                .iter()
                                .map(|&(c0, lanes)| b.load(dz, pixel.clone() + c0, lanes))
                                .collect();
                            for (kx, row) in acc.iter().enumerate() {
                                let at = tap_at(&oy, &ox, ky.clone(), Affine::constant(kx));
                                for ((&(c0, lanes), &a), &dv) in group.iter().zip(row).zip(&d) {
                                    let x = b.load(frame, at.clone() + c0, lanes);
                                    b.set(a, LoopExpr::Fma(x, dv, a));
                                }
                            }
                        });
                    });
                    for (kx, row) in acc.iter().enumerate() {
                        for (&(c0, _), &a) in group.iter().zip(row) {
                            let at = (ky.clone() * kw + kx) * cp + c0;
                            let sum = b.load(dwb, at.clone(), 4);
                            let sum = b.binary(BinaryOp::Add, sum, a);
                            b.store(dwb, at, 4, sum);
                        }
                    }
                }
            });
            self.lowering.emit(b);
        }
        if wants_input {
            let name = format!(
                "{} weights [ky][kx][c:{cp}] (backward)",
                self.lowering.describe(id)
            );
            let weights = self.lowering.add_const(
                name,
                kh * kw * cp,
                ConstSpec::DepthwiseWeight {
                    node: id,
                    channels_padded: cp,
                },
            );
            let scatter = self.scatter(input, (top, left, frame_h, frame_w));
            let scratch = scatter.frame;
            let mut b = self.builder(
                id,
                "input_grad",
                format!("∂input {s}: depthwise transposed conv by a scatter"),
            );
            scatter.begin(&mut b);
            b.repeat(out.h, |b, oy| {
                b.repeat(out.w, |b, ox| {
                    let pixel = (oy.clone() * out.w + ox.clone()) * c;
                    for (c0, lanes) in channel_vectors(c) {
                        let d = b.load(dz, pixel.clone() + c0, lanes);
                        b.repeat(kh, |b, ky| {
                            b.repeat(kw, |b, kx| {
                                let w =
                                    b.load(weights, (ky.clone() * kw + kx.clone()) * cp + c0, 4);
                                let at = tap_at(&oy, &ox, ky, kx) + c0;
                                let sum = b.load(scratch, at.clone(), lanes);
                                let sum = b.assign(LoopExpr::Fma(d, w, sum));
                                b.store(scratch, at, lanes, sum);
                            });
                        });
                    }
                });
            });
            scatter.finish(&mut b);
            self.lowering.emit(b);
        }
        Ok(())
    }
}
