//! The ONNX form of the ops ConvNeXt brought (layer norm over channels, pointwise dense,
//! `parameter`) and of PReLU and group norm, written with opset-13 operators on the exporter's N×C×H×W tensors.

use super::onnx::{Builder, ExportError};
use crate::graph::{
    GroupNormAttrs, LayerNormAttrs, NodeId, PReluAttrs, PointwiseDenseAttrs, Shape,
    PARAMETER_SUFFIX,
};

impl Builder<'_> {
    /// `LayerNormalization` is an opset-17 operator and normalizes trailing axes; over the
    /// channel axis 1 at opset 13 it is `d = x − ReduceMean(x)`,
    /// `d / Sqrt(ReduceMean(d·d) + eps) · γ + β`, with γ and β unsqueezed to `[C, 1, 1]` on
    /// an image so that they broadcast over its pixels.
    pub(super) fn layer_norm(
        &mut self,
        id: NodeId,
        attrs: LayerNormAttrs,
        shape: Shape,
        x: &str,
        base: &str,
    ) -> Result<String, ExportError> {
        let channels = [shape.c];
        let mut affine = Vec::new();
        for suffix in ["weight", "bias"] {
            let tensor = self.weight(id, suffix, &channels, None)?;
            affine.push(if shape.flat {
                tensor
            } else {
                let axes = self.int64_initializer(&format!("{base}.{suffix}_axes"), &[1, 2]);
                let name = format!("{base}/{suffix}_unsqueeze");
                self.emit("Unsqueeze", &name, vec![tensor, axes], Vec::new())
            });
        }
        let eps = self.fresh(&format!("{base}.eps"));
        self.initializer(eps.clone(), &[], std::iter::once(attrs.eps as f32));
        let mean_over_channels = vec![super::onnx_ops::ints("axes", &[1]), int_keepdims()];
        let mut step = |op: &str, what: &str, inputs: Vec<String>, attributes| {
            self.emit(op, &format!("{base}/{what}"), inputs, attributes)
        };
        let mean = step(
            "ReduceMean",
            "mean",
            vec![x.to_string()],
            mean_over_channels.clone(),
        );
        let d = step("Sub", "centered", vec![x.to_string(), mean], Vec::new());
        let square = step("Mul", "square", vec![d.clone(), d.clone()], Vec::new());
        let var = step("ReduceMean", "variance", vec![square], mean_over_channels);
        let shifted = step("Add", "variance_eps", vec![var, eps], Vec::new());
        let std = step("Sqrt", "std", vec![shifted], Vec::new());
        let normalized = step("Div", "normalized", vec![d, std], Vec::new());
        let [gamma, beta] = [affine[0].clone(), affine[1].clone()];
        let scaled = step("Mul", "scaled", vec![normalized, gamma], Vec::new());
        Ok(self.emit("Add", base, vec![scaled, beta], Vec::new()))
    }

    /// `nn.Linear` at every pixel: the channels moved last, `MatMul` by the transposed
    /// `[units, C]` weight, the bias added, and the channels moved back.
    pub(super) fn pointwise_dense(
        &mut self,
        id: NodeId,
        attrs: PointwiseDenseAttrs,
        shape: Shape,
        x: &str,
        base: &str,
    ) -> Result<String, ExportError> {
        let weight = self.weight(id, "weight", &[attrs.units, shape.c], None)?;
        let perm = |p: &[usize]| vec![super::onnx_ops::ints("perm", p)];
        let last = self.emit(
            "Transpose",
            &format!("{base}/channels_last"),
            vec![x.to_string()],
            perm(&[0, 2, 3, 1]),
        );
        let weight_t = self.emit(
            "Transpose",
            &format!("{base}/weight_t"),
            vec![weight],
            perm(&[1, 0]),
        );
        let mut y = self.emit(
            "MatMul",
            &format!("{base}/matmul"),
            vec![last, weight_t],
            Vec::new(),
        );
        if attrs.bias {
            let bias = self.weight(id, "bias", &[attrs.units], None)?;
            y = self.emit("Add", &format!("{base}/bias"), vec![y, bias], Vec::new());
        }
        Ok(self.emit("Transpose", base, vec![y], perm(&[0, 3, 1, 2])))
    }

    /// The `[C, 1, 1]` tensor itself, which broadcasts against N×C×H×W as the graph's
    /// 1×1×C value does.
    pub(super) fn parameter(
        &mut self,
        id: NodeId,
        shape: Shape,
        base: &str,
    ) -> Result<String, ExportError> {
        let tensor = self.weight(id, PARAMETER_SUFFIX, &[shape.c, 1, 1], None)?;
        Ok(self.emit("Identity", base, vec![tensor], Vec::new()))
    }
}

impl Builder<'_> {
    /// `PRelu` with the slopes unsqueezed to `[n, 1, 1]` on an image, so that per-channel
    /// slopes broadcast along axis 1 (ONNX broadcasts the slope from the right).
    pub(super) fn prelu(
        &mut self,
        id: NodeId,
        attrs: PReluAttrs,
        shape: Shape,
        x: &str,
        base: &str,
    ) -> Result<String, ExportError> {
        let slopes = self.weight(id, "weight", &[attrs.slopes(shape.c)], None)?;
        let slopes = if shape.flat {
            slopes
        } else {
            let axes = self.int64_initializer(&format!("{base}.weight_axes"), &[1, 2]);
            let name = format!("{base}/weight_unsqueeze");
            self.emit("Unsqueeze", &name, vec![slopes, axes], Vec::new())
        };
        Ok(self.emit("PRelu", base, vec![x.to_string(), slopes], Vec::new()))
    }
}

impl Builder<'_> {
    /// ONNX's `InstanceNormalization` normalizes each channel; a group of channels becomes one
    /// channel by reshaping N×C×H×W to N×G×(C/G·H·W), normalized with a unit scale and zero
    /// shift, reshaped back, then scaled and shifted per channel by `weight` and `bias`
    /// unsqueezed to `[C, 1, 1]`.
    pub(super) fn group_norm(
        &mut self,
        id: NodeId,
        attrs: GroupNormAttrs,
        shape: Shape,
        x: &str,
        base: &str,
    ) -> Result<String, ExportError> {
        let groups = attrs.groups.max(1);
        let ones = self.fresh(&format!("{base}.unit_scale"));
        self.initializer(ones.clone(), &[groups], std::iter::repeat_n(1.0, groups));
        let zeros = self.fresh(&format!("{base}.zero_shift"));
        self.initializer(zeros.clone(), &[groups], std::iter::repeat_n(0.0, groups));
        let grouped =
            self.int64_initializer(&format!("{base}.grouped_shape"), &[0, groups as i64, -1]);
        let spatial: &[i64] = if shape.flat {
            &[]
        } else {
            &[shape.h as i64, shape.w as i64]
        };
        let whole: Vec<i64> = [0, shape.c as i64].iter().chain(spatial).copied().collect();
        let whole = self.int64_initializer(&format!("{base}.shape"), &whole);
        let name = |what: &str| format!("{base}/{what}");
        let reshaped = self.emit(
            "Reshape",
            &name("group"),
            vec![x.to_string(), grouped],
            Vec::new(),
        );
        let eps = vec![super::onnx_ops::float("epsilon", attrs.eps as f32)];
        let normalized = self.emit(
            "InstanceNormalization",
            &name("normalize"),
            vec![reshaped, ones, zeros],
            eps,
        );
        let back = if attrs.affine {
            name("ungroup")
        } else {
            base.to_string()
        };
        let mut y = self.emit("Reshape", &back, vec![normalized, whole], Vec::new());
        if attrs.affine {
            let mut affine = Vec::new();
            for suffix in ["weight", "bias"] {
                let tensor = self.weight(id, suffix, &[shape.c], None)?;
                affine.push(if shape.flat {
                    tensor
                } else {
                    let axes = self.int64_initializer(&format!("{base}.{suffix}_axes"), &[1, 2]);
                    self.emit(
                        "Unsqueeze",
                        &name(&format!("{suffix}_unsqueeze")),
                        vec![tensor, axes],
                        Vec::new(),
                    )
                });
            }
            y = self.emit(
                "Mul",
                &name("scaled"),
                vec![y, affine[0].clone()],
                Vec::new(),
            );
            y = self.emit("Add", base, vec![y, affine[1].clone()], Vec::new());
        }
        Ok(y)
    }
}

fn int_keepdims() -> super::onnx_proto::AttributeProto {
    super::onnx_ops::int("keepdims", 1)
}
