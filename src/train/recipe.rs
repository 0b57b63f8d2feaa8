//! The training recipe: what `train(...)` in a network declares, what the flags of
//! `cnnc train` override, and the defaults a network without a recipe trains with.
//!
//! A recipe is a set of optional settings. The settings in force are, for each one, the flag
//! if given, else the recipe's value, else the default ([`Recipe::DEFAULTS_TEXT`]). The
//! optimizer's hyperparameters belong to the optimizer they were written for: when
//! `--optimizer` names another optimizer than the recipe's, the recipe's hyperparameters are
//! dropped with it (its `momentum` means nothing to Adam), and a flag that does not apply to
//! the optimizer in force (`--momentum` with Adam) is an error.

use super::optim::{AdamConfig, OptimizerConfig, SgdConfig};
use super::schedule::Schedule;
use crate::diag::{Code, Diagnostic};
use crate::source::Span;
use thiserror::Error;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum OptimizerKind {
    Sgd,
    Adam,
    AdamW,
}

impl OptimizerKind {
    pub const NAMES: [&'static str; 3] = ["sgd", "adam", "adamw"];

    pub fn from_name(name: &str) -> Option<OptimizerKind> {
        match name {
            "sgd" => Some(OptimizerKind::Sgd),
            "adam" => Some(OptimizerKind::Adam),
            "adamw" => Some(OptimizerKind::AdamW),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Adam => "adam",
            OptimizerKind::AdamW => "adamw",
        }
    }

    /// The hyperparameters this optimizer has (besides `lr`, which all have).
    pub fn hyperparameters(self) -> &'static [&'static str] {
        match self {
            OptimizerKind::Sgd => &["lr", "momentum", "nesterov", "weight_decay"],
            OptimizerKind::Adam | OptimizerKind::AdamW => &["lr", "betas", "eps", "weight_decay"],
        }
    }
}

/// An optimizer's hyperparameters, each optional (unset: the optimizer's default).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Hyperparameters {
    pub lr: Option<f64>,
    pub momentum: Option<f64>,
    pub nesterov: Option<bool>,
    pub weight_decay: Option<f64>,
    pub betas: Option<(f64, f64)>,
    pub eps: Option<f64>,
}

impl Hyperparameters {
    /// `other`'s values where it has them, else these.
    fn overridden_by(&self, other: &Hyperparameters) -> Hyperparameters {
        Hyperparameters {
            lr: other.lr.or(self.lr),
            momentum: other.momentum.or(self.momentum),
            nesterov: other.nesterov.or(self.nesterov),
            weight_decay: other.weight_decay.or(self.weight_decay),
            betas: other.betas.or(self.betas),
            eps: other.eps.or(self.eps),
        }
    }

    /// The names of the hyperparameters that are set.
    fn given(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        let flags = [
            ("lr", self.lr.is_some()),
            ("momentum", self.momentum.is_some()),
            ("nesterov", self.nesterov.is_some()),
            ("weight_decay", self.weight_decay.is_some()),
            ("betas", self.betas.is_some()),
            ("eps", self.eps.is_some()),
        ];
        for (name, set) in flags {
            if set {
                names.push(name);
            }
        }
        names
    }
}

/// A learning-rate schedule as a recipe states it: the cosine's length defaults to the run's
/// epochs, which are only known once the flags are read.
#[derive(Clone, Debug, PartialEq)]
pub enum ScheduleSpec {
    Constant,
    Step { every: usize, gamma: f64 },
    Cosine { epochs: Option<usize>, min_lr: f64 },
}

impl ScheduleSpec {
    pub const NAMES: [&'static str; 3] = ["constant", "step", "cosine"];

    /// The schedule with no arguments: `step` decays by 0.1 every 10 epochs (a common choice,
    /// not PyTorch's: StepLR has no default step size).
    pub fn from_name(name: &str) -> Option<ScheduleSpec> {
        match name {
            "constant" => Some(ScheduleSpec::Constant),
            "step" => Some(ScheduleSpec::Step {
                every: 10,
                gamma: 0.1,
            }),
            "cosine" => Some(ScheduleSpec::Cosine {
                epochs: None,
                min_lr: 0.0,
            }),
            _ => None,
        }
    }

    fn resolve(&self, epochs: usize) -> Schedule {
        match *self {
            ScheduleSpec::Constant => Schedule::Constant,
            ScheduleSpec::Step { every, gamma } => Schedule::Step {
                step_size: every,
                gamma,
            },
            ScheduleSpec::Cosine { epochs: t, min_lr } => Schedule::Cosine {
                t_max: t.unwrap_or(epochs).max(1),
                eta_min: min_lr,
            },
        }
    }
}

/// A training recipe: every setting optional.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recipe {
    pub optimizer: Option<OptimizerKind>,
    pub hyperparameters: Hyperparameters,
    pub epochs: Option<usize>,
    pub batch: Option<usize>,
    pub schedule: Option<ScheduleSpec>,
    pub seed: Option<u64>,
    /// Clip the gradients to this total 2-norm.
    pub clip: Option<f64>,
    /// The layers (paths, `layer4` or `layer4.1`) this stage makes trainable before it
    /// trains, with where each is written: `unfreeze: [layer4]`.
    pub unfreeze: Vec<(String, Span)>,
    /// The stage that trains after this one, `then: train(...)`: its settings not given are
    /// this stage's (see [`Recipe::next_stage`]).
    pub then: Option<Box<Recipe>>,
}

/// The settings a run uses, every one decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub optimizer: OptimizerConfig,
    pub epochs: usize,
    pub batch: usize,
    pub schedule: Schedule,
    pub seed: u64,
    pub clip: Option<f64>,
}

#[derive(Clone, Debug, Error, PartialEq)]
pub enum RecipeError {
    #[error("{flags} {verb} not apply to {optimizer}, whose hyperparameters are {}", hyperparameters.join(", "))]
    NotApplicable {
        flags: String,
        verb: &'static str,
        optimizer: &'static str,
        hyperparameters: Vec<&'static str>,
    },
    #[error("{0}")]
    Invalid(String),
}

impl RecipeError {
    pub fn diagnostic(&self) -> Diagnostic {
        let diagnostic = Diagnostic::global(Code::Recipe, self.to_string());
        match self {
            RecipeError::NotApplicable { .. } => {
                diagnostic.with_help("choose the optimizer with --optimizer, or drop the flag")
            }
            RecipeError::Invalid(_) => diagnostic,
        }
    }
}

impl Recipe {
    /// The defaults, as `docs/TRAINING.md` lists them.
    pub const DEFAULTS_TEXT: &'static str = "optimizer adam (lr 1e-3, betas 0.9/0.999, eps 1e-8), \
         10 epochs, batch 64, constant schedule, seed 0, no clipping";

    /// This recipe with the flags' settings on top (see the module docs).
    pub fn overridden_by(&self, flags: &Recipe) -> Result<Recipe, RecipeError> {
        let same_optimizer = flags.optimizer.is_none() || flags.optimizer == self.optimizer;
        let recipe_hyperparameters = if same_optimizer {
            self.hyperparameters.clone()
        } else {
            Hyperparameters::default()
        };
        let optimizer = flags.optimizer.or(self.optimizer);
        let kind = optimizer.unwrap_or(OptimizerKind::Adam);
        let misplaced: Vec<&str> = flags
            .hyperparameters
            .given()
            .into_iter()
            .filter(|name| !kind.hyperparameters().contains(name))
            .collect();
        if !misplaced.is_empty() {
            let flags: Vec<String> = misplaced
                .iter()
                .map(|name| format!("--{}", name.replace('_', "-")))
                .collect();
            return Err(RecipeError::NotApplicable {
                verb: if flags.len() == 1 { "does" } else { "do" },
                flags: flags.join(", "),
                optimizer: kind.name(),
                hyperparameters: kind.hyperparameters().to_vec(),
            });
        }
        Ok(Recipe {
            optimizer,
            hyperparameters: recipe_hyperparameters.overridden_by(&flags.hyperparameters),
            epochs: flags.epochs.or(self.epochs),
            batch: flags.batch.or(self.batch),
            schedule: flags.schedule.clone().or_else(|| self.schedule.clone()),
            seed: flags.seed.or(self.seed),
            clip: flags.clip.or(self.clip),
            unfreeze: self.unfreeze.clone(),
            then: self.then.clone(),
        })
    }

    /// The stages of this recipe in order, each with the settings it does not give taken
    /// from the stage before (see [`Recipe::next_stage`]), and `flags` laid over stage
    /// `flags_at` (from 0) before the stages after it inherit from it.
    pub fn stages(&self, flags_at: usize, flags: &Recipe) -> Result<Vec<Recipe>, RecipeError> {
        let mut stages: Vec<Recipe> = Vec::new();
        let mut next = Some(self);
        while let Some(stage) = next {
            let mut effective = match stages.last() {
                None => Recipe {
                    then: None,
                    ..stage.clone()
                },
                Some(before) => before.next_stage(stage)?,
            };
            if stages.len() == flags_at {
                effective = effective.overridden_by(flags)?;
            }
            stages.push(effective);
            next = stage.then.as_deref();
        }
        Ok(stages)
    }

    /// `stage` (a `then:` of this recipe) with the settings it does not give taken from this
    /// one; its own `unfreeze`.
    pub fn next_stage(&self, stage: &Recipe) -> Result<Recipe, RecipeError> {
        let mut next = self.overridden_by(&Recipe {
            then: None,
            unfreeze: Vec::new(),
            ..stage.clone()
        })?;
        next.unfreeze = stage.unfreeze.clone();
        next.then = None;
        Ok(next)
    }

    /// Every setting decided: the recipe's where given, the defaults elsewhere; checked.
    pub fn settings(&self) -> Result<Settings, RecipeError> {
        let h = &self.hyperparameters;
        let optimizer = match self.optimizer.unwrap_or(OptimizerKind::Adam) {
            OptimizerKind::Sgd => {
                let d = SgdConfig::default();
                OptimizerConfig::Sgd(SgdConfig {
                    lr: h.lr.unwrap_or(d.lr),
                    momentum: h.momentum.unwrap_or(d.momentum),
                    nesterov: h.nesterov.unwrap_or(d.nesterov),
                    weight_decay: h.weight_decay.unwrap_or(d.weight_decay),
                })
            }
            kind => {
                let d = if kind == OptimizerKind::AdamW {
                    AdamConfig::adamw()
                } else {
                    AdamConfig::adam()
                };
                let config = AdamConfig {
                    lr: h.lr.unwrap_or(d.lr),
                    betas: h.betas.unwrap_or(d.betas),
                    eps: h.eps.unwrap_or(d.eps),
                    weight_decay: h.weight_decay.unwrap_or(d.weight_decay),
                };
                if kind == OptimizerKind::AdamW {
                    OptimizerConfig::AdamW(config)
                } else {
                    OptimizerConfig::Adam(config)
                }
            }
        };
        optimizer
            .validate()
            .map_err(|e| RecipeError::Invalid(e.to_string()))?;
        let epochs = self.epochs.unwrap_or(10);
        let batch = self.batch.unwrap_or(64);
        if epochs == 0 {
            return Err(RecipeError::Invalid(
                "the number of epochs must be at least 1".into(),
            ));
        }
        if batch == 0 {
            return Err(RecipeError::Invalid(
                "the batch size must be at least 1".into(),
            ));
        }
        let schedule = self
            .schedule
            .as_ref()
            .map_or(Schedule::Constant, |s| s.resolve(epochs));
        schedule
            .validate()
            .map_err(|e| RecipeError::Invalid(e.to_string()))?;
        if let Some(clip) = self.clip {
            if !(clip.is_finite() && clip > 0.0) {
                return Err(RecipeError::Invalid(format!(
                    "the gradient clipping norm is {clip}; it must be a finite number > 0"
                )));
            }
        }
        Ok(Settings {
            optimizer,
            epochs,
            batch,
            schedule,
            seed: self.seed.unwrap_or(0),
            clip: self.clip,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_recipe_trains_with_the_documented_defaults() {
        let settings = Recipe::default().settings().unwrap();
        assert_eq!(
            settings.optimizer,
            OptimizerConfig::Adam(AdamConfig::adam())
        );
        assert_eq!(
            (settings.epochs, settings.batch, settings.seed),
            (10, 64, 0)
        );
        assert_eq!(settings.schedule, Schedule::Constant);
        assert_eq!(settings.clip, None);
    }

    #[test]
    fn a_flag_overrides_the_recipe_and_the_rest_stays() {
        let recipe = Recipe {
            optimizer: Some(OptimizerKind::Sgd),
            hyperparameters: Hyperparameters {
                lr: Some(0.1),
                momentum: Some(0.9),
                ..Default::default()
            },
            epochs: Some(3),
            schedule: ScheduleSpec::from_name("cosine"),
            ..Default::default()
        };
        let flags = Recipe {
            hyperparameters: Hyperparameters {
                lr: Some(0.5),
                ..Default::default()
            },
            batch: Some(8),
            ..Default::default()
        };
        let settings = recipe.overridden_by(&flags).unwrap().settings().unwrap();
        let OptimizerConfig::Sgd(sgd) = settings.optimizer else {
            panic!("sgd expected")
        };
        assert_eq!((sgd.lr, sgd.momentum), (0.5, 0.9));
        assert_eq!((settings.epochs, settings.batch), (3, 8));
        assert_eq!(
            settings.schedule,
            Schedule::Cosine {
                t_max: 3,
                eta_min: 0.0
            }
        );
    }

    #[test]
    fn another_optimizer_drops_the_recipes_hyperparameters() {
        let recipe = Recipe {
            optimizer: Some(OptimizerKind::Sgd),
            hyperparameters: Hyperparameters {
                momentum: Some(0.9),
                lr: Some(0.1),
                ..Default::default()
            },
            ..Default::default()
        };
        let flags = Recipe {
            optimizer: Some(OptimizerKind::AdamW),
            ..Default::default()
        };
        let settings = recipe.overridden_by(&flags).unwrap().settings().unwrap();
        assert_eq!(
            settings.optimizer,
            OptimizerConfig::AdamW(AdamConfig::adamw())
        );
    }

    #[test]
    fn a_flag_of_another_optimizer_is_an_error() {
        let flags = Recipe {
            hyperparameters: Hyperparameters {
                momentum: Some(0.9),
                ..Default::default()
            },
            ..Default::default()
        };
        let error = Recipe::default().overridden_by(&flags).unwrap_err();
        assert!(error
            .to_string()
            .starts_with("--momentum does not apply to adam"));
    }
}
