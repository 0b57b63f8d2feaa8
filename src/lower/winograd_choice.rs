//! Which convolutions Winograd's algorithm lowers, and with which tile size
//! (`lower/winograd.rs`): an estimate of each size's time relative to direct convolution's.

use super::winograd::{TileSize, Winograd};
use super::Lowering;
use crate::graph::Shape;

/// The fewest input and output channels for which `Auto` picks Winograd: with fewer, the
/// products are too short a reduction to pay for writing and reading `M` (3 → 64 channels at
/// 224×224 ran 2.3× slower than direct).
const MIN_CHANNELS: usize = 8;
/// `Auto` picks Winograd when its estimated time relative to direct convolution is at most
/// this (see `estimated_ratio`).
const MAX_RATIO: f64 = 0.75;
/// Streaming one float of transformed weights against 9 multiply-adds of direct convolution,
/// for `weight_ratio`: `4 R / (9 B)` for direct's multiply-add rate `R` and the bandwidth `B`
/// from memory. Fitted to ResNet-18's layer4 alone (7×7, 512 → 512, 1 thread, a Xeon of this
/// project's farm, processor time of alternated rounds): F(4×4)'s products, 37.7 MB of
/// weights for 4 tiles, took 0.98 of direct's time against 0.33 estimated for their
/// multiplications, so they are bound by the weights. Checked on whole networks, where each
/// layer's weights come from memory (alone, a layer's weights stay in the cache between
/// runs), as the processor time of whole `cnnc bench --threads 1 --runs 30` processes,
/// alternated: with F(2×2) on ResNet-18's layer4 0.94 of that with F(4×4), on GoogLeNet's
/// four 7×7 3×3s 0.97; with 3 here (F(2×2) on layer3 too, direct on layer4) 1.06.
const WEIGHT_COST: f64 = 1.25;

/// Winograd's time over direct convolution's, estimated: for F(4×4), a quarter of the
/// multiplications, plus the transforms, whose cost per output grows as `1/in` (output
/// transform, relative to a reduction over `in`) and `1/out` (input transform, shared by every
/// output channel), times the share of the tiles' pixels that fall inside the output. The two
/// constants are fitted to single-layer measurements on a Zen 3 (1 thread, paired runs, ratio
/// of medians): 8 → 8 channels at 56×56 0.47, 4 → 4 at 56×56 0.8–1.1, 64 → 64 at 5×5 0.72,
/// 64 → 64 at 4×4 0.57, 16 → 16 at 8×8 0.41, 64 → 64 at 56×56 0.19–0.30. F(2×2) transforms
/// `points / m²` = 4 values per output pixel against F(4×4)'s 2.25, for both its products
/// (4/9 of direct's multiplications) and its transforms. With `traffic` (at inference), the
/// products take the longer of their multiplications and streaming their weights
/// (`weight_ratio`).
fn estimated_ratio(size: TileSize, in_channels: usize, out: Shape, traffic: bool) -> f64 {
    let m = size.m();
    let covered = out.h.next_multiple_of(m) * out.w.next_multiple_of(m);
    let waste = covered as f64 / (out.h * out.w).max(1) as f64;
    let per_pixel = size.points() as f64 / (m * m) as f64;
    let transforms = 1.3 / out.c.max(1) as f64 + 1.2 / in_channels.max(1) as f64;
    let products = waste * per_pixel / 9.0;
    let products = if traffic {
        products.max(weight_ratio(size, out))
    } else {
        products
    };
    products + waste * per_pixel / 2.25 * transforms
}

/// The time of streaming a convolution's transformed weights, `points × in × out` floats
/// read once per image by its products kernel, relative to direct convolution's time,
/// `9 × h × w × in × out` multiply-adds: `WEIGHT_COST × points / (h × w)`. Direct's own
/// weights, 9 per pixel of its output, are not its bound on the maps it is compared on.
fn weight_ratio(size: TileSize, out: Shape) -> f64 {
    WEIGHT_COST * size.points() as f64 / (out.h * out.w).max(1) as f64
}

impl Lowering<'_> {
    /// The tile size Winograd's algorithm lowers a 3×3 stride-1 ungrouped convolution from
    /// `in_c` channels to `out` with, or `None` for direct convolution: under `Auto`, the
    /// size of least estimated time relative to direct's, if at most `MAX_RATIO`. F(2×2) only
    /// at inference; there the estimate includes streaming the transformed weights.
    pub(super) fn winograd_size(&self, in_c: usize, out: Shape) -> Option<TileSize> {
        let small = self.winograd_f2;
        match self.options.winograd {
            Winograd::Off => None,
            Winograd::Always => Some(TileSize::F4),
            Winograd::AlwaysF2 if small => Some(TileSize::F2),
            Winograd::AlwaysF2 => Some(TileSize::F4),
            Winograd::Auto if in_c.min(out.c) < MIN_CHANNELS => None,
            Winograd::Auto => {
                let sizes: &[TileSize] = if small {
                    &[TileSize::F2, TileSize::F4]
                } else {
                    &[TileSize::F4]
                };
                let ratio = |size| estimated_ratio(size, in_c, out, small);
                sizes
                    .iter()
                    .map(|&size| (size, ratio(size)))
                    .filter(|&(_, ratio)| ratio <= MAX_RATIO)
                    .min_by(|x, y| x.1.total_cmp(&y.1))
                    .map(|(size, _)| size)
            }
        }
    }
}
