//! The layers without a window: activations, batch norm as a per-channel affine map, `add`,
//! `mul` (elementwise or broadcast over pixels), softmax over channels, and the copies that
//! identities and a reordering flatten need.
//!
//! Tensors whose two operands share a layout are processed as one flat run of elements, 16
//! at a time; per-channel operands (batch norm, a broadcast gate), and outputs written into
//! a slice of a concat's buffer, make the kernel loop over pixels and then over channel
//! vectors.

use super::concat::Target;
use super::ir::{Affine, BinaryOp, BufferId, LoopExpr, ReduceOp, UnaryOp};
use super::{ConstSpec, KernelBuilder, LowerError, Lowering, NodeBuffer};
use crate::graph::{Activation, ArithmeticOp, NodeId, OpRule, ScalarAttrs, ScalarOp};

fn lanes(v: usize, vectors: usize, last: u8) -> u8 {
    if v + 1 == vectors {
        last
    } else {
        4
    }
}

/// Calls `f` for the channel vectors of a pixel: full vectors, then a partial one.
pub(super) fn channel_vectors(channels: usize) -> impl Iterator<Item = (usize, u8)> {
    let vectors = channels.div_ceil(4);
    let last = (channels - 4 * vectors.saturating_sub(1)) as u8;
    (0..vectors).map(move |v| (4 * v, lanes(v, vectors, last)))
}

impl Lowering<'_> {
    /// `out = f(inputs...)` elementwise over `len` elements in a flat, parallel loop; or,
    /// when the output is a slice of a concat's buffer, pixel by pixel.
    fn map_flat(
        &mut self,
        id: NodeId,
        what: &str,
        comment: String,
        inputs: &[BufferId],
        len: usize,
        f: impl Fn(&mut KernelBuilder, &[super::ir::Reg]) -> super::ir::Reg,
    ) -> Target {
        let shape = self.graph.shape(id);
        let out = self.target(id);
        let mut b = self.builder(id, what, comment);
        let element = |b: &mut KernelBuilder, from: Affine, to: Affine, lanes: u8| {
            let args: Vec<_> = inputs
                .iter()
                .map(|&input| b.load(input, from.clone(), lanes))
                .collect();
            let value = f(b, &args);
            b.store(out.buffer, to, lanes, value);
        };
        if out.is_plain(shape.c) {
            b.vectors(len, true, &mut |b, offset, lanes| {
                element(b, offset.clone(), offset, lanes)
            });
        } else {
            let c = shape.c;
            b.parallel(shape.h * shape.w, |b, p| {
                for (c0, lanes) in channel_vectors(c) {
                    let from = p.clone() * c + c0;
                    element(b, from, out.index(p.clone(), Affine::constant(c0)), lanes);
                }
            });
        }
        self.emit(b);
        out
    }

    pub(super) fn activation(
        &mut self,
        id: NodeId,
        activation: Activation,
    ) -> Result<(), LowerError> {
        let x = self.arg(id, 0)?;
        let len = x.shape.numel();
        let comment = format!("{} of {}", activation.name(), x.shape);
        let out = self.map_flat(id, activation.name(), comment, &[x.buffer], len, |b, a| {
            b.activate(a[0], Some(activation))
        });
        self.set_target_value(id, out);
        Ok(())
    }

    /// `x ∘ c` or `c ∘ x` with a number `c`, in the reference's operand order.
    pub(super) fn scalar(&mut self, id: NodeId, attrs: ScalarAttrs) -> Result<(), LowerError> {
        let x = self.arg(id, 0)?;
        let len = x.shape.numel();
        let comment = format!("{} on {}", attrs.dump_attrs(), x.shape);
        let out = self.map_flat(id, "scalar", comment, &[x.buffer], len, |b, a| {
            let c = b.constant(attrs.value);
            let (op, first, second) = match attrs.op {
                ScalarOp::Add => (BinaryOp::Add, a[0], c),
                ScalarOp::Sub => (BinaryOp::Sub, a[0], c),
                ScalarOp::SubFrom => (BinaryOp::Sub, c, a[0]),
                ScalarOp::Mul => (BinaryOp::Mul, a[0], c),
                ScalarOp::Div => (BinaryOp::Div, a[0], c),
                ScalarOp::DivInto => (BinaryOp::Div, c, a[0]),
            };
            b.binary(op, first, second)
        });
        self.set_target_value(id, out);
        Ok(())
    }

    pub(super) fn copy(
        &mut self,
        id: NodeId,
        x: NodeBuffer,
        out: BufferId,
    ) -> Result<(), LowerError> {
        let len = x.shape.numel();
        let mut b = self.builder(id, "copy", format!("copy {}", x.shape));
        b.vectors(len, true, &mut |b, offset, lanes| {
            let value = b.load(x.buffer, offset.clone(), lanes);
            b.store(out, offset, lanes, value);
        });
        self.emit(b);
        self.set_value(id, out);
        Ok(())
    }

    pub(super) fn add(&mut self, id: NodeId) -> Result<(), LowerError> {
        let (x, y) = (self.arg(id, 0)?, self.arg(id, 1)?);
        if x.shape.numel() != y.shape.numel() {
            return Err(self.malformed(id, "the shapes differ"));
        }
        let comment = format!("add {}", x.shape);
        let len = x.shape.numel();
        let out = self.map_flat(id, "add", comment, &[x.buffer, y.buffer], len, |b, a| {
            b.binary(BinaryOp::Add, a[0], a[1])
        });
        self.set_target_value(id, out);
        Ok(())
    }

    pub(super) fn mul(&mut self, id: NodeId) -> Result<(), LowerError> {
        self.broadcast_binary(id, BinaryOp::Mul, "mul")
    }

    /// Tensor `x − y` and `x / y`, broadcast as `mul`.
    pub(super) fn arithmetic(&mut self, id: NodeId, op: ArithmeticOp) -> Result<(), LowerError> {
        match op {
            ArithmeticOp::Sub => self.broadcast_binary(id, BinaryOp::Sub, op.name()),
            ArithmeticOp::Div => self.broadcast_binary(id, BinaryOp::Div, op.name()),
        }
    }

    /// `x ∘ y` elementwise, where either operand may be a 1×1×C gate broadcast over the
    /// other's pixels; the operands keep their order for `-` and `/`.
    fn broadcast_binary(&mut self, id: NodeId, op: BinaryOp, what: &str) -> Result<(), LowerError> {
        let (x, y) = (self.arg(id, 0)?, self.arg(id, 1)?);
        let shape = self.graph.shape(id);
        if x.shape.numel() == y.shape.numel() {
            let comment = format!("{what} {shape}");
            let len = shape.numel();
            let out = self.map_flat(id, what, comment, &[x.buffer, y.buffer], len, |b, a| {
                b.binary(op, a[0], a[1])
            });
            self.set_target_value(id, out);
            return Ok(());
        }
        // One operand is a 1×1×C gate, broadcast over the other's pixels.
        let gate_is_left = y.shape.numel() != shape.c;
        let (big, gate) = if gate_is_left { (y, x) } else { (x, y) };
        if gate.shape.numel() != shape.c || big.shape.numel() != shape.numel() {
            return Err(self.malformed(id, "the shapes do not broadcast"));
        }
        let out = self.target(id);
        let c = shape.c;
        let mut b = self.builder(id, what, format!("{what} {shape} by a 1×1×{c} gate"));
        b.parallel(shape.h * shape.w, |b, p| {
            for (c0, lanes) in channel_vectors(c) {
                let index = p.clone() * c + c0;
                let value = b.load(big.buffer, index, lanes);
                let scale = b.load(gate.buffer, Affine::constant(c0), lanes);
                let result = if gate_is_left && op != BinaryOp::Mul {
                    b.binary(op, scale, value)
                } else {
                    b.binary(op, value, scale)
                };
                let to = out.index(p.clone(), Affine::constant(c0));
                b.store(out.buffer, to, lanes, result);
            }
        });
        self.emit(b);
        self.set_target_value(id, out);
        Ok(())
    }

    /// Inference batch norm, folded at pack time into `x · scale + shift` per channel.
    pub(super) fn batch_norm(&mut self, id: NodeId) -> Result<(), LowerError> {
        let x = self.arg(id, 0)?;
        let s = x.shape;
        let c = s.c;
        let cp = c.next_multiple_of(4);
        let name = self.describe(id);
        let scale = self.add_const(
            format!("{name} scale"),
            cp,
            ConstSpec::BatchNormScale {
                node: id,
                channels_padded: cp,
            },
        );
        let shift = self.add_const(
            format!("{name} shift"),
            cp,
            ConstSpec::BatchNormShift {
                node: id,
                channels_padded: cp,
            },
        );
        let out = self.target(id);
        let mut b = self.builder(id, "batchnorm", format!("batchnorm {s}"));
        b.parallel(s.h * s.w, |b, p| {
            for (c0, lanes) in channel_vectors(c) {
                let index = p.clone() * c + c0;
                let value = b.load(x.buffer, index, lanes);
                let a = b.load(scale, Affine::constant(c0), 4);
                let t = b.load(shift, Affine::constant(c0), 4);
                let y = b.assign(LoopExpr::Fma(value, a, t));
                let to = out.index(p.clone(), Affine::constant(c0));
                b.store(out.buffer, to, lanes, y);
            }
        });
        self.emit(b);
        self.set_target_value(id, out);
        Ok(())
    }

    /// Softmax over each pixel's channels: the maximum, the exponentials and their sum, then
    /// a scaling by the sum's reciprocal. Lanes past the channels never enter a reduction.
    pub(super) fn softmax(&mut self, id: NodeId) -> Result<(), LowerError> {
        let x = self.arg(id, 0)?;
        let s = x.shape;
        let c = s.c;
        let full = c / 4;
        let rest = (c % 4) as u8;
        let out = self.result_buffer(id);
        let mut b = self.builder(id, "softmax", format!("softmax over the channels of {s}"));
        b.parallel(s.h * s.w, |b, p| {
            let base = p * c;
            let max = b.constant(f32::NEG_INFINITY);
            b.repeat(full, |b, v| {
                let value = b.load(x.buffer, base.clone() + v * 4, 4);
                b.set(max, LoopExpr::Binary(BinaryOp::Max, value, max));
            });
            b.set(max, LoopExpr::Reduce(ReduceOp::Max, max, 4));
            let tail_index = base.clone() + full * 4;
            if rest > 0 {
                let tail = b.load(x.buffer, tail_index.clone(), rest);
                let tail_max = b.assign(LoopExpr::Reduce(ReduceOp::Max, tail, rest));
                b.set(max, LoopExpr::Binary(BinaryOp::Max, tail_max, max));
            }
            let sum = b.constant(0.0);
            let exp_at = |b: &mut KernelBuilder, index: Affine, lanes: u8| {
                let value = b.load(x.buffer, index.clone(), lanes);
                let shifted = b.binary(BinaryOp::Sub, value, max);
                let e = b.unary(UnaryOp::Exp, shifted);
                b.store(out, index, lanes, e);
                e
            };
            b.repeat(full, |b, v| {
                let e = exp_at(b, base.clone() + v * 4, 4);
                b.set(sum, LoopExpr::Binary(BinaryOp::Add, e, sum));
            });
            b.set(sum, LoopExpr::Reduce(ReduceOp::Add, sum, 4));
            if rest > 0 {
                let e = exp_at(b, tail_index.clone(), rest);
                let tail_sum = b.assign(LoopExpr::Reduce(ReduceOp::Add, e, rest));
                b.set(sum, LoopExpr::Binary(BinaryOp::Add, tail_sum, sum));
            }
            let one = b.constant(1.0);
            let inverse = b.binary(BinaryOp::Div, one, sum);
            let scale_at = |b: &mut KernelBuilder, index: Affine, lanes: u8| {
                let value = b.load(out, index.clone(), lanes);
                let scaled = b.binary(BinaryOp::Mul, value, inverse);
                b.store(out, index, lanes, scaled);
            };
            b.repeat(full, |b, v| scale_at(b, base.clone() + v * 4, 4));
            if rest > 0 {
                scale_at(b, tail_index, rest);
            }
        });
        self.emit(b);
        self.set_value(id, out);
        Ok(())
    }

    /// A flatten that must move data: from H×W×C to PyTorch's C×H×W order.
    pub(super) fn reorder_flatten(&mut self, id: NodeId) -> Result<(), LowerError> {
        let x = self.arg(id, 0)?;
        let s = x.shape;
        let pixels = s.h * s.w;
        let out = self.result_buffer(id);
        let mut b = self.builder(id, "flatten", format!("flatten {s} to C×H×W order"));
        b.parallel(s.c, |b, ch| {
            b.repeat(pixels, |b, p| {
                let value = b.load(x.buffer, p.clone() * s.c + ch.clone(), 1);
                b.store(out, ch.clone() * pixels + p, 1, value);
            });
        });
        self.emit(b);
        self.set_value(id, out);
        Ok(())
    }
}
