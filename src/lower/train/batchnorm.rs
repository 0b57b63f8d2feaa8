//! Batch norm in training, PyTorch's `train()` semantics: normalized with the batch's mean
//! and biased variance over batch × pixels, in two phases around a batch-wide sync each way.
//!
//! Forward: a kernel computes each image's per-channel mean and sum of squared deviations
//! (two passes over its pixels, so a large mean does not cancel the variance); the sync
//! combines the images' (Chan et al.'s pairwise formula, in f64) and writes each image's
//! `scale, shift, mean, 1/σ`; a kernel then computes `y = x·scale + shift`.
//!
//! Backward: with `x̂ = (x − mean)/σ`, `∂β = Σ ∂y`, `∂γ = Σ ∂y·x̂` over the batch, and
//! `∂x = γ/σ · (∂y − ∂β/M − x̂·∂γ/M)` (M = batch × pixels). A kernel sums each image's
//! `∂y` and `∂y·x̂`; the sync totals them and folds everything per channel into
//! `∂x = a·∂y + k1·x + k0`; a kernel applies it. A frozen batch norm runs as at inference,
//! and its backward is `∂x = ∂y·γ/√(running var + eps)`.
//!
//! When the batch norm's only reader is an activation, its forward kernel applies it and
//! stores the result where the activation's value goes (into the next window op's padded
//! frame when that is its only reader): in ResNet and MobileNet, one pass over the
//! activation instead of three (normalize, activate, pad). The backward kernels then take
//! the activation's gradient and multiply by its derivative themselves, at the normalized
//! value recomputed from `x` with the forward's own `fma` (so bit for bit).

use super::super::elementwise::channel_vectors;
use super::super::ir::{Affine, BinaryOp, BufferId, LoopExpr, Reg};
use super::super::program::ConstSpec;
use super::super::{KernelBuilder, LowerError};
use super::activation::{derivative_from_output, times_derivative, Stored};
use super::{Backward, BatchSync, SyncOp};
use crate::graph::{Activation, NodeId, Op};

/// Channel vectors summed at once by a statistics kernel.
const GROUP: usize = 4;

/// Zeroes the two per-channel rows (`c` channels, `cp` apart) that a one-pass sum over the
/// pixels accumulates into.
fn zero_two_rows(b: &mut KernelBuilder, buffer: BufferId, c: usize, cp: usize) {
    let zero = b.constant(0.0);
    for (c0, _) in channel_vectors(c) {
        b.store(buffer, Affine::constant(c0), 4, zero);
        b.store(buffer, Affine::constant(cp + c0), 4, zero);
    }
}

impl Backward<'_> {
    fn channel_groups(channels: usize) -> Vec<Vec<(usize, u8)>> {
        channel_vectors(channels)
            .collect::<Vec<_>>()
            .chunks(GROUP)
            .map(<[_]>::to_vec)
            .collect()
    }

    fn batch_norm_eps(&self, id: NodeId) -> Result<f64, LowerError> {
        match self.graph().nodes[id].op {
            Op::BatchNorm { eps } => Ok(eps),
            _ => Err(self.lowering.malformed(id, "not a batch norm")),
        }
    }

    /// The training forward of batch norm `id`.
    pub(super) fn batch_norm_forward(&mut self, id: NodeId) -> Result<(), LowerError> {
        let eps = self.batch_norm_eps(id)?;
        let x = self.lowering.arg(id, 0)?;
        if x.padded.is_some() {
            return Err(self.lowering.malformed(id, "its input is padded"));
        }
        let s = x.shape;
        let (c, pixels) = (s.c, s.h * s.w);
        let cp = c.next_multiple_of(4);
        let fused = self.fusable_activation(id);
        if let Some((reader, _)) = fused {
            self.activation_of[reader] = Some(id);
        }
        let name = self.lowering.describe(id);
        let stats = self
            .lowering
            .add_temp(format!("{name} image mean, M2"), 2 * cp);
        let affine = self
            .lowering
            .add_temp(format!("{name} batch scale, shift, mean, 1/σ"), 4 * cp);
        let mut b = self.builder(
            id,
            "bn_stats",
            format!("batchnorm statistics of one image: mean, M2 over {pixels} pixels of {c}"),
        );
        let inverse = b.constant(1.0 / pixels as f32);
        let groups = Self::channel_groups(c);
        if groups.len() == 1 {
            for group in groups {
                let sums: Vec<Reg> = group.iter().map(|_| b.constant(0.0)).collect();
                b.repeat(pixels, |b, p| {
                    for (&(c0, lanes), &acc) in group.iter().zip(&sums) {
                        let v = b.load(x.buffer, p.clone() * c + c0, lanes);
                        b.set(acc, LoopExpr::Binary(BinaryOp::Add, acc, v));
                    }
                });
                let means: Vec<Reg> = sums
                    .iter()
                    .map(|&acc| b.binary(BinaryOp::Mul, acc, inverse))
                    .collect();
                let squares: Vec<Reg> = group.iter().map(|_| b.constant(0.0)).collect();
                b.repeat(pixels, |b, p| {
                    for ((&(c0, lanes), &acc), &mean) in group.iter().zip(&squares).zip(&means) {
                        let v = b.load(x.buffer, p.clone() * c + c0, lanes);
                        let d = b.binary(BinaryOp::Sub, v, mean);
                        b.set(acc, LoopExpr::Fma(d, d, acc));
                    }
                });
                for ((&(c0, _), &mean), &m2) in group.iter().zip(&means).zip(&squares) {
                    b.store(stats, Affine::constant(c0), 4, mean);
                    b.store(stats, Affine::constant(cp + c0), 4, m2);
                }
            }
        } else {
            // Two passes over the pixels (sums, then squared deviations from the mean), every
            // channel of a pixel at once, the running sums kept in `stats` itself: a pass
            // per group of channels would stride over the image.
            zero_two_rows(&mut b, stats, c, cp);
            b.repeat(pixels, |b, p| {
                for (c0, lanes) in channel_vectors(c) {
                    let v = b.load(x.buffer, p.clone() * c + c0, lanes);
                    let sum = b.load(stats, Affine::constant(c0), 4);
                    let sum = b.binary(BinaryOp::Add, sum, v);
                    b.store(stats, Affine::constant(c0), 4, sum);
                }
            });
            for (c0, _) in channel_vectors(c) {
                let sum = b.load(stats, Affine::constant(c0), 4);
                let mean = b.binary(BinaryOp::Mul, sum, inverse);
                b.store(stats, Affine::constant(c0), 4, mean);
            }
            b.repeat(pixels, |b, p| {
                for (c0, lanes) in channel_vectors(c) {
                    let v = b.load(x.buffer, p.clone() * c + c0, lanes);
                    let mean = b.load(stats, Affine::constant(c0), 4);
                    let d = b.binary(BinaryOp::Sub, v, mean);
                    let m2 = b.load(stats, Affine::constant(cp + c0), 4);
                    let m2 = b.assign(LoopExpr::Fma(d, d, m2));
                    b.store(stats, Affine::constant(cp + c0), 4, m2);
                }
            });
        }
        self.lowering.emit(b);
        let graph = self.graph();
        self.syncs.push(BatchSync {
            before_kernel: self.lowering.kernels.len(),
            op: SyncOp::BatchNormForward {
                names: ["weight", "bias", "running_mean", "running_var"]
                    .map(|suffix| graph.tensor_name(id, suffix)),
                eps,
                channels: c,
                channels_padded: cp,
                pixels,
                stats,
                affine,
            },
        });
        let (out, activation) = match fused {
            Some((reader, activation)) => (self.activation_destination(reader), Some(activation)),
            None => {
                let target = self.lowering.target(id);
                self.lowering.set_target_value(id, target);
                let out = Stored {
                    buffer: target.buffer,
                    origin: target.origin,
                    row: s.w,
                    pixel: target.stride,
                };
                (out, None)
            }
        };
        let (what, comment) = match activation {
            Some(a) => (
                format!("bn_{}", a.name()),
                format!("batchnorm on batch statistics, then {}, {s}", a.name()),
            ),
            None => (
                "bn_train".to_string(),
                format!("batchnorm on batch statistics {s}"),
            ),
        };
        let mut b = self.builder(id, &what, comment);
        let element = |b: &mut KernelBuilder, from: Affine, to: Affine| {
            for (c0, lanes) in channel_vectors(c) {
                let value = b.load(x.buffer, from.clone() + c0, lanes);
                let scale = b.load(affine, Affine::constant(c0), 4);
                let shift = b.load(affine, Affine::constant(cp + c0), 4);
                let y = b.assign(LoopExpr::Fma(value, scale, shift));
                let y = b.activate(y, activation);
                b.store(out.buffer, to.clone() + c0, lanes, y);
            }
        };
        if out.row == s.w {
            b.parallel(pixels, |b, p| {
                let to = p.clone() * out.pixel + out.origin;
                element(b, p * c, to);
            });
        } else {
            // A padded frame: its rows are longer than the tensor's.
            b.parallel(s.h, |b, iy| {
                b.repeat(s.w, |b, ix| {
                    let from = (iy.clone() * s.w + ix.clone()) * c;
                    let to = (iy.clone() * out.row + ix) * out.pixel + out.origin;
                    element(b, from, to);
                });
            });
        }
        self.lowering.emit(b);
        self.affines[id] = Some(affine);
        self.applied_activations[id] = activation;
        Ok(())
    }

    /// The backward of training batch norm `id` given `∂y` in `grad`.
    pub(super) fn batch_norm_backward(
        &mut self,
        id: NodeId,
        grad: BufferId,
        wants_input: bool,
    ) -> Result<(), LowerError> {
        let affine = self.affines[id]
            .ok_or_else(|| self.lowering.malformed(id, "its forward was not lowered"))?;
        let x = self.lowering.arg(id, 0)?;
        let s = x.shape;
        let (c, pixels) = (s.c, s.h * s.w);
        let cp = c.next_multiple_of(4);
        let activation = self.applied_activations[id];
        // `∂y` before the activation the forward kernel applied: the derivative at the
        // normalized value, recomputed as that kernel computed it.
        let through_activation =
            |b: &mut KernelBuilder, activation: Option<Activation>, xv: Reg, dy: Reg, c0: usize| {
                let Some(activation) = activation else {
                    return dy;
                };
                let scale = b.load(affine, Affine::constant(c0), 4);
                let shift = b.load(affine, Affine::constant(cp + c0), 4);
                let z = b.assign(LoopExpr::Fma(xv, scale, shift));
                // ReLU and ReLU6 keep the gradient where their output is in (0, 6), exactly
                // where their input is: no need to apply them.
                let exact = matches!(activation, Activation::Relu | Activation::Relu6);
                let v = if derivative_from_output(activation) && !exact {
                    b.activate(z, Some(activation))
                } else {
                    z
                };
                times_derivative(b, activation, v, dy)
            };
        let name = self.lowering.describe(id);
        let sums = self
            .lowering
            .add_temp(format!("{name} image Σ∂y, Σ∂y·x̂"), 2 * cp);
        // Only made when a kernel reads it: the memory plan places what kernels touch.
        let coefficients = wants_input.then(|| {
            self.lowering
                .add_temp(format!("{name} ∂x = a·∂y + k1·x + k0"), 3 * cp)
        });
        let mut b = self.builder(
            id,
            "bn_grad_sums",
            format!("batchnorm backward sums of one image over {pixels} pixels of {c}"),
        );
        let groups = Self::channel_groups(c);
        if groups.len() == 1 {
            for group in groups {
                let means: Vec<Reg> = group
                    .iter()
                    .map(|&(c0, _)| b.load(affine, Affine::constant(2 * cp + c0), 4))
                    .collect();
                let dys: Vec<Reg> = group.iter().map(|_| b.constant(0.0)).collect();
                let dyx: Vec<Reg> = group.iter().map(|_| b.constant(0.0)).collect();
                b.repeat(pixels, |b, p| {
                    for (v, &(c0, lanes)) in group.iter().enumerate() {
                        let at = p.clone() * c + c0;
                        let dy = b.load(grad, at.clone(), lanes);
                        let xv = b.load(x.buffer, at, lanes);
                        let dy = through_activation(b, activation, xv, dy, c0);
                        let centered = b.binary(BinaryOp::Sub, xv, means[v]);
                        b.set(dys[v], LoopExpr::Binary(BinaryOp::Add, dys[v], dy));
                        b.set(dyx[v], LoopExpr::Fma(dy, centered, dyx[v]));
                    }
                });
                // `Σ ∂y·x̂` is `Σ ∂y·(x − mean)` times `1/σ`, one multiply per channel rather than
                // per pixel (and four registers fewer in the loop).
                for (v, &(c0, _)) in group.iter().enumerate() {
                    let inv_sigma = b.load(affine, Affine::constant(3 * cp + c0), 4);
                    let dyx = b.binary(BinaryOp::Mul, dyx[v], inv_sigma);
                    b.store(sums, Affine::constant(c0), 4, dys[v]);
                    b.store(sums, Affine::constant(cp + c0), 4, dyx);
                }
            }
        } else {
            // One pass over the pixels, every channel of a pixel at once, with the sums kept in
            // `sums` itself: the input is read in memory order (it comes from the forward,
            // long out of cache), where a pass per group of channels strides over it.
            zero_two_rows(&mut b, sums, c, cp);
            b.repeat(pixels, |b, p| {
                for (c0, lanes) in channel_vectors(c) {
                    let at = p.clone() * c + c0;
                    let dy = b.load(grad, at.clone(), lanes);
                    let xv = b.load(x.buffer, at, lanes);
                    let dy = through_activation(b, activation, xv, dy, c0);
                    let mean = b.load(affine, Affine::constant(2 * cp + c0), 4);
                    let centered = b.binary(BinaryOp::Sub, xv, mean);
                    let sum = b.load(sums, Affine::constant(c0), 4);
                    let sum = b.binary(BinaryOp::Add, sum, dy);
                    b.store(sums, Affine::constant(c0), 4, sum);
                    let dyx = b.load(sums, Affine::constant(cp + c0), 4);
                    let dyx = b.assign(LoopExpr::Fma(dy, centered, dyx));
                    b.store(sums, Affine::constant(cp + c0), 4, dyx);
                }
            });
            // `Σ ∂y·x̂` is `Σ ∂y·(x − mean)` times `1/σ`, one multiply per channel rather than
            // per pixel.
            for (c0, _) in channel_vectors(c) {
                let inv_sigma = b.load(affine, Affine::constant(3 * cp + c0), 4);
                let dyx = b.load(sums, Affine::constant(cp + c0), 4);
                let dyx = b.binary(BinaryOp::Mul, dyx, inv_sigma);
                b.store(sums, Affine::constant(cp + c0), 4, dyx);
            }
        }
        self.lowering.emit(b);
        let graph = self.graph();
        self.syncs.push(BatchSync {
            before_kernel: self.lowering.kernels.len(),
            op: SyncOp::BatchNormBackward {
                names: ["weight", "bias"].map(|suffix| graph.tensor_name(id, suffix)),
                channels: c,
                channels_padded: cp,
                pixels,
                affine,
                sums,
                coefficients,
            },
        });
        let Some(coefficients) = coefficients else {
            return Ok(());
        };
        let input = graph.nodes[id].inputs[0];
        let (target, accumulate) = self.grad_target(input);
        let mut b = self.builder(id, "bn_grad", format!("∂input of batchnorm {s}"));
        b.parallel(pixels, |b, p| {
            for (c0, lanes) in channel_vectors(c) {
                let at = p.clone() * c + c0;
                let dy = b.load(grad, at.clone(), lanes);
                let xv = b.load(x.buffer, at.clone(), lanes);
                let dy = through_activation(b, activation, xv, dy, c0);
                let a = b.load(coefficients, Affine::constant(c0), 4);
                let k1 = b.load(coefficients, Affine::constant(cp + c0), 4);
                let k0 = b.load(coefficients, Affine::constant(2 * cp + c0), 4);
                let linear = b.assign(LoopExpr::Fma(xv, k1, k0));
                let dx = b.assign(LoopExpr::Fma(dy, a, linear));
                b.store_or_add(target, at, lanes, dx, accumulate);
            }
        });
        self.lowering.emit(b);
        Ok(())
    }

    /// `∂x (+)= ∂y · γ/√(running var + eps)` for a frozen batch norm.
    pub(super) fn frozen_batch_norm_backward(
        &mut self,
        id: NodeId,
        grad: BufferId,
    ) -> Result<(), LowerError> {
        let input = self.graph().nodes[id].inputs[0];
        let s = self.graph().shape(input);
        let c = s.c;
        let cp = c.next_multiple_of(4);
        let name = format!("{} scale (backward)", self.lowering.describe(id));
        let scale = self.lowering.add_const(
            name,
            cp,
            ConstSpec::BatchNormScale {
                node: id,
                channels_padded: cp,
            },
        );
        let (target, accumulate) = self.grad_target(input);
        let mut b = self.builder(id, "bn_grad", format!("∂input of frozen batchnorm {s}"));
        b.parallel(s.h * s.w, |b, p| {
            for (c0, lanes) in channel_vectors(c) {
                let at = p.clone() * c + c0;
                let dy = b.load(grad, at.clone(), lanes);
                let a = b.load(scale, Affine::constant(c0), 4);
                let dx = b.binary(BinaryOp::Mul, dy, a);
                b.store_or_add(target, at, lanes, dx, accumulate);
            }
        });
        self.lowering.emit(b);
        Ok(())
    }
}
