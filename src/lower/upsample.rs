//! Upsampling by integer factors (`graph::ops::upsample` defines it).
//!
//! Nearest: each input pixel is stored `sh × sw` times, by loops over the input pixels and the
//! copies, so every index is affine. Bilinear is separable and done in two kernels,
//! along the width into a scratch tensor and then along the height, in PyTorch's order of
//! operations (the width's interpolations first). Along an axis, output `i·s + d` reads inputs
//! `i + δ` and `i + δ + 1` with weights that depend only on the phase `d`, except at the borders
//! where the sampling point is clamped; each phase is a loop over its regular run of `i` plus
//! the one or two border outputs written out.

use super::builder::KernelBuilder;
use super::elementwise::channel_vectors;
use super::ir::{Affine, BinaryOp, BufferId, Reg};
use super::{LowerError, Lowering};
use crate::graph::ops::bilinear_source;
use crate::graph::{NodeId, UpsampleAttrs, UpsampleMode};

/// One output along an axis: the two inputs it reads and their weights.
#[derive(Copy, Clone, PartialEq)]
struct Tap {
    first: usize,
    second: usize,
    weights: (f32, f32),
}

/// The outputs `i·s + d` of phase `d` along an axis of `n` inputs: the run of `i` in
/// `start..end` reads `i + offset − 1` and `i + offset` (`offset` is 0 or 1) with `weights`,
/// and the others, listed with their `i`, read what their tap says.
struct Phase {
    run: std::ops::Range<usize>,
    offset: usize,
    weights: (f32, f32),
    borders: Vec<(usize, Tap)>,
}

fn tap(n: usize, s: usize, o: usize) -> Tap {
    let (first, second, l0, l1) = bilinear_source(n, s, o);
    Tap {
        first,
        second,
        weights: (l0, l1),
    }
}

fn phase(n: usize, s: usize, d: usize) -> Phase {
    let taps: Vec<Tap> = (0..n).map(|i| tap(n, s, i * s + d)).collect();
    // The regular run: `first = i + offset − 1`, `second = first + 1`, equal weights.
    let regular =
        |i: usize, t: &Tap, offset: usize| t.second == t.first + 1 && t.first + 1 == i + offset;
    let mut best = (0..0, 1, (1.0, 0.0));
    for offset in [0, 1] {
        let mut i = 0;
        while i < n {
            if !regular(i, &taps[i], offset) {
                i += 1;
                continue;
            }
            let start = i;
            let weights = taps[i].weights;
            while i < n && regular(i, &taps[i], offset) && taps[i].weights == weights {
                i += 1;
            }
            if i - start > best.0.len() {
                best = (start..i, offset, weights);
            }
        }
    }
    let (run, offset, weights) = best;
    let borders = (0..n)
        .filter(|i| !run.contains(i))
        .map(|i| (i, taps[i]))
        .collect();
    Phase {
        run,
        offset,
        weights,
        borders,
    }
}

/// `out = w0 · a + w1 · b` over the channel vectors of one pixel: `a` and `b` are the first
/// elements of the two input pixels; `store` gets the channel offset, the lanes and the value.
fn lerp(
    b: &mut KernelBuilder,
    src: BufferId,
    [first, second]: [Affine; 2],
    weights: (f32, f32),
    channels: usize,
    store: &mut dyn FnMut(&mut KernelBuilder, Affine, u8, Reg),
) {
    for (c0, lanes) in channel_vectors(channels) {
        let a = b.load(src, first.clone() + c0, lanes);
        let x = b.load(src, second.clone() + c0, lanes);
        let w0 = b.constant(weights.0);
        let w1 = b.constant(weights.1);
        let left = b.binary(BinaryOp::Mul, w0, a);
        let right = b.binary(BinaryOp::Mul, w1, x);
        let value = b.binary(BinaryOp::Add, left, right);
        store(b, Affine::constant(c0), lanes, value);
    }
}

/// Stores line `p`'s output `o` at channel offset `c0`: `(builder, p, o, c0, lanes, value)`.
type StoreOutput<'a> = &'a dyn Fn(&mut KernelBuilder, &Affine, Affine, Affine, u8, Reg);

/// Bilinear interpolation along one axis of `n` pixels upsampled `s` times, for each of
/// `outer` lines (the parallel loop): `input(p, a)` is the pixel index of line `p`'s input
/// `a`, and `store(b, p, o, c0, lanes, value)` stores line `p`'s output `o`.
#[allow(clippy::too_many_arguments)]
fn interpolate_axis(
    b: &mut KernelBuilder,
    outer: usize,
    n: usize,
    s: usize,
    src: BufferId,
    channels: usize,
    input: &dyn Fn(&Affine, Affine) -> Affine,
    store: StoreOutput,
) {
    let phases: Vec<Phase> = (0..s).map(|d| phase(n, s, d)).collect();
    b.parallel(outer, |b, p| {
        for (d, phase) in phases.iter().enumerate() {
            b.repeat(phase.run.len(), |b, j| {
                // Output `i·s + d` with `i = start + j` reads `i + offset − 1` and `i + offset`.
                let first = j.clone() + (phase.run.start + phase.offset - 1);
                let taps = [
                    input(&p, first.clone()) * channels,
                    input(&p, first + 1) * channels,
                ];
                let o = j * s + (phase.run.start * s + d);
                lerp(
                    b,
                    src,
                    taps,
                    phase.weights,
                    channels,
                    &mut |b, c0, lanes, v| store(b, &p, o.clone(), c0, lanes, v),
                );
            });
            for &(i, tap) in &phase.borders {
                let taps = [
                    input(&p, Affine::constant(tap.first)) * channels,
                    input(&p, Affine::constant(tap.second)) * channels,
                ];
                let o = Affine::constant(i * s + d);
                lerp(
                    b,
                    src,
                    taps,
                    tap.weights,
                    channels,
                    &mut |b, c0, lanes, v| store(b, &p, o.clone(), c0, lanes, v),
                );
            }
        }
    });
}

impl Lowering<'_> {
    pub(super) fn upsample(&mut self, id: NodeId, attrs: UpsampleAttrs) -> Result<(), LowerError> {
        let x = self.arg(id, 0)?;
        let s = x.shape;
        let Some([sh, sw]) = attrs.factors(s) else {
            return self.upsample_sized(id, attrs, x);
        };
        if sh == 0 || sw == 0 || s.flat {
            return Err(self.malformed(id, "needs an image and non-zero scales"));
        }
        let (h, w, c) = (s.h, s.w, s.c);
        let out_w = w * sw;
        let out = self.target(id);
        match attrs.mode {
            UpsampleMode::Nearest => {
                let comment = format!("upsample {s} by {sh}×{sw}, nearest");
                let mut b = self.builder(id, "upsample", comment);
                b.parallel(h, |b, iy| {
                    b.repeat(w, |b, ix| {
                        for (c0, lanes) in channel_vectors(c) {
                            let from = (iy.clone() * w + ix.clone()) * c + c0;
                            let value = b.load(x.buffer, from, lanes);
                            b.repeat(sh, |b, dy| {
                                b.repeat(sw, |b, dx| {
                                    let row = iy.clone() * sh + dy.clone();
                                    let pixel = row * out_w + ix.clone() * sw + dx;
                                    let to = out.index(pixel, Affine::constant(c0));
                                    b.store(out.buffer, to, lanes, value);
                                });
                            });
                        }
                    });
                });
                self.emit(b);
            }
            UpsampleMode::Bilinear => {
                // Along the width, into an h × (w·sw) × c scratch tensor ...
                let name = format!("{} rows", self.describe(id));
                let rows = self.add_temp(name, h * out_w * c);
                let comment = format!("upsample {s} by {sw} along the width, bilinear");
                let mut b = self.builder(id, "upsample_w", comment);
                interpolate_axis(
                    &mut b,
                    h,
                    w,
                    sw,
                    x.buffer,
                    c,
                    &|y, a| y.clone() * w + a,
                    &|b, y, o, c0, lanes, v| {
                        b.store(rows, (y.clone() * out_w + o) * c + c0, lanes, v)
                    },
                );
                self.emit(b);
                // ... then along the height, one output column per iteration.
                let comment = format!("upsample {s} by {sh} along the height, bilinear");
                let mut b = self.builder(id, "upsample_h", comment);
                interpolate_axis(
                    &mut b,
                    out_w,
                    h,
                    sh,
                    rows,
                    c,
                    &|column, a| a * out_w + column.clone(),
                    &|b, column, o, c0, lanes, v| {
                        let to = out.index(o * out_w + column.clone(), c0);
                        b.store(out.buffer, to, lanes, v)
                    },
                );
                self.emit(b);
            }
        }
        self.set_target_value(id, out);
        Ok(())
    }
}
