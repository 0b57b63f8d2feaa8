//! Concatenation of any number of tensors along the channels.

use super::signature::{ArgValue, Param, Surface};
use super::{Arity, Category, Op, OpRule};
use crate::graph::infer::checked_numel;
use crate::graph::{ParamSpec, Shape, ShapeError};
use crate::reference::{Forward, RunError, Tensor};
use ndarray::{concatenate, Axis};

/// `Op::Concat`, which has no attributes.
pub struct ConcatAttrs;

/// `concat` takes only tensors, as many as given: expansion gathers them itself.
pub(super) const CONCAT: Variadic = Variadic;

pub(super) struct Variadic;

impl Surface for Variadic {
    fn name(&self) -> &'static str {
        "concat"
    }

    fn params(&self) -> &[Param] {
        &[]
    }

    fn build(&self, _values: Vec<ArgValue>, _input: Shape) -> Option<Op> {
        Some(Op::Concat)
    }

    fn variadic(&self) -> bool {
        true
    }
}

impl OpRule for ConcatAttrs {
    fn name(&self) -> &'static str {
        CONCAT.name()
    }

    fn arity(&self) -> Arity {
        Arity::OneOrMore
    }

    fn output_shape(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let first = inputs[0];
        let mut channels = 0usize;
        for (idx, shape) in inputs.iter().enumerate() {
            if shape.h != first.h || shape.w != first.w || shape.flat != first.flat {
                return Err(ShapeError::ConcatMismatch {
                    other_idx: idx,
                    first,
                    other: *shape,
                });
            }
            channels = channels.saturating_add(shape.c);
        }
        checked_numel(&[first.h, first.w, channels], "the output")?;
        Ok(Shape {
            c: channels,
            ..first
        })
    }

    fn params(&self, _input: Shape) -> Vec<ParamSpec> {
        Vec::new()
    }

    fn macs(&self, _input: Shape, _output: Shape) -> u64 {
        0
    }

    fn dump_attrs(&self) -> String {
        String::new()
    }

    fn category(&self) -> Category {
        Category::Merge
    }

    fn reference_forward(&self, cx: &Forward, args: &[&Tensor]) -> Result<Tensor, RunError> {
        let views: Vec<_> = args.iter().map(|t| t.view()).collect();
        let joined =
            concatenate(Axis(3), &views).map_err(|_| cx.malformed("heights or widths differ"))?;
        // `concatenate` along the last axis returns the channels outermost in memory; every
        // other step (the final N×C reshape of a flat output above all) expects row-major.
        Ok(joined.as_standard_layout().into_owned())
    }
}

impl super::gradient::GradRule for ConcatAttrs {
    /// Each input gets its own slice of the channels.
    fn reference_backward(
        &self,
        _cx: &Forward,
        _mode: super::gradient::TrainingMode,
        args: &[&Tensor],
        _output: &Tensor,
        grad: &Tensor,
        wanted: super::gradient::Wanted,
    ) -> Result<super::gradient::Gradients, RunError> {
        let mut first = 0;
        let mut inputs = Vec::with_capacity(args.len());
        for arg in args {
            let channels = arg.dim().3;
            let slice = grad.slice(ndarray::s![.., .., .., first..first + channels]);
            inputs.push(wanted.inputs.then(|| slice.to_owned()));
            first += channels;
        }
        Ok(super::gradient::Gradients {
            inputs,
            params: Vec::new(),
        })
    }
}
