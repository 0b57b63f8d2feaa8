//! The loop-nest IR: kernels made of counted loops with constant bounds, and three-address
//! statements over f32x4 registers that load and store through affine indices.
//!
//! The IR is deliberately small. Every register holds four f32 lanes; a scalar is a vector
//! whose other lanes are zero (a partial load) or copies (a broadcast), so one value type
//! serves the vector bodies and their scalar remainders alike. Every memory access names a
//! buffer and an element index that is an affine function of the enclosing loops' indices
//! with non-negative coefficients. That form is what makes two things easy:
//!
//! - proving every access in bounds at compile time (`verify.rs`): the largest index of an
//!   affine function over a box of loop indices is its value at the box's far corner;
//! - strength reduction in code generation: each distinct (buffer, outer-loop terms) pair
//!   becomes one pointer, bumped by a constant byte stride per iteration, and the constant
//!   term becomes the load's displacement.
//!
//! Register blocking and unrolling are done by the lowering, which writes them out as
//! straight-line statements: Cranelift neither unrolls nor blocks (see docs/CRANELIFT.md §2).

use cranelift_entity::entity_impl;
use std::fmt;
use std::ops::{Add, Mul};

/// A loop's index variable, numbered per kernel (`i3`).
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LoopVar(u32);
entity_impl!(LoopVar, "i");

/// A register of four f32 lanes, numbered per kernel (`r3`). Registers may be assigned many
/// times (accumulators are); code generation turns them into SSA values.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reg(u32);
entity_impl!(Reg, "r");

/// A buffer of the program (`b3`), the key of `LoopProgram::buffers`.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufferId(u32);
entity_impl!(BufferId, "b");

/// `constant + Σ coefficient · index`, over loop indices; terms are sorted by variable and
/// have non-zero coefficients, so equal functions compare equal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Affine {
    pub constant: usize,
    pub terms: Vec<(LoopVar, usize)>,
}

impl Affine {
    pub fn constant(value: usize) -> Affine {
        Affine {
            constant: value,
            terms: Vec::new(),
        }
    }

    pub fn var(var: LoopVar) -> Affine {
        Affine {
            constant: 0,
            terms: vec![(var, 1)],
        }
    }

    /// The coefficient of `var` (0 when it does not occur).
    pub fn coefficient(&self, var: LoopVar) -> usize {
        self.terms
            .iter()
            .find(|(v, _)| *v == var)
            .map_or(0, |&(_, c)| c)
    }

    /// The same function without its constant term.
    pub fn linear_part(&self) -> Affine {
        Affine {
            constant: 0,
            terms: self.terms.clone(),
        }
    }
}

impl Add for Affine {
    type Output = Affine;
    fn add(self, other: Affine) -> Affine {
        let mut terms = self.terms;
        for (var, coefficient) in other.terms {
            match terms.iter_mut().find(|(v, _)| *v == var) {
                Some((_, c)) => *c += coefficient,
                None => terms.push((var, coefficient)),
            }
        }
        terms.sort();
        Affine {
            constant: self.constant + other.constant,
            terms,
        }
    }
}

impl Add<usize> for Affine {
    type Output = Affine;
    fn add(mut self, value: usize) -> Affine {
        self.constant += value;
        self
    }
}

impl Mul<usize> for Affine {
    type Output = Affine;
    fn mul(self, factor: usize) -> Affine {
        if factor == 0 {
            return Affine::default();
        }
        Affine {
            constant: self.constant * factor,
            terms: self
                .terms
                .into_iter()
                .map(|(v, c)| (v, c * factor))
                .collect(),
        }
    }
}

impl fmt::Display for Affine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for &(var, coefficient) in &self.terms {
            if !first {
                write!(f, " + ")?;
            }
            first = false;
            if coefficient == 1 {
                write!(f, "{var}")?;
            } else {
                write!(f, "{coefficient}*{var}")?;
            }
        }
        if first {
            write!(f, "{}", self.constant)
        } else if self.constant != 0 {
            write!(f, " + {}", self.constant)
        } else {
            Ok(())
        }
    }
}

/// An element of a buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    pub buffer: BufferId,
    pub index: Affine,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    /// `b < a ? a : b`, lane by lane: x86's `maxps` (a NaN in `a` gives `b`, a NaN in `b`
    /// gives it back: ReLU is `max(0, x)`, which keeps a NaN `x` as PyTorch does).
    Max,
    /// The larger of `a` and `b`, NaN when either is NaN: max pooling, where PyTorch lets a
    /// NaN anywhere in the window through whatever order the window is read in.
    MaxPropagatingNan,
    /// `a < b ? a : b`, lane by lane: x86's `minps` (a NaN in `b` gives it back).
    Min,
    /// `b` where `a > 0`, else 0: the gradient routed through a ReLU by its output (PyTorch's
    /// `threshold_backward`, which gives 0 where the output is NaN).
    KeepWherePositive,
    /// All bits set where `a == b`, else all clear: a lane mask, for [`BinaryOp::And`].
    EqualMask,
    /// Bitwise and: `b` where the mask `a` is set, else 0 (max pooling's backward routes a
    /// window's gradient to the element equal to its maximum).
    And,
}

/// Transcendental functions, lane by lane. Code generation computes all three inline on
/// vectors: `exp` and `sigmoid` by a polynomial (relative error about 1e-7), `tanh` by a
/// rational function (a couple of ulp).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum UnaryOp {
    Exp,
    Sigmoid,
    Tanh,
    /// The correctly rounded square root (one machine instruction).
    Sqrt,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    Add,
    Max,
}

/// The right-hand side of an assignment; operands are registers.
#[derive(Clone, Debug, PartialEq)]
pub enum LoopExpr {
    /// The value in every lane.
    Const(f32),
    /// Another register's value.
    Copy(Reg),
    /// `lanes` (1–4) consecutive elements; the other lanes are zero.
    Load {
        at: Access,
        lanes: u8,
    },
    /// One element, in every lane.
    LoadSplat(Access),
    Unary(UnaryOp, Reg),
    Binary(BinaryOp, Reg, Reg),
    /// `a · b + c`, fused where the machine has FMA.
    Fma(Reg, Reg, Reg),
    /// The reduction of the first `lanes` lanes, in every lane.
    Reduce(ReduceOp, Reg, u8),
}

#[derive(Clone, Debug, PartialEq)]
pub enum LoopStmt {
    Assign(Reg, LoopExpr),
    /// Stores the first `lanes` lanes of `value` to consecutive elements.
    Store {
        at: Access,
        lanes: u8,
        value: Reg,
    },
    Loop(Loop),
    /// The body once for each image of the call, first to last. Accesses to per-image
    /// buffers (inputs, output, arena) inside address the current image's; registers carry
    /// from one image to the next, so a register tile can sum over the images while its
    /// weights stay loaded. The body is written, and verified, as for one image; the call
    /// says how many images there are (`Kernel::has_images`).
    Images(Vec<LoopStmt>),
}

/// `for var in 0..count { body }`. A `parallel` loop is a kernel's outermost loop, whose
/// iterations write disjoint elements (checked by `verify.rs`) that the kernel's other
/// top-level statements neither write nor read; code generation lets the caller run any
/// sub-range of it, which is how work is split over threads.
#[derive(Clone, Debug, PartialEq)]
pub struct Loop {
    pub var: LoopVar,
    pub count: usize,
    pub parallel: bool,
    pub body: Vec<LoopStmt>,
}

/// One function of the generated code: usually one layer.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    pub name: String,
    /// What the kernel computes, for the dump.
    pub comment: String,
    pub n_regs: u32,
    pub n_vars: u32,
    pub body: Vec<LoopStmt>,
}

impl Kernel {
    /// The trip count of the kernel's parallel loop, or 0 if it has none.
    pub fn parallel_count(&self) -> usize {
        self.body
            .iter()
            .find_map(|stmt| match stmt {
                LoopStmt::Loop(l) if l.parallel => Some(l.count),
                _ => None,
            })
            .unwrap_or(0)
    }

    /// Whether the kernel has top-level statements besides its parallel loop (remainder
    /// tiles, borders): they form one more part, run after the loop's iterations.
    pub fn has_serial_part(&self) -> bool {
        self.body
            .iter()
            .any(|stmt| !matches!(stmt, LoopStmt::Loop(l) if l.parallel))
    }

    /// The range of the `begin..end` arguments of the kernel's function: parts
    /// `0..parallel_count()` are the parallel loop's iterations, and the last part, if the
    /// kernel has one, is everything else. Any split of the range into sub-ranges, run in
    /// any order or at once, computes the same result.
    pub fn parts(&self) -> usize {
        (self.parallel_count() + usize::from(self.has_serial_part())).max(1)
    }

    /// Whether the kernel loops over the images of its call itself (`LoopStmt::Images`);
    /// such a kernel is called once for a run of images in contiguous per-image arenas,
    /// the others once per image.
    pub fn has_images(&self) -> bool {
        fn any(stmts: &[LoopStmt]) -> bool {
            stmts.iter().any(|s| match s {
                LoopStmt::Images(_) => true,
                LoopStmt::Loop(l) => any(&l.body),
                _ => false,
            })
        }
        any(&self.body)
    }
}
