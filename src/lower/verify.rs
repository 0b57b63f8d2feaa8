//! The verifier: proves, before any code exists, that every load and store of every kernel
//! stays inside its buffer, and checks the structural rules code generation relies on.
//!
//! Indices are affine in loop indices with non-negative coefficients, and loops count from 0
//! to a constant, so an access's smallest index is its constant term and its largest is its
//! value with every index at its last iteration; both are checked against the buffer's
//! length. The other rules: registers are assigned before they are read; loop variables are
//! used only inside their loop; inputs and constants are never written; lane counts are 1–4;
//! a parallel loop is a top-level statement, and distinct iterations of it store to disjoint
//! elements, so that they may run on different threads.

use super::ir::{Access, Affine, Expr, Kernel, LoopVar, Reg, Stmt};
use super::program::{LoopProgram, Storage};
use super::LowerError;
use std::collections::HashMap;

struct Checker<'a> {
    program: &'a LoopProgram,
    kernel: &'a Kernel,
    /// The trip counts of the enclosing loops.
    counts: HashMap<LoopVar, usize>,
    /// The parallel loop being checked, with its count.
    parallel: Option<(LoopVar, usize)>,
    /// Per buffer stored to in the parallel loop: the step of the parallel index and the
    /// span `lo..hi` one iteration's stores cover.
    spans: HashMap<u32, (usize, usize, usize)>,
    defined: Vec<bool>,
}

impl Checker<'_> {
    fn invalid(&self, detail: String) -> LowerError {
        LowerError::Invalid {
            kernel: self.kernel.name.clone(),
            detail,
        }
    }

    /// The largest value of `index` over the enclosing loops.
    fn max_index(&self, index: &Affine) -> Result<usize, LowerError> {
        let mut max = index.constant;
        for &(var, coefficient) in &index.terms {
            let count = self
                .counts
                .get(&var)
                .ok_or_else(|| self.invalid(format!("i{} is used outside its loop", var.0)))?;
            max += coefficient * count.saturating_sub(1);
        }
        Ok(max)
    }

    fn access(&mut self, at: &Access, lanes: u8, store: bool) -> Result<(), LowerError> {
        if !(1..=4).contains(&lanes) {
            return Err(self.invalid(format!("{lanes} lanes")));
        }
        let buffer = self
            .program
            .buffers
            .get(at.buffer.0 as usize)
            .ok_or_else(|| self.invalid(format!("no buffer b{}", at.buffer.0)))?;
        let end = self.max_index(&at.index)? + usize::from(lanes);
        if end > buffer.len {
            return Err(LowerError::OutOfBounds {
                kernel: self.kernel.name.clone(),
                buffer: buffer.name.clone(),
                detail: format!(
                    "index {} reaches element {} of {}",
                    at.index,
                    end - 1,
                    buffer.len
                ),
            });
        }
        if store {
            if matches!(buffer.storage, Storage::Input(_) | Storage::Const(_)) {
                return Err(self.invalid(format!("stores to the read-only `{}`", buffer.name)));
            }
            if let Some((var, _)) = self.parallel {
                // Record the span this store covers in one iteration of the parallel loop.
                let step = at.index.coefficient(var);
                let rest = Affine {
                    constant: at.index.constant,
                    terms: at
                        .index
                        .terms
                        .iter()
                        .filter(|t| t.0 != var)
                        .cloned()
                        .collect(),
                };
                let (lo, hi) = (rest.constant, self.max_index(&rest)? + usize::from(lanes));
                let span = self.spans.entry(at.buffer.0).or_insert((step, lo, hi));
                let same_step = span.0 == step;
                span.1 = span.1.min(lo);
                span.2 = span.2.max(hi);
                if !same_step {
                    return Err(self.invalid(format!(
                        "stores to `{}` move by different steps in the parallel loop",
                        buffer.name
                    )));
                }
            }
        }
        Ok(())
    }

    /// Distinct iterations of the parallel loop store to disjoint elements when one step of
    /// its index moves past everything one iteration stores.
    fn check_disjoint(&mut self, var: LoopVar, count: usize) -> Result<(), LowerError> {
        for (buffer, (step, lo, hi)) in std::mem::take(&mut self.spans) {
            if count > 1 && step < hi - lo {
                let name = &self.program.buffers[buffer as usize].name;
                return Err(self.invalid(format!(
                    "iterations of the parallel loop i{} may store to the same elements of `{name}`",
                    var.0
                )));
            }
        }
        Ok(())
    }

    fn read(&self, reg: Reg) -> Result<(), LowerError> {
        match self.defined.get(reg.0 as usize) {
            Some(true) => Ok(()),
            _ => Err(self.invalid(format!("r{} is read before it is assigned", reg.0))),
        }
    }

    fn stmts(&mut self, stmts: &[Stmt], top_level: bool) -> Result<(), LowerError> {
        for stmt in stmts {
            match stmt {
                Stmt::Assign(reg, expr) => {
                    match expr {
                        Expr::Const(_) => {}
                        Expr::Copy(a) | Expr::Unary(_, a) => self.read(*a)?,
                        Expr::Load { at, lanes } => self.access(at, *lanes, false)?,
                        Expr::LoadSplat(at) => self.access(at, 1, false)?,
                        Expr::Binary(_, a, b) => {
                            self.read(*a)?;
                            self.read(*b)?;
                        }
                        Expr::Fma(a, b, c) => {
                            self.read(*a)?;
                            self.read(*b)?;
                            self.read(*c)?;
                        }
                        Expr::Reduce(_, a, lanes) => {
                            self.read(*a)?;
                            if !(1..=4).contains(lanes) {
                                return Err(self.invalid(format!("a reduction of {lanes} lanes")));
                            }
                        }
                    }
                    let slot = self.defined.get_mut(reg.0 as usize).ok_or_else(|| {
                        LowerError::Invalid {
                            kernel: self.kernel.name.clone(),
                            detail: format!("r{} is not declared", reg.0),
                        }
                    })?;
                    *slot = true;
                }
                Stmt::Store { at, lanes, value } => {
                    self.read(*value)?;
                    self.access(at, *lanes, true)?;
                }
                Stmt::Loop(l) => {
                    if l.var.0 >= self.kernel.n_vars || self.counts.contains_key(&l.var) {
                        return Err(self.invalid(format!("loop variable i{} reused", l.var.0)));
                    }
                    if l.parallel {
                        if !top_level || self.parallel.is_some() {
                            return Err(self.invalid("a nested parallel loop".into()));
                        }
                        self.parallel = Some((l.var, l.count));
                    }
                    self.counts.insert(l.var, l.count);
                    self.stmts(&l.body, false)?;
                    self.counts.remove(&l.var);
                    if l.parallel {
                        self.parallel = None;
                        self.check_disjoint(l.var, l.count)?;
                    }
                }
            }
        }
        Ok(())
    }
}

pub(super) fn verify(program: &LoopProgram) -> Result<(), LowerError> {
    for kernel in &program.kernels {
        let mut checker = Checker {
            program,
            kernel,
            counts: HashMap::new(),
            parallel: None,
            spans: HashMap::new(),
            defined: vec![false; kernel.n_regs as usize],
        };
        checker.stmts(&kernel.body, true)?;
        let n_parallel = kernel
            .body
            .iter()
            .filter(|s| matches!(s, Stmt::Loop(l) if l.parallel))
            .count();
        if n_parallel > 1 {
            return Err(checker.invalid("more than one parallel loop".into()));
        }
    }
    for buffer in &program.buffers {
        if let Storage::Arena { offset } = buffer.storage {
            if offset + buffer.len > program.arena_len && buffer.len > 0 {
                return Err(LowerError::OutOfBounds {
                    kernel: String::new(),
                    buffer: buffer.name.clone(),
                    detail: format!("it ends past the arena of {}", program.arena_len),
                });
            }
        }
    }
    Ok(())
}
