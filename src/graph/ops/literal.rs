//! Numbers given in the source instead of learned weights, and the check that they fit the
//! tensor a layer needs.

use crate::graph::ShapeError;

/// Numbers given in the source instead of learned ones, in PyTorch's layout.
#[derive(Clone, Debug, PartialEq)]
pub struct Literal {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

fn dims_text(dims: &[usize]) -> String {
    dims.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("×")
}

/// Checks literal values against the tensor shape a layer needs.
pub(super) fn check_literal(
    what: &'static str,
    literal: Option<&Literal>,
    expected: &[usize],
) -> Result<(), ShapeError> {
    let Some(literal) = literal else {
        return Ok(());
    };
    // A literal may leave out leading dimensions of size 1: a single 3×3 filter on one
    // channel is written as a 3×3 list.
    let rank = literal.shape.len();
    let fits = rank <= expected.len()
        && expected[..expected.len() - rank].iter().all(|&d| d == 1)
        && expected[expected.len() - rank..] == literal.shape[..];
    if fits {
        Ok(())
    } else {
        Err(ShapeError::LiteralShape {
            what,
            expected: dims_text(expected),
            found: dims_text(&literal.shape),
        })
    }
}
