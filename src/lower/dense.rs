//! Dense layers at batch 1: a matrix × vector product with the weights packed `[in][out]`.
//!
//! Each tile holds 8 vectors (32 outputs) of accumulators; per input feature it broadcasts
//! the feature once and does 8 FMAs against 32 packed weights. Every weight is used once per
//! image, so the layer is bound by memory bandwidth, and the point of the layout is to stream
//! the weights in order: they are packed in panels of 32 outputs, `[panel][in][32]`, so each
//! tile reads one contiguous run (rows of the plain `[in][out]` layout are a page apart in
//! large layers, which defeats the prefetchers).
//!
//! A dense layer applied at every pixel (`pointwise_dense`) is a 1×1 convolution over the
//! image seen as one row of H·W pixels: tiles of 4 pixels × 8 units accumulate over the
//! input channels, with the same weight packing in panels of 8 units.

use super::conv::reduce;
use super::ir::{Affine, LoopExpr, Reg};
use super::{ConstSpec, KernelBuilder, LowerError, Lowering};
use crate::graph::{DenseAttrs, NodeId, PointwiseDenseAttrs};

/// Output vectors per tile.
const TILE_VECTORS: usize = 8;
/// A pointwise dense tile: pixels, and output vectors (a weight panel of 8 units), the 4×8
/// shape of the direct convolution's tiles (`conv.rs`), which this kernel is at 1×1.
const POINTWISE_PIXELS: usize = 4;
const POINTWISE_VECTORS: usize = 2;

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

/// What a pointwise dense tile reads and writes.
struct PointwisePlan {
    x: super::ir::BufferId,
    weights: super::ir::BufferId,
    bias: Option<super::ir::BufferId>,
    out: super::ir::BufferId,
    features: usize,
    units: usize,
}

/// `pixels` pixels from `p0` × `vectors` output vectors from unit `u0`, whose weights are the
/// panel of `width` units starting at element `u0 · features`.
#[allow(clippy::too_many_arguments)]
fn pointwise_tile(
    b: &mut KernelBuilder,
    plan: &PointwisePlan,
    p0: &Affine,
    pixels: usize,
    u0: &Affine,
    vectors: usize,
    last: u8,
    width: usize,
) {
    let acc: Vec<Vec<Reg>> = (0..pixels)
        .map(|_| {
            (0..vectors)
                .map(|v| match plan.bias {
                    Some(bias) => b.load(bias, u0.clone() + 4 * v, 4),
                    None => b.constant(0.0),
                })
                .collect()
        })
        .collect();
    let panel_start = u0.clone() * plan.features;
    reduce(b, plan.features, &mut |b, k| {
        let w: Vec<Reg> = (0..vectors)
            .map(|v| {
                b.load(
                    plan.weights,
                    panel_start.clone() + k.clone() * width + 4 * v,
                    4,
                )
            })
            .collect();
        for (p, row) in acc.iter().enumerate() {
            let xs = b.splat(plan.x, (p0.clone() + p) * plan.features + k.clone());
            for (v, &a) in row.iter().enumerate() {
                b.set(a, LoopExpr::Fma(xs, w[v], a));
            }
        }
    });
    for (p, row) in acc.iter().enumerate() {
        for (v, &value) in row.iter().enumerate() {
            let lanes = if v + 1 == vectors { last } else { 4 };
            let index = (p0.clone() + p) * plan.units + u0.clone() + 4 * v;
            b.store(plan.out, index, lanes, value);
        }
    }
}

impl Lowering<'_> {
    pub(super) fn pointwise_dense(
        &mut self,
        id: NodeId,
        attrs: PointwiseDenseAttrs,
    ) -> Result<(), LowerError> {
        let x = self.arg(id, 0)?;
        let out_shape = self.graph.shape(id);
        let (features, units) = (x.shape.c, attrs.units);
        let pixels = x.shape.h * x.shape.w;
        if out_shape.c != units || out_shape.h * out_shape.w != pixels || x.hwc.is_some() {
            return Err(self.malformed(id, "the output is not the input's pixels × the units"));
        }
        let panel = 4 * POINTWISE_VECTORS;
        let name = self.describe(id);
        let weights = self.add_const(
            format!("{name} weights [panel][in][{panel}]"),
            features * units.next_multiple_of(4),
            ConstSpec::DenseWeight {
                node: id,
                panel,
                hwc_input: None,
            },
        );
        let bias = attrs.bias.then(|| {
            let units_padded = units.next_multiple_of(4);
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
        let plan = PointwisePlan {
            x: x.buffer,
            weights,
            bias,
            out,
            features,
            units,
        };
        let comment = format!("pointwise dense {features} → {units} at {pixels} pixels");
        let mut b = self.builder(id, "pwdense", comment);
        // Every panel of units for a run of pixels: full panels, then the rest of the units.
        let panels = |b: &mut KernelBuilder, p0: Affine, n: usize| {
            b.repeat(units / panel, |b, i| {
                let u0 = i * panel;
                pointwise_tile(b, &plan, &p0, n, &u0, POINTWISE_VECTORS, 4, panel);
            });
            let rest = units % panel;
            if rest > 0 {
                let vectors = rest.div_ceil(4);
                let last = (rest - 4 * (vectors - 1)) as u8;
                let u0 = Affine::constant(units - rest);
                let width = rest.next_multiple_of(4);
                pointwise_tile(b, &plan, &p0, n, &u0, vectors, last, width);
            }
        };
        b.parallel(pixels / POINTWISE_PIXELS, |b, i| {
            panels(b, i * POINTWISE_PIXELS, POINTWISE_PIXELS)
        });
        let rest = pixels % POINTWISE_PIXELS;
        if rest > 0 {
            panels(&mut b, Affine::constant(pixels - rest), rest);
        }
        self.emit(b);
        self.set_value(id, out);
        Ok(())
    }
}
