//! Labelled data sets for training and evaluation: what a sample becomes on its way into the
//! network, deterministic shuffling, batching and validation splits.
//!
//! A [`Dataset`] holds its images as they were stored (bytes for uint8 `.npy` arrays, floats
//! for decoded images and float arrays) and builds each batch on demand, so a data set of
//! uint8 digits costs one byte per pixel in memory. On the way into a batch a sample is, in
//! order:
//!
//! 1. scaled to [0, 1] if it is pixels (uint8 bytes are divided by 255; decoded images
//!    already are, after the network's resize and crop, see `data_files.rs`);
//! 2. padded by `pad` on each side with black (pixel value 0), as torchvision's `Pad(pad)`
//!    placed before `ToTensor()` does, so 28×28 digits feed a 32×32 LeNet-5 on a background
//!    like their own;
//! 3. in a training run only, augmented as the network's `augment(...)` declares
//!    (`augment.rs`);
//! 4. normalized per channel, `(x − mean) / std`, with the network's declared mean and std.
//!
//! Float `.npy` arrays are taken as already preprocessed, as `cnnc run` takes them: they are
//! only padded, with 0.
//!
//! Shuffling is a Fisher–Yates permutation from a SplitMix64 stream derived from the seed
//! and the epoch number, so an epoch's order depends on nothing else; the validation split
//! is a permutation from its own stream. Both are the same on every platform.

use super::augment::{sample_rng, Augmenter};
use super::data_error::DataError;
use crate::graph::{Graph, Preprocess, Shape};
use crate::runtime::rng::SplitMix64;
use ndarray::{ArrayD, IxDyn};
use std::path::PathBuf;
use std::sync::Arc;

/// What the network's input expects: its shape, its declared preprocessing, and the padding
/// the data set adds around each image.
#[derive(Clone, Debug, PartialEq)]
pub struct InputSpec {
    /// The input's name in the network, for messages.
    pub name: String,
    /// The input's shape (per image; the batch is the first axis of a batch tensor).
    pub shape: Shape,
    pub preprocess: Option<Preprocess>,
    /// Black pixels added on each side of every image after resize and crop.
    pub pad: usize,
}

impl InputSpec {
    /// The spec of `graph`'s only input; `pad` is the training recipe's padding.
    pub fn from_graph(graph: &Graph, pad: usize) -> Result<InputSpec, DataError> {
        let [input] = graph.inputs.as_slice() else {
            return Err(DataError::InputCount {
                network: graph.name.clone(),
                n_inputs: graph.inputs.len(),
            });
        };
        let name = graph.nodes[*input]
            .op
            .input_name()
            .map_or_else(|| "#0".to_string(), str::to_string);
        let spec = InputSpec {
            name,
            shape: graph.shape(*input),
            preprocess: graph.meta.preprocess.clone(),
            pad,
        };
        spec.unpadded()?;
        Ok(spec)
    }

    /// The shape an image must have before padding.
    pub fn unpadded(&self) -> Result<Shape, DataError> {
        let too_large = || DataError::PadTooLarge {
            pad: self.pad,
            input: self.name.clone(),
            expected: self.shape,
        };
        if self.pad == 0 {
            return Ok(self.shape);
        }
        if self.shape.flat {
            return Err(too_large());
        }
        let border = self.pad.checked_mul(2).ok_or_else(too_large)?;
        match (
            self.shape.h.checked_sub(border),
            self.shape.w.checked_sub(border),
        ) {
            (Some(h), Some(w)) if h > 0 && w > 0 => Ok(Shape::spatial(h, w, self.shape.c)),
            _ => Err(too_large()),
        }
    }

    /// Per-channel mean and std from the declared preprocessing (none: 0 and 1).
    fn normalization(&self) -> Result<(Vec<f32>, Vec<f32>), DataError> {
        crate::runtime::normalization(self.preprocess.as_ref(), self.shape.c, &self.name).map_err(
            |error| DataError::Preprocess {
                reason: error.to_string(),
            },
        )
    }
}

/// The number of classes of a classifier: the length of its output vector.
pub fn class_count(graph: &Graph) -> Result<usize, DataError> {
    let output = graph.shape(graph.output());
    if output.flat {
        Ok(output.c)
    } else {
        Err(DataError::NotAClassifier {
            network: graph.name.clone(),
            found: output,
        })
    }
}

/// The images of a data set in their stored form, one after another, each `unpadded`-shaped.
#[derive(Debug)]
pub(crate) enum SampleValues {
    /// uint8 pixels, scaled by 1/255 and normalized in a batch.
    Pixels(Vec<u8>),
    /// Decoded images in [0, 1], normalized in a batch.
    Unit(Vec<f32>),
    /// Float arrays, used as they are.
    Raw(Vec<f32>),
}

/// Everything a data set and its splits share.
#[derive(Debug)]
pub(crate) struct Samples {
    pub(crate) values: SampleValues,
    pub(crate) labels: Vec<u32>,
    /// The shape of one stored image (the input's shape less the padding).
    pub(crate) stored: Shape,
    /// Where the data came from, for messages.
    pub(crate) source: PathBuf,
}

/// A batch: N×H×W×C images (N×C for a flat input) and their labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub images: ArrayD<f32>,
    pub labels: Vec<u32>,
}

/// A labelled data set (or one part of a split), ready to be batched for a network's input.
#[derive(Clone, Debug)]
pub struct Dataset {
    samples: Arc<Samples>,
    /// The samples of this data set, as indices into `samples`.
    members: Vec<usize>,
    spec: InputSpec,
    class_names: Vec<String>,
    n_classes: usize,
    mean: Vec<f32>,
    std: Vec<f32>,
    /// The declared augmentation, on the training set of `cnnc train` only.
    augmenter: Option<Arc<Augmenter>>,
}

impl Dataset {
    pub(crate) fn new(
        samples: Samples,
        spec: InputSpec,
        class_names: Vec<String>,
        n_classes: usize,
    ) -> Result<Dataset, DataError> {
        let (mean, std) = spec.normalization()?;
        Ok(Dataset {
            members: (0..samples.labels.len()).collect(),
            samples: Arc::new(samples),
            spec,
            class_names,
            n_classes,
            mean,
            std,
            augmenter: None,
        })
    }

    /// This data set with `augmenter` applied to the batches of [`Dataset::training_batch`].
    pub fn with_augmentation(self, augmenter: Option<Arc<Augmenter>>) -> Dataset {
        Dataset { augmenter, ..self }
    }

    pub fn augmenter(&self) -> Option<&Augmenter> {
        self.augmenter.as_deref()
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn n_classes(&self) -> usize {
        self.n_classes
    }

    /// The class names of an image folder (its sorted subfolder names); empty for `.npy` data.
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    pub fn spec(&self) -> &InputSpec {
        &self.spec
    }

    /// The file or folder the data came from.
    pub fn source(&self) -> &std::path::Path {
        &self.samples.source
    }

    /// The label of the data set's `position`-th image.
    pub fn label(&self, position: usize) -> u32 {
        self.samples.labels[self.members[position]]
    }

    /// How many images of each class the data set holds.
    pub fn label_histogram(&self) -> Vec<usize> {
        let mut counts = vec![0; self.n_classes];
        for &member in &self.members {
            counts[self.samples.labels[member] as usize] += 1;
        }
        counts
    }

    /// The order of an epoch's images: a permutation of `0..len()` from the seed and the
    /// epoch number, or `0..len()` itself without shuffling.
    pub fn epoch_order(&self, seed: u64, epoch: usize, shuffle: bool) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.len()).collect();
        if shuffle {
            let mut rng = SplitMix64::for_stream(seed, &format!("shuffle epoch {epoch}"));
            permute(&mut order, &mut rng);
        }
        order
    }

    /// The batches of one epoch, in `order`, of `batch_size` images each; the last batch
    /// holds what is left (it is kept, as PyTorch's `DataLoader` keeps it by default).
    pub fn batches<'a>(
        &'a self,
        order: &'a [usize],
        batch_size: usize,
    ) -> Result<impl Iterator<Item = Batch> + 'a, DataError> {
        if batch_size == 0 {
            return Err(DataError::ZeroBatch);
        }
        Ok(order
            .chunks(batch_size)
            .map(move |positions| self.batch(positions)))
    }

    /// The images at `positions` (indices into this data set) as one batch, never augmented.
    ///
    /// # Panics
    /// If a position is out of range: positions come from [`Dataset::epoch_order`], never
    /// from a user.
    pub fn batch(&self, positions: &[usize]) -> Batch {
        self.build_batch(positions, None)
    }

    /// The images at `positions` as one batch of epoch `epoch` of a training run: augmented
    /// when the data set has an augmenter, each image from its own stream of `seed`.
    pub fn training_batch(&self, positions: &[usize], seed: u64, epoch: usize) -> Batch {
        self.build_batch(positions, Some((seed, epoch)))
    }

    fn build_batch(&self, positions: &[usize], augment: Option<(u64, usize)>) -> Batch {
        let shape = self.spec.shape;
        let per_image = shape.numel();
        let mut values = vec![0.0f32; positions.len() * per_image];
        let mut labels = Vec::with_capacity(positions.len());
        let mut image = Vec::with_capacity(per_image);
        let augmented = self.augmenter.is_some() && augment.is_some();
        let table = match &self.samples.values {
            SampleValues::Pixels(_) if !augmented => Some(self.normalized_bytes()),
            _ => None,
        };
        for (out, &position) in values.chunks_exact_mut(per_image).zip(positions) {
            labels.push(self.label(position));
            if let Some(table) = &table {
                self.fill_normalized(self.members[position], table, out);
                continue;
            }
            self.pixel_image(position, augment, &mut image);
            out.copy_from_slice(&image);
            self.normalize(out);
        }
        let dims = if shape.flat {
            vec![positions.len(), shape.c]
        } else {
            vec![positions.len(), shape.h, shape.w, shape.c]
        };
        // The buffer was sized from the same dimensions.
        let images = ArrayD::from_shape_vec(IxDyn(&dims), values)
            .unwrap_or_else(|_| ArrayD::zeros(IxDyn(&dims)));
        Batch { images, labels }
    }

    /// The data set's `position`-th image at the input's size before normalization: scaled,
    /// padded and, with `augment = Some((seed, epoch))` and an augmenter, augmented.
    pub fn pixel_image(
        &self,
        position: usize,
        augment: Option<(u64, usize)>,
        image: &mut Vec<f32>,
    ) {
        let shape = self.spec.shape;
        image.clear();
        image.resize(shape.numel(), 0.0);
        self.fill_padded(self.members[position], image);
        if let (Some(augmenter), Some((seed, epoch))) = (&self.augmenter, augment) {
            augmenter.apply(image, shape, &mut sample_rng(seed, epoch, position));
        }
    }

    /// The data set's `position`-th image as stored (before padding), scaled to pixel space.
    pub(crate) fn stored_image(&self, position: usize, image: &mut Vec<f32>) {
        let per_stored = self.samples.stored.numel();
        let start = self.members[position] * per_stored;
        image.clear();
        match &self.samples.values {
            SampleValues::Pixels(bytes) => image.extend(
                bytes[start..start + per_stored]
                    .iter()
                    .map(|&b| f32::from(b) / 255.0),
            ),
            SampleValues::Unit(floats) | SampleValues::Raw(floats) => {
                image.extend_from_slice(&floats[start..start + per_stored])
            }
        }
    }

    /// Each byte's normalized value, `table[channel · 256 + byte]`: the same operations as
    /// scaling then [`normalize`](Self::normalize), so the same bits, done once per batch
    /// rather than per pixel (a batch of 64 LeNet digits is 65,536 divisions).
    fn normalized_bytes(&self) -> Vec<f32> {
        let channels = self.spec.shape.c;
        let mut table = Vec::with_capacity(channels * 256);
        for ch in 0..channels {
            table
                .extend((0..=255u8).map(|b| (f32::from(b) / 255.0 - self.mean[ch]) / self.std[ch]));
        }
        table
    }

    /// Writes the uint8 image `member` into `out` (H×W×C) scaled, padded and normalized,
    /// through `table` ([`normalized_bytes`](Self::normalized_bytes)); the padding is the
    /// normalized 0, as `fill_padded` then `normalize` make it.
    fn fill_normalized(&self, member: usize, table: &[f32], out: &mut [f32]) {
        let SampleValues::Pixels(bytes) = &self.samples.values else {
            return;
        };
        let stored = self.samples.stored;
        let (width, channels, pad) = (self.spec.shape.w, self.spec.shape.c, self.spec.pad);
        if pad > 0 {
            for pixel in out.chunks_exact_mut(channels) {
                for (ch, value) in pixel.iter_mut().enumerate() {
                    *value = table[ch * 256];
                }
            }
        }
        let per_stored = stored.numel();
        let row_len = stored.w * channels;
        for y in 0..stored.h {
            let out_start = ((y + pad) * width + pad) * channels;
            let out_row = &mut out[out_start..out_start + row_len];
            let src_start = member * per_stored + y * row_len;
            let src = &bytes[src_start..src_start + row_len];
            for (pixel, src) in out_row
                .chunks_exact_mut(channels)
                .zip(src.chunks_exact(channels))
            {
                for (ch, (value, &b)) in pixel.iter_mut().zip(src).enumerate() {
                    *value = table[ch * 256 + usize::from(b)];
                }
            }
        }
    }

    /// `(x − mean) / std` per channel, except for float arrays (already preprocessed).
    fn normalize(&self, image: &mut [f32]) {
        if matches!(self.samples.values, SampleValues::Raw(_)) {
            return;
        }
        let channels = self.spec.shape.c;
        for pixel in image.chunks_exact_mut(channels) {
            for (ch, value) in pixel.iter_mut().enumerate() {
                *value = (*value - self.mean[ch]) / self.std[ch];
            }
        }
    }

    /// Writes the stored image `member`, scaled and padded with 0, into `out` (H×W×C, zeroed).
    fn fill_padded(&self, member: usize, out: &mut [f32]) {
        let stored = self.samples.stored;
        let (width, channels, pad) = (self.spec.shape.w, self.spec.shape.c, self.spec.pad);
        let per_stored = stored.numel();
        let row_len = stored.w * channels;
        for y in 0..stored.h {
            let out_start = ((y + pad) * width + pad) * channels;
            let out_row = &mut out[out_start..out_start + row_len];
            let src_start = member * per_stored + y * row_len;
            match &self.samples.values {
                SampleValues::Pixels(bytes) => {
                    let src = &bytes[src_start..src_start + row_len];
                    for (o, &b) in out_row.iter_mut().zip(src) {
                        *o = f32::from(b) / 255.0;
                    }
                }
                SampleValues::Unit(floats) | SampleValues::Raw(floats) => {
                    out_row.copy_from_slice(&floats[src_start..src_start + row_len]);
                }
            }
        }
    }

    /// Splits off a validation set of `round(fraction · len)` images chosen by a permutation
    /// from the seed; returns (training, validation), each in the data set's original order.
    pub fn split_validation(
        &self,
        fraction: f64,
        seed: u64,
    ) -> Result<(Dataset, Dataset), DataError> {
        if !(fraction > 0.0 && fraction < 1.0) {
            return Err(DataError::BadFraction { fraction });
        }
        let n_images = self.len();
        let n_val = (fraction * n_images as f64).round() as usize;
        let n_train = n_images - n_val.min(n_images);
        if n_val == 0 || n_train == 0 {
            return Err(DataError::EmptySplit {
                fraction,
                n_images,
                n_val,
                n_train,
            });
        }
        let mut order: Vec<usize> = (0..n_images).collect();
        let mut rng = SplitMix64::for_stream(seed, "validation split");
        permute(&mut order, &mut rng);
        let (val, train) = order.split_at(n_val);
        let subset = |positions: &[usize]| {
            let mut positions = positions.to_vec();
            positions.sort_unstable();
            Dataset {
                members: positions.iter().map(|&p| self.members[p]).collect(),
                ..self.clone()
            }
        };
        Ok((subset(train), subset(val)))
    }
}

/// Fisher–Yates: every permutation equally likely, given a uniform index below each bound.
fn permute(items: &mut [usize], rng: &mut SplitMix64) {
    for idx in (1..items.len()).rev() {
        // Lemire's multiply-shift: a uniform index in 0..=idx, biased by at most
        // (idx + 1) / 2^64, far below anything a data set could show.
        let bound = idx as u128 + 1;
        let pick = ((rng.next_u64() as u128 * bound) >> 64) as usize;
        items.swap(idx, pick);
    }
}

#[cfg(test)]
#[path = "data_tests.rs"]
mod tests;
