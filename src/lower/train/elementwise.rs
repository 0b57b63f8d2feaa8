//! Backward kernels that work element by element: the loss's gradient, softmax inside the
//! network, dropout, global average pooling (activations: `activation.rs`); and an add
//! followed by an activation (ResNet's `relu(branch + skip)`), as one kernel each way: the
//! forward applies the activation as it adds, the backward multiplies by its derivative as
//! it passes the gradient to both operands.

use super::super::elementwise::channel_vectors;
use super::super::ir::{Affine, BinaryOp, BufferId, LoopExpr, ReduceOp, UnaryOp};
use super::super::{KernelBuilder, LowerError, NodeBuffer};
use super::activation::{derivative_from_output, times_derivative, Stored};
use super::Backward;
use crate::graph::{Activation, NodeId, Op};

impl Backward<'_> {
    /// The activation add `id`'s kernel can apply: its only reader's, when its operands are
    /// two different plain tensors.
    pub(super) fn add_fusing_activation(&self, id: NodeId) -> Option<Activation> {
        let node = &self.graph().nodes[id];
        if !matches!(node.op, Op::Add) || node.inputs.len() != 2 || node.inputs[0] == node.inputs[1]
        {
            return None;
        }
        let numel = self.graph().shape(id).numel();
        let plain = (0..2).all(|k| {
            self.lowering
                .arg(id, k)
                .is_ok_and(|v| v.padded.is_none() && v.hwc.is_none() && v.shape.numel() == numel)
        });
        let (_, activation) = self.fusable_activation(id)?;
        plain.then_some(activation)
    }

    /// `activation(x + y)`, stored where the activation node's value goes.
    pub(super) fn add_activation_forward(
        &mut self,
        id: NodeId,
        activation: Activation,
    ) -> Result<(), LowerError> {
        let (reader, _) = self
            .fusable_activation(id)
            .ok_or_else(|| self.lowering.malformed(id, "no activation to apply"))?;
        let (x, y) = (self.lowering.arg(id, 0)?, self.lowering.arg(id, 1)?);
        self.activation_of[reader] = Some(id);
        self.applied_activations[id] = Some(activation);
        let out = self.activation_destination(reader);
        let s = self.graph().shape(id);
        let name = activation.name();
        let mut b = self.builder(id, &format!("add_{name}"), format!("add {s}, then {name}"));
        self.each_element(&mut b, reader, out, &mut |b, to, from, lanes| {
            let left = b.load(x.buffer, from.clone(), lanes);
            let right = b.load(y.buffer, from, lanes);
            let sum = b.binary(BinaryOp::Add, left, right);
            let value = b.activate(sum, Some(activation));
            b.store(out.buffer, to, lanes, value);
        });
        self.lowering.emit(b);
        Ok(())
    }

    /// The backward of an add whose kernel applied an activation, given the activation's
    /// gradient: `∂ · activation′` to each wanted operand, in one pass. The derivative is
    /// taken from the activation's output, or from the sum recomputed.
    pub(super) fn add_activation_backward(
        &mut self,
        id: NodeId,
        grad: BufferId,
        wants_input: &[bool],
    ) -> Result<(), LowerError> {
        let activation = self.applied_activations[id]
            .ok_or_else(|| self.lowering.malformed(id, "no activation applied"))?;
        let (reader, _) = self
            .fusable_activation(id)
            .ok_or_else(|| self.lowering.malformed(id, "no activation applied"))?;
        let inputs = self.graph().nodes[id].inputs.clone();
        let targets: Vec<(BufferId, bool)> = inputs
            .iter()
            .zip(wants_input)
            .filter(|(_, &wanted)| wanted)
            .map(|(&input, _)| self.grad_target(input))
            .collect();
        if targets.is_empty() {
            return Ok(());
        }
        let s = self.graph().shape(id);
        let from_output = derivative_from_output(activation);
        let (x, y) = (self.lowering.arg(id, 0)?, self.lowering.arg(id, 1)?);
        let source = if from_output {
            self.stored(reader)?
        } else {
            Stored {
                buffer: x.buffer,
                origin: 0,
                row: s.w,
                pixel: s.c,
            }
        };
        let mut b = self.builder(
            id,
            "add_grad",
            format!(
                "∂ through {} of {s}, to both operands of the add",
                activation.name()
            ),
        );
        self.each_element(&mut b, reader, source, &mut |b, from, at, lanes| {
            let value = if from_output {
                b.load(source.buffer, from, lanes)
            } else {
                let left = b.load(x.buffer, at.clone(), lanes);
                let right = b.load(y.buffer, at.clone(), lanes);
                b.binary(BinaryOp::Add, left, right)
            };
            let dy = b.load(grad, at.clone(), lanes);
            let dx = times_derivative(b, activation, value, dy);
            for &(target, accumulate) in &targets {
                b.store_or_add(target, at.clone(), lanes, dx, accumulate);
            }
        });
        self.lowering.emit(b);
        Ok(())
    }

    /// `∂L/∂logits = softmax(logits) − target` for one image (the batch mean's `1/N` is the
    /// caller's); returns the new gradient tensor.
    pub(super) fn loss(&mut self, id: NodeId, logits: NodeBuffer) -> Result<BufferId, LowerError> {
        let c = logits.shape.numel();
        let out = self.new_grad(id, "(softmax − target)");
        let target = self.target;
        let (full, rest) = (c / 4, (c % 4) as u8);
        let mut b = self.builder(
            id,
            "loss_grad",
            format!("softmax cross-entropy: ∂logits = softmax(logits) − target, {c} classes"),
        );
        let x = logits.buffer;
        let max = b.constant(f32::NEG_INFINITY);
        b.repeat(full, |b, v| {
            let value = b.load(x, v * 4, 4);
            b.set(max, LoopExpr::Binary(BinaryOp::Max, value, max));
        });
        b.set(max, LoopExpr::Reduce(ReduceOp::Max, max, 4));
        let tail = Affine::constant(full * 4);
        if rest > 0 {
            let value = b.load(x, tail.clone(), rest);
            let tail_max = b.assign(LoopExpr::Reduce(ReduceOp::Max, value, rest));
            b.set(max, LoopExpr::Binary(BinaryOp::Max, tail_max, max));
        }
        let sum = b.constant(0.0);
        let exp_at = |b: &mut KernelBuilder, index: Affine, lanes: u8| {
            let value = b.load(x, index.clone(), lanes);
            let shifted = b.binary(BinaryOp::Sub, value, max);
            let e = b.unary(UnaryOp::Exp, shifted);
            b.store(out, index, lanes, e);
            e
        };
        b.repeat(full, |b, v| {
            let e = exp_at(b, v * 4, 4);
            b.set(sum, LoopExpr::Binary(BinaryOp::Add, e, sum));
        });
        b.set(sum, LoopExpr::Reduce(ReduceOp::Add, sum, 4));
        if rest > 0 {
            let e = exp_at(&mut b, tail.clone(), rest);
            let tail_sum = b.assign(LoopExpr::Reduce(ReduceOp::Add, e, rest));
            b.set(sum, LoopExpr::Binary(BinaryOp::Add, tail_sum, sum));
        }
        let one = b.constant(1.0);
        let inverse = b.binary(BinaryOp::Div, one, sum);
        let grad_at = |b: &mut KernelBuilder, index: Affine, lanes: u8| {
            let e = b.load(out, index.clone(), lanes);
            let p = b.binary(BinaryOp::Mul, e, inverse);
            let t = b.load(target, index.clone(), lanes);
            let g = b.binary(BinaryOp::Sub, p, t);
            b.store(out, index, lanes, g);
        };
        b.repeat(full, |b, v| grad_at(b, v * 4, 4));
        if rest > 0 {
            grad_at(&mut b, tail, rest);
        }
        self.lowering.emit(b);
        Ok(out)
    }

    /// Softmax over each pixel's channels inside the network (the last one is the loss's):
    /// `∂x = y · (∂y − Σ_c ∂y·y)` per pixel, from the output.
    pub(super) fn softmax_backward(
        &mut self,
        id: NodeId,
        grad: BufferId,
    ) -> Result<(), LowerError> {
        let y = self.value(id)?;
        if y.padded.is_some() || self.lowering.slices[id].is_some() {
            return Err(self
                .lowering
                .malformed(id, "its output is not a plain tensor"));
        }
        let s = y.shape;
        let c = s.c;
        let input = self.graph().nodes[id].inputs[0];
        let (target, accumulate) = self.grad_target(input);
        let mut b = self.builder(
            id,
            "softmax_grad",
            format!("∂ of softmax over the channels of {s}"),
        );
        b.parallel(s.h * s.w, |b, p| {
            let base = p * c;
            let dot = b.constant(0.0);
            for (c0, lanes) in channel_vectors(c) {
                // Partial loads are zero past the channels, so the products there are too.
                let dy = b.load(grad, base.clone() + c0, lanes);
                let value = b.load(y.buffer, base.clone() + c0, lanes);
                b.set(dot, LoopExpr::Fma(dy, value, dot));
            }
            b.set(dot, LoopExpr::Reduce(ReduceOp::Add, dot, 4));
            for (c0, lanes) in channel_vectors(c) {
                let at = base.clone() + c0;
                let dy = b.load(grad, at.clone(), lanes);
                let value = b.load(y.buffer, at.clone(), lanes);
                let centered = b.binary(BinaryOp::Sub, dy, dot);
                let dx = b.binary(BinaryOp::Mul, value, centered);
                b.store_or_add(target, at, lanes, dx, accumulate);
            }
        });
        self.lowering.emit(b);
        Ok(())
    }

    /// Inverted dropout in training: `y = x · mask`, the mask (0 or `1/(1 − p)`) being dropout
    /// `k`'s part of the mask input, made by the caller for each image and step.
    pub(super) fn dropout_forward(&mut self, id: NodeId, k: usize) -> Result<(), LowerError> {
        let x = self.lowering.arg(id, 0)?;
        if x.padded.is_some() {
            return Err(self.lowering.malformed(id, "its input is padded"));
        }
        let len = x.shape.numel();
        let offset = self.dropouts[k].offset;
        self.dropouts[k].hwc = x.hwc;
        let out = self.lowering.result_buffer(id);
        let masks = self.masks;
        let mut b = self.builder(id, "dropout", format!("inverted dropout of {len} values"));
        b.vectors(len, true, &mut |b, at, lanes| {
            let value = b.load(x.buffer, at.clone(), lanes);
            let mask = b.load(masks, at.clone() + offset, lanes);
            let y = b.binary(BinaryOp::Mul, value, mask);
            b.store(out, at, lanes, y);
        });
        self.lowering.emit(b);
        self.lowering.values[id] = Some(NodeBuffer {
            buffer: out,
            shape: self.graph().shape(id),
            hwc: x.hwc,
            padded: None,
        });
        Ok(())
    }

    /// `∂x (+)= ∂y · mask`, the forward's mask.
    pub(super) fn dropout_backward(
        &mut self,
        id: NodeId,
        grad: BufferId,
    ) -> Result<(), LowerError> {
        let k = self
            .dropouts
            .iter()
            .position(|d| d.node == id)
            .ok_or_else(|| self.lowering.malformed(id, "a dropout without a mask"))?;
        let offset = self.dropouts[k].offset;
        let input = self.graph().nodes[id].inputs[0];
        let len = self.graph().shape(id).numel();
        let masks = self.masks;
        let (target, accumulate) = self.grad_target(input);
        let mut b = self.builder(
            id,
            "dropout_grad",
            format!("∂ through dropout of {len} values"),
        );
        b.vectors(len, true, &mut |b, at, lanes| {
            let dy = b.load(grad, at.clone(), lanes);
            let mask = b.load(masks, at.clone() + offset, lanes);
            let dx = b.binary(BinaryOp::Mul, dy, mask);
            b.store_or_add(target, at, lanes, dx, accumulate);
        });
        self.lowering.emit(b);
        Ok(())
    }

    /// Global average pooling: every pixel of the input gets `∂out / (h·w)`.
    pub(super) fn global_avg_pool(&mut self, id: NodeId, grad: BufferId) -> Result<(), LowerError> {
        let input = self.graph().nodes[id].inputs[0];
        let s = self.graph().shape(input);
        let (target, accumulate) = self.grad_target(input);
        let scale = 1.0 / (s.h * s.w) as f32;
        let mut b = self.builder(
            id,
            "gpool_grad",
            format!("∂ of global average pooling over {s}"),
        );
        let scale = b.constant(scale);
        b.parallel(s.h * s.w, |b, p| {
            for (c0, lanes) in channel_vectors(s.c) {
                let dy = b.load(grad, Affine::constant(c0), lanes);
                let value = b.binary(BinaryOp::Mul, dy, scale);
                let at = p.clone() * s.c + c0;
                b.store_or_add(target, at, lanes, value, accumulate);
            }
        });
        self.lowering.emit(b);
        Ok(())
    }
}
