//! Dense layers at batch 1: a matrix × vector product with the weights packed `[in][out]`.
//!
//! Each tile holds 8 vectors (32 outputs) of accumulators; per input feature it broadcasts
//! the feature once and does 8 FMAs against 32 packed weights. Every weight is used once per
//! image, so the layer is bound by memory bandwidth, and the point of the layout is to stream
//! the weights in order: they are packed in panels of 32 outputs, `[panel][in][32]`, so each
//! tile reads one contiguous run (rows of the plain `[in][out]` layout are a page apart in
//! large layers, which defeats the prefetchers).

use super::ir::{Affine, LoopExpr, Reg};
use super::{ConstSpec, LowerError, Lowering};
use crate::graph::{DenseAttrs, NodeId};

/// Output vectors per tile.
const TILE_VECTORS: usize = 8;

impl Lowering<'_> {
    pub(super) fn dense(&mut self, id: NodeId, attrs: &DenseAttrs) -> Result<(), LowerError> {
        let x = self.arg(id, 0)?;
        let features = x.shape.numel();
        let units = attrs.units;
        if self.graph.shape(id).numel() != units {
            return Err(self.malformed(id, "the output size differs from the units"));
        }
        let units_padded = units.next_multiple_of(4);
        let block = 4 * TILE_VECTORS;
        let name = self.describe(id);
        let order = if x.hwc.is_some() {
            " (rows in H×W×C order)"
        } else {
            ""
        };
        let weights = self.add_const(
            format!("{name} weights [panel][in][{block}]{order}"),
            features * units_padded,
            ConstSpec::DenseWeight {
                node: id,
                panel: block,
                hwc_input: x.hwc,
            },
        );
        let bias = (attrs.bias || attrs.bias_values.is_some()).then(|| {
            self.add_const(
                format!("{name} bias"),
                units_padded,
                ConstSpec::DenseBias {
                    node: id,
                    units_padded,
                },
            )
        });
        let out = self.result_buffer(id);
        let mut b = self.builder(id, "dense", format!("dense {features} → {units}"));
        // A tile's weights are its panel: `features` rows of `4·vectors` units, contiguous.
        let tile = |b: &mut super::KernelBuilder, n0: Affine, vectors: usize, last: u8| {
            let panel_start = n0.clone() * features;
            let acc: Vec<Reg> = (0..vectors)
                .map(|v| match bias {
                    Some(bias) => b.load(bias, n0.clone() + 4 * v, 4),
                    None => b.constant(0.0),
                })
                .collect();
            let step = |b: &mut super::KernelBuilder, k: Affine| {
                let xs = b.splat(x.buffer, k.clone());
                for (v, &a) in acc.iter().enumerate() {
                    let w = b.load(
                        weights,
                        panel_start.clone() + k.clone() * (4 * vectors) + 4 * v,
                        4,
                    );
                    b.set(a, LoopExpr::Fma(xs, w, a));
                }
            };
            b.repeat(features / 4, |b, i| {
                for u in 0..4 {
                    step(b, i.clone() * 4 + u);
                }
            });
            for k in features / 4 * 4..features {
                step(b, Affine::constant(k));
            }
            for (v, &a) in acc.iter().enumerate() {
                let value = b.activate(a, attrs.activation);
                let lanes = if v + 1 == vectors { last } else { 4 };
                b.store(out, n0.clone() + 4 * v, lanes, value);
            }
        };
        b.parallel(units / block, |b, i| tile(b, i * block, TILE_VECTORS, 4));
        let rest = units % block;
        if rest > 0 {
            let vectors = rest.div_ceil(4);
            let last = (rest - 4 * (vectors - 1)) as u8;
            tile(&mut b, Affine::constant(units - rest), vectors, last);
        }
        self.emit(b);
        self.set_value(id, out);
        Ok(())
    }
}
