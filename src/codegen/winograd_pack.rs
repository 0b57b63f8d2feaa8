//! The filter transform of Winograd's F(4×4, 3×3) (`lower/winograd.rs`): `U = G g Gᵀ` for
//! every filter and input channel, computed in f64 when the weights are packed, so that the
//! kernels' only rounding of it is the final one to f32.

use crate::lower::winograd::{ALPHA, G};

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
    for f in 0..filters {
        let (p, lane) = (f / panel, f % panel);
        for ic in 0..in_c {
            let g = w.get((f * in_c + ic) * 9..)?.get(..9)?;
            // G·g: 6×3.
            let mut gg = [[0.0f64; 3]; ALPHA];
            for (a, row) in gg.iter_mut().enumerate() {
                for (x, value) in row.iter_mut().enumerate() {
                    *value = (0..3).map(|y| G[a][y] * f64::from(g[y * 3 + x])).sum();
                }
            }
            // (G·g)·Gᵀ: 6×6.
            for (a, row) in gg.iter().enumerate() {
                for (bb, g_row) in G.iter().enumerate() {
                    let value: f64 = (0..3).map(|x| row[x] * g_row[x]).sum();
                    let point = a * ALPHA + bb;
                    let to = ((point * n_panels + p) * in_c + ic) * panel + lane;
                    *out.get_mut(to)? = value as f32;
                }
            }
        }
    }
    Some(())
}
