//! The runtime's data: the weights a network runs with and the input tensors it runs on.
//!
//! This module reads and writes the files a user hands to `cnnc run` — safetensors weights,
//! `.npy` arrays, PNG and JPEG images — and turns every way they can be wrong into a
//! structured error that names the layer and both shapes. Nothing here panics on any bytes:
//! a file is untrusted input.
//!
//! Tensors cross this boundary as `ndarray::ArrayD<f32>`: weights in PyTorch's layout
//! (conv `[out, in/groups, kh, kw]`, dense `[out, in]`), inputs as N×H×W×C (N×C for a
//! network whose input is a flat vector). Internal layouts are the compiler's business.
//!
//! Random numbers (seeded weights, synthetic inputs) come from a small hand-written
//! generator in `rng.rs`, so results are identical across platforms and crate versions.

mod input;
mod mapped;
mod npy;
pub(crate) mod rng;
mod run_error;
pub(crate) mod safetensors_io;
mod weights;

pub use input::{input_name, load_input, preprocess_image, synthetic_input, InputError};
pub use mapped::{map_regular_file, FileDtype, MappedTensor};
pub use npy::{
    check_output_path, npy_bytes, parse_npy, parse_npy_integers, write_npy, NpyArray, NpyError,
};
pub use run_error::{check_batch, RunError};
pub use safetensors_io::{bind_safetensors, Bound, LoadOptions, Loaded, WeightsErrors};
pub use weights::{
    bind, bind_present, check_bindable, learned_weights, seed, Weights, WeightsError,
};

pub(crate) use input::normalization;
pub(crate) use weights::describe_layer;

use std::fmt;

/// The most elements a tensor the runtime builds may have, batch included: the same limit
/// shape inference puts on one image's tensor.
pub const MAX_ELEMENTS: u64 = crate::graph::infer::MAX_ELEMENTS;

/// A tensor's dimensions, shown as `64×3×7×7` in messages.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Dims(pub Vec<usize>);

impl Dims {
    pub fn of(dims: &[usize]) -> Dims {
        Dims(dims.to_vec())
    }

    /// The number of elements, saturating: used only to compare against [`MAX_ELEMENTS`].
    pub fn numel_saturating(&self) -> u64 {
        self.0
            .iter()
            .fold(1u64, |total, &d| total.saturating_mul(d as u64))
    }
}

impl fmt::Display for Dims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return write!(f, "a scalar");
        }
        let text: Vec<String> = self.0.iter().map(|d| d.to_string()).collect();
        write!(f, "{}", text.join("×"))
    }
}
