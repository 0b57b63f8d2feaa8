//! The verifier: proves, before any code exists, that every load and store of every kernel
//! stays inside its buffer, and checks the structural rules code generation relies on.
//!
//! Indices are affine in loop indices with non-negative coefficients, and loops count from 0
//! to a constant, so an access's smallest index is its constant term and its largest is its
//! value with every index at its last iteration; both are checked against the buffer's
//! length. The other rules: registers are assigned before they are read; loop variables are
//! used only inside their loop; inputs and constants are never written; lane counts are 1–4;
//! a parallel loop is a top-level statement, and distinct iterations of it store to disjoint
//! elements, so that they may run on different threads; tensors alive at the same time do not
//! share arena memory.

use super::ir::{Access, Affine, BufferId, Kernel, LoopExpr, LoopStmt, LoopVar, Reg};
use super::program::{LoopProgram, Storage};
use super::LowerError;
use cranelift_entity::EntityRef;
use std::collections::HashMap;

/// A store in a parallel loop, as `check_disjoint` needs it: the parallel index's
/// coefficient, the gcd of the coefficients of at least `step·count` (0 if none), the
/// constant term, and how far the other terms and the lanes reach.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct StoreShape {
    step: usize,
    period: usize,
    constant: usize,
    fine_end: usize,
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The divisors of `n` (none for 0).
fn divisors(n: usize) -> Vec<usize> {
    let mut found = Vec::new();
    let mut d = 1;
    while d * d <= n {
        if n.is_multiple_of(d) {
            found.push(d);
            found.push(n / d);
        }
        d += 1;
    }
    found
}

struct Checker<'a> {
    program: &'a LoopProgram,
    kernel: &'a Kernel,
    /// The trip counts of the enclosing loops.
    counts: HashMap<LoopVar, usize>,
    /// The parallel loop being checked, with its count.
    parallel: Option<(LoopVar, usize)>,
    /// Per buffer stored to in the parallel loop, its stores.
    stores: HashMap<BufferId, Vec<StoreShape>>,
    defined: Vec<bool>,
    /// Inside a `LoopStmt::Images`: its body is checked as one image's, and may not nest.
    in_images: bool,
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
                .ok_or_else(|| self.invalid(format!("{var} is used outside its loop")))?;
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
            .get(at.buffer)
            .ok_or_else(|| self.invalid(format!("no buffer {}", at.buffer)))?;
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
                let store = self.store_shape(&at.index, lanes, var);
                self.stores.entry(at.buffer).or_default().push(store);
            }
        }
        Ok(())
    }

    /// How a store in the parallel loop over `var` depends on the loops.
    fn store_shape(&self, index: &Affine, lanes: u8, var: LoopVar) -> StoreShape {
        let (count, step) = (self.parallel.map_or(1, |p| p.1), index.coefficient(var));
        let block = step * count;
        let mut period = 0;
        let mut fine_max = 0;
        for &(v, coefficient) in &index.terms {
            if v == var {
                continue;
            }
            if coefficient >= block {
                period = gcd(period, coefficient);
            } else {
                let n = self.counts.get(&v).copied().unwrap_or(1);
                fine_max += coefficient * n.saturating_sub(1);
            }
        }
        StoreShape {
            step,
            period,
            constant: index.constant,
            fine_end: fine_max + usize::from(lanes),
        }
    }

    /// Proves that the stores to each buffer in the parallel loop over `var` (`count`
    /// iterations) touch disjoint elements in distinct iterations.
    ///
    /// Every store's index is split as `coarse + step·(i + shift) + fine`, where `step` is
    /// `var`'s coefficient (the same for all stores), `coarse` is a multiple of a `period` of
    /// at least `step·count`, and `0 ≤ fine < step`. Two equal addresses then differ by a
    /// multiple of `period` smaller than `period`, so they come from the same iteration. The
    /// constant term either goes into `coarse` (if the stores' constants, less a base they
    /// share and rounded down to multiples of `step`, share the period) or into a `shift` all
    /// stores share. The period need not be the gcd of the coefficients: any divisor of it of
    /// at least `step·count` will do, which is what the stores into a slice of a concat's
    /// buffer need (their pixel stride is the concat's channel count, their constants start
    /// at the slice's channel offset).
    fn check_disjoint(&self, var: LoopVar, count: usize) -> Result<(), LowerError> {
        for (buffer, stores) in &self.stores {
            let name = &self.program.buffers[*buffer].name;
            let refuse = || {
                self.invalid(format!(
                    "stores to `{name}` in the parallel loop {var} cannot be shown to touch \
                     disjoint elements in distinct iterations"
                ))
            };
            let step = stores[0].step;
            if step == 0 || stores.iter().any(|s| s.step != step) {
                return Err(refuse());
            }
            let block = step * count;
            let fits = |constant: usize, s: &StoreShape| constant % step + s.fine_end <= step;
            let terms_period = stores.iter().fold(0, |p, s| gcd(p, s.period));
            // The constants as a shift shared by every store.
            let reduce = |c: usize| {
                if terms_period == 0 {
                    c
                } else {
                    c % terms_period
                }
            };
            let shift = reduce(stores[0].constant) / step;
            let shifted = terms_period == 0 || terms_period >= block;
            let shifted = shifted
                && stores
                    .iter()
                    .all(|s| reduce(s.constant) / step == shift && fits(reduce(s.constant), s));
            // The constants in the coarse part, after subtracting a base every store shares:
            // 0, or the smallest constant (a slice of a concat's buffer starts at a channel
            // offset that need not be a multiple of anything). Equal addresses stay equal
            // when the base is subtracted from both.
            let absorbed_above = |base: usize| {
                let period = stores.iter().fold(terms_period, |p, s| {
                    let c = s.constant - base;
                    gcd(p, c - c % step)
                });
                (period == 0 || period >= block)
                    && stores.iter().all(|s| fits(s.constant - base, s))
            };
            let lowest = stores.iter().map(|s| s.constant).min().unwrap_or(0);
            let absorbed = absorbed_above(0) || absorbed_above(lowest);
            // A period that is not a multiple of `step`: a pixel stride, with the constants
            // (less the smallest) split into multiples of it and a shift all stores share.
            // Candidates are the divisors of the terms' period, or of the constants when
            // there are no such terms.
            let periodic = || {
                let shifted_by = |period: usize| {
                    let shift = (stores[0].constant - lowest) % period / step;
                    stores.iter().all(|s| {
                        let c = (s.constant - lowest) % period;
                        c / step == shift && fits(c, s)
                    })
                };
                let mut candidates = if terms_period > 0 {
                    divisors(terms_period)
                } else {
                    let constants = stores.iter().map(|s| s.constant - lowest);
                    constants.flat_map(divisors).collect()
                };
                candidates.sort_unstable();
                candidates.dedup();
                candidates
                    .into_iter()
                    .filter(|&p| p >= block)
                    .any(shifted_by)
            };
            if !shifted && !absorbed && !periodic() {
                return Err(refuse());
            }
        }
        Ok(())
    }

    fn read(&self, reg: Reg) -> Result<(), LowerError> {
        match self.defined.get(reg.index()) {
            Some(true) => Ok(()),
            _ => Err(self.invalid(format!("{reg} is read before it is assigned"))),
        }
    }

    fn stmts(&mut self, stmts: &[LoopStmt], top_level: bool) -> Result<(), LowerError> {
        for stmt in stmts {
            match stmt {
                LoopStmt::Assign(reg, expr) => {
                    match expr {
                        LoopExpr::Const(_) => {}
                        LoopExpr::Copy(a) | LoopExpr::Unary(_, a) => self.read(*a)?,
                        LoopExpr::Load { at, lanes } => self.access(at, *lanes, false)?,
                        LoopExpr::LoadSplat(at) => self.access(at, 1, false)?,
                        LoopExpr::Binary(_, a, b) => {
                            self.read(*a)?;
                            self.read(*b)?;
                        }
                        LoopExpr::Fma(a, b, c) => {
                            self.read(*a)?;
                            self.read(*b)?;
                            self.read(*c)?;
                        }
                        LoopExpr::Reduce(_, a, lanes) => {
                            self.read(*a)?;
                            if !(1..=4).contains(lanes) {
                                return Err(self.invalid(format!("a reduction of {lanes} lanes")));
                            }
                        }
                    }
                    let slot =
                        self.defined
                            .get_mut(reg.index())
                            .ok_or_else(|| LowerError::Invalid {
                                kernel: self.kernel.name.clone(),
                                detail: format!("{reg} is not declared"),
                            })?;
                    *slot = true;
                }
                LoopStmt::Store { at, lanes, value } => {
                    self.read(*value)?;
                    self.access(at, *lanes, true)?;
                }
                LoopStmt::Loop(l) => {
                    if l.var.as_u32() >= self.kernel.n_vars || self.counts.contains_key(&l.var) {
                        return Err(self.invalid(format!("loop variable {} reused", l.var)));
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
                        self.check_disjoint(l.var, l.count)?;
                        self.parallel = None;
                        self.stores.clear();
                    }
                }
                LoopStmt::Images(body) => {
                    if self.in_images {
                        return Err(self.invalid("a loop over the images inside another".into()));
                    }
                    // Every access inside addresses one image's buffers (the code generator
                    // moves them image by image), so the body is proved for one image.
                    self.in_images = true;
                    self.stmts(body, false)?;
                    self.in_images = false;
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
            stores: HashMap::new(),
            defined: vec![false; kernel.n_regs as usize],
            in_images: false,
        };
        checker.stmts(&kernel.body, true)?;
        let n_parallel = kernel
            .body
            .iter()
            .filter(|s| matches!(s, LoopStmt::Loop(l) if l.parallel))
            .count();
        if n_parallel > 1 {
            return Err(checker.invalid("more than one parallel loop".into()));
        }
    }
    check_memory_plan(program)?;
    for buffer in program.buffers.values() {
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

/// Arena tensors alive at the same time (touched by a common span of kernels) must not share
/// memory.
fn check_memory_plan(program: &LoopProgram) -> Result<(), LowerError> {
    let mut life: HashMap<BufferId, (usize, usize)> = HashMap::new();
    for (k, kernel) in program.kernels.iter().enumerate() {
        super::plan::for_each_access(&kernel.body, &mut |b| {
            let span = life.entry(b).or_insert((k, k));
            span.1 = k;
        });
    }
    let arena: Vec<(usize, usize, usize, usize, &str)> = program
        .buffers
        .values()
        .filter_map(|b| match b.storage {
            Storage::Arena { offset } => {
                let (first, last) = life.get(&b.id).copied()?;
                Some((offset, offset + b.len, first, last, b.name.as_str()))
            }
            _ => None,
        })
        .collect();
    for (i, a) in arena.iter().enumerate() {
        for b in &arena[i + 1..] {
            let alive_together = a.2 <= b.3 && b.2 <= a.3;
            let share_memory = a.0 < b.1 && b.0 < a.1;
            if alive_together && share_memory {
                return Err(LowerError::OutOfBounds {
                    kernel: String::new(),
                    buffer: a.4.to_string(),
                    detail: format!("it shares arena memory with `{}` while both are alive", b.4),
                });
            }
        }
    }
    Ok(())
}
