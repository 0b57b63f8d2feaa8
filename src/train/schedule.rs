//! Learning-rate schedules per epoch, and gradient clipping by global norm.
//!
//! Schedules are PyTorch's, in closed form, with epochs counted from 0 (the rate of epoch `e`
//! is what `scheduler.get_last_lr()` gives after `e` calls of `scheduler.step()`):
//!
//! ```text
//! constant:   lr(e) = lr₀
//! step:       lr(e) = lr₀ · γ^⌊e / step_size⌋                                  (StepLR)
//! cosine:     lr(e) = η_min + (lr₀ − η_min) · (1 + cos(π · e / T_max)) / 2      (CosineAnnealingLR)
//! ```
//!
//! PyTorch's `CosineAnnealingLR.step()` computes the same values recursively; its closed form
//! (the one above, `_get_closed_form_lr`) agrees up to rounding, and past `T_max` both rise
//! again along the cosine, as here.
//!
//! Clipping is `torch.nn.utils.clip_grad_norm_` with the 2-norm: the total norm
//! `‖g‖ = √(Σ over every tensor of Σ g²)` and, with `c = max_norm / (‖g‖ + 1e-6)`, every
//! gradient is multiplied by `min(c, 1)`.

use std::f64::consts::PI;
use thiserror::Error;

#[derive(Clone, Debug, PartialEq)]
pub enum Schedule {
    Constant,
    /// Multiply the rate by `gamma` every `step_size` epochs.
    Step {
        step_size: usize,
        gamma: f64,
    },
    /// Anneal from the base rate to `eta_min` over `t_max` epochs along a half cosine.
    Cosine {
        t_max: usize,
        eta_min: f64,
    },
}

#[derive(Clone, Debug, Error, PartialEq)]
pub enum ScheduleError {
    #[error("the step schedule's step size must be at least 1 epoch")]
    ZeroStepSize,
    #[error("the step schedule's gamma is {0}; it must be a finite number > 0")]
    BadGamma(f64),
    #[error("the cosine schedule's T_max must be at least 1 epoch")]
    ZeroTMax,
    #[error("the cosine schedule's minimum rate is {0}; it must be a finite number ≥ 0")]
    BadEtaMin(f64),
    #[error("the maximum gradient norm is {0}; it must be a finite number > 0")]
    BadMaxNorm(f64),
}

impl Schedule {
    pub fn validate(&self) -> Result<(), ScheduleError> {
        match *self {
            Schedule::Constant => Ok(()),
            Schedule::Step { step_size: 0, .. } => Err(ScheduleError::ZeroStepSize),
            Schedule::Step { gamma, .. } if !(gamma.is_finite() && gamma > 0.0) => {
                Err(ScheduleError::BadGamma(gamma))
            }
            Schedule::Step { .. } => Ok(()),
            Schedule::Cosine { t_max: 0, .. } => Err(ScheduleError::ZeroTMax),
            Schedule::Cosine { eta_min, .. } if !(eta_min.is_finite() && eta_min >= 0.0) => {
                Err(ScheduleError::BadEtaMin(eta_min))
            }
            Schedule::Cosine { .. } => Ok(()),
        }
    }

    /// The learning rate of epoch `epoch` (from 0) for the base rate `base_lr`.
    pub fn lr(&self, base_lr: f64, epoch: usize) -> f64 {
        match *self {
            Schedule::Constant => base_lr,
            Schedule::Step { step_size, gamma } => {
                let n_decays = epoch / step_size.max(1);
                base_lr * gamma.powi(i32::try_from(n_decays).unwrap_or(i32::MAX))
            }
            Schedule::Cosine { t_max, eta_min } => {
                let phase = PI * epoch as f64 / t_max.max(1) as f64;
                eta_min + (base_lr - eta_min) * (1.0 + phase.cos()) / 2.0
            }
        }
    }
}

/// Scales the gradients in place so their total 2-norm is at most `max_norm` (see the module
/// docs) and returns the total norm before clipping, as `clip_grad_norm_` does.
///
/// The sum of squares is accumulated in f64. A non-finite norm (a NaN or infinite gradient)
/// leaves the gradients as they are: the caller must check the returned norm and stop, where
/// PyTorch would multiply every gradient by NaN.
pub fn clip_grad_norm(grads: &mut [&mut [f32]], max_norm: f64) -> Result<f64, ScheduleError> {
    if !(max_norm.is_finite() && max_norm > 0.0) {
        return Err(ScheduleError::BadMaxNorm(max_norm));
    }
    let sum_of_squares: f64 = grads
        .iter()
        .map(|g| g.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>())
        .sum();
    let total_norm = sum_of_squares.sqrt();
    if !total_norm.is_finite() {
        return Ok(total_norm);
    }
    let coefficient = max_norm / (total_norm + 1e-6);
    if coefficient < 1.0 {
        let coefficient = coefficient as f32;
        for grad in grads.iter_mut() {
            for value in grad.iter_mut() {
                *value *= coefficient;
            }
        }
    }
    Ok(total_norm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_schedule_as_steplr() {
        // StepLR(step_size=3, gamma=0.1) from 0.1: epochs 0–2 at 0.1, 3–5 at 0.01, 6 at 0.001.
        let schedule = Schedule::Step {
            step_size: 3,
            gamma: 0.1,
        };
        let rates: Vec<f64> = (0..7).map(|e| schedule.lr(0.1, e)).collect();
        let expected = [0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.001];
        for (found, expected) in rates.iter().zip(expected) {
            assert!((found - expected).abs() < 1e-15, "{rates:?}");
        }
    }

    #[test]
    fn cosine_schedule_as_cosineannealinglr() {
        // T_max 4, from 1.0 to 0.1: cos(πe/4) = 1, √½, 0, −√½, −1, then back up.
        let schedule = Schedule::Cosine {
            t_max: 4,
            eta_min: 0.1,
        };
        let half_root = 0.5f64.sqrt();
        let expected = [
            1.0,
            0.1 + 0.9 * (1.0 + half_root) / 2.0,
            0.55,
            0.1 + 0.9 * (1.0 - half_root) / 2.0,
            0.1,
            0.1 + 0.9 * (1.0 - half_root) / 2.0,
        ];
        for (epoch, expected) in expected.iter().enumerate() {
            let found = schedule.lr(1.0, epoch);
            assert!((found - expected).abs() < 1e-12, "epoch {epoch}: {found}");
        }
        // 0.1 + 0.9·(1 + 0.70710678)/2 = 0.86819805, by hand.
        assert!((schedule.lr(1.0, 1) - 0.868_198_05).abs() < 1e-8);
    }

    #[test]
    fn constant_schedule_and_validation() {
        assert_eq!(Schedule::Constant.lr(0.3, 99), 0.3);
        let zero = Schedule::Step {
            step_size: 0,
            gamma: 0.5,
        };
        assert_eq!(zero.validate(), Err(ScheduleError::ZeroStepSize));
        let cosine = Schedule::Cosine {
            t_max: 0,
            eta_min: 0.0,
        };
        assert_eq!(
            cosine.validate().unwrap_err().to_string(),
            "the cosine schedule's T_max must be at least 1 epoch"
        );
    }

    #[test]
    fn clipping_scales_by_max_norm_over_the_total_norm() {
        // Two tensors [3, 0] and [4]: total norm 5; max_norm 1 scales by 1/(5 + 1e-6).
        let (mut a, mut b) = (vec![3.0f32, 0.0], vec![4.0f32]);
        let norm = clip_grad_norm(&mut [&mut a, &mut b], 1.0).expect("valid");
        assert_eq!(norm, 5.0);
        let scale = 1.0 / (5.0 + 1e-6);
        assert!((a[0] as f64 - 3.0 * scale).abs() < 1e-7);
        assert!((b[0] as f64 - 4.0 * scale).abs() < 1e-7);
        // A norm equal to max_norm is still scaled, by max/(max + 1e-6): the coefficient is
        // clamped at 1, not skipped when the norm does not exceed max_norm.
        let mut unit = vec![0.6f32, 0.8];
        let norm = clip_grad_norm(&mut [&mut unit], 1.0).expect("valid");
        assert!((norm - 1.0).abs() < 1e-7);
        let scale = 1.0 / (norm + 1e-6);
        assert!((unit[0] as f64 - 0.6 * scale).abs() < 1e-7);
        assert!((unit[1] as f64 - 0.8 * scale).abs() < 1e-7);
        assert!(unit[0] < 0.6 && unit[1] < 0.8);
    }

    #[test]
    fn clipping_leaves_small_and_non_finite_gradients_alone() {
        let mut small = vec![0.1f32, -0.2];
        let norm = clip_grad_norm(&mut [&mut small], 10.0).expect("valid");
        assert!((norm - 0.05f64.sqrt()).abs() < 1e-7);
        assert_eq!(small, [0.1, -0.2]);
        let mut broken = vec![f32::NAN, 1.0];
        let norm = clip_grad_norm(&mut [&mut broken], 1.0).expect("valid");
        assert!(norm.is_nan());
        assert_eq!(broken[1], 1.0);
        assert_eq!(
            clip_grad_norm(&mut [&mut small], 0.0),
            Err(ScheduleError::BadMaxNorm(0.0))
        );
    }
}
