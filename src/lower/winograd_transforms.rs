//! The transforms of Winograd's F(2×2, 3×3) and F(4×4, 3×3) (`lower/winograd.rs`): their
//! matrices from Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (2016),
//! and the factored forms the kernels emit, one row of `Bᵀ d` or `Aᵀ m` at a time.

use super::ir::{BinaryOp, LoopExpr, Reg};
use super::KernelBuilder;

/// The tile size `m` of Winograd's F(m×m, 3×3).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum TileSize {
    /// F(2×2, 3×3): 16 points, 4×4 input tiles. Multiplications 4/9 of direct's, but 2.25×
    /// less weight traffic than F(4×4) and 4× the tiles on a small map.
    F2,
    /// F(4×4, 3×3): 36 points, 6×6 input tiles. Multiplications 1/4 of direct's.
    F4,
}

impl TileSize {
    /// Output pixels per tile side.
    pub const fn m(self) -> usize {
        match self {
            TileSize::F2 => 2,
            TileSize::F4 => 4,
        }
    }

    /// Input pixels per tile side, and the side of a transformed tile: `m + 3 − 1`.
    pub const fn alpha(self) -> usize {
        self.m() + 2
    }

    /// Points of a transformed tile: one matrix product each.
    pub const fn points(self) -> usize {
        self.alpha() * self.alpha()
    }

    /// How the kernels' descriptions name it: `F(4×4, 3×3)`.
    pub fn name(self) -> &'static str {
        match self {
            TileSize::F2 => "F(2×2, 3×3)",
            TileSize::F4 => "F(4×4, 3×3)",
        }
    }
}

/// F(4×4, 3×3)'s `Bᵀ`, the input transform, with the points 0, ±1, ±2 and ∞. Used by the
/// tests of the transforms; the kernels use the factored forms of `bt_row` and `at_row`.
pub const BT: [[f32; 6]; 6] = [
    [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
    [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
    [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
    [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
    [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
    [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
];

/// F(4×4, 3×3)'s `Aᵀ`, the output transform, for the same points.
pub const AT: [[f32; 6]; 4] = [
    [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
    [0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
    [0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
    [0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
];

/// F(4×4, 3×3)'s `G`, the filter transform, for the same points (applied in f64 at pack
/// time).
pub const G: [[f64; 3]; 6] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// F(2×2, 3×3)'s `Bᵀ`, with the points 0, ±1 and ∞.
pub const BT2: [[f32; 4]; 4] = [
    [1.0, 0.0, -1.0, 0.0],
    [0.0, 1.0, 1.0, 0.0],
    [0.0, -1.0, 1.0, 0.0],
    [0.0, 1.0, 0.0, -1.0],
];

/// F(2×2, 3×3)'s `Aᵀ`.
pub const AT2: [[f32; 4]; 2] = [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]];

/// F(2×2, 3×3)'s `G`.
pub const G2: [[f64; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];

/// The constants F(4×4, 3×3)'s transforms multiply by, in registers (F(2×2, 3×3)'s only add
/// and subtract).
pub(super) struct Constants {
    two: Reg,
    minus_two: Reg,
    four: Reg,
    minus_four: Reg,
    minus_five: Reg,
    eight: Reg,
}

impl Constants {
    /// `None` for a size whose transforms need none.
    pub(super) fn new(b: &mut KernelBuilder, size: TileSize) -> Option<Constants> {
        (size == TileSize::F4).then(|| Constants {
            two: b.constant(2.0),
            minus_two: b.constant(-2.0),
            four: b.constant(4.0),
            minus_four: b.constant(-4.0),
            minus_five: b.constant(-5.0),
            eight: b.constant(8.0),
        })
    }
}

pub(super) fn add(b: &mut KernelBuilder, x: Reg, y: Reg) -> Reg {
    b.binary(BinaryOp::Add, x, y)
}

fn sub(b: &mut KernelBuilder, x: Reg, y: Reg) -> Reg {
    b.binary(BinaryOp::Sub, x, y)
}

pub(in crate::lower) fn fma(b: &mut KernelBuilder, x: Reg, y: Reg, z: Reg) -> Reg {
    b.assign(LoopExpr::Fma(x, y, z))
}

/// Row `i` of `Bᵀ · d` for the `alpha` values `get(0..alpha)` (fetched only where the row
/// needs them, in increasing order): F(2×2)'s when `k` is `None`, F(4×4)'s otherwise.
pub(super) fn bt_row(
    b: &mut KernelBuilder,
    k: Option<&Constants>,
    i: usize,
    get: &mut impl FnMut(&mut KernelBuilder, usize) -> Reg,
) -> Reg {
    match k {
        Some(k) => bt_row4(b, k, i, get),
        None => {
            // d0 − d2, d1 + d2, d2 − d1, d1 − d3.
            let (x, y) = match i {
                0 => (0, 2),
                1 | 2 => (1, 2),
                _ => (1, 3),
            };
            let (dx, dy) = (get(b, x), get(b, y));
            match i {
                1 => add(b, dx, dy),
                2 => sub(b, dy, dx),
                _ => sub(b, dx, dy),
            }
        }
    }
}

/// Row `r` of `Aᵀ · m` for the `alpha` values `get(0..alpha)`: F(2×2)'s when `k` is `None`,
/// F(4×4)'s otherwise.
pub(super) fn at_row(
    b: &mut KernelBuilder,
    k: Option<&Constants>,
    r: usize,
    get: &mut impl FnMut(&mut KernelBuilder, usize) -> Reg,
) -> Reg {
    match k {
        Some(k) => at_row4(b, k, r, get),
        None if r == 0 => {
            // m0 + m1 + m2.
            let (m0, m1, m2) = (get(b, 0), get(b, 1), get(b, 2));
            let sum = add(b, m1, m2);
            add(b, m0, sum)
        }
        None => {
            // (m1 − m2) − m3.
            let (m1, m2, m3) = (get(b, 1), get(b, 2), get(b, 3));
            let difference = sub(b, m1, m2);
            sub(b, difference, m3)
        }
    }
}

/// F(4×4)'s row `i` of `Bᵀ · d`, in the factored form of `BT`.
fn bt_row4(
    b: &mut KernelBuilder,
    k: &Constants,
    i: usize,
    get: &mut impl FnMut(&mut KernelBuilder, usize) -> Reg,
) -> Reg {
    match i {
        0 | 5 => {
            // 4·d0 − 5·d2 + d4, and 4·d1 − 5·d3 + d5.
            let first = if i == 0 { 0 } else { 1 };
            let (d0, d2, d4) = (get(b, first), get(b, first + 2), get(b, first + 4));
            let inner = fma(b, k.minus_five, d2, d4);
            fma(b, k.four, d0, inner)
        }
        _ => {
            let (d1, d2, d3, d4) = (get(b, 1), get(b, 2), get(b, 3), get(b, 4));
            match i {
                // −4·(d1 + d2) + (d3 + d4).
                1 => {
                    let s12 = add(b, d1, d2);
                    let s34 = add(b, d3, d4);
                    fma(b, k.minus_four, s12, s34)
                }
                // 4·(d1 − d2) + (d4 − d3).
                2 => {
                    let d12 = sub(b, d1, d2);
                    let d43 = sub(b, d4, d3);
                    fma(b, k.four, d12, d43)
                }
                // ±2·(d3 − d1) + (d4 − d2).
                _ => {
                    let d31 = sub(b, d3, d1);
                    let d42 = sub(b, d4, d2);
                    let factor = if i == 3 { k.two } else { k.minus_two };
                    fma(b, factor, d31, d42)
                }
            }
        }
    }
}

/// F(4×4)'s row `r` of `Aᵀ · m`, in the factored form of `AT`.
fn at_row4(
    b: &mut KernelBuilder,
    k: &Constants,
    r: usize,
    get: &mut impl FnMut(&mut KernelBuilder, usize) -> Reg,
) -> Reg {
    let m0 = (r == 0).then(|| get(b, 0));
    let (m1, m2, m3, m4) = (get(b, 1), get(b, 2), get(b, 3), get(b, 4));
    match r {
        // m0 + (m1 + m2) + (m3 + m4).
        0 => {
            let s12 = add(b, m1, m2);
            let s34 = add(b, m3, m4);
            let sum = add(b, s12, s34);
            match m0 {
                Some(m0) => add(b, m0, sum),
                None => sum,
            }
        }
        // (m1 + m2) + 4·(m3 + m4).
        2 => {
            let s12 = add(b, m1, m2);
            let s34 = add(b, m3, m4);
            fma(b, k.four, s34, s12)
        }
        // (m1 − m2) + 2·(m3 − m4), and (m1 − m2) + 8·(m3 − m4) + m5.
        _ => {
            let d12 = sub(b, m1, m2);
            let d34 = sub(b, m3, m4);
            if r == 1 {
                fma(b, k.two, d34, d12)
            } else {
                let m5 = get(b, 5);
                let with_m5 = add(b, d12, m5);
                fma(b, k.eight, d34, with_m5)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{AT, AT2, BT, BT2, G, G2};

    /// `Aᵀ [(G g) ⊙ (Bᵀ d)]` against the correlation of `d` with `g`, for arbitrary values.
    fn check<const A: usize, const M: usize>(
        bt: &[[f32; A]; A],
        at: &[[f32; A]; M],
        g_matrix: &[[f64; 3]; A],
    ) {
        let d = [0.3, -1.2, 2.5, 0.7, -0.4, 1.9];
        let g = [0.8, -0.35, 1.3];
        let gg: Vec<f64> = g_matrix
            .iter()
            .map(|row| (0..3).map(|k| row[k] * g[k]).sum())
            .collect();
        let bd: Vec<f64> = bt
            .iter()
            .map(|row| (0..A).map(|k| f64::from(row[k]) * d[k]).sum())
            .collect();
        for (y, row) in at.iter().enumerate() {
            let winograd: f64 = (0..A).map(|k| f64::from(row[k]) * gg[k] * bd[k]).sum();
            let direct: f64 = (0..3).map(|k| d[y + k] * g[k]).sum();
            assert!(
                (winograd - direct).abs() < 1e-12,
                "{y}: {winograd} vs {direct}"
            );
        }
    }

    /// The three matrices are a correct F(4, 3), checked against the sum that defines it.
    #[test]
    fn the_matrices_compute_a_correlation() {
        check(&BT, &AT, &G);
    }

    /// And F(2, 3)'s.
    #[test]
    fn the_f2_matrices_compute_a_correlation() {
        check(&BT2, &AT2, &G2);
    }
}
