//! The filter transform of Winograd's F(4×4, 3×3) (`lower/winograd.rs`): `U = G g Gᵀ` for
//! every filter and input channel, computed in f64 when the weights are packed, so that the
//! kernels' only rounding of it is the final one to f32.

use super::winograd::ALPHA;

/// Packs `w` (`[filters][in_c][3][3]`, row-major) transformed into `out` as
/// `[point][panel][in][panel]` (`point = 6·a + b` for `U[a][b]`), panels of `panel` filters.
/// `None` if `out` is too short.
pub(super) fn transform_filters(
    w: &[f32],
    filters: usize,
    in_c: usize,
    panel: usize,
    out: &mut [f32],
) -> Option<()> {
    let panel = panel.max(1);
    let n_panels = filters.div_ceil(panel);
    // Panel by panel and input channel by input channel, so that the 36 points' writes are
    // 36 sequential streams: a loop over filters outside scatters them over the whole
    // buffer, and packing ResNet-18 took twice as long.
    for p in 0..n_panels {
        for ic in 0..in_c {
            for lane in 0..panel.min(filters - p * panel) {
                let f = p * panel + lane;
                let g = w.get((f * in_c + ic) * 9..)?.get(..9)?;
                // G·g, column by column: 6×3.
                let columns = [0, 1, 2].map(|x| g_times([g[x], g[3 + x], g[6 + x]].map(f64::from)));
                // (G·g)·Gᵀ, row by row: 6×6.
                let [first, second, third] = &columns;
                let rows = first.iter().zip(second).zip(third);
                for (a, ((&c0, &c1), &c2)) in rows.enumerate() {
                    let row = g_times([c0, c1, c2]);
                    for (bb, &value) in row.iter().enumerate() {
                        let point = a * ALPHA + bb;
                        let to = ((point * n_panels + p) * in_c + ic) * panel + lane;
                        *out.get_mut(to)? = value as f32;
                    }
                }
            }
        }
    }
    Some(())
}

/// `G · v` in the factored form of `lower::winograd::G`: 10 operations instead of 18
/// multiplications and 12 additions (packing ResNet-18's filters took 0.2 s with the plain
/// matrix product).
fn g_times([v0, v1, v2]: [f64; 3]) -> [f64; ALPHA] {
    let outer = v0 + v2;
    let (sum, difference) = (outer + v1, outer - v1);
    let quarter = v0 / 24.0 + v2 / 6.0;
    [
        v0 / 4.0,
        -sum / 6.0,
        -difference / 6.0,
        quarter + v1 / 12.0,
        quarter - v1 / 12.0,
        v2,
    ]
}

#[cfg(test)]
mod tests {
    use super::g_times;
    use crate::lower::winograd::G;

    #[test]
    fn the_factored_filter_transform_is_g() {
        let v = [0.7, -1.3, 2.9];
        let factored = g_times(v);
        for (row, value) in G.iter().zip(factored) {
            let plain: f64 = (0..3).map(|k| row[k] * v[k]).sum();
            assert!((plain - value).abs() < 1e-12, "{plain} vs {value}");
        }
    }
}
