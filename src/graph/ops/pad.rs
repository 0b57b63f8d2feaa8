//! Padding as a layer of its own, `pad(p, mode: "zeros" | "reflect" | "replicate")`, as
//! PyTorch's `F.pad(x, …, mode="constant" | "reflect" | "replicate")` (`nn.ZeroPad2d`,
//! `nn.ReflectionPad2d`, `nn.ReplicationPad2d`).
//!
//! It is also what `conv(…, pad: p, pad_mode: "reflect")` becomes: PyTorch's
//! `Conv2d(padding_mode="reflect")` pads with `F.pad` and then convolves without padding, and
//! expansion inserts the same `pad` node before a conv without padding (`expand/catalogue.rs`).
//! A conv's own padding stays zeros, so the code generator's padded-buffer scheme
//! (`lower/pad.rs`) is untouched.
//!
//! Output pixel `(y, x)` reads input pixel `(source(y), source(x))` along each axis, where
//! for an axis of `n` inputs padded by `before`, `i = y − before` and
//! - zeros: `i` if inside, else the value 0;
//! - reflect: `|i|` below, `2(n − 1) − i` above (the edge is not repeated), which needs
//!   `before, after < n`, as PyTorch requires;
//! - replicate: `i` clamped to `0..n` (the edge repeated).

use super::signature::{Layer, Param, ParamDefault, ParamKind, X};
use super::{Arity, Category, Op, OpRule, Padding};
use crate::graph::infer::{checked_numel, spatial_input};
use crate::graph::{ParamSpec, Shape, ShapeError};
use crate::reference::{Forward, RunError, Tensor};
use ndarray::Array4;

/// What fills the border.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum PadMode {
    Zeros,
    Reflect,
    Replicate,
}

/// The modes as the language spells them (PyTorch's `Conv2d` `padding_mode` names), in the
/// order of [`PadMode::from_choice`].
pub const PAD_MODES: &[&str] = &["zeros", "reflect", "replicate"];

impl PadMode {
    /// The mode at position `choice` of [`PAD_MODES`].
    pub fn from_choice(choice: usize) -> PadMode {
        match choice {
            0 => PadMode::Zeros,
            1 => PadMode::Reflect,
            _ => PadMode::Replicate,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PadMode::Zeros => "zeros",
            PadMode::Reflect => "reflect",
            PadMode::Replicate => "replicate",
        }
    }

    /// The input index output index `o` reads along an axis of `n` inputs padded by `before`,
    /// or `None` for a zero. `o` lies within the padded axis, and for `reflect` the padding is
    /// smaller than `n` (the shape rule checks it).
    pub fn source(self, o: usize, before: usize, n: usize) -> Option<usize> {
        let last = n.checked_sub(1)?;
        if o >= before && o - before < n {
            return Some(o - before);
        }
        match self {
            PadMode::Zeros => None,
            PadMode::Replicate => Some(if o < before { 0 } else { last }),
            PadMode::Reflect if o < before => Some((before - o).min(last)),
            PadMode::Reflect => Some((2 * last).saturating_sub(o - before)),
        }
    }
}

/// `Op::Pad`: the padding on each side and what fills it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PadAttrs {
    pub pad: Padding,
    pub mode: PadMode,
}

pub(super) const PAD: Layer<3> = Layer {
    name: "pad",
    params: [
        X,
        Param::new("pad", ParamKind::Pad, ParamDefault::Required),
        Param::new(
            "mode",
            ParamKind::Choice(PAD_MODES),
            ParamDefault::Choice(0),
        ),
    ],
    // `same` and `valid` mean no padding here: with no window there is nothing to keep the
    // size of.
    build: |[_, pad, mode], input| {
        Some(Op::Pad(PadAttrs {
            pad: pad.pad()?.resolve(input, [1, 1], [1, 1], [1, 1]),
            mode: PadMode::from_choice(mode.choice()?),
        }))
    },
};

impl OpRule for PadAttrs {
    fn name(&self) -> &'static str {
        PAD.name
    }

    fn arity(&self) -> Arity {
        Arity::One
    }

    fn output_shape(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let input = inputs[0];
        spatial_input(PAD.name, input)?;
        let p = self.pad;
        if self.mode == PadMode::Reflect {
            for (axis, size, sides) in [
                ("height", input.h, [p.top, p.bottom]),
                ("width", input.w, [p.left, p.right]),
            ] {
                if let Some(&pad) = sides.iter().find(|&&s| s >= size) {
                    return Err(ShapeError::ReflectPadding { pad, axis, size });
                }
            }
        }
        let h = input
            .h
            .checked_add(p.top)
            .and_then(|h| h.checked_add(p.bottom));
        let w = input
            .w
            .checked_add(p.left)
            .and_then(|w| w.checked_add(p.right));
        let (Some(h), Some(w)) = (h, w) else {
            return Err(ShapeError::TooLarge {
                what: "the padded output".into(),
                elements: None,
            });
        };
        checked_numel(&[h, w, input.c], "the padded output")?;
        Ok(Shape::spatial(h, w, input.c))
    }

    fn params(&self, _input: Shape) -> Vec<ParamSpec> {
        Vec::new()
    }

    fn macs(&self, _input: Shape, _output: Shape) -> u64 {
        0
    }

    fn dump_attrs(&self) -> String {
        format!("pad={} mode={}", self.pad, self.mode.name())
    }

    fn category(&self) -> Category {
        Category::Other
    }

    fn reference_forward(&self, cx: &Forward, args: &[&Tensor]) -> Result<Tensor, RunError> {
        let x = cx.arg(args, 0)?;
        let (batch, h, w, c) = x.dim();
        let p = self.pad;
        let (oh, ow) = (h + p.top + p.bottom, w + p.left + p.right);
        if self.mode == PadMode::Reflect && (p.top.max(p.bottom) >= h || p.left.max(p.right) >= w) {
            return Err(cx.malformed("a reflect padding not smaller than the input"));
        }
        Ok(Array4::from_shape_fn(
            (batch, oh, ow, c),
            |(n, y, xx, ch)| {
                let sy = self.mode.source(y, p.top, h);
                let sx = self.mode.source(xx, p.left, w);
                match (sy, sx) {
                    (Some(sy), Some(sx)) => x[[n, sy, sx, ch]],
                    _ => 0.0,
                }
            },
        ))
    }
}

impl super::gradient::GradRule for PadAttrs {
    /// Each output's gradient goes back to the input pixel it copies (a border pixel of
    /// `reflect` or `replicate` receives several); zeros receive nothing.
    fn reference_backward(
        &self,
        cx: &Forward,
        _mode: super::gradient::TrainingMode,
        args: &[&Tensor],
        _output: &Tensor,
        grad: &Tensor,
        wanted: super::gradient::Wanted,
    ) -> Result<super::gradient::Gradients, RunError> {
        let x = cx.arg(args, 0)?;
        let (_, h, w, _) = x.dim();
        let p = self.pad;
        Ok(super::gradient::one_input(wanted, || {
            let mut dx = Array4::zeros(x.dim());
            for ((n, y, xx, ch), &g) in grad.indexed_iter() {
                let sy = self.mode.source(y, p.top, h);
                let sx = self.mode.source(xx, p.left, w);
                if let (Some(sy), Some(sx)) = (sy, sx) {
                    dx[[n, sy, sx, ch]] += g;
                }
            }
            dx
        }))
    }
}
