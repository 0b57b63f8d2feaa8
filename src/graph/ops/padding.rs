//! Padding of a window op (conv, pool) in pixels on each side.

use std::fmt;

/// Padding in pixels on each side; asymmetric where a `same` padding of an even kernel needs it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct Padding {
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

impl Padding {
    pub fn uniform(p: usize) -> Padding {
        Padding {
            top: p,
            bottom: p,
            left: p,
            right: p,
        }
    }

    pub fn is_zero(&self) -> bool {
        *self == Padding::default()
    }
}

impl fmt::Display for Padding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Padding {
            top,
            bottom,
            left,
            right,
        } = *self;
        if top == bottom && left == right && top == left {
            write!(f, "{top}")
        } else if top == bottom && left == right {
            write!(f, "[{top}, {left}]")
        } else {
            write!(f, "[{top}, {bottom}, {left}, {right}]")
        }
    }
}
