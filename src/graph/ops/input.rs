//! A network input: no parameters, no computation; its shape is declared, not inferred.

use super::{Arity, Category, OpRule};
use crate::graph::{ParamSpec, Shape, ShapeError};
use crate::reference::{Forward, RunError, Tensor};

/// The `Op::Input` variant's fields.
pub struct InputAttrs<'a> {
    pub name: &'a str,
    /// Which of the network's inputs, in declaration order.
    pub index: usize,
}

impl OpRule for InputAttrs<'_> {
    fn name(&self) -> &'static str {
        "input"
    }

    fn arity(&self) -> Arity {
        Arity::None
    }

    fn output_shape(&self, _inputs: &[Shape]) -> Result<Shape, ShapeError> {
        // `Graph::add_input` records the declared shape; an input added as an ordinary node
        // has no shape to give.
        Ok(Shape::default())
    }

    fn params(&self, _input: Shape) -> Vec<ParamSpec> {
        Vec::new()
    }

    fn macs(&self, _input: Shape, _output: Shape) -> u64 {
        0
    }

    fn dump_attrs(&self) -> String {
        self.name.to_string()
    }

    fn category(&self) -> Category {
        Category::Input
    }

    fn reference_forward(&self, cx: &Forward, _args: &[&Tensor]) -> Result<Tensor, RunError> {
        let given = cx
            .inputs
            .get(self.index)
            .ok_or_else(|| cx.malformed("no such input"))?;
        let shape = cx.shape;
        let dims = [cx.batch, shape.h, shape.w, shape.c];
        let standard = given.as_standard_layout().into_owned();
        standard
            .into_shape_with_order(dims)
            .map_err(|e| cx.malformed(&e.to_string()))
    }
}

impl super::gradient::GradRule for InputAttrs<'_> {
    /// An input has no inputs and no parameters; the driver reads its gradient directly.
    fn reference_backward(
        &self,
        _cx: &Forward,
        _mode: super::gradient::TrainingMode,
        _args: &[&Tensor],
        _output: &Tensor,
        _grad: &Tensor,
        _wanted: super::gradient::Wanted,
    ) -> Result<super::gradient::Gradients, RunError> {
        Ok(super::gradient::Gradients::default())
    }
}
