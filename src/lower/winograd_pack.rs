//! The filter transform of Winograd's F(4×4, 3×3) and F(2×2, 3×3) (`lower/winograd.rs`):
//! `U = G g Gᵀ` for every filter and input channel, computed in f64 when the weights are
//! packed, so that the kernels' only rounding of it is the final one to f32.

use super::winograd::{TileSize, POINTS};

/// Packs `w` (`[filters][in_c][3][3]`, row-major) transformed for tiles of `size` into `out`
/// as `[point][panel][in][panel]` (`point = α·a + b` for `U[a][b]`), panels of `panel`
/// filters. With `flipped`, the filters transformed are those of the convolution computing
/// the input gradient: `[in_c][filters]`, each rotated by 180°, read from `w` in place (a
/// flipped copy made first was a third of the time of packing it). `None` if `w` or `out`
/// is too short.
pub(super) fn transform_filters(
    size: TileSize,
    w: &[f32],
    [filters, in_c]: [usize; 2],
    flipped: bool,
    panel: usize,
    out: &mut [f32],
) -> Option<()> {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has the feature the function is compiled for.
        return unsafe { transform_filters_avx2(size, w, [filters, in_c], flipped, panel, out) };
    }
    transform_sized(size, w, [filters, in_c], flipped, panel, out)
}

/// [`transform`] compiled for AVX2: each `LANES` values' arithmetic is one f64x4 operation
/// (two on SSE2). The same operations in the same order, so the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn transform_filters_avx2(
    size: TileSize,
    w: &[f32],
    [filters, in_c]: [usize; 2],
    flipped: bool,
    panel: usize,
    out: &mut [f32],
) -> Option<()> {
    transform_sized(size, w, [filters, in_c], flipped, panel, out)
}

/// [`transform`] with `G` of tiles of `size`.
#[inline(always)]
fn transform_sized(
    size: TileSize,
    w: &[f32],
    [filters, in_c]: [usize; 2],
    flipped: bool,
    panel: usize,
    out: &mut [f32],
) -> Option<()> {
    match size {
        TileSize::F2 => transform::<4>(g2_times, w, [filters, in_c], flipped, panel, out),
        TileSize::F4 => transform::<6>(g_times, w, [filters, in_c], flipped, panel, out),
    }
}

/// `U = G g Gᵀ` of every filter, `G · v` being `g_times` (`A` rows).
#[inline(always)]
fn transform<const A: usize>(
    g_times: impl Fn(&Lanes, &Lanes, &Lanes, &mut [Lanes; A]),
    w: &[f32],
    [filters, in_c]: [usize; 2],
    flipped: bool,
    panel: usize,
    out: &mut [f32],
) -> Option<()> {
    w.get(..filters * in_c * 9)?;
    // Tap `t` of channel `ic` of transformed filter `f` is `w[f·fs + ic·cs + tap(t)]`.
    let (filters, in_c, fs, cs) = if flipped {
        (in_c, filters, 9, in_c * 9)
    } else {
        (filters, in_c, in_c * 9, 9)
    };
    let panel = panel.max(1);
    let n_panels = filters.div_ceil(panel);
    // For one panel and point, the output `[in][panel]` is one contiguous run: it is
    // computed `LANES` values at a time, each value's whole transform in registers. (Filter
    // by filter, with f64 divisions, this was a fifth of a ResNet-18 training step, which
    // packs its weights anew each step.) The panel's taps are first copied tap-major in the
    // run's order, so that each tap of `LANES` values is one contiguous load: assembled from
    // scalars in place, every such load waited for four stores it could not be forwarded
    // from, and that was half of the transform's time.
    let run = in_c * panel;
    let mut taps_of_run = vec![0.0f32; 9 * run];
    // A block of each point's run, written out whole: the 36 points' runs lie a panel apart,
    // often a multiple of 4 KiB, and storing to all 36 a few values at a time kept evicting
    // each other's lines from L1. (F(4×4)'s 36 points, of which F(2×2) uses 16.)
    let mut points = [[0.0f32; BLOCK]; POINTS];
    for p in 0..n_panels {
        let lanes = panel.min(filters - p * panel);
        let first = p * panel;
        if lanes < panel {
            // The padding filters' lanes; a full panel overwrites every value.
            taps_of_run.fill(0.0);
        }
        // Channel by channel, each tap's lanes written as one run: filter by filter, the
        // stores went to nine rows a run apart at once, a panel apart from the last ones,
        // and this copy was half of the transform's time.
        for ic in 0..in_c {
            for (t, row) in taps_of_run.chunks_exact_mut(run).enumerate() {
                let tap = if flipped { 8 - t } else { t };
                let to = row.get_mut(ic * panel..)?.get_mut(..lanes)?;
                for (lane, value) in to.iter_mut().enumerate() {
                    *value = *w.get((first + lane) * fs + ic * cs + tap)?;
                }
            }
        }
        for block in (0..run).step_by(BLOCK) {
            let block_len = BLOCK.min(run - block);
            for start in (block..block + block_len).step_by(LANES) {
                let len = LANES.min(run - start);
                let mut taps = [[0.0f64; LANES]; 9];
                for (t, tap) in taps.iter_mut().enumerate() {
                    let from = &taps_of_run[t * run + start..][..len];
                    for (lane, &value) in tap.iter_mut().zip(from) {
                        *lane = f64::from(value);
                    }
                }
                // G·g, column by column (α×3), then (G·g)·Gᵀ row by row (α×α), into arrays
                // held in place (returned by value, each 6×4 array was copied with
                // `memmove`: a third of the transform's time).
                let mut columns = [[[0.0; LANES]; A]; 3];
                for (x, column) in columns.iter_mut().enumerate() {
                    g_times(&taps[x], &taps[3 + x], &taps[6 + x], column);
                }
                let mut row = [[0.0; LANES]; A];
                let [first, second, third] = &columns;
                for (a, ((c0, c1), c2)) in first.iter().zip(second).zip(third).enumerate() {
                    g_times(c0, c1, c2, &mut row);
                    for (b, values) in row.iter().enumerate() {
                        let to = &mut points[a * A + b][start - block..][..len];
                        for (o, &v) in to.iter_mut().zip(values) {
                            *o = v as f32;
                        }
                    }
                }
            }
            for (point, values) in points.iter().take(A * A).enumerate() {
                let to = (point * n_panels + p) * run + block;
                out.get_mut(to..)?
                    .get_mut(..block_len)?
                    .copy_from_slice(&values[..block_len]);
            }
        }
    }
    Some(())
}

/// Values transformed at once by [`transform_filters`], one per lane of its arithmetic.
const LANES: usize = 4;
/// Values of each point's run computed before they are stored: 4 cache lines.
const BLOCK: usize = 64;

type Lanes = [f64; LANES];

/// `out = G · v`, lane by lane, in the factored form of `lower::winograd::G`: 10 operations
/// instead of 18 multiplications and 12 additions, its divisions as multiplications.
#[inline(always)]
fn g_times(v0: &Lanes, v1: &Lanes, v2: &Lanes, out: &mut [Lanes; 6]) {
    for l in 0..LANES {
        let outer = v0[l] + v2[l];
        let (sum, difference) = (outer + v1[l], outer - v1[l]);
        let quarter = v0[l] * (1.0 / 24.0) + v2[l] * (1.0 / 6.0);
        out[0][l] = v0[l] * 0.25;
        out[1][l] = -sum * (1.0 / 6.0);
        out[2][l] = -difference * (1.0 / 6.0);
        out[3][l] = quarter + v1[l] * (1.0 / 12.0);
        out[4][l] = quarter - v1[l] * (1.0 / 12.0);
        out[5][l] = v2[l];
    }
}

/// `out = G · v` for F(2×2)'s `G` (`lower::winograd_transforms::G2`).
#[inline(always)]
fn g2_times(v0: &Lanes, v1: &Lanes, v2: &Lanes, out: &mut [Lanes; 4]) {
    for l in 0..LANES {
        let outer = v0[l] + v2[l];
        out[0][l] = v0[l];
        out[1][l] = (outer + v1[l]) * 0.5;
        out[2][l] = (outer - v1[l]) * 0.5;
        out[3][l] = v2[l];
    }
}

#[cfg(test)]
mod tests {
    use super::{g2_times, g_times, Lanes, LANES};
    use crate::lower::winograd_transforms::{G, G2};

    fn check<const A: usize>(
        g: &[[f64; 3]; A],
        g_times: fn(&Lanes, &Lanes, &Lanes, &mut [Lanes; A]),
    ) {
        let v = [0.7, -1.3, 2.9].map(|x| [x; LANES]);
        let mut factored = [[0.0; LANES]; A];
        g_times(&v[0], &v[1], &v[2], &mut factored);
        for (row, values) in g.iter().zip(factored) {
            let plain: f64 = (0..3).map(|k| row[k] * v[k][0]).sum();
            for value in values {
                assert!((plain - value).abs() < 1e-12, "{plain} vs {value}");
            }
        }
    }

    #[test]
    fn the_factored_filter_transform_is_g() {
        check(&G, g_times);
    }

    #[test]
    fn the_factored_f2_filter_transform_is_g2() {
        check(&G2, g2_times);
    }
}
