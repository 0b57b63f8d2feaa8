//! The ops that move channels without arithmetic: `channel_shuffle(groups)`, PyTorch's
//! `ChannelShuffle` (ShuffleNet), and `split(parts, index)`, one of `parts` equal channel groups
//! as `torch.chunk(x, parts, dim=1)[index]`. Both act on the channel axis of an image or on a
//! flat vector alike.

use super::signature::{Layer, Param, ParamDefault, ParamKind, X};
use super::{Arity, Category, Op, OpRule};
use crate::graph::{ParamSpec, Shape, ShapeError};
use crate::reference::{Forward, RunError, Tensor};
use ndarray::{s, Array4};

/// `Op::ChannelShuffle`: the channels seen as a `groups × (C / groups)` matrix, transposed.
/// Output channel `i · groups + k` is input channel `k · (C / groups) + i`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ChannelShuffleAttrs {
    pub groups: usize,
}

/// `Op::Split`: channels `index · C/parts .. (index + 1) · C/parts` of the input.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SplitAttrs {
    pub parts: usize,
    pub index: usize,
}

pub(super) const CHANNEL_SHUFFLE: Layer<2> = Layer {
    name: "channel_shuffle",
    params: [
        X,
        Param::new(
            "groups",
            ParamKind::Count { min: 1 },
            ParamDefault::Required,
        ),
    ],
    build: |[_, groups], _| {
        Some(Op::ChannelShuffle(ChannelShuffleAttrs {
            groups: groups.count()?,
        }))
    },
};

pub(super) const SPLIT: Layer<3> = Layer {
    name: "split",
    params: [
        X,
        Param::new("parts", ParamKind::Count { min: 1 }, ParamDefault::Required),
        Param::new("index", ParamKind::Count { min: 0 }, ParamDefault::Required),
    ],
    build: |[_, parts, index], _| {
        Some(Op::Split(SplitAttrs {
            parts: parts.count()?,
            index: index.count()?,
        }))
    },
};

/// `groups` equal groups of the channels, or the error saying why not.
fn group_size(op: &'static str, groups: usize, channels: usize) -> Result<usize, ShapeError> {
    if groups == 0 || !channels.is_multiple_of(groups) {
        return Err(ShapeError::ChannelGroups {
            op,
            groups,
            channels,
        });
    }
    Ok(channels / groups)
}

impl ChannelShuffleAttrs {
    /// The input channel that output channel `out` reads, for `channels` channels.
    pub fn source(&self, out: usize, channels: usize) -> usize {
        let per_group = channels / self.groups;
        (out % self.groups) * per_group + out / self.groups
    }
}

impl OpRule for ChannelShuffleAttrs {
    fn name(&self) -> &'static str {
        CHANNEL_SHUFFLE.name
    }

    fn arity(&self) -> Arity {
        Arity::One
    }

    fn output_shape(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        group_size(self.name(), self.groups, inputs[0].c)?;
        Ok(inputs[0])
    }

    fn params(&self, _input: Shape) -> Vec<ParamSpec> {
        Vec::new()
    }

    fn macs(&self, _input: Shape, _output: Shape) -> u64 {
        0
    }

    fn dump_attrs(&self) -> String {
        format!("groups={}", self.groups)
    }

    fn category(&self) -> Category {
        Category::Other
    }

    fn reference_forward(&self, cx: &Forward, args: &[&Tensor]) -> Result<Tensor, RunError> {
        let x = cx.arg(args, 0)?;
        let (n, h, w, c) = x.dim();
        if self.groups == 0 || !c.is_multiple_of(self.groups) {
            return Err(cx.malformed("the groups do not divide the channels"));
        }
        Ok(Array4::from_shape_fn((n, h, w, c), |(b, y, xx, ch)| {
            x[[b, y, xx, self.source(ch, c)]]
        }))
    }
}

impl super::gradient::GradRule for ChannelShuffleAttrs {
    /// The inverse permutation: input channel `source(out)` receives output channel `out`'s
    /// gradient.
    fn reference_backward(
        &self,
        _cx: &Forward,
        _mode: super::gradient::TrainingMode,
        _args: &[&Tensor],
        _output: &Tensor,
        grad: &Tensor,
        wanted: super::gradient::Wanted,
    ) -> Result<super::gradient::Gradients, RunError> {
        Ok(super::gradient::one_input(wanted, || {
            let c = grad.dim().3;
            let mut dx = Array4::zeros(grad.dim());
            for ((b, y, x, out), &g) in grad.indexed_iter() {
                dx[[b, y, x, self.source(out, c)]] = g;
            }
            dx
        }))
    }
}

impl SplitAttrs {
    /// The first input channel of the part, for an input of `channels` channels.
    pub fn first_channel(&self, channels: usize) -> usize {
        self.index * (channels / self.parts.max(1))
    }
}

impl OpRule for SplitAttrs {
    fn name(&self) -> &'static str {
        SPLIT.name
    }

    fn arity(&self) -> Arity {
        Arity::One
    }

    fn output_shape(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let part = group_size(self.name(), self.parts, inputs[0].c)?;
        if self.index >= self.parts {
            return Err(ShapeError::SplitIndex {
                index: self.index,
                parts: self.parts,
            });
        }
        Ok(Shape {
            c: part,
            ..inputs[0]
        })
    }

    fn params(&self, _input: Shape) -> Vec<ParamSpec> {
        Vec::new()
    }

    fn macs(&self, _input: Shape, _output: Shape) -> u64 {
        0
    }

    fn dump_attrs(&self) -> String {
        format!("parts={} index={}", self.parts, self.index)
    }

    fn category(&self) -> Category {
        Category::Other
    }

    fn reference_forward(&self, cx: &Forward, args: &[&Tensor]) -> Result<Tensor, RunError> {
        let x = cx.arg(args, 0)?;
        let c = x.dim().3;
        if self.parts == 0 || !c.is_multiple_of(self.parts) || self.index >= self.parts {
            return Err(cx.malformed("the part is not within the channels"));
        }
        let first = self.first_channel(c);
        let part = c / self.parts;
        Ok(x.slice(s![.., .., .., first..first + part]).to_owned())
    }
}

impl super::gradient::GradRule for SplitAttrs {
    /// The part's channels get the gradient; the others get zero.
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
        Ok(super::gradient::one_input(wanted, || {
            let first = self.first_channel(x.dim().3);
            let part = grad.dim().3;
            let mut dx = Array4::zeros(x.dim());
            dx.slice_mut(s![.., .., .., first..first + part])
                .assign(grad);
            dx
        }))
    }
}
