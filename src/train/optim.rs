//! The optimizers: SGD (momentum, Nesterov, weight decay), Adam and AdamW, with PyTorch's
//! update rules and defaults, so a recipe gives the numbers `torch.optim` would.
//!
//! An [`Optimizer`] keeps its state per parameter tensor, by the tensor's full name
//! (`layer1.0.conv1.weight`), and updates one tensor at a time from `&mut [f32]` parameters and
//! `&[f32]` gradients, in one pass over the data. The formulas, with `p` a parameter, `g` its
//! gradient, `lr` the current learning rate, `wd` the weight decay and `t` the tensor's step
//! count (1 on its first update):
//!
//! **SGD** (`torch.optim.SGD`, dampening 0):
//!
//! ```text
//! g ← g + wd·p
//! b ← g                      on the first step (the momentum buffer starts as the gradient)
//! b ← μ·b + g                afterwards
//! g ← g + μ·b  (nesterov)    or   g ← b  (otherwise; μ = 0 leaves g as it is)
//! p ← p − lr·g
//! ```
//!
//! **Adam** (`torch.optim.Adam`, amsgrad off):
//!
//! ```text
//! g ← g + wd·p
//! m ← β1·m + (1 − β1)·g                 (m, v start at 0)
//! v ← β2·v + (1 − β2)·g²
//! p ← p − (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + ε)
//! ```
//!
//! **AdamW** (`torch.optim.AdamW`): first `p ← p·(1 − lr·wd)` (decoupled weight decay), then
//! the Adam step above with no decay added to the gradient.
//!
//! Defaults are PyTorch's: SGD lr 1e-3, momentum 0; Adam lr 1e-3, β = (0.9, 0.999), ε = 1e-8,
//! wd 0; AdamW the same with wd 0.01. The per-tensor scalars (`lr / (1 − β1^t)`,
//! `√(1 − β2^t)`) are computed in f64 and the per-element work in f32, as PyTorch does with
//! Python floats and f32 tensors.

use std::collections::HashMap;
use thiserror::Error;

/// Which optimizer, with its hyperparameters.
#[derive(Clone, Debug, PartialEq)]
pub enum OptimizerConfig {
    Sgd(SgdConfig),
    Adam(AdamConfig),
    AdamW(AdamConfig),
}

#[derive(Clone, Debug, PartialEq)]
pub struct SgdConfig {
    pub lr: f64,
    pub momentum: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
}

impl Default for SgdConfig {
    fn default() -> SgdConfig {
        SgdConfig {
            lr: 1e-3,
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct AdamConfig {
    pub lr: f64,
    pub betas: (f64, f64),
    pub eps: f64,
    pub weight_decay: f64,
}

impl AdamConfig {
    /// `torch.optim.Adam`'s defaults.
    pub fn adam() -> AdamConfig {
        AdamConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }

    /// `torch.optim.AdamW`'s defaults: Adam's with weight decay 0.01.
    pub fn adamw() -> AdamConfig {
        AdamConfig {
            weight_decay: 0.01,
            ..AdamConfig::adam()
        }
    }
}

impl OptimizerConfig {
    /// The name used in checkpoints and messages: `sgd`, `adam`, `adamw`.
    pub fn kind(&self) -> &'static str {
        match self {
            OptimizerConfig::Sgd(_) => "sgd",
            OptimizerConfig::Adam(_) => "adam",
            OptimizerConfig::AdamW(_) => "adamw",
        }
    }

    /// The kind of state it keeps for a tensor (`ParamState::kind`): `sgd` or `adam`.
    fn state_kind(&self) -> &'static str {
        match self {
            OptimizerConfig::Sgd(_) => "sgd",
            OptimizerConfig::Adam(_) | OptimizerConfig::AdamW(_) => "adam",
        }
    }

    /// The base learning rate, before any schedule.
    pub fn lr(&self) -> f64 {
        match self {
            OptimizerConfig::Sgd(c) => c.lr,
            OptimizerConfig::Adam(c) | OptimizerConfig::AdamW(c) => c.lr,
        }
    }

    /// Checks the hyperparameters the way `torch.optim` does, and that they are finite.
    pub fn validate(&self) -> Result<(), OptimError> {
        let bad = |what: &str, value: f64, rule: &str| {
            Err(OptimError::Hyperparameter {
                what: what.to_string(),
                value,
                rule: rule.to_string(),
            })
        };
        let lr = self.lr();
        if !(lr.is_finite() && lr >= 0.0) {
            return bad("learning rate", lr, "a finite number ≥ 0");
        }
        match self {
            OptimizerConfig::Sgd(c) => {
                if !(c.momentum.is_finite() && c.momentum >= 0.0) {
                    return bad("momentum", c.momentum, "a finite number ≥ 0");
                }
                if !(c.weight_decay.is_finite() && c.weight_decay >= 0.0) {
                    return bad("weight decay", c.weight_decay, "a finite number ≥ 0");
                }
                if c.nesterov && c.momentum <= 0.0 {
                    return bad("momentum", c.momentum, "> 0 for Nesterov momentum");
                }
            }
            OptimizerConfig::Adam(c) | OptimizerConfig::AdamW(c) => {
                for (what, beta) in [("beta1", c.betas.0), ("beta2", c.betas.1)] {
                    if !(0.0..1.0).contains(&beta) {
                        return bad(what, beta, "in [0, 1)");
                    }
                }
                if !(c.eps.is_finite() && c.eps >= 0.0) {
                    return bad("epsilon", c.eps, "a finite number ≥ 0");
                }
                if !(c.weight_decay.is_finite() && c.weight_decay >= 0.0) {
                    return bad("weight decay", c.weight_decay, "a finite number ≥ 0");
                }
            }
        }
        Ok(())
    }
}

/// What an optimizer remembers about one parameter tensor between steps.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamState {
    /// SGD: the momentum buffer, absent until the first step with momentum (and always with
    /// momentum 0), as in PyTorch's `state_dict`.
    Sgd { momentum_buffer: Option<Vec<f32>> },
    /// Adam and AdamW: the step count and the two moment estimates.
    Adam {
        step: u64,
        exp_avg: Vec<f32>,
        exp_avg_sq: Vec<f32>,
    },
}

#[derive(Clone, Debug, Error, PartialEq)]
pub enum OptimError {
    #[error("the {what} is {value}, but it must be {rule}")]
    Hyperparameter {
        what: String,
        value: f64,
        rule: String,
    },
    #[error("tensor `{name}` has {n_params} values but its gradient has {n_grads}")]
    GradientLength {
        name: String,
        n_params: usize,
        n_grads: usize,
    },
    #[error(
        "the optimizer state of `{name}` holds {n_state} values but the tensor has {n_params}"
    )]
    StateLength {
        name: String,
        n_state: usize,
        n_params: usize,
    },
    #[error("the optimizer state of `{name}` is {found} state, but the optimizer is {expected}")]
    StateKind {
        name: String,
        found: &'static str,
        expected: &'static str,
    },
    #[error("tensor `{name}` is updated twice in one step")]
    Duplicate { name: String },
}

impl ParamState {
    fn kind(&self) -> &'static str {
        match self {
            ParamState::Sgd { .. } => "sgd",
            ParamState::Adam { .. } => "adam",
        }
    }
}

/// An optimizer and its state for every tensor it has updated.
#[derive(Clone, Debug)]
pub struct Optimizer {
    config: OptimizerConfig,
    /// The learning rate of the current step: the base rate, or what the schedule set.
    lr: f64,
    state: HashMap<String, ParamState>,
}

impl Optimizer {
    pub fn new(config: OptimizerConfig) -> Result<Optimizer, OptimError> {
        config.validate()?;
        Ok(Optimizer {
            lr: config.lr(),
            config,
            state: HashMap::new(),
        })
    }

    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// Sets the learning rate for the next steps (the schedule's value for this epoch).
    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// The state of one tensor, if it has been updated (or restored) before.
    pub fn state(&self, name: &str) -> Option<&ParamState> {
        self.state.get(name)
    }

    /// Every tensor's state, sorted by name so a checkpoint is written the same way each time.
    pub fn states(&self) -> Vec<(&str, &ParamState)> {
        let mut states: Vec<(&str, &ParamState)> =
            self.state.iter().map(|(n, s)| (n.as_str(), s)).collect();
        states.sort_by(|a, b| a.0.cmp(b.0));
        states
    }

    /// Restores one tensor's state (from a checkpoint). Its kind must suit this optimizer;
    /// the lengths are checked against the tensor at its next [`Optimizer::step_tensor`].
    pub fn restore_state(&mut self, name: &str, state: ParamState) -> Result<(), OptimError> {
        let expected = self.config.state_kind();
        if state.kind() != expected {
            return Err(OptimError::StateKind {
                name: name.to_string(),
                found: state.kind(),
                expected,
            });
        }
        self.state.insert(name.to_string(), state);
        Ok(())
    }

    /// One update of the tensor `name` from its gradient, in place (see the module docs for
    /// the formulas).
    pub fn step_tensor(
        &mut self,
        name: &str,
        params: &mut [f32],
        grads: &[f32],
    ) -> Result<(), OptimError> {
        // Checked before the state is taken out, so a failed step leaves the state as it was.
        self.check(name, params, grads)?;
        let state = self.state.remove(name);
        let updated = update(&self.config, self.lr, params, grads, state);
        self.state.insert(name.to_string(), updated);
        Ok(())
    }

    /// [`step_tensor`](Self::step_tensor) of each `(name, params, grads)`, the tensors shared
    /// among up to `threads` threads, largest first: the same numbers as one after another.
    /// (One after another, this was a tenth of ResNet-18's work outside the kernels at two
    /// threads.) Nothing is updated if any tensor is refused.
    pub fn step_tensors(
        &mut self,
        tensors: Vec<(&str, &mut [f32], &[f32])>,
        threads: usize,
    ) -> Result<(), OptimError> {
        let mut names = std::collections::HashSet::new();
        for (name, params, grads) in &tensors {
            self.check(name, params, grads)?;
            if !names.insert(*name) {
                return Err(OptimError::Duplicate {
                    name: name.to_string(),
                });
            }
        }
        let total: usize = tensors.iter().map(|(_, params, _)| params.len()).sum();
        // Starting a thread costs more than updating LeNet-5.
        let threads = if total < 1 << 18 { 1 } else { threads };
        let mut work: Vec<_> = tensors
            .into_iter()
            .map(|(name, params, grads)| {
                let state = self.state.remove(name);
                std::sync::Mutex::new((name, params, grads, state))
            })
            .collect();
        work.sort_by_key(|item| std::cmp::Reverse(lock(item).1.len()));
        let (config, lr) = (&self.config, self.lr);
        let updated = crate::parallel::parallel_map(
            &work,
            threads,
            || (),
            |(), item| {
                let mut item = lock(item);
                let (_, ref mut params, grads, ref mut state) = *item;
                update(config, lr, params, grads, state.take())
            },
        );
        for (item, state) in work.iter().zip(updated) {
            self.state.insert(lock(item).0.to_string(), state);
        }
        Ok(())
    }

    /// Whether `name` can be updated: its gradient and its state (if it has one) have the
    /// tensor's length, and the state is of this optimizer's kind.
    fn check(&self, name: &str, params: &[f32], grads: &[f32]) -> Result<(), OptimError> {
        if params.len() != grads.len() {
            return Err(OptimError::GradientLength {
                name: name.to_string(),
                n_params: params.len(),
                n_grads: grads.len(),
            });
        }
        let Some(state) = self.state.get(name) else {
            return Ok(());
        };
        if state.kind() != self.config.state_kind() {
            return Err(OptimError::StateKind {
                name: name.to_string(),
                found: state.kind(),
                expected: self.config.kind(),
            });
        }
        let n_state = match state {
            ParamState::Sgd { momentum_buffer } => momentum_buffer.as_ref().map(Vec::len),
            ParamState::Adam {
                exp_avg,
                exp_avg_sq,
                ..
            } => Some(if exp_avg.len() != params.len() {
                exp_avg.len()
            } else {
                exp_avg_sq.len()
            }),
        };
        match n_state.filter(|&n| n != params.len()) {
            Some(n_state) => Err(OptimError::StateLength {
                name: name.to_string(),
                n_state,
                n_params: params.len(),
            }),
            None => Ok(()),
        }
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One update of `params` by `config` at rate `lr`, from `state` (none before the first),
/// which [`Optimizer::check`] found to suit them; returns the new state.
fn update(
    config: &OptimizerConfig,
    lr: f64,
    params: &mut [f32],
    grads: &[f32],
    state: Option<ParamState>,
) -> ParamState {
    let state = state.unwrap_or_else(|| match config {
        OptimizerConfig::Sgd(_) => ParamState::Sgd {
            momentum_buffer: None,
        },
        OptimizerConfig::Adam(_) | OptimizerConfig::AdamW(_) => ParamState::Adam {
            step: 0,
            exp_avg: vec![0.0; params.len()],
            exp_avg_sq: vec![0.0; params.len()],
        },
    });
    match (config, state) {
        (OptimizerConfig::Sgd(config), ParamState::Sgd { momentum_buffer }) => ParamState::Sgd {
            momentum_buffer: sgd_step(config, lr, params, grads, momentum_buffer),
        },
        (
            OptimizerConfig::Adam(config),
            ParamState::Adam {
                step,
                exp_avg,
                exp_avg_sq,
            },
        ) => adam_step(config, false, lr, params, grads, step, exp_avg, exp_avg_sq),
        (
            OptimizerConfig::AdamW(config),
            ParamState::Adam {
                step,
                exp_avg,
                exp_avg_sq,
            },
        ) => adam_step(config, true, lr, params, grads, step, exp_avg, exp_avg_sq),
        // `check` refuses a state of another kind; kept as it was.
        (_, state) => state,
    }
}

/// SGD on one tensor; returns the new momentum buffer.
fn sgd_step(
    config: &SgdConfig,
    lr: f64,
    params: &mut [f32],
    grads: &[f32],
    momentum_buffer: Option<Vec<f32>>,
) -> Option<Vec<f32>> {
    let lr = lr as f32;
    let wd = config.weight_decay as f32;
    let momentum = config.momentum as f32;
    if config.momentum == 0.0 {
        for (p, &g) in params.iter_mut().zip(grads) {
            let g = g + wd * *p;
            *p -= lr * g;
        }
        return None;
    }
    match momentum_buffer {
        None => {
            // The first step: the buffer is the (decayed) gradient itself.
            let mut buffer = vec![0.0f32; params.len()];
            for ((p, &g), b) in params.iter_mut().zip(grads).zip(buffer.iter_mut()) {
                let g = g + wd * *p;
                *b = g;
                let update = if config.nesterov { g + momentum * g } else { g };
                *p -= lr * update;
            }
            Some(buffer)
        }
        Some(mut buffer) => {
            for ((p, &g), b) in params.iter_mut().zip(grads).zip(buffer.iter_mut()) {
                let g = g + wd * *p;
                *b = momentum * *b + g;
                let update = if config.nesterov {
                    g + momentum * *b
                } else {
                    *b
                };
                *p -= lr * update;
            }
            Some(buffer)
        }
    }
}

/// Adam (or AdamW when `decoupled`) on one tensor; returns the new state.
#[allow(clippy::too_many_arguments)]
fn adam_step(
    config: &AdamConfig,
    decoupled: bool,
    lr: f64,
    params: &mut [f32],
    grads: &[f32],
    step: u64,
    mut exp_avg: Vec<f32>,
    mut exp_avg_sq: Vec<f32>,
) -> ParamState {
    let step = step + 1;
    let (beta1, beta2) = config.betas;
    // Scalars in f64, as PyTorch computes them with Python floats.
    let exponent = i32::try_from(step).unwrap_or(i32::MAX);
    let bias_correction1 = 1.0 - beta1.powi(exponent);
    let bias_correction2_sqrt = (1.0 - beta2.powi(exponent)).sqrt();
    let step_size = (lr / bias_correction1) as f32;
    let bias_correction2_sqrt = bias_correction2_sqrt as f32;
    let eps = config.eps as f32;
    let (one_minus_beta1, one_minus_beta2) = ((1.0 - beta1) as f32, (1.0 - beta2) as f32);
    let (beta1, beta2) = (beta1 as f32, beta2 as f32);
    // AdamW scales the parameter first; Adam adds the decay to the gradient. Multiplying by
    // an exact 1 or adding an exact 0 changes nothing, so one loop serves both.
    let (decay_factor, coupled_wd) = if decoupled {
        ((1.0 - lr * config.weight_decay) as f32, 0.0)
    } else {
        (1.0, config.weight_decay as f32)
    };
    for (((p, &g), m), v) in params
        .iter_mut()
        .zip(grads)
        .zip(exp_avg.iter_mut())
        .zip(exp_avg_sq.iter_mut())
    {
        *p *= decay_factor;
        let g = g + coupled_wd * *p;
        *m = beta1 * *m + one_minus_beta1 * g;
        *v = beta2 * *v + one_minus_beta2 * g * g;
        let denom = v.sqrt() / bias_correction2_sqrt + eps;
        *p -= step_size * (*m / denom);
    }
    ParamState::Adam {
        step,
        exp_avg,
        exp_avg_sq,
    }
}

#[cfg(test)]
#[path = "optim_tests.rs"]
mod tests;
