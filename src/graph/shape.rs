//! Tensor shapes, height × width × channels; the batch dimension is implicit.

use std::fmt;

/// The shape of one image's tensor. A flat tensor (after `flatten` or `dense`) is a vector of
/// `c` features with `h = w = 1`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Shape {
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub flat: bool,
}

impl Shape {
    pub fn spatial(h: usize, w: usize, c: usize) -> Shape {
        Shape {
            h,
            w,
            c,
            flat: false,
        }
    }

    pub fn flat(c: usize) -> Shape {
        Shape {
            h: 1,
            w: 1,
            c,
            flat: true,
        }
    }

    /// Number of elements; shapes are bounded by inference, so this cannot overflow.
    pub fn numel(self) -> usize {
        self.h * self.w * self.c
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.flat {
            write!(f, "{}", self.c)
        } else {
            write!(f, "{}×{}×{}", self.h, self.w, self.c)
        }
    }
}
