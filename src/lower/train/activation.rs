//! The backward of every activation, on its own or fused into a conv or dense epilogue:
//! `∂x (+)= ∂y · f′`, with PyTorch's choices at the kinks (`Activation::derivative`, which
//! the reference applies).
//!
//! The derivative is taken from whichever value is cheaper to keep:
//!
//! - **the output** for ReLU, ReLU6 (where it is positive, below 6), sigmoid (`y·(1 − y)`)
//!   and tanh (`1 − y²`): exact, and the output is kept anyway for the next layer;
//! - **the input** for the rest (swish, hardswish, hardsigmoid, leaky ReLU, ELU, GELU), whose
//!   derivative the output does not determine (swish and GELU are not monotonic) or only up
//!   to rounding at the kinks. A standalone activation reads its input tensor. A conv or
//!   dense layer with such an activation fused is lowered without it, and a small kernel then
//!   keeps the pre-activation in a tensor of its own and applies the activation in place
//!   ([`Backward::forward_keeping_pre_activation`]), wherever the layer stored its output
//!   (plain, in a padded frame, or in a concat's slice).

use super::super::elementwise::channel_vectors;
use super::super::ir::{Affine, BinaryOp, BufferId, LoopExpr, Reg, UnaryOp};
use super::super::{KernelBuilder, LowerError, NodeBuffer};
use super::Backward;
use crate::graph::ops::{GELU_TANH_BETA, GELU_TANH_KAPPA};
use crate::graph::{Activation, NodeId, Op};

/// Whether the derivative of `activation` is computed from its output rather than its input.
pub(super) fn derivative_from_output(activation: Activation) -> bool {
    matches!(
        activation,
        Activation::Relu | Activation::Relu6 | Activation::Sigmoid | Activation::Tanh
    )
}

/// The activation fused into a conv or dense `op` whose backward needs the pre-activation,
/// which the training forward must then keep.
pub(super) fn fused_activation_needing_input(op: &Op) -> Option<Activation> {
    let activation = match op {
        Op::Conv(a) => a.activation,
        Op::Dense(a) => a.activation,
        _ => None,
    }?;
    (!derivative_from_output(activation)).then_some(activation)
}

/// Where a node's forward value is stored: pixel `(y, x)`, channel `ch` at element `origin +
/// (y·row + x)·pixel + ch` of `buffer`. A plain tensor has origin 0, `row = w`, `pixel = c`.
#[derive(Copy, Clone, Debug)]
pub(super) struct Stored {
    pub buffer: BufferId,
    pub origin: usize,
    /// Pixels per row.
    pub row: usize,
    /// Elements per pixel.
    pub pixel: usize,
}

/// `dy · f′(v)`, `v` being the output or the input as [`derivative_from_output`] says.
pub(super) fn times_derivative(
    b: &mut KernelBuilder,
    activation: Activation,
    v: Reg,
    dy: Reg,
) -> Reg {
    let one = b.constant(1.0);
    match activation {
        Activation::Relu => b.binary(BinaryOp::KeepWherePositive, v, dy),
        Activation::Relu6 => {
            let six = b.constant(6.0);
            let below = b.binary(BinaryOp::Sub, six, v);
            let kept = b.binary(BinaryOp::KeepWherePositive, v, dy);
            b.binary(BinaryOp::KeepWherePositive, below, kept)
        }
        Activation::Sigmoid => {
            let complement = b.binary(BinaryOp::Sub, one, v);
            let derivative = b.binary(BinaryOp::Mul, v, complement);
            b.binary(BinaryOp::Mul, dy, derivative)
        }
        Activation::Tanh => {
            let square = b.binary(BinaryOp::Mul, v, v);
            let derivative = b.binary(BinaryOp::Sub, one, square);
            b.binary(BinaryOp::Mul, dy, derivative)
        }
        Activation::Swish => {
            // `s + x·s·(1 − s)`.
            let s = b.unary(UnaryOp::Sigmoid, v);
            let xs = b.binary(BinaryOp::Mul, v, s);
            let complement = b.binary(BinaryOp::Sub, one, s);
            let derivative = b.assign(LoopExpr::Fma(xs, complement, s));
            b.binary(BinaryOp::Mul, dy, derivative)
        }
        Activation::Hardswish => {
            // 0 below −3, `x/3 + 1/2` on [−3, 3], 1 above. The middle piece is clamped to its
            // value at 3 (1.5) so that `1.5 + (1 − 1.5)` gives exactly 1 above 3, even where
            // `x/3` would be infinite.
            let three = b.constant(3.0);
            let half = b.constant(0.5);
            let top = b.constant(1.5);
            let third = b.binary(BinaryOp::Div, v, three);
            let middle = b.binary(BinaryOp::Add, third, half);
            let middle = b.binary(BinaryOp::Min, top, middle);
            let above = b.binary(BinaryOp::Sub, v, three);
            let to_one = b.binary(BinaryOp::Sub, one, middle);
            let step = b.binary(BinaryOp::KeepWherePositive, above, to_one);
            let upper = b.binary(BinaryOp::Add, middle, step);
            let shifted = b.binary(BinaryOp::Add, v, three);
            let derivative = b.binary(BinaryOp::KeepWherePositive, shifted, upper);
            // PyTorch's `x <= 3` branch includes −3 itself, where `x/3 + 1/2` is −1/2.
            let minus_three = b.constant(-3.0);
            let at_kink = b.binary(BinaryOp::EqualMask, v, minus_three);
            let minus_half = b.constant(-0.5);
            let kink = b.binary(BinaryOp::And, at_kink, minus_half);
            let derivative = b.binary(BinaryOp::Add, derivative, kink);
            b.binary(BinaryOp::Mul, dy, derivative)
        }
        Activation::Hardsigmoid => {
            // 1/6 on the open interval (−3, 3).
            let three = b.constant(3.0);
            let sixth = b.constant(1.0 / 6.0);
            let scaled = b.binary(BinaryOp::Mul, dy, sixth);
            let below = b.binary(BinaryOp::Sub, three, v);
            let kept = b.binary(BinaryOp::KeepWherePositive, below, scaled);
            let shifted = b.binary(BinaryOp::Add, v, three);
            b.binary(BinaryOp::KeepWherePositive, shifted, kept)
        }
        Activation::LeakyRelu(slope) => {
            // `dy` where x > 0, else `slope·dy`, each exactly.
            let kept = b.binary(BinaryOp::KeepWherePositive, v, dy);
            let rest = b.binary(BinaryOp::Sub, dy, kept);
            let slope = b.constant(slope.get());
            b.assign(LoopExpr::Fma(rest, slope, kept))
        }
        Activation::Elu(alpha) => {
            // `dy` where x > 0, else `α·exp(x)·dy`; the exponential of `min(0, x)`, which
            // cannot overflow.
            let kept = b.binary(BinaryOp::KeepWherePositive, v, dy);
            let rest = b.binary(BinaryOp::Sub, dy, kept);
            let zero = b.constant(0.0);
            let negative = b.binary(BinaryOp::Min, zero, v);
            let exp = b.unary(UnaryOp::Exp, negative);
            let alpha = b.constant(alpha.get());
            let slope = b.binary(BinaryOp::Mul, alpha, exp);
            b.assign(LoopExpr::Fma(rest, slope, kept))
        }
        Activation::Gelu => {
            // `Φ(x) + x·φ(x)`; beyond |x| = 20 both are 0 or 1 in f32, so x is clamped there
            // (which also keeps `x·φ(x)` from being `∞·0`).
            let x = clamp(b, v, 20.0);
            let zero = b.constant(0.0);
            let negated = b.binary(BinaryOp::Sub, zero, x);
            let magnitude = b.binary(BinaryOp::Max, x, negated);
            let inv_sqrt2 = b.constant(std::f32::consts::FRAC_1_SQRT_2);
            let z = b.binary(BinaryOp::Mul, magnitude, inv_sqrt2);
            let erfc = b.erfc_nonnegative(z);
            let half = b.constant(0.5);
            // The normal tail beyond |x|; Φ(x) is 1 minus it for x > 0.
            let tail = b.binary(BinaryOp::Mul, half, erfc);
            let two_tails = b.binary(BinaryOp::Add, tail, tail);
            let flip = b.binary(BinaryOp::Sub, one, two_tails);
            let flip = b.binary(BinaryOp::KeepWherePositive, x, flip);
            let cdf = b.binary(BinaryOp::Add, tail, flip);
            let square = b.binary(BinaryOp::Mul, x, x);
            let minus_half = b.constant(-0.5);
            let exponent = b.binary(BinaryOp::Mul, square, minus_half);
            let exp = b.unary(UnaryOp::Exp, exponent);
            let norm = b.constant((1.0 / (2.0 * std::f64::consts::PI).sqrt()) as f32);
            let density = b.binary(BinaryOp::Mul, exp, norm);
            let derivative = b.assign(LoopExpr::Fma(x, density, cdf));
            b.binary(BinaryOp::Mul, dy, derivative)
        }
        Activation::GeluTanh => {
            // `(1 + t)/2 + x/2 · (1 − t²) · β · (1 + 3κx²)`, t = tanh(β(x + κx³)); beyond
            // |x| = 10, t is ±1 in f32.
            let x = clamp(b, v, 10.0);
            let beta = b.constant(GELU_TANH_BETA);
            let kappa = b.constant(GELU_TANH_KAPPA);
            let half = b.constant(0.5);
            let square = b.binary(BinaryOp::Mul, x, x);
            let kx2 = b.binary(BinaryOp::Mul, kappa, square);
            let cubic = b.binary(BinaryOp::Mul, kx2, x);
            let sum = b.binary(BinaryOp::Add, x, cubic);
            let inner = b.binary(BinaryOp::Mul, beta, sum);
            let t = b.unary(UnaryOp::Tanh, inner);
            let one_plus_t = b.binary(BinaryOp::Add, one, t);
            let first = b.binary(BinaryOp::Mul, half, one_plus_t);
            let t2 = b.binary(BinaryOp::Mul, t, t);
            let sech2 = b.binary(BinaryOp::Sub, one, t2);
            let three = b.constant(3.0);
            let slope = b.assign(LoopExpr::Fma(three, kx2, one));
            let half_x = b.binary(BinaryOp::Mul, half, x);
            let product = b.binary(BinaryOp::Mul, half_x, sech2);
            let product = b.binary(BinaryOp::Mul, product, beta);
            let derivative = b.assign(LoopExpr::Fma(product, slope, first));
            b.binary(BinaryOp::Mul, dy, derivative)
        }
    }
}

/// `min(limit, max(−limit, v))`.
fn clamp(b: &mut KernelBuilder, v: Reg, limit: f32) -> Reg {
    let low = b.constant(-limit);
    let high = b.constant(limit);
    let above = b.binary(BinaryOp::Max, low, v);
    b.binary(BinaryOp::Min, high, above)
}

impl Backward<'_> {
    /// Where node `id`'s forward value is stored.
    pub(super) fn stored(&self, id: NodeId) -> Result<Stored, LowerError> {
        let s = self.graph().shape(id);
        if let Some(slice) = self.lowering.slices[id] {
            let whole = self.lowering.concat_targets[slice.concat]
                .ok_or_else(|| self.lowering.malformed(id, "its concat has no buffer yet"))?;
            return Ok(Stored {
                buffer: whole.buffer,
                origin: whole.origin + slice.channel,
                row: s.w,
                pixel: whole.stride,
            });
        }
        let value = self.value(id)?;
        Ok(match value.padded {
            Some(layout) => Stored {
                buffer: value.buffer,
                origin: layout.origin(s.c),
                row: layout.width,
                pixel: s.c,
            },
            None => Stored {
                buffer: value.buffer,
                origin: 0,
                row: s.w,
                pixel: s.c,
            },
        })
    }

    /// Calls `element(b, stored index, plain index, lanes)` over every element of node
    /// `id`'s value: one flat run when `stored` is plain, else pixel by pixel.
    pub(super) fn each_element(
        &self,
        b: &mut KernelBuilder,
        id: NodeId,
        stored: Stored,
        element: &mut impl FnMut(&mut KernelBuilder, Affine, Affine, u8),
    ) {
        let s = self.graph().shape(id);
        if stored.origin == 0 && stored.row == s.w && stored.pixel == s.c {
            b.vectors(s.numel(), true, &mut |b, at, lanes| {
                element(b, at.clone(), at, lanes)
            });
            return;
        }
        b.parallel(s.h, |b, iy| {
            b.repeat(s.w, |b, ix| {
                let from = (iy.clone() * stored.row + ix.clone()) * stored.pixel + stored.origin;
                let plain = (iy.clone() * s.w + ix) * s.c;
                for (c0, lanes) in channel_vectors(s.c) {
                    element(b, from.clone() + c0, plain.clone() + c0, lanes);
                }
            });
        });
    }

    /// The training forward of a conv or dense layer whose fused activation's derivative
    /// needs the pre-activation: the layer without its activation, then one kernel that
    /// copies the pre-activation out and applies the activation where the layer stored it.
    pub(super) fn forward_keeping_pre_activation(
        &mut self,
        id: NodeId,
        activation: Activation,
    ) -> Result<(), LowerError> {
        match &self.graph().nodes[id].op {
            Op::Conv(attrs) => {
                let mut attrs = attrs.clone();
                attrs.activation = None;
                self.lowering.conv(id, &attrs)?;
            }
            Op::Dense(attrs) => {
                let mut attrs = attrs.clone();
                attrs.activation = None;
                self.lowering.dense(id, &attrs)?;
            }
            _ => {
                return Err(self
                    .lowering
                    .malformed(id, "no layer to take the activation"))
            }
        }
        let stored = self.stored(id)?;
        let s = self.graph().shape(id);
        let name = format!(
            "{} before its {}",
            self.lowering.describe(id),
            activation.name()
        );
        let pre = self.lowering.add_temp(name, s.numel());
        let mut b = self.builder(
            id,
            "act_keep",
            format!("{} of {s}, keeping its input", activation.name()),
        );
        self.each_element(&mut b, id, stored, &mut |b, from, plain, lanes| {
            let z = b.load(stored.buffer, from.clone(), lanes);
            b.store(pre, plain, lanes, z);
            let y = b.activate(z, Some(activation));
            b.store(stored.buffer, from, lanes, y);
        });
        self.lowering.emit(b);
        self.pre_activations[id] = Some(pre);
        Ok(())
    }

    /// The backward of a standalone activation node.
    pub(super) fn activation(
        &mut self,
        id: NodeId,
        activation: Activation,
        grad: BufferId,
    ) -> Result<(), LowerError> {
        let input = self.graph().nodes[id].inputs[0];
        let (target, accumulate) = self.grad_target(input);
        self.activation_kernel(id, activation, grad, target, accumulate)
    }

    /// `out (+)= grad · activation′` for node `id`'s activation (standalone or fused), the
    /// derivative taken from its output or its input (see the module documentation).
    pub(super) fn activation_kernel(
        &mut self,
        id: NodeId,
        activation: Activation,
        grad: BufferId,
        out: BufferId,
        accumulate: bool,
    ) -> Result<(), LowerError> {
        let s = self.graph().shape(id);
        let source = if derivative_from_output(activation) {
            self.stored(id)?
        } else {
            let buffer = match self.graph().nodes[id].op {
                Op::Activation(_) => self.lowering.arg(id, 0)?.buffer,
                _ => self.pre_activations[id].ok_or_else(|| {
                    self.lowering
                        .malformed(id, "its pre-activation was not kept")
                })?,
            };
            Stored {
                buffer,
                origin: 0,
                row: s.w,
                pixel: s.c,
            }
        };
        let mut b = self.builder(
            id,
            "act_grad",
            format!("∂ through {} of {s}", activation.name()),
        );
        self.each_element(&mut b, id, source, &mut |b, from, at, lanes| {
            let value = b.load(source.buffer, from, lanes);
            let dy = b.load(grad, at.clone(), lanes);
            let dx = times_derivative(b, activation, value, dy);
            b.store_or_add(out, at, lanes, dx, accumulate);
        });
        self.lowering.emit(b);
        Ok(())
    }

    /// The activation that node `id`'s kernel (a training batch norm's, an add's) can apply
    /// itself: that of its only reader, an activation node. Its own value is then never
    /// stored: the backward recomputes it from its inputs (bit for bit, the same
    /// arithmetic) where the derivative needs it.
    pub(super) fn fusable_activation(&self, id: NodeId) -> Option<(NodeId, Activation)> {
        let lowering = &self.lowering;
        let &[reader] = lowering.readers[id].as_slice() else {
            return None;
        };
        let Op::Activation(activation) = self.graph().nodes[reader].op else {
            return None;
        };
        let plain = !lowering.is_output(id)
            && lowering.output_writer != Some(id)
            && lowering.slices[id].is_none();
        plain.then_some((reader, activation))
    }

    /// Where activation node `id`, computed by its input's kernel, stores its value, as a
    /// conv would: into its concat's slice, into the padded frame of its only reader when
    /// that is a window op (which then reads no copy), else a tensor of its own.
    pub(super) fn activation_destination(&mut self, id: NodeId) -> Stored {
        let s = self.graph().shape(id);
        if self.lowering.slices[id].is_some() {
            let target = self.lowering.target(id);
            self.lowering.set_target_value(id, target);
            return Stored {
                buffer: target.buffer,
                origin: target.origin,
                row: s.w,
                pixel: target.stride,
            };
        }
        let (buffer, layout) = self.lowering.conv_result(id);
        self.lowering.values[id] = Some(NodeBuffer {
            buffer,
            shape: s,
            hwc: None,
            padded: layout,
        });
        Stored {
            buffer,
            origin: layout.map_or(0, |l| l.origin(s.c)),
            row: layout.map_or(s.w, |l| l.width),
            pixel: s.c,
        }
    }
}
