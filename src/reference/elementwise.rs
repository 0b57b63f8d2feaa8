//! The ops without a window: flatten, batch norm, softmax, add, broadcast multiply, concat.

use super::Tensor;
use ndarray::{concatenate, Array4, Axis, CowArray, IxDyn};

/// To N×1×1×(C·H·W) in channel-major order — element `(h, w, c)` goes to `c·H·W + h·W + w` —
/// which is what `torch.flatten` does to an NCHW tensor, so a following dense layer's PyTorch
/// weights apply unchanged.
pub(super) fn flatten(x: &Tensor) -> Tensor {
    let (batch, h, w, c) = x.dim();
    let mut y = Array4::<f32>::zeros((batch, 1, 1, c * h * w));
    for ((n, iy, ix, ch), &value) in x.indexed_iter() {
        y[[n, 0, 0, ch * h * w + iy * w + ix]] = value;
    }
    y
}

/// Inference batch norm with running statistics:
/// `(x − running_mean) / sqrt(running_var + eps) · weight + bias`, per channel.
pub(super) fn batch_norm(
    x: &Tensor,
    weight: &CowArray<f32, IxDyn>,
    bias: &CowArray<f32, IxDyn>,
    mean: &CowArray<f32, IxDyn>,
    var: &CowArray<f32, IxDyn>,
    eps: f64,
) -> Tensor {
    let mut y = x.clone();
    for ((_, _, _, c), value) in y.indexed_iter_mut() {
        let normalized =
            (f64::from(*value) - f64::from(mean[[c]])) / (f64::from(var[[c]]) + eps).sqrt();
        *value = (normalized * f64::from(weight[[c]]) + f64::from(bias[[c]])) as f32;
    }
    y
}

/// Softmax over the channels of each pixel (over the features of a flat vector), with the
/// maximum subtracted first so large logits cannot overflow `exp`.
pub(super) fn softmax(x: &Tensor) -> Tensor {
    let mut y = x.clone();
    for mut lane in y.lanes_mut(Axis(3)) {
        let max = lane.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<f64> = lane.iter().map(|&v| f64::from(v - max).exp()).collect();
        let total: f64 = exps.iter().sum();
        for (value, e) in lane.iter_mut().zip(exps) {
            *value = (e / total) as f32;
        }
    }
    y
}

/// Elementwise sum; `None` if the shapes differ.
pub(super) fn add(a: &Tensor, b: &Tensor) -> Option<Tensor> {
    (a.dim() == b.dim()).then(|| a + b)
}

/// Elementwise product, where an N×1×1×C operand is broadcast over the other's H×W (the
/// channel gates of squeeze-and-excitation); `None` if the shapes do not allow it.
pub(super) fn mul(a: &Tensor, b: &Tensor) -> Option<Tensor> {
    let gate = |small: &Tensor, big: &Tensor| {
        let (sn, sh, sw, sc) = small.dim();
        let (bn, _, _, bc) = big.dim();
        sn == bn && sh == 1 && sw == 1 && sc == bc
    };
    // ndarray's arithmetic on references broadcasts both ways, so one product covers both
    // the equal-shape and the gate cases.
    (a.dim() == b.dim() || gate(b, a) || gate(a, b)).then(|| a * b)
}

/// Along the channels, in argument order.
pub(super) fn concat(args: &[&Tensor]) -> Option<Tensor> {
    let views: Vec<_> = args.iter().map(|t| t.view()).collect();
    concatenate(Axis(3), &views).ok()
}
