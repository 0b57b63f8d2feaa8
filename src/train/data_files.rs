//! Reading data sets from disk: `.npy` image/label pairs and image folders.
//!
//! - **`.npy` pairs**: images N×H×W×C (or N×H×W for one channel, N×C for a flat input), uint8
//!   pixels or floats; labels an integer array of N (int64, int32, uint8 or any other integer
//!   width). Without an explicit labels path, the labels are found beside the images by the
//!   file name with its last `images` replaced by `labels`: `train-images.npy` →
//!   `train-labels.npy`, `images.npy` → `labels.npy`. Images are used at their stored size:
//!   H + 2·pad and W + 2·pad must be the input's.
//! - **Image folders**: one subfolder per class, whose sorted names are the class names and
//!   whose PNG and JPEG files (by extension, any case) are its images; other files and hidden
//!   entries are skipped, as torchvision's `ImageFolder` skips them. Each image is decoded and
//!   resized/cropped by the network's declared preprocessing exactly as `cnnc run` does
//!   (`runtime::preprocess_image`), to the input's size less the padding.
//!
//! Every problem is a [`DataError`], never a panic.

use super::data::{Dataset, InputSpec, SampleValues, Samples};
use super::data_error::DataError;
use crate::graph::{Preprocess, Shape};
use crate::runtime::{parse_npy, parse_npy_integers, preprocess_image, Dims, NpyArray, NpyError};
use image::ImageReader;
use std::io::Cursor;
use std::path::{Path, PathBuf};

/// The most a data file may hold: 8 GiB, beyond any data set that fits this machine's memory.
const FILE_LIMIT: u64 = 8 << 30;

/// Opens a data set: an image folder if `path` is a directory, else a `.npy` pair (with the
/// labels at `labels`, or found beside the images).
pub fn open_dataset(
    path: &Path,
    labels: Option<&Path>,
    spec: &InputSpec,
    n_classes: usize,
) -> Result<Dataset, DataError> {
    if path.is_dir() {
        load_image_folder(path, spec, n_classes)
    } else {
        load_npy_pair(path, labels, spec, n_classes)
    }
}

/// Where the labels of `images` are: the file name with its last `images` made `labels`.
pub fn labels_path_for(images: &Path) -> Result<PathBuf, DataError> {
    let no_name = || DataError::NoLabelsName {
        images: images.to_path_buf(),
    };
    let file_name = images
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(no_name)?;
    let at = file_name.rfind("images").ok_or_else(no_name)?;
    let renamed = format!(
        "{}labels{}",
        &file_name[..at],
        &file_name[at + "images".len()..]
    );
    Ok(images.with_file_name(renamed))
}

fn read(path: &Path) -> Result<Vec<u8>, DataError> {
    crate::source::read_regular_file(path, FILE_LIMIT).map_err(|source| DataError::Unreadable {
        path: path.to_path_buf(),
        source,
    })
}

/// Loads images and labels from `.npy` files (see the module docs).
pub fn load_npy_pair(
    images_path: &Path,
    labels_path: Option<&Path>,
    spec: &InputSpec,
    n_classes: usize,
) -> Result<Dataset, DataError> {
    let labels_path = match labels_path {
        Some(path) => path.to_path_buf(),
        None => {
            let path = labels_path_for(images_path)?;
            if !path.exists() && images_path.exists() {
                return Err(DataError::MissingLabels {
                    images: images_path.to_path_buf(),
                    labels: path,
                });
            }
            path
        }
    };
    let stored = spec.unpadded()?;
    let array = parse_npy(&read(images_path)?).map_err(|e| DataError::npy(images_path, e))?;
    let n_images = check_images_shape(array.shape(), images_path, spec, stored)?;
    let labels = read_labels(&labels_path, n_classes)?;
    if labels.len() != n_images {
        return Err(DataError::CountMismatch {
            images: images_path.to_path_buf(),
            n_images,
            labels: labels_path,
            n_labels: labels.len(),
        });
    }
    let values = match array {
        NpyArray::U8(bytes) => SampleValues::Pixels(bytes.into_raw_vec_and_offset().0),
        NpyArray::Float(floats) => SampleValues::Raw(floats.into_raw_vec_and_offset().0),
    };
    let samples = Samples {
        values,
        labels,
        stored,
        source: images_path.to_path_buf(),
    };
    Dataset::new(samples, spec.clone(), Vec::new(), n_classes)
}

/// Checks an images array against the input; returns the number of images.
fn check_images_shape(
    found: &[usize],
    path: &Path,
    spec: &InputSpec,
    stored: Shape,
) -> Result<usize, DataError> {
    let (n_images, image) = match (stored.flat, found) {
        (true, [n, c]) => (*n, Shape::flat(*c)),
        (false, [n, h, w]) => (*n, Shape::spatial(*h, *w, 1)),
        (false, [n, h, w, c]) => (*n, Shape::spatial(*h, *w, *c)),
        (flat, _) => {
            return Err(DataError::ImagesShape {
                path: path.to_path_buf(),
                found: Dims::of(found),
                input: spec.name.clone(),
                expected: spec.shape,
                accepted: if flat {
                    "N×C"
                } else {
                    "N×H×W×C, or N×H×W for one channel"
                },
            })
        }
    };
    if image != stored {
        return Err(DataError::ImageSize {
            path: path.to_path_buf(),
            found: if image.flat {
                Dims::of(&[image.c])
            } else {
                Dims::of(&[image.h, image.w, image.c])
            },
            input: spec.name.clone(),
            expected: spec.shape,
            pad: spec.pad,
        });
    }
    if n_images == 0 {
        return Err(DataError::NoImages {
            path: path.to_path_buf(),
        });
    }
    Ok(n_images)
}

/// Reads an integer labels file and checks every label against the number of classes.
fn read_labels(path: &Path, n_classes: usize) -> Result<Vec<u32>, DataError> {
    let (shape, values) = parse_npy_integers(&read(path)?).map_err(|source| match source {
        NpyError::NotIntegers(_) => DataError::LabelDtype {
            path: path.to_path_buf(),
            source,
        },
        other => DataError::npy(path, other),
    })?;
    if shape.len() != 1 {
        return Err(DataError::LabelsShape {
            path: path.to_path_buf(),
            found: Dims(shape),
        });
    }
    let in_range = |label: i64| label >= 0 && (label as u64) < n_classes as u64;
    if let Some(image_idx) = values.iter().position(|&l| !in_range(l)) {
        return Err(DataError::LabelOutOfRange {
            path: path.to_path_buf(),
            image_idx,
            label: values[image_idx],
            n_classes,
            n_bad: values.iter().filter(|&&l| !in_range(l)).count(),
        });
    }
    // In range of a class count, so each label fits u32.
    Ok(values.into_iter().map(|l| l as u32).collect())
}

/// The visible entries of a folder, sorted by name.
fn sorted_entries(path: &Path) -> Result<Vec<PathBuf>, DataError> {
    let unreadable = |source| DataError::UnreadableFolder {
        path: path.to_path_buf(),
        source,
    };
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(path).map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        if !entry.file_name().to_string_lossy().starts_with('.') {
            entries.push(entry.path());
        }
    }
    entries.sort();
    Ok(entries)
}

fn is_image_file(path: &Path) -> bool {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    path.is_file() && matches!(extension.as_deref(), Some("png" | "jpg" | "jpeg"))
}

/// Loads an image folder (see the module docs).
pub fn load_image_folder(
    root: &Path,
    spec: &InputSpec,
    n_classes: usize,
) -> Result<Dataset, DataError> {
    let stored = spec.unpadded()?;
    if stored.flat {
        return Err(DataError::Preprocess {
            reason: format!(
                "input `{}` is a flat vector of {} numbers, not an image; give a .npy array",
                spec.name, stored.c
            ),
        });
    }
    let class_dirs: Vec<PathBuf> = sorted_entries(root)?
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    if class_dirs.is_empty() {
        return Err(DataError::EmptyFolder {
            path: root.to_path_buf(),
        });
    }
    if class_dirs.len() != n_classes {
        return Err(DataError::ClassCount {
            path: root.to_path_buf(),
            found: class_dirs.len(),
            n_classes,
        });
    }
    // Decoded at [0, 1] and unpadded: the padding, then the mean and std, are applied when a
    // batch is built.
    let unit_preprocess = Preprocess {
        mean: Vec::new(),
        std: Vec::new(),
        pad: 0,
        ..spec.preprocess.clone().unwrap_or_default()
    };
    let mut values = Vec::new();
    let mut labels = Vec::new();
    let mut class_names = Vec::new();
    for (class_idx, dir) in class_dirs.iter().enumerate() {
        class_names.push(
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        let images: Vec<PathBuf> = sorted_entries(dir)?
            .into_iter()
            .filter(|p| is_image_file(p))
            .collect();
        if images.is_empty() {
            return Err(DataError::EmptyClass { path: dir.clone() });
        }
        for path in images {
            let tensor = decode_image(&path, spec, stored, &unit_preprocess)?;
            values.extend(tensor.iter());
            labels.push(class_idx as u32);
        }
    }
    let samples = Samples {
        values: SampleValues::Unit(values),
        labels,
        stored,
        source: root.to_path_buf(),
    };
    Dataset::new(samples, spec.clone(), class_names, n_classes)
}

/// One image file, decoded and resized/cropped to `stored`, in [0, 1].
fn decode_image(
    path: &Path,
    spec: &InputSpec,
    stored: Shape,
    preprocess: &Preprocess,
) -> Result<ndarray::ArrayD<f32>, DataError> {
    let bad = |reason: String| DataError::Image {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = read(path)?;
    let reader = ImageReader::new(Cursor::new(&bytes[..]))
        .with_guessed_format()
        .map_err(|e| bad(e.to_string()))?;
    if reader.format().is_none() {
        return Err(bad("it is neither a PNG nor a JPEG image".into()));
    }
    let image = reader.decode().map_err(|e| bad(e.to_string()))?;
    preprocess_image(&image, &spec.name, stored, Some(preprocess)).map_err(|e| bad(e.to_string()))
}
