//! `cnnc augment`: writes augmented training samples as PNG images, so a user can see what
//! the network's `augment(...)` does to the data before training on it.
//!
//! Each sample is the image `cnnc train` would feed in that epoch, before the mean/std
//! normalization: scaled, padded by `preprocess(pad: …)`, augmented from the same random
//! stream (the seed, the epoch, the image's position in the data set). Values are clamped to
//! [0, 1] for the PNG only.

use super::eval::open_data;
use super::{compile_network, EXIT_ERRORS, EXIT_OK};
use crate::diag::{self, Code, Diagnostic};
use crate::graph::Graph;
use crate::train::augment::Augmenter;
use crate::train::data::Dataset;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(clap::Args)]
pub struct AugmentArgs {
    /// The .cnn file.
    pub file: PathBuf,
    /// The network whose `augment(...)` to apply (default: the file's first).
    #[arg(long)]
    pub net: Option<String>,
    /// The training images: a .npy array (N×H×W×C) or a folder with one subfolder per class.
    #[arg(long, value_name = "D")]
    pub data: PathBuf,
    /// The labels .npy (default: beside the images, `images` → `labels` in the name).
    #[arg(long, value_name = "L")]
    pub labels: Option<PathBuf>,
    /// The folder the PNG files are written to (created if needed).
    #[arg(long, value_name = "DIR", default_value = "augmented")]
    pub out: PathBuf,
    /// How many samples to write.
    #[arg(short = 'n', default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub n: u64,
    /// The seed (default: the recipe's, else 0), as `cnnc train --seed`.
    #[arg(long)]
    pub seed: Option<u64>,
    /// The epoch whose augmentation to show, from 0.
    #[arg(long, default_value_t = 0)]
    pub epoch: usize,
    /// Write N augmentations of this one image (epochs `--epoch`, `--epoch` + 1, …) instead
    /// of the first N images.
    #[arg(long, value_name = "K")]
    pub image: Option<usize>,
}

pub fn run(args: &AugmentArgs) -> u8 {
    let Some((compilation, graph)) = compile_network(&args.file, &args.net) else {
        return EXIT_ERRORS;
    };
    match execute(args, &graph) {
        Ok(()) => EXIT_OK,
        Err(diagnostic) => {
            diag::emit_stderr(&compilation.program.sources, &[*diagnostic]);
            EXIT_ERRORS
        }
    }
}

fn execute(args: &AugmentArgs, graph: &Graph) -> Result<(), Box<Diagnostic>> {
    let data = open_data(graph, &args.data, args.labels.as_deref())?;
    let seed = args
        .seed
        .or_else(|| graph.meta.train.as_ref().and_then(|recipe| recipe.seed))
        .unwrap_or(0);
    let augmenter = graph
        .meta
        .augment
        .clone()
        .map(|config| Arc::new(Augmenter::new(config, &data)));
    match &augmenter {
        Some(a) => println!("augment: {}", a.config.describe()),
        None => println!(
            "network `{}` declares no `augment(...)`: the samples are only preprocessed",
            graph.name
        ),
    }
    let data = data.with_augmentation(augmenter);
    let samples = samples(args, &data)?;
    std::fs::create_dir_all(&args.out).map_err(|error| {
        output_error(format!(
            "cannot create the folder `{}`: {error}",
            args.out.display()
        ))
    })?;
    let mut image = Vec::new();
    for (sample_idx, &(position, epoch)) in samples.iter().enumerate() {
        data.pixel_image(position, Some((seed, epoch)), &mut image);
        let name = format!(
            "sample{sample_idx:03}_image{position}_epoch{epoch}_label{}.png",
            data.label(position)
        );
        write_png(&args.out.join(name), &image, &data)?;
    }
    println!(
        "wrote {} sample(s) to {} (seed {seed})",
        samples.len(),
        args.out.display()
    );
    Ok(())
}

/// The (position, epoch) of each sample to write.
fn samples(args: &AugmentArgs, data: &Dataset) -> Result<Vec<(usize, usize)>, Box<Diagnostic>> {
    let n = args.n as usize;
    match args.image {
        Some(position) if position >= data.len() => Err(Box::new(Diagnostic::global(
            Code::DataOption,
            format!(
                "--image {position} is past the data set's end: it holds {} images (0–{})",
                data.len(),
                data.len().saturating_sub(1)
            ),
        ))),
        Some(position) => Ok((0..n).map(|k| (position, args.epoch + k)).collect()),
        None => Ok((0..n.min(data.len())).map(|k| (k, args.epoch)).collect()),
    }
}

fn output_error(message: String) -> Box<Diagnostic> {
    Box::new(Diagnostic::global(Code::OutputFile, message))
}

/// One H×W×C image in [0, 1] as an 8-bit PNG (grey, RGB or RGBA by its channels).
fn write_png(path: &Path, image: &[f32], data: &Dataset) -> Result<(), Box<Diagnostic>> {
    let shape = data.spec().shape;
    let bytes: Vec<u8> = image
        .iter()
        .map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect();
    let color = match shape.c {
        1 => image::ExtendedColorType::L8,
        3 => image::ExtendedColorType::Rgb8,
        4 => image::ExtendedColorType::Rgba8,
        c => {
            return Err(output_error(format!(
                "a PNG image holds 1, 3 or 4 channels, but input `{}` has {c}",
                data.spec().name
            )))
        }
    };
    let (w, h) = (shape.w as u32, shape.h as u32);
    image::save_buffer_with_format(path, &bytes, w, h, color, image::ImageFormat::Png)
        .map_err(|error| output_error(format!("cannot write `{}`: {error}", path.display())))
}
