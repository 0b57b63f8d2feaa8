//! The tensors a network runs on: `.npy` arrays, PNG and JPEG images, and deterministic
//! synthetic inputs, each checked against the network's declared input shape.
//!
//! The format of a file is read from its first bytes, never from its name, so a text file
//! called `cat.png` is reported as what it is. Images go through the network's declared
//! [`Preprocess`] the way torchvision's `Resize` → `CenterCrop` → `ToTensor` → `Normalize`
//! would; without one they are resized straight to the input's height × width and scaled to
//! [0, 1]. Arrays are taken as they are, except that `uint8` arrays are treated as pixels
//! (scaled to [0, 1] and normalized like an image) and H×W is accepted for one channel.
//!
//! Every function returns N×H×W×C tensors, or N×C for a network whose input is a flat vector.

use super::npy::{parse_npy, NpyArray, NpyError};
use super::rng::SplitMix64;
use super::{Dims, MAX_ELEMENTS};
use crate::diag::{Code, Diagnostic};
use crate::graph::{Graph, NodeId, Preprocess, Shape};
use image::imageops::FilterType;
use image::{DynamicImage, ImageReader, RgbImage};
use ndarray::{ArrayD, Axis, IxDyn};
use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum InputError {
    #[error("cannot read the input file `{}`: {source}", path.display())]
    Unreadable { path: PathBuf, source: io::Error },
    #[error("cannot write `{}`: {source}", path.display())]
    Unwritable { path: PathBuf, source: io::Error },
    #[error("`{}` is not a valid .npy file: {source}", path.display())]
    Npy { path: PathBuf, source: NpyError },
    #[error("`{}` is neither a .npy array nor a PNG or JPEG image", path.display())]
    UnknownFormat { path: PathBuf },
    #[error("cannot decode the image `{}`: {reason}", path.display())]
    Image { path: PathBuf, reason: String },
    #[error("`{}` holds an array of shape {found}, but input `{input}` is {expected}; cnnc accepts {accepted}", path.display())]
    WrongShape {
        path: PathBuf,
        found: Dims,
        expected: Shape,
        input: String,
        accepted: &'static str,
    },
    #[error("images have 1 (grayscale) or 3 (RGB) channels, but input `{input}` has {channels}; give a .npy array instead")]
    Channels { input: String, channels: usize },
    #[error(
        "input `{input}` is a flat vector of {features} numbers, not an image; give a .npy array"
    )]
    FlatInput { input: String, features: usize },
    #[error("the image cannot be preprocessed for input `{input}`: {reason}")]
    Preprocess { input: String, reason: String },
    #[error(
        "after preprocessing the image is {height}×{width}, but input `{input}` is {expected}"
    )]
    ImageSize {
        height: usize,
        width: usize,
        expected: Shape,
        input: String,
    },
    #[error("the network has no input number {index}")]
    NoSuchInput { index: usize },
    #[error("the batch size must be at least 1")]
    EmptyBatch,
    #[error(
        "a batch of {} inputs of shape {shape} has more than cnnc's limit of 2^31 elements",
        crate::diag::thousands(*batch as u64)
    )]
    TooLarge { batch: usize, shape: Shape },
}

impl InputError {
    /// An input problem: about the input's declaration when the file's contents do not fit it,
    /// about no place when the file cannot be read at all.
    pub fn to_diagnostic(&self, graph: &Graph, input: NodeId) -> Diagnostic {
        match self {
            InputError::WrongShape { .. }
            | InputError::Channels { .. }
            | InputError::FlatInput { .. }
            | InputError::ImageSize { .. }
            | InputError::Preprocess { .. } => Diagnostic::error(
                Code::InputShape,
                graph.origins[input].span,
                self.to_string(),
            )
            .with_label(format!(
                "input `{}` is declared {} here",
                input_name(graph, input),
                graph.shape(input)
            )),
            InputError::Unreadable { .. }
            | InputError::Unwritable { .. }
            | InputError::Npy { .. }
            | InputError::UnknownFormat { .. }
            | InputError::Image { .. } => Diagnostic::global(Code::InputFile, self.to_string()),
            InputError::NoSuchInput { .. }
            | InputError::EmptyBatch
            | InputError::TooLarge { .. } => Diagnostic::global(Code::Input, self.to_string()),
        }
    }
}

/// The name an input is declared with, for messages.
pub fn input_name(graph: &Graph, id: NodeId) -> String {
    graph.nodes[id]
        .op
        .input_name()
        .map_or_else(|| id.to_string(), str::to_string)
}

/// The name, shape and preprocessing of the network's `input_idx`-th input.
fn input_spec(graph: &Graph, input_idx: usize) -> Result<(String, Shape), InputError> {
    let id = *graph
        .inputs
        .get(input_idx)
        .ok_or(InputError::NoSuchInput { index: input_idx })?;
    let name = graph.nodes[id]
        .op
        .input_name()
        .map_or_else(|| format!("#{input_idx}"), str::to_string);
    Ok((name, graph.shapes[id]))
}

/// Loads the tensor for the network's `input_idx`-th input from a `.npy`, PNG or JPEG file.
pub fn load_input(path: &Path, graph: &Graph, input_idx: usize) -> Result<ArrayD<f32>, InputError> {
    let (name, shape) = input_spec(graph, input_idx)?;
    // An image or array of an input: well under a gibibyte for any network cnnc can run.
    let bytes = crate::source::read_regular_file(path, 1 << 30).map_err(|source| {
        InputError::Unreadable {
            path: path.to_path_buf(),
            source,
        }
    })?;
    let preprocess = graph.meta.preprocess.as_ref();
    if bytes.starts_with(b"\x93NUMPY") {
        let array = parse_npy(&bytes).map_err(|source| InputError::Npy {
            path: path.to_path_buf(),
            source,
        })?;
        return array_input(array, path, &name, shape, preprocess);
    }
    let reader = ImageReader::new(Cursor::new(&bytes[..]))
        .with_guessed_format()
        .map_err(|source| InputError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
    if reader.format().is_none() {
        return Err(InputError::UnknownFormat {
            path: path.to_path_buf(),
        });
    }
    // The reader's default limits cap the decoder's allocations, so a header claiming a
    // gigapixel image is an error here rather than an abort.
    let image = reader.decode().map_err(|error| InputError::Image {
        path: path.to_path_buf(),
        reason: error.to_string(),
    })?;
    preprocess_image(&image, &name, shape, preprocess)
}

/// An array as the input tensor: checks the shape and adds the batch axis where missing.
fn array_input(
    array: NpyArray,
    path: &Path,
    name: &str,
    shape: Shape,
    preprocess: Option<&Preprocess>,
) -> Result<ArrayD<f32>, InputError> {
    let found = array.shape().to_vec();
    let (batched, accepted): (Option<Vec<usize>>, &'static str) = if shape.flat {
        let batched = match found.as_slice() {
            [c] if *c == shape.c => Some(vec![1, *c]),
            [n, c] if *c == shape.c && *n > 0 => Some(vec![*n, *c]),
            _ => None,
        };
        (batched, "C or N×C for a flat input")
    } else {
        let (h, w, c) = (shape.h, shape.w, shape.c);
        let batched = match found.as_slice() {
            [fh, fw] if (*fh, *fw, 1) == (h, w, c) => Some(vec![1, h, w, 1]),
            [fh, fw, fc] if (*fh, *fw, *fc) == (h, w, c) => Some(vec![1, h, w, c]),
            [n, fh, fw, fc] if (*fh, *fw, *fc) == (h, w, c) && *n > 0 => Some(vec![*n, h, w, c]),
            _ => None,
        };
        (batched, "H×W×C, N×H×W×C, or H×W for one channel")
    };
    let Some(batched) = batched else {
        return Err(InputError::WrongShape {
            path: path.to_path_buf(),
            found: Dims(found),
            expected: shape,
            input: name.to_string(),
            accepted,
        });
    };
    // Bytes are pixels: scaled and then normalized exactly as a decoded image would be.
    let is_pixels = matches!(array, NpyArray::U8(_));
    let values = match array {
        NpyArray::Float(a) => a,
        NpyArray::U8(a) => a.mapv(|v| f32::from(v) / 255.0),
    };
    // `parse_npy` returns standard (C-order) arrays, so adding a batch axis is a reshape.
    let mut tensor = values
        .into_shape_with_order(IxDyn(&batched))
        .map_err(|error| InputError::Preprocess {
            input: name.to_string(),
            reason: error.to_string(),
        })?;
    if is_pixels && !shape.flat {
        let (mean, std) = normalization(preprocess, shape.c, name)?;
        for mut pixel in tensor.lanes_mut(Axis(3)) {
            for (ch, value) in pixel.iter_mut().enumerate() {
                *value = (*value - mean[ch]) / std[ch];
            }
        }
    }
    Ok(tensor)
}

/// Per-channel mean and std from the declared preprocessing: none means 0 and 1; one value
/// applies to every channel.
pub(crate) fn normalization(
    preprocess: Option<&Preprocess>,
    channels: usize,
    name: &str,
) -> Result<(Vec<f32>, Vec<f32>), InputError> {
    let per_channel = |values: &[f32], default: f32, what: &str| match values.len() {
        0 => Ok(vec![default; channels]),
        1 => Ok(vec![values[0]; channels]),
        n if n == channels => Ok(values.to_vec()),
        n => Err(InputError::Preprocess {
            input: name.to_string(),
            reason: format!("the {what} has {n} values but the input has {channels} channels"),
        }),
    };
    let (mean, std) = match preprocess {
        Some(p) => (p.mean.as_slice(), p.std.as_slice()),
        None => (&[][..], &[][..]),
    };
    let mean = per_channel(mean, 0.0, "mean")?;
    let std = per_channel(std, 1.0, "std")?;
    if std.iter().any(|&s| s == 0.0 || !s.is_finite()) {
        return Err(InputError::Preprocess {
            input: name.to_string(),
            reason: "a std value is zero or not finite".into(),
        });
    }
    Ok((mean, std))
}

/// Python's `round` (half to even), as torchvision's `CenterCrop` uses for its offsets.
fn crop_offset(size: usize, crop: usize) -> usize {
    let excess = size - crop;
    let half = excess / 2;
    if excess % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

/// Turns a decoded image into the 1×H×W×C tensor of an input of shape `shape`:
/// resize (shorter side, triangle filter), center crop, scale to [0, 1], normalize.
/// One channel is PIL's grayscale (`0.299 R + 0.587 G + 0.114 B`), three are RGB.
pub fn preprocess_image(
    image: &DynamicImage,
    name: &str,
    shape: Shape,
    preprocess: Option<&Preprocess>,
) -> Result<ArrayD<f32>, InputError> {
    if shape.flat {
        return Err(InputError::FlatInput {
            input: name.to_string(),
            features: shape.c,
        });
    }
    if !(shape.c == 1 || shape.c == 3) {
        return Err(InputError::Channels {
            input: name.to_string(),
            channels: shape.c,
        });
    }
    let (mean, std) = normalization(preprocess, shape.c, name)?;
    // `pad` black pixels surround the resized and cropped image, as in training, so the
    // image itself is brought to the input's size less the padding.
    let pad = preprocess.map_or(0, |p| p.pad);
    let (inner_h, inner_w) = match (
        shape.h.checked_sub(pad.saturating_mul(2)),
        shape.w.checked_sub(pad.saturating_mul(2)),
    ) {
        (Some(h), Some(w)) if h > 0 && w > 0 => (h, w),
        _ => {
            return Err(InputError::Preprocess {
                input: name.to_string(),
                reason: format!("a padding of {pad} on each side leaves nothing of {shape}"),
            })
        }
    };
    let mut rgb: RgbImage = image.to_rgb8();
    let too_large = |h: u64, w: u64| {
        h.saturating_mul(w).saturating_mul(3) > MAX_ELEMENTS
            || h > u32::MAX as u64
            || w > u32::MAX as u64
    };
    let resize = preprocess.and_then(|p| p.resize);
    let crop = preprocess.and_then(|p| p.crop);
    let (width, height) = (rgb.width() as u64, rgb.height() as u64);
    if width == 0 || height == 0 {
        return Err(InputError::Preprocess {
            input: name.to_string(),
            reason: "the image is empty".into(),
        });
    }
    if let Some(size) = resize {
        // torchvision's `Resize(size)`: the shorter side becomes `size`, the longer one keeps
        // the aspect ratio, truncated.
        let size = size as u64;
        let (new_w, new_h) = if width <= height {
            (size, size.saturating_mul(height) / width)
        } else {
            (size.saturating_mul(width) / height, size)
        };
        if new_w == 0 || new_h == 0 || too_large(new_h, new_w) {
            return Err(InputError::Preprocess {
                input: name.to_string(),
                reason: format!("resizing to {size} gives a {new_h}×{new_w} image"),
            });
        }
        rgb = image::imageops::resize(&rgb, new_w as u32, new_h as u32, FilterType::Triangle);
    }
    if let Some(size) = crop {
        let (w, h) = (rgb.width() as usize, rgb.height() as usize);
        if size == 0 || size > w || size > h {
            return Err(InputError::Preprocess {
                input: name.to_string(),
                reason: format!("a center crop of {size} does not fit the {h}×{w} image"),
            });
        }
        let (left, top) = (crop_offset(w, size), crop_offset(h, size));
        rgb = image::imageops::crop_imm(&rgb, left as u32, top as u32, size as u32, size as u32)
            .to_image();
    }
    if resize.is_none() && crop.is_none() {
        if too_large(shape.h as u64, shape.w as u64) {
            return Err(InputError::TooLarge { batch: 1, shape });
        }
        rgb = image::imageops::resize(&rgb, inner_w as u32, inner_h as u32, FilterType::Triangle);
    }
    let (height, width) = (rgb.height() as usize, rgb.width() as usize);
    if (height, width) != (inner_h, inner_w) {
        return Err(InputError::ImageSize {
            height,
            width,
            expected: shape,
            input: name.to_string(),
        });
    }

    let mut tensor = ArrayD::zeros(IxDyn(&[1, shape.h, shape.w, shape.c]));
    if pad > 0 {
        // The padding is black (0) before normalization, as torchvision's `Pad` then
        // `Normalize`.
        for mut pixel in tensor.lanes_mut(ndarray::Axis(3)) {
            for (ch, value) in pixel.iter_mut().enumerate() {
                *value = (0.0 - mean[ch]) / std[ch];
            }
        }
    }
    for (x, y, pixel) in rgb.enumerate_pixels() {
        let [r, g, b] = pixel.0.map(|v| f32::from(v) / 255.0);
        let values = if shape.c == 1 {
            vec![0.299 * r + 0.587 * g + 0.114 * b]
        } else {
            vec![r, g, b]
        };
        let (row, column) = (y as usize + pad, x as usize + pad);
        for (ch, value) in values.into_iter().enumerate() {
            tensor[[0, row, column, ch]] = (value - mean[ch]) / std[ch];
        }
    }
    Ok(tensor)
}

/// Deterministic input values, uniform in [−1, 1): a batch of `batch` tensors of `shape`,
/// N×H×W×C (N×C when `shape` is flat). The same seed gives the same tensor everywhere.
pub fn synthetic_input(shape: Shape, batch: usize, seed: u64) -> Result<ArrayD<f32>, InputError> {
    if batch == 0 {
        return Err(InputError::EmptyBatch);
    }
    let numel = (shape.numel() as u64).saturating_mul(batch as u64);
    if numel > MAX_ELEMENTS {
        return Err(InputError::TooLarge { batch, shape });
    }
    let dims = if shape.flat {
        vec![batch, shape.c]
    } else {
        vec![batch, shape.h, shape.w, shape.c]
    };
    let mut rng = SplitMix64::for_stream(seed, "input");
    let values: Vec<f32> = (0..numel).map(|_| rng.uniform(-1.0, 1.0)).collect();
    ArrayD::from_shape_vec(IxDyn(&dims), values).map_err(|_| InputError::TooLarge { batch, shape })
}
