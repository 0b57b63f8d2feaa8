//! The filter transform of Winograd's F(4×4, 3×3) and F(2×2, 3×3) (`lower/winograd.rs`):
//! `U = G g Gᵀ` for every filter and input channel, computed in f64 when the weights are
//! packed, so that the kernels' only rounding of it is the final one to f32.

use super::winograd::{TileSize, PANEL, POINTS};

/// Packs `w` (`[filters][in_c][3][3]`, row-major) transformed for tiles of `size` into `out`
/// as `[point][panel][in][PANEL]` (`point = α·a + b` for `U[a][b]`), panels of [`PANEL`]
/// filters (`panel` must be it). With `flipped`, the filters transformed are those of the
/// convolution computing the input gradient: `[in_c][filters]`, each rotated by 180°, read
/// from `w` in place (a flipped copy made first was a third of the time of packing it).
/// `None` if `w` or `out` is too short or `panel` another width.
pub(super) fn transform_filters(
    size: TileSize,
    w: &[f32],
    [filters, in_c]: [usize; 2],
    flipped: bool,
    panel: usize,
    out: &mut [f32],
) -> Option<()> {
    if panel != PANEL {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has the feature the function is compiled for.
        return unsafe { transform_filters_avx2(size, w, [filters, in_c], flipped, out) };
    }
    transform_sized(size, w, [filters, in_c], flipped, gather, out)
}

/// [`transform`] compiled for AVX2, gathering with [`gather_avx2`]: each `LANES` values'
/// arithmetic is one f64x4 operation (two on SSE2). The same operations in the same order,
/// so the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn transform_filters_avx2(
    size: TileSize,
    w: &[f32],
    [filters, in_c]: [usize; 2],
    flipped: bool,
    out: &mut [f32],
) -> Option<()> {
    // A closure: a function with target features is no `Fn` of its own.
    let gather = |w: &[f32], rows: Rows, taps: &mut Taps| gather_avx2(w, rows, taps);
    transform_sized(size, w, [filters, in_c], flipped, gather, out)
}

/// [`transform`] with `G` of tiles of `size`.
#[inline(always)]
fn transform_sized(
    size: TileSize,
    w: &[f32],
    [filters, in_c]: [usize; 2],
    flipped: bool,
    gather: impl Fn(&[f32], Rows, &mut Taps),
    out: &mut [f32],
) -> Option<()> {
    match size {
        TileSize::F2 => transform::<4>(g2_times, w, [filters, in_c], flipped, gather, out),
        TileSize::F4 => transform::<6>(g_times, w, [filters, in_c], flipped, gather, out),
    }
}

/// The nine taps of one input channel of a panel's filters, tap-major: `taps[t][lane]`.
type Taps = [[f32; PANEL]; 9];

/// Where a gather reads: `lanes` rows of nine taps, row `l` from `w[first + l·stride..]`,
/// taps reversed if `flipped`.
#[derive(Copy, Clone)]
struct Rows {
    first: usize,
    stride: usize,
    lanes: usize,
    flipped: bool,
}

/// Fills `taps` from `w` as `rows` says, one value at a time; lanes past `rows.lanes` are 0.
#[inline(always)]
fn gather(w: &[f32], rows: Rows, taps: &mut Taps) {
    for (t, tap) in taps.iter_mut().enumerate() {
        let from = if rows.flipped { 8 - t } else { t };
        for (lane, value) in tap.iter_mut().enumerate() {
            *value = if lane < rows.lanes {
                w.get(rows.first + lane * rows.stride + from)
                    .copied()
                    .unwrap_or(0.0)
            } else {
                0.0
            };
        }
    }
}

/// [`gather`] for a whole panel as an 8×8 transpose of the rows' first eight taps in
/// registers, and the ninth tap lane by lane. (Copied value by value into a tap-major
/// buffer first, this was two fifths of the transform's time.)
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn gather_avx2(w: &[f32], rows: Rows, taps: &mut Taps) {
    use std::arch::x86_64::*;
    if rows.lanes != PANEL {
        return gather(w, rows, taps);
    }
    let mut all: [&[f32]; PANEL] = [&[]; PANEL];
    for (lane, row) in all.iter_mut().enumerate() {
        match w
            .get(rows.first + lane * rows.stride..)
            .and_then(|r| r.get(..9))
        {
            Some(values) => *row = values,
            None => return gather(w, rows, taps),
        }
    }
    // SAFETY: each load reads the first eight of a row's nine values, in bounds above.
    let r = all.map(|row| unsafe { _mm256_loadu_ps(row.as_ptr()) });
    let [t0, t1, t2, t3] = [0, 2, 4, 6].map(|i| _mm256_unpacklo_ps(r[i], r[i + 1]));
    let [t4, t5, t6, t7] = [0, 2, 4, 6].map(|i| _mm256_unpackhi_ps(r[i], r[i + 1]));
    // `q[k]` holds tap `k` of rows 0–3 in its low half and tap `k + 4` in its high half,
    // `h[k]` the same of rows 4–7.
    let q = [
        _mm256_shuffle_ps::<0x44>(t0, t1),
        _mm256_shuffle_ps::<0xEE>(t0, t1),
        _mm256_shuffle_ps::<0x44>(t4, t5),
        _mm256_shuffle_ps::<0xEE>(t4, t5),
    ];
    let h = [
        _mm256_shuffle_ps::<0x44>(t2, t3),
        _mm256_shuffle_ps::<0xEE>(t2, t3),
        _mm256_shuffle_ps::<0x44>(t6, t7),
        _mm256_shuffle_ps::<0xEE>(t6, t7),
    ];
    let mut columns = [[0.0f32; PANEL]; 9];
    for k in 0..4 {
        // SAFETY: each store writes one whole `[f32; 8]`.
        unsafe {
            _mm256_storeu_ps(
                columns[k].as_mut_ptr(),
                _mm256_permute2f128_ps::<0x20>(q[k], h[k]),
            );
            _mm256_storeu_ps(
                columns[k + 4].as_mut_ptr(),
                _mm256_permute2f128_ps::<0x31>(q[k], h[k]),
            );
        }
    }
    columns[8] = all.map(|row| row[8]);
    for (t, tap) in taps.iter_mut().enumerate() {
        *tap = columns[if rows.flipped { 8 - t } else { t }];
    }
}

/// `U = G g Gᵀ` of every filter, `G · v` being `g_times` (`A` rows), the taps of each input
/// channel of a panel read by `gather`.
#[inline(always)]
fn transform<const A: usize>(
    g_times: impl Fn(&Lanes, &Lanes, &Lanes, &mut [Lanes; A]),
    w: &[f32],
    [filters, in_c]: [usize; 2],
    flipped: bool,
    gather: impl Fn(&[f32], Rows, &mut Taps),
    out: &mut [f32],
) -> Option<()> {
    w.get(..filters * in_c * 9)?;
    // Tap `t` of channel `ic` of transformed filter `f` is `w[f·fs + ic·cs + tap(t)]`.
    let (filters, in_c, fs, cs) = if flipped {
        (in_c, filters, 9, in_c * 9)
    } else {
        (filters, in_c, in_c * 9, 9)
    };
    let n_panels = filters.div_ceil(PANEL);
    // For one panel and point, the output `[in][PANEL]` is one contiguous run: it is
    // computed `LANES` values at a time, each value's whole transform in registers. (Filter
    // by filter, with f64 divisions, this was a fifth of a ResNet-18 training step, which
    // packs its weights anew each step.)
    let run = in_c * PANEL;
    // A block of each point's run, written out whole: the 36 points' runs lie a panel apart,
    // often a multiple of 4 KiB, and storing to all 36 a few values at a time kept evicting
    // each other's lines from L1. (F(4×4)'s 36 points, of which F(2×2) uses 16.)
    let mut points = [[0.0f32; BLOCK]; POINTS];
    let mut channel = [[0.0f32; PANEL]; 9];
    for p in 0..n_panels {
        let first = p * PANEL;
        let lanes = PANEL.min(filters - first);
        for block in (0..run).step_by(BLOCK) {
            let block_len = BLOCK.min(run - block);
            for ic in block / PANEL..(block + block_len) / PANEL {
                let rows = Rows {
                    first: first * fs + ic * cs,
                    stride: fs,
                    lanes,
                    flipped,
                };
                gather(w, rows, &mut channel);
                for half in 0..PANEL / LANES {
                    let mut taps = [[0.0f64; LANES]; 9];
                    for (tap, values) in taps.iter_mut().zip(&channel) {
                        for (lane, &value) in tap.iter_mut().zip(&values[half * LANES..]) {
                            *lane = f64::from(value);
                        }
                    }
                    // G·g, column by column (α×3), then (G·g)·Gᵀ row by row (α×α), into
                    // arrays held in place (returned by value, each 6×4 array was copied
                    // with `memmove`: a third of the transform's time).
                    let mut columns = [[[0.0; LANES]; A]; 3];
                    for (x, column) in columns.iter_mut().enumerate() {
                        g_times(&taps[x], &taps[3 + x], &taps[6 + x], column);
                    }
                    let mut row = [[0.0; LANES]; A];
                    let [first, second, third] = &columns;
                    let at = ic * PANEL + half * LANES - block;
                    for (a, ((c0, c1), c2)) in first.iter().zip(second).zip(third).enumerate() {
                        g_times(c0, c1, c2, &mut row);
                        for (b, values) in row.iter().enumerate() {
                            let to = &mut points[a * A + b][at..at + LANES];
                            for (o, &v) in to.iter_mut().zip(values) {
                                *o = v as f32;
                            }
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
    use super::{g2_times, g_times, transform_filters, Lanes, LANES, PANEL};
    use crate::lower::winograd::TileSize;
    use crate::lower::winograd_transforms::{G, G2};

    /// `U = G g Gᵀ` of one filter's channel by the definition.
    fn definition<const A: usize>(g: &[[f64; 3]; A], taps: &[f64; 9]) -> Vec<f64> {
        let mut u = Vec::with_capacity(A * A);
        for a in 0..A {
            for b in 0..A {
                let mut sum = 0.0;
                for y in 0..3 {
                    for x in 0..3 {
                        sum += g[a][y] * taps[y * 3 + x] * g[b][x];
                    }
                }
                u.push(sum);
            }
        }
        u
    }

    fn check_packing<const A: usize>(size: TileSize, g: &[[f64; 3]; A]) {
        // 13 filters and 11 channels: a whole and a partial panel either way, and blocks of
        // channels cut short.
        let [filters, in_c] = [13usize, 11usize];
        let w: Vec<f32> = (0..filters * in_c * 9)
            .map(|i| ((i * 7919 % 263) as f32 / 131.0) - 1.0)
            .collect();
        for flipped in [false, true] {
            let (f_count, c_count) = if flipped {
                (in_c, filters)
            } else {
                (filters, in_c)
            };
            let n_panels = f_count.div_ceil(PANEL);
            let run = c_count * PANEL;
            let mut out = vec![f32::NAN; A * A * n_panels * run];
            transform_filters(size, &w, [filters, in_c], flipped, PANEL, &mut out).unwrap();
            for f in 0..n_panels * PANEL {
                for c in 0..c_count {
                    let taps: [f64; 9] = std::array::from_fn(|t| {
                        let value = match (f < f_count, flipped) {
                            (false, _) => 0.0,
                            (true, false) => w[(f * in_c + c) * 9 + t],
                            (true, true) => w[(c * in_c + f) * 9 + 8 - t],
                        };
                        f64::from(value)
                    });
                    for (point, want) in definition(g, &taps).into_iter().enumerate() {
                        let (p, lane) = (f / PANEL, f % PANEL);
                        let got = out[(point * n_panels + p) * run + c * PANEL + lane];
                        assert!(
                            (f64::from(got) - want).abs() <= 1e-6 * (1.0 + want.abs()),
                            "flipped {flipped}, filter {f}, channel {c}, point {point}: \
                             {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn packed_filters_are_their_transform_plain_and_flipped() {
        check_packing(TileSize::F4, &G);
        check_packing(TileSize::F2, &G2);
    }

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
