//! Everything that can be wrong with a data set, and how each problem reads as a diagnostic.
//!
//! Data files are untrusted input: every problem is a [`DataError`] naming the file, the image
//! or label at fault and what was expected, with a `help:` line where a fix is known. None
//! carries a source span (a data file is not a `.cnn` source), so each renders as a global
//! diagnostic.

use crate::diag::{Code, Diagnostic};
use crate::graph::Shape;
use crate::runtime::{Dims, NpyError};
use std::io;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum DataError {
    #[error("cannot read the data file `{}`: {source}", path.display())]
    Unreadable { path: PathBuf, source: io::Error },
    #[error("cannot list the data folder `{}`: {source}", path.display())]
    UnreadableFolder { path: PathBuf, source: io::Error },
    #[error("`{}` is not a valid .npy file: {source}", path.display())]
    Npy { path: PathBuf, source: NpyError },
    #[error("`{}` does not exist, so the labels of `{}` cannot be found", labels.display(), images.display())]
    MissingLabels { images: PathBuf, labels: PathBuf },
    #[error("cannot tell where the labels of `{}` are: its file name does not contain `images`", images.display())]
    NoLabelsName { images: PathBuf },
    #[error("the labels in `{}` must be integers, but {source}", path.display())]
    LabelDtype { path: PathBuf, source: NpyError },
    #[error("`{}` holds labels of shape {found}; labels are one integer per image, an array of shape N", path.display())]
    LabelsShape { path: PathBuf, found: Dims },
    #[error("`{}` holds an array of shape {found}, but images for input `{input}` ({expected}) are {accepted}", path.display())]
    ImagesShape {
        path: PathBuf,
        found: Dims,
        input: String,
        expected: Shape,
        accepted: &'static str,
    },
    #[error("`{}` holds images of {found}, but input `{input}` is {expected}{}", path.display(), padded_note(*pad, found))]
    ImageSize {
        path: PathBuf,
        /// Height, width and channels of one image.
        found: Dims,
        input: String,
        expected: Shape,
        pad: usize,
    },
    #[error("`{}` holds {n_images} images but `{}` holds {n_labels} labels", images.display(), labels.display())]
    CountMismatch {
        images: PathBuf,
        n_images: usize,
        labels: PathBuf,
        n_labels: usize,
    },
    #[error("label {label} of image {image_idx} in `{}` is out of range: the network has {n_classes} classes (0–{}){}", path.display(), n_classes.saturating_sub(1), others_note(*n_bad))]
    LabelOutOfRange {
        path: PathBuf,
        image_idx: usize,
        label: i64,
        n_classes: usize,
        /// How many labels of the file are out of range, this one included.
        n_bad: usize,
    },
    #[error("`{}` holds no images", path.display())]
    NoImages { path: PathBuf },
    #[error("the data folder `{}` has no class subfolders", path.display())]
    EmptyFolder { path: PathBuf },
    #[error("the class folder `{}` holds no PNG or JPEG images", path.display())]
    EmptyClass { path: PathBuf },
    #[error("the data folder `{}` has {found} class subfolders, but the network has {n_classes} classes", path.display())]
    ClassCount {
        path: PathBuf,
        found: usize,
        n_classes: usize,
    },
    #[error("cannot use the image `{}`: {reason}", path.display())]
    Image { path: PathBuf, reason: String },
    #[error("a padding of {pad} on each side does not fit input `{input}` ({expected})")]
    PadTooLarge {
        pad: usize,
        input: String,
        expected: Shape,
    },
    #[error("the network's preprocessing cannot be applied: {reason}")]
    Preprocess { reason: String },
    #[error("training needs a network with one input, but network `{network}` has {n_inputs}")]
    InputCount { network: String, n_inputs: usize },
    #[error("network `{network}` ends in a {found} tensor, not a vector of class scores")]
    NotAClassifier { network: String, found: Shape },
    #[error("the validation fraction is {fraction}; it must be between 0 and 1")]
    BadFraction { fraction: f64 },
    #[error("a validation fraction of {fraction} of {n_images} images leaves {n_val} for validation and {n_train} for training; both need at least one")]
    EmptySplit {
        fraction: f64,
        n_images: usize,
        n_val: usize,
        n_train: usize,
    },
    #[error("the batch size must be at least 1")]
    ZeroBatch,
    #[error("the training batches cannot be built: {reason}")]
    Loader { reason: String },
}

fn padded_note(pad: usize, found: &Dims) -> String {
    match found.0.as_slice() {
        [h, w, c] if pad > 0 => format!(
            " (with a padding of {pad} on each side they are {}×{}×{c})",
            h + 2 * pad,
            w + 2 * pad,
        ),
        _ => String::new(),
    }
}

fn others_note(n_bad: usize) -> String {
    match n_bad {
        0 | 1 => String::new(),
        2 => "; 1 other label is out of range too".into(),
        n => format!("; {} other labels are out of range too", n - 1),
    }
}

impl DataError {
    /// A fix, where one is known.
    pub fn help(&self) -> Option<String> {
        match self {
            DataError::MissingLabels { .. } | DataError::NoLabelsName { .. } => Some(
                "put the labels beside the images, named with `labels` in place of `images` \
                 (`train-images.npy` → `train-labels.npy`), or give their path with --labels"
                    .into(),
            ),
            DataError::LabelDtype { .. } => Some(
                "save the labels as integers, e.g. `np.save(path, labels.astype(np.int64))`".into(),
            ),
            DataError::ImageSize {
                found,
                expected,
                pad,
                ..
            } => size_help(found, expected, *pad),
            DataError::LabelOutOfRange { n_classes, .. } => Some(format!(
                "labels are class indices from 0 to {}; check that the network's last layer \
                 has one output per class",
                n_classes.saturating_sub(1)
            )),
            DataError::EmptyFolder { .. } => Some(
                "an image folder has one subfolder per class (`cats/`, `dogs/`), each holding \
                 that class's PNG or JPEG images"
                    .into(),
            ),
            DataError::ClassCount { .. } => Some(
                "there must be one subfolder per class, as many as the network's outputs".into(),
            ),
            _ => None,
        }
    }

    /// The error as a diagnostic about no place in the source.
    pub fn diagnostic(&self) -> Diagnostic {
        let code = match self {
            DataError::Unreadable { .. }
            | DataError::UnreadableFolder { .. }
            | DataError::Npy { .. }
            | DataError::MissingLabels { .. }
            | DataError::NoLabelsName { .. } => Code::DataFile,
            DataError::BadFraction { .. }
            | DataError::EmptySplit { .. }
            | DataError::ZeroBatch
            | DataError::PadTooLarge { .. } => Code::DataOption,
            _ => Code::Data,
        };
        let diagnostic = Diagnostic::global(code, self.to_string());
        match self.help() {
            Some(help) => diagnostic.with_help(help),
            None => diagnostic,
        }
    }

    pub(crate) fn npy(path: &Path, source: NpyError) -> DataError {
        DataError::Npy {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Suggests the padding that makes the images fit, or says what else differs.
fn size_help(found: &Dims, expected: &Shape, pad: usize) -> Option<String> {
    let &[h, w, c] = found.0.as_slice() else {
        return None;
    };
    if c != expected.c {
        return Some(format!(
            "the input has {} channel(s) and the images {c}; convert the images, or change \
             the input's declared channels",
            expected.c
        ));
    }
    let gap_h = expected.h.checked_sub(h)?;
    let gap_w = expected.w.checked_sub(w)?;
    if gap_h == gap_w && gap_h % 2 == 0 && gap_h > 0 {
        let needed = gap_h / 2;
        if needed != pad {
            return Some(format!(
                "a padding of {needed} on each side makes {h}×{w} images {}×{}: declare \
                 `preprocess(pad: {needed})` in the network",
                expected.h, expected.w
            ));
        }
    }
    None
}
