//! The graph's constants: every tensor a layer computes with that is not an activation —
//! learned parameters, batch-norm statistics, numbers written in the source — in one arena
//! owned by the [`Graph`](super::Graph), addressed by [`ConstId`].
//!
//! A constant knows its shape and where its numbers come from, not necessarily the numbers:
//!
//! - [`ConstSource::Values`]: numbers in hand (a literal of the source, a tensor bound from a
//!   weights file, a value the trainer wrote);
//! - [`ConstSource::Seeded`]: "PyTorch's default initialisation with this seed", generated
//!   from the seed and the tensor's name when someone asks for the numbers;
//! - [`ConstSource::Folded`]: a batch norm folded into a conv or dense layer's weight or bias,
//!   computed from its source constants when someone asks;
//! - [`ConstSource::Mapped`]: a tensor of a memory-mapped weights file, read in place (and
//!   its pages released once packed, [`Constant::release`]).
//!
//! So a graph can be optimised, dumped, summarised and lowered without a single weight in
//! memory (`cnnc emit opt` on VGG-16 used to build 138 M floats), and the numbers are made
//! once, where they are needed — by the code generator's packing, on every thread it has.
//! [`Constant::values`] computes them on first use and keeps them.

use super::Init;
use crate::runtime::rng::SplitMix64;
use crate::runtime::MappedTensor;
use cranelift_entity::entity_impl;
use std::borrow::Cow;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

/// A constant of the graph.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConstId(u32);
entity_impl!(ConstId, "c");

/// One constant tensor, in PyTorch's layout (conv `[out, in/groups, kh, kw]`, dense
/// `[out, in]`, batch norm `[c]`).
#[derive(Clone, Debug)]
pub struct Constant {
    /// The full tensor name (`layer1.0.conv1.weight`), as weights files spell it.
    pub name: String,
    pub shape: Vec<usize>,
    /// Learned (a parameter or buffer a weights file provides) rather than written in the
    /// source; only learned constants are bound to a file.
    pub learned: bool,
    pub source: ConstSource,
    /// The numbers of a `Seeded` or `Folded` constant, once computed.
    cache: OnceLock<Arc<[f32]>>,
}

/// Where a constant's numbers come from.
#[derive(Clone, Debug)]
pub enum ConstSource {
    Values(Arc<[f32]>),
    /// PyTorch's default initialisation (`Init`), from a stream seeded by `seed` and the
    /// constant's name, so a tensor's numbers do not depend on the other tensors.
    Seeded {
        seed: u64,
        init: Init,
    },
    Folded(Arc<Fold>),
    /// A tensor of a weights file, in the file's pages.
    Mapped(MappedTensor),
}

/// A batch norm folded into the layer before it: the layer's new weight is its weight with
/// output channel `k` scaled by `scale_k`; its new bias is `bias·scale + shift` (from a zero
/// bias when the layer had none).
#[derive(Clone, Debug)]
pub struct Fold {
    pub part: FoldedPart,
    /// The layer's weight or bias before folding; `None` for a bias the layer did not have.
    pub source: Option<Constant>,
    pub batch_norm: BatchNormConstants,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FoldedPart {
    Weight,
    Bias,
}

/// A batch norm's four tensors and ε: everything its per-channel affine needs.
#[derive(Clone, Debug)]
pub struct BatchNormConstants {
    pub weight: Constant,
    pub bias: Constant,
    pub running_mean: Constant,
    pub running_var: Constant,
    pub eps: f64,
}

/// Inference batch norm as `y = x·scale + shift` per channel, in f64.
pub struct BatchNormAffine {
    pub scale: Vec<f64>,
    pub shift: Vec<f64>,
}

impl BatchNormConstants {
    /// The one place the batch-norm affine is computed: `scale = γ/√(var+ε)`,
    /// `shift = β − mean·scale`. The interpreter, the folding pass and the code generator's
    /// unfolded batch norm all use it.
    pub fn affine(&self) -> BatchNormAffine {
        let (gamma, beta) = (self.weight.read(), self.bias.read());
        let (mean, var) = (self.running_mean.read(), self.running_var.read());
        let scale: Vec<f64> = gamma
            .iter()
            .zip(var.iter())
            .map(|(&g, &v)| f64::from(g) / (f64::from(v) + self.eps).sqrt())
            .collect();
        let shift = beta
            .iter()
            .zip(mean.iter())
            .zip(&scale)
            .map(|((&b, &m), s)| f64::from(b) - f64::from(m) * s)
            .collect();
        BatchNormAffine { scale, shift }
    }
}

impl Constant {
    /// A constant with its numbers in hand; `values` holds the product of `shape`.
    pub fn from_values(
        name: impl Into<String>,
        shape: Vec<usize>,
        learned: bool,
        values: Vec<f32>,
    ) -> Constant {
        Constant::new(
            name.into(),
            shape,
            learned,
            ConstSource::Values(values.into()),
        )
    }

    pub fn new(name: String, shape: Vec<usize>, learned: bool, source: ConstSource) -> Constant {
        Constant {
            name,
            shape,
            learned,
            source,
            cache: OnceLock::new(),
        }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Replaces where the numbers come from (binding a file, reseeding, folding, a trainer's
    /// update), forgetting any computed ones.
    pub fn set_source(&mut self, source: ConstSource) {
        self.source = source;
        self.cache = OnceLock::new();
    }

    /// Makes `values` the numbers, written over the ones held when nothing else shares them
    /// (a training step binds every weight anew: as fresh allocations, the system zeroed
    /// their pages one fault at a time); otherwise as a new source.
    pub fn set_values(&mut self, values: &[f32]) {
        if let ConstSource::Values(held) = &mut self.source {
            if let Some(held) = Arc::get_mut(held).filter(|h| h.len() == values.len()) {
                held.copy_from_slice(values);
                self.cache = OnceLock::new();
                return;
            }
        }
        self.set_source(ConstSource::Values(Arc::from(values)));
    }

    /// Whether the numbers exist yet (a seeded or folded constant not yet asked for has none).
    pub fn is_materialised(&self) -> bool {
        matches!(self.source, ConstSource::Values(_) | ConstSource::Mapped(_))
            || self.cache.get().is_some()
    }

    /// The numbers, row-major, generated or folded on first use and kept.
    pub fn values(&self) -> &[f32] {
        match &self.source {
            ConstSource::Values(values) => values,
            ConstSource::Mapped(tensor) => match tensor.read() {
                Cow::Borrowed(values) => values,
                Cow::Owned(_) => self.cache.get_or_init(|| self.generate().into()),
            },
            _ => self.cache.get_or_init(|| self.generate().into()),
        }
    }

    /// The numbers, computed now if they are not at hand but not kept: for a reader that
    /// needs them once (packing, folding), so that a graph does not hold a second copy of
    /// its weights after they are packed.
    pub fn read(&self) -> Cow<'_, [f32]> {
        match (&self.source, self.cache.get()) {
            (ConstSource::Values(values), _) => Cow::Borrowed(values),
            (_, Some(values)) => Cow::Borrowed(values),
            (ConstSource::Mapped(tensor), None) => tensor.read(),
            _ => Cow::Owned(self.generate()),
        }
    }

    /// Elements `range` of the numbers (clamped to the tensor), as [`read`](Self::read) would
    /// give them, computing only those: a packer can go through a large tensor in pieces and
    /// [`release_range`](Self::release_range) each, never holding all of it unpacked.
    pub fn read_range(&self, range: Range<usize>) -> Cow<'_, [f32]> {
        let numel = self.numel();
        let range = range.start.min(numel)..range.end.min(numel).max(range.start.min(numel));
        match (&self.source, self.cache.get()) {
            (ConstSource::Values(values), _) | (_, Some(values)) => {
                Cow::Borrowed(values.get(range).unwrap_or_default())
            }
            (ConstSource::Mapped(tensor), None) => tensor.read_range(range),
            (ConstSource::Seeded { seed, init }, None) => {
                Cow::Owned(seeded_range(*init, *seed, &self.name, range))
            }
            (ConstSource::Folded(fold), None) => Cow::Owned(fold.compute_range(numel, range)),
        }
    }

    /// Lets go of the memory the numbers occupy where that is possible without losing them:
    /// a mapped tensor's pages (and those of the mapped tensors a folded one is computed
    /// from) leave the process, to be read again from the file if needed.
    pub fn release(&self) {
        match &self.source {
            ConstSource::Mapped(tensor) => tensor.release(),
            ConstSource::Folded(fold) => {
                if let Some(source) = &fold.source {
                    source.release();
                }
                let bn = &fold.batch_norm;
                for constant in [&bn.weight, &bn.bias, &bn.running_mean, &bn.running_var] {
                    constant.release();
                }
            }
            ConstSource::Values(_) | ConstSource::Seeded { .. } => {}
        }
    }

    /// [`release`](Self::release) for elements `range` of a mapped tensor, or of the mapped
    /// weight a folded weight scales element for element.
    pub fn release_range(&self, range: Range<usize>) {
        match &self.source {
            ConstSource::Mapped(tensor) => tensor.release_range(range),
            ConstSource::Folded(fold) if fold.part == FoldedPart::Weight => {
                if let Some(source) = &fold.source {
                    source.release_range(range);
                }
            }
            _ => {}
        }
    }

    fn generate(&self) -> Vec<f32> {
        let numel = self.numel();
        match &self.source {
            ConstSource::Values(values) => values.to_vec(),
            ConstSource::Seeded { seed, init } => seeded_values(*init, *seed, &self.name, numel),
            ConstSource::Folded(fold) => fold.compute(numel),
            ConstSource::Mapped(tensor) => tensor.read().into_owned(),
        }
    }
}

/// PyTorch's default initialisation of a tensor of `numel` elements called `name`:
/// conv and dense weights and biases uniform in ±1/√fan_in (Kaiming-uniform with `a = √5`),
/// batch norm constant.
pub(crate) fn seeded_values(init: Init, seed: u64, name: &str, numel: usize) -> Vec<f32> {
    match init {
        Init::Constant(value) => vec![value; numel],
        Init::Uniform { fan_in } => {
            let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
            let mut values = vec![0.0; numel];
            SplitMix64::for_stream(seed, name).fill_uniform(&mut values, -bound, bound);
            values
        }
    }
}

/// Elements `range` of [`seeded_values`]`(init, seed, name, numel)`, generated alone: value
/// `i` of a stream depends only on `i`.
pub(crate) fn seeded_range(init: Init, seed: u64, name: &str, range: Range<usize>) -> Vec<f32> {
    let len = range.end.saturating_sub(range.start);
    match init {
        Init::Constant(value) => vec![value; len],
        Init::Uniform { fan_in } => {
            let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
            let mut values = vec![0.0; len];
            let mut stream = SplitMix64::for_stream(seed, name);
            stream.skip(range.start as u64);
            stream.fill_uniform(&mut values, -bound, bound);
            values
        }
    }
}

impl Fold {
    /// The folded numbers, in f64 and rounded once. The output channel is the leading
    /// dimension of conv and dense layouts, so channel `k`'s weights are the `k`-th contiguous
    /// chunk.
    fn compute(&self, numel: usize) -> Vec<f32> {
        let affine = self.batch_norm.affine();
        let channels = affine.scale.len().max(1);
        match self.part {
            FoldedPart::Weight => {
                // A seeded source is generated into a fresh vector, scaled in place.
                let mut values = self
                    .source
                    .as_ref()
                    .map_or_else(Vec::new, |w| w.read().into_owned());
                let per_channel = (values.len() / channels).max(1);
                for (filter, &scale) in values.chunks_mut(per_channel).zip(&affine.scale) {
                    for w in filter {
                        *w = (f64::from(*w) * scale) as f32;
                    }
                }
                values
            }
            FoldedPart::Bias => {
                let source = self.source.as_ref().map(Constant::read);
                (0..numel)
                    .map(|k| {
                        let bias = source.as_ref().map_or(0.0, |b| b[k]);
                        (f64::from(bias) * affine.scale[k] + affine.shift[k]) as f32
                    })
                    .collect()
            }
        }
    }

    /// Elements `range` of [`compute`](Self::compute)`(numel)`: of a weight, the source's
    /// elements scaled alone (channel `k` is the `k`-th contiguous chunk); of a bias, which is
    /// one number per channel, the whole computed and cut.
    fn compute_range(&self, numel: usize, range: Range<usize>) -> Vec<f32> {
        match (self.part, &self.source) {
            (FoldedPart::Weight, Some(source)) => {
                let affine = self.batch_norm.affine();
                let channels = affine.scale.len().max(1);
                let per_channel = (numel / channels).max(1);
                let mut values = source.read_range(range.clone()).into_owned();
                for (i, w) in values.iter_mut().enumerate() {
                    let scale = affine.scale.get((range.start + i) / per_channel);
                    *w = (f64::from(*w) * scale.copied().unwrap_or(1.0)) as f32;
                }
                values
            }
            _ => {
                let all = self.compute(numel);
                all.get(range).map(<[f32]>::to_vec).unwrap_or_default()
            }
        }
    }
}
