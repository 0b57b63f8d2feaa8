//! How each graph op becomes ONNX nodes: the translation half of the ONNX exporter
//! (`onnx.rs` holds the model, the naming and the weights).

use super::onnx::{Builder, ExportError};
use super::onnx_proto as pb;
use crate::graph::{
    Activation, ArithmeticOp, ConvAttrs, ConvTransposeAttrs, DenseAttrs, NodeId, Op, PadAttrs,
    PadMode, PoolAttrs, PoolKind, ScalarOp, Shape, UpsampleAttrs, UpsampleMode,
};

impl Builder<'_> {
    /// Translates graph node `id`, recording the name of the value it produces.
    pub(super) fn node(&mut self, id: NodeId) -> Result<(), ExportError> {
        let graph = self.graph;
        let node = &graph.nodes[id];
        let mut args = Vec::with_capacity(node.inputs.len());
        for &input in &node.inputs {
            match self.values.get(input) {
                Some(name) if !name.is_empty() => args.push(name.clone()),
                _ => {
                    return Err(ExportError::Malformed(format!(
                        "{id} reads {input}, which does not come before it"
                    )))
                }
            }
        }
        let arity = |n: usize| {
            if args.len() >= n {
                Ok(())
            } else {
                Err(ExportError::Malformed(format!(
                    "{id} ({}) has {} inputs, not {n}",
                    node.op.name(),
                    args.len()
                )))
            }
        };
        let base = if node.path.is_empty() {
            format!("{}_{id}", node.op.name())
        } else {
            node.path.clone()
        };
        let input_shape = graph.input_shape(id);
        let output = match &node.op {
            Op::Input { name, .. } => {
                let value = self.fresh(name);
                let info = self.value_info(&value, graph.shape(id));
                self.inputs.push(info);
                value
            }
            Op::Conv(attrs) => {
                arity(if attrs.residual { 2 } else { 1 })?;
                self.conv(id, attrs, input_shape, &args, &base)?
            }
            Op::ConvTranspose(attrs) => {
                arity(1)?;
                self.conv_transpose(id, attrs, input_shape, &args[0], &base)?
            }
            Op::Dense(attrs) => {
                arity(1)?;
                self.dense(id, attrs, input_shape, &args[0], &base)?
            }
            Op::Pool(attrs) => {
                arity(1)?;
                self.emit(
                    pool_op_type(attrs.kind),
                    &base,
                    vec![args[0].clone()],
                    pool_attributes(attrs),
                )
            }
            Op::GlobalPool(kind) => {
                arity(1)?;
                let op_type = match kind {
                    PoolKind::Max => "GlobalMaxPool",
                    PoolKind::Avg => "GlobalAveragePool",
                };
                self.emit(op_type, &base, vec![args[0].clone()], Vec::new())
            }
            Op::AdaptiveAvgPool { out } => {
                arity(1)?;
                self.adaptive_avg_pool(&args[0], input_shape, *out, &base)
            }
            Op::Flatten => {
                arity(1)?;
                let attributes = vec![int("axis", 1)];
                self.emit("Flatten", &base, vec![args[0].clone()], attributes)
            }
            Op::BatchNorm { eps } => {
                arity(1)?;
                let channels = [input_shape.c];
                let mut inputs = vec![args[0].clone()];
                for suffix in ["weight", "bias", "running_mean", "running_var"] {
                    inputs.push(self.weight(id, suffix, &channels, None)?);
                }
                let attributes = vec![float("epsilon", *eps as f32)];
                self.emit("BatchNormalization", &base, inputs, attributes)
            }
            Op::Dropout { .. } | Op::Identity => {
                arity(1)?;
                self.emit("Identity", &base, vec![args[0].clone()], Vec::new())
            }
            Op::Activation(activation) => {
                arity(1)?;
                self.activation(*activation, &args[0], &base)
            }
            Op::Softmax => {
                arity(1)?;
                let attributes = vec![int("axis", 1)];
                self.emit("Softmax", &base, vec![args[0].clone()], attributes)
            }
            Op::Add | Op::Mul => {
                arity(2)?;
                let op_type = if node.op == Op::Add { "Add" } else { "Mul" };
                self.emit(op_type, &base, args[..2].to_vec(), Vec::new())
            }
            Op::Arithmetic(op) => {
                arity(2)?;
                let op_type = match op {
                    ArithmeticOp::Sub => "Sub",
                    ArithmeticOp::Div => "Div",
                };
                self.emit(op_type, &base, args[..2].to_vec(), Vec::new())
            }
            Op::Concat => {
                arity(1)?;
                let attributes = vec![int("axis", 1)];
                self.emit("Concat", &base, args, attributes)
            }
            Op::LayerNorm(attrs) => {
                arity(1)?;
                self.layer_norm(id, *attrs, input_shape, &args[0], &base)?
            }
            Op::PointwiseDense(attrs) => {
                arity(1)?;
                self.pointwise_dense(id, *attrs, input_shape, &args[0], &base)?
            }
            Op::Parameter(_) => {
                arity(1)?;
                self.parameter(id, input_shape, &base)?
            }
            Op::GroupNorm(attrs) => {
                arity(1)?;
                self.group_norm(id, *attrs, input_shape, &args[0], &base)?
            }
            Op::PRelu(attrs) => {
                arity(1)?;
                self.prelu(id, *attrs, input_shape, &args[0], &base)?
            }
            Op::ChannelShuffle(attrs) => {
                arity(1)?;
                self.channel_shuffle(&args[0], input_shape, attrs.groups, &base)
            }
            Op::Scalar(attrs) => {
                arity(1)?;
                let number = self.scalar(&format!("{base}.value"), attrs.value);
                let x = args[0].clone();
                let (op_type, inputs) = match attrs.op {
                    ScalarOp::Add => ("Add", vec![x, number]),
                    ScalarOp::Sub => ("Sub", vec![x, number]),
                    ScalarOp::SubFrom => ("Sub", vec![number, x]),
                    ScalarOp::Mul => ("Mul", vec![x, number]),
                    ScalarOp::Div => ("Div", vec![x, number]),
                    ScalarOp::DivInto => ("Div", vec![number, x]),
                };
                self.emit(op_type, &base, inputs, Vec::new())
            }
            Op::Upsample(attrs) => {
                arity(1)?;
                self.upsample(&args[0], attrs, input_shape, &base)
            }
            Op::Pad(attrs) => {
                arity(1)?;
                self.pad(&args[0], attrs, &base)
            }
            Op::Split(attrs) => {
                arity(1)?;
                let first = attrs.first_channel(input_shape.c) as i64;
                let part = graph.shape(id).c as i64;
                let starts = self.int64_initializer(&format!("{base}.starts"), &[first]);
                let ends = self.int64_initializer(&format!("{base}.ends"), &[first + part]);
                let axes = self.int64_initializer(&format!("{base}.axes"), &[1]);
                let inputs = vec![args[0].clone(), starts, ends, axes];
                self.emit("Slice", &base, inputs, Vec::new())
            }
        };
        self.values[id] = output;
        Ok(())
    }

    /// `Conv`, then the residual `Add` and the activation the optimizer may have fused into it.
    fn conv(
        &mut self,
        id: NodeId,
        attrs: &ConvAttrs,
        input_shape: Shape,
        args: &[String],
        base: &str,
    ) -> Result<String, ExportError> {
        let groups = attrs.groups.max(1);
        let weight_shape = [
            attrs.filters,
            input_shape.c / groups,
            attrs.kernel[0],
            attrs.kernel[1],
        ];
        let mut inputs = vec![args[0].clone()];
        inputs.push(self.weight(id, "weight", &weight_shape, attrs.weights.as_ref())?);
        if attrs.bias || attrs.bias_values.is_some() {
            inputs.push(self.weight(id, "bias", &[attrs.filters], attrs.bias_values.as_ref())?);
        }
        let pad = attrs.pad;
        let attributes = vec![
            ints("kernel_shape", &attrs.kernel),
            ints("strides", &attrs.stride),
            ints("dilations", &attrs.dilation),
            ints("pads", &[pad.top, pad.left, pad.bottom, pad.right]),
            int("group", groups as i64),
        ];
        let residual = attrs.residual.then(|| args[1].clone());
        let conv_name = if residual.is_some() || attrs.activation.is_some() {
            format!("{base}/conv")
        } else {
            base.to_string()
        };
        let mut value = self.emit("Conv", &conv_name, inputs, attributes);
        if let Some(skip) = residual {
            let add_name = if attrs.activation.is_some() {
                format!("{base}/add")
            } else {
                base.to_string()
            };
            value = self.emit("Add", &add_name, vec![value, skip], Vec::new());
        }
        Ok(match attrs.activation {
            Some(activation) => self.activation(activation, &value, base),
            None => value,
        })
    }

    /// `ConvTranspose` with PyTorch's `[in, out/groups, kh, kw]` weight; ONNX's attributes
    /// mean what PyTorch's arguments do (`pads` crop the full output, `output_padding` adds at
    /// the end), so no output shape is given.
    fn conv_transpose(
        &mut self,
        id: NodeId,
        attrs: &ConvTransposeAttrs,
        input_shape: Shape,
        input: &str,
        base: &str,
    ) -> Result<String, ExportError> {
        let weight_shape = attrs.weight_shape(input_shape.c);
        let mut inputs = vec![input.to_string()];
        inputs.push(self.weight(id, "weight", &weight_shape, None)?);
        if attrs.bias {
            inputs.push(self.weight(id, "bias", &[attrs.filters], None)?);
        }
        let pad = attrs.pad;
        let attributes = vec![
            ints("kernel_shape", &attrs.kernel),
            ints("strides", &attrs.stride),
            ints("dilations", &attrs.dilation),
            ints("pads", &[pad.top, pad.left, pad.bottom, pad.right]),
            ints("output_padding", &attrs.output_padding),
            int("group", attrs.groups.max(1) as i64),
        ];
        Ok(self.emit("ConvTranspose", base, inputs, attributes))
    }

    /// `Gemm` with PyTorch's `[out, in]` weight (`transB = 1`), then a fused activation.
    fn dense(
        &mut self,
        id: NodeId,
        attrs: &DenseAttrs,
        input_shape: Shape,
        input: &str,
        base: &str,
    ) -> Result<String, ExportError> {
        let weight_shape = [attrs.units, input_shape.c];
        let mut inputs = vec![input.to_string()];
        inputs.push(self.weight(id, "weight", &weight_shape, attrs.weights.as_ref())?);
        if attrs.bias || attrs.bias_values.is_some() {
            inputs.push(self.weight(id, "bias", &[attrs.units], attrs.bias_values.as_ref())?);
        }
        let gemm_name = match attrs.activation {
            Some(_) => format!("{base}/gemm"),
            None => base.to_string(),
        };
        let value = self.emit("Gemm", &gemm_name, inputs, vec![int("transB", 1)]);
        Ok(match attrs.activation {
            Some(activation) => self.activation(activation, &value, base),
            None => value,
        })
    }

    fn activation(&mut self, activation: Activation, input: &str, base: &str) -> String {
        let x = input.to_string();
        match activation {
            Activation::Relu => self.emit("Relu", base, vec![x], Vec::new()),
            Activation::Sigmoid => self.emit("Sigmoid", base, vec![x], Vec::new()),
            Activation::Tanh => self.emit("Tanh", base, vec![x], Vec::new()),
            Activation::Relu6 => {
                let [low, high] = self.relu6_bounds();
                self.emit("Clip", base, vec![x, low, high], Vec::new())
            }
            Activation::Swish => {
                let gate = self.emit(
                    "Sigmoid",
                    &format!("{base}/sigmoid"),
                    vec![x.clone()],
                    Vec::new(),
                );
                self.emit("Mul", base, vec![x, gate], Vec::new())
            }
            Activation::Hardswish => {
                // HardSwish is an opset-14 operator; at opset 13 it is x · HardSigmoid(x)
                // with PyTorch's slope 1/6 and offset 1/2.
                let gate = self.emit(
                    "HardSigmoid",
                    &format!("{base}/hardsigmoid"),
                    vec![x.clone()],
                    vec![float("alpha", 1.0 / 6.0), float("beta", 0.5)],
                );
                self.emit("Mul", base, vec![x, gate], Vec::new())
            }
            Activation::Hardsigmoid => self.emit(
                "HardSigmoid",
                base,
                vec![x],
                vec![float("alpha", 1.0 / 6.0), float("beta", 0.5)],
            ),
            Activation::LeakyRelu(slope) => {
                let attributes = vec![float("alpha", slope.get())];
                self.emit("LeakyRelu", base, vec![x], attributes)
            }
            Activation::Elu(alpha) => {
                let attributes = vec![float("alpha", alpha.get())];
                self.emit("Elu", base, vec![x], attributes)
            }
            Activation::GeluTanh => self.gelu_tanh(x, base),
            Activation::Gelu => {
                // Gelu is an opset-20 operator; at opset 13 it is x · (1 + Erf(x / √2)) / 2.
                let sqrt2 = self.scalar(&format!("{base}.sqrt2"), std::f32::consts::SQRT_2);
                let one = self.scalar(&format!("{base}.one"), 1.0);
                let half = self.scalar(&format!("{base}.half"), 0.5);
                let scaled = self.emit(
                    "Div",
                    &format!("{base}/div"),
                    vec![x.clone(), sqrt2],
                    Vec::new(),
                );
                let erf = self.emit("Erf", &format!("{base}/erf"), vec![scaled], Vec::new());
                let shifted = self.emit("Add", &format!("{base}/add"), vec![erf, one], Vec::new());
                let product =
                    self.emit("Mul", &format!("{base}/mul"), vec![x, shifted], Vec::new());
                self.emit("Mul", base, vec![product, half], Vec::new())
            }
        }
    }

    /// PyTorch's `ChannelShuffle` as ONNX writes it: the channel axis reshaped to
    /// `[groups, C / groups]`, those two axes transposed, and reshaped back.
    fn channel_shuffle(&mut self, input: &str, shape: Shape, groups: usize, base: &str) -> String {
        let (c, g) = (shape.c as i64, groups.max(1) as i64);
        let spatial: &[i64] = if shape.flat {
            &[]
        } else {
            &[shape.h as i64, shape.w as i64]
        };
        let grouped: Vec<i64> = [0, g, c / g].iter().chain(spatial).copied().collect();
        let whole: Vec<i64> = [0, c].iter().chain(spatial).copied().collect();
        let perm: Vec<usize> = [0, 2, 1].into_iter().chain(3..3 + spatial.len()).collect();
        let grouped = self.int64_initializer(&format!("{base}.grouped_shape"), &grouped);
        let whole = self.int64_initializer(&format!("{base}.shape"), &whole);
        let split = self.emit(
            "Reshape",
            &format!("{base}/reshape"),
            vec![input.to_string(), grouped],
            Vec::new(),
        );
        let transposed = self.emit(
            "Transpose",
            &format!("{base}/transpose"),
            vec![split],
            vec![ints("perm", &perm)],
        );
        self.emit("Reshape", base, vec![transposed, whole], Vec::new())
    }

    /// `Resize` with PyTorch's sampling: `nearest` as `asymmetric` coordinates rounded down,
    /// `bilinear` (`align_corners=False`) as `linear` with `pytorch_half_pixel` coordinates.
    /// Whole factors are given as `scales`; another size as `sizes`, whose batch entry comes
    /// from the input's own shape, since the model's batch is symbolic.
    fn upsample(
        &mut self,
        input: &str,
        attrs: &UpsampleAttrs,
        input_shape: Shape,
        base: &str,
    ) -> String {
        let attributes = match attrs.mode {
            UpsampleMode::Nearest => vec![
                string("mode", "nearest"),
                string("coordinate_transformation_mode", "asymmetric"),
                string("nearest_mode", "floor"),
            ],
            UpsampleMode::Bilinear => vec![
                string("mode", "linear"),
                string("coordinate_transformation_mode", "pytorch_half_pixel"),
            ],
        };
        let Some([sh, sw]) = attrs.factors(input_shape) else {
            let [oh, ow] = attrs.output_size(input_shape);
            let shape = self.emit(
                "Shape",
                &format!("{base}/shape"),
                vec![input.into()],
                vec![],
            );
            let starts = self.int64_initializer(&format!("{base}.starts"), &[0]);
            let ends = self.int64_initializer(&format!("{base}.ends"), &[2]);
            let batch_channels = self.emit(
                "Slice",
                &format!("{base}/batch_channels"),
                vec![shape, starts, ends],
                vec![],
            );
            let spatial = self.int64_initializer(&format!("{base}.size"), &[oh as i64, ow as i64]);
            let sizes = self.emit(
                "Concat",
                &format!("{base}/sizes"),
                vec![batch_channels, spatial],
                vec![int("axis", 0)],
            );
            // The region of interest and the scales are unused and left empty.
            let inputs = vec![input.to_string(), String::new(), String::new(), sizes];
            return self.emit("Resize", base, inputs, attributes);
        };
        let scales = self.fresh(&format!("{base}.scales"));
        let values = [1.0, 1.0, sh as f32, sw as f32];
        self.initializer(scales.clone(), &[4], values.into_iter());
        // The second input, the region of interest, is unused and left empty.
        let inputs = vec![input.to_string(), String::new(), scales];
        self.emit("Resize", base, inputs, attributes)
    }

    /// `Pad` (opset 11 and later take the pads as an input): NCHW begins then ends, with
    /// ONNX's names for the modes (`edge` is `replicate`).
    fn pad(&mut self, input: &str, attrs: &PadAttrs, base: &str) -> String {
        let p = attrs.pad;
        let pads = [0, 0, p.top, p.left, 0, 0, p.bottom, p.right].map(|v| v as i64);
        let pads = self.int64_initializer(&format!("{base}.pads"), &pads);
        let mode = match attrs.mode {
            PadMode::Zeros => "constant",
            PadMode::Reflect => "reflect",
            PadMode::Replicate => "edge",
        };
        let inputs = vec![input.to_string(), pads];
        self.emit("Pad", base, inputs, vec![string("mode", mode)])
    }

    /// GELU's tanh approximation at opset 13: `0.5 · x · (1 + Tanh(β · (x + κ · x · x · x)))`.
    fn gelu_tanh(&mut self, x: String, base: &str) -> String {
        let kappa = self.scalar(&format!("{base}.kappa"), crate::graph::ops::GELU_TANH_KAPPA);
        let beta = self.scalar(&format!("{base}.beta"), crate::graph::ops::GELU_TANH_BETA);
        let one = self.scalar(&format!("{base}.one"), 1.0);
        let half = self.scalar(&format!("{base}.half"), 0.5);
        let mut step = |op: &str, what: &str, inputs: Vec<String>| {
            self.emit(op, &format!("{base}/{what}"), inputs, Vec::new())
        };
        let kx = step("Mul", "kx", vec![kappa, x.clone()]);
        let kxx = step("Mul", "kxx", vec![kx, x.clone()]);
        let cubic = step("Mul", "cubic", vec![kxx, x.clone()]);
        let sum = step("Add", "sum", vec![x.clone(), cubic]);
        let inner = step("Mul", "inner", vec![beta, sum]);
        let t = step("Tanh", "tanh", vec![inner]);
        let half_x = step("Mul", "half_x", vec![half, x]);
        let shifted = step("Add", "shifted", vec![one, t]);
        self.emit("Mul", base, vec![half_x, shifted], Vec::new())
    }

    /// A scalar initializer.
    fn scalar(&mut self, base: &str, value: f32) -> String {
        let name = self.fresh(base);
        self.initializer(name.clone(), &[], std::iter::once(value));
        name
    }

    /// The scalar initializers 0 and 6 that every relu6's `Clip` shares.
    fn relu6_bounds(&mut self) -> [String; 2] {
        if let Some(bounds) = &self.relu6_bounds {
            return bounds.clone();
        }
        let low = self.fresh("relu6.min");
        let high = self.fresh("relu6.max");
        self.initializer(low.clone(), &[], std::iter::once(0.0));
        self.initializer(high.clone(), &[], std::iter::once(6.0));
        let bounds = [low, high];
        self.relu6_bounds = Some(bounds.clone());
        bounds
    }

    /// PyTorch's `AdaptiveAvgPool2d`. When the grid divides the input, every window has the
    /// same size and stride, which is an `AveragePool`. Otherwise the windows overlap or
    /// differ in size; the pooling is still linear and separable, `Y = P_h · X · P_wᵀ` per
    /// channel, where row `i` of `P` averages input cells `floor(i·n/out) .. ceil((i+1)·n/out)`,
    /// so it is two `MatMul`s with constant matrices.
    fn adaptive_avg_pool(
        &mut self,
        input: &str,
        input_shape: Shape,
        out: [usize; 2],
        base: &str,
    ) -> String {
        let [out_h, out_w] = out;
        let (h, w) = (input_shape.h, input_shape.w);
        if out_h > 0 && out_w > 0 && h % out_h == 0 && w % out_w == 0 {
            let kernel = [h / out_h, w / out_w];
            let attributes = vec![ints("kernel_shape", &kernel), ints("strides", &kernel)];
            return self.emit("AveragePool", base, vec![input.to_string()], attributes);
        }
        // [W, out_w]: X [N, C, H, W] · P_wᵀ gives [N, C, H, out_w].
        let columns_name = self.fresh(&format!("{base}.columns"));
        let columns = averaging_matrix(w, out_w);
        let transposed = (0..w).flat_map(|x| {
            let columns = &columns;
            (0..out_w).map(move |j| columns[j * w + x])
        });
        let transposed: Vec<f32> = transposed.collect();
        self.initializer(columns_name.clone(), &[w, out_w], transposed.into_iter());
        // [out_h, H]: P_h · [N, C, H, out_w] broadcasts to [N, C, out_h, out_w].
        let rows_name = self.fresh(&format!("{base}.rows"));
        self.initializer(
            rows_name.clone(),
            &[out_h, h],
            averaging_matrix(h, out_h).into_iter(),
        );
        let pooled_columns = self.emit(
            "MatMul",
            &format!("{base}/columns"),
            vec![input.to_string(), columns_name],
            Vec::new(),
        );
        self.emit("MatMul", base, vec![rows_name, pooled_columns], Vec::new())
    }
}

/// `[out, n]`, row-major: row `i` averages cells `floor(i·n/out) .. ceil((i+1)·n/out)`, the
/// windows of PyTorch's adaptive pooling along one axis.
fn averaging_matrix(n: usize, out: usize) -> Vec<f32> {
    let mut matrix = vec![0.0f32; out * n];
    for i in 0..out {
        let start = i * n / out;
        let end = ((i + 1) * n).div_ceil(out);
        let weight = 1.0 / (end - start).max(1) as f32;
        for cell in start..end {
            matrix[i * n + cell] = weight;
        }
    }
    matrix
}

fn pool_op_type(kind: PoolKind) -> &'static str {
    match kind {
        PoolKind::Max => "MaxPool",
        PoolKind::Avg => "AveragePool",
    }
}

fn pool_attributes(attrs: &PoolAttrs) -> Vec<pb::AttributeProto> {
    let pad = attrs.pad;
    let mut attributes = vec![
        ints("kernel_shape", &attrs.kernel),
        ints("strides", &attrs.stride),
        ints("pads", &[pad.top, pad.left, pad.bottom, pad.right]),
        int("ceil_mode", attrs.ceil_mode as i64),
    ];
    if attrs.kind == PoolKind::Avg {
        attributes.push(int("count_include_pad", attrs.count_include_pad as i64));
    }
    if attrs.dilation != [1, 1] {
        attributes.push(ints("dilations", &attrs.dilation));
    }
    attributes
}

pub(super) fn int(name: &str, value: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: Some(name.into()),
        r#type: Some(pb::attribute_proto::AttributeType::Int as i32),
        i: Some(value),
        ..Default::default()
    }
}

pub(super) fn ints(name: &str, values: &[usize]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: Some(name.into()),
        r#type: Some(pb::attribute_proto::AttributeType::Ints as i32),
        ints: values.iter().map(|&v| v as i64).collect(),
        ..Default::default()
    }
}

fn string(name: &str, value: &str) -> pb::AttributeProto {
    pb::AttributeProto {
        name: Some(name.into()),
        r#type: Some(pb::attribute_proto::AttributeType::String as i32),
        s: Some(value.as_bytes().to_vec()),
        ..Default::default()
    }
}

pub(super) fn float(name: &str, value: f32) -> pb::AttributeProto {
    pb::AttributeProto {
        name: Some(name.into()),
        r#type: Some(pb::attribute_proto::AttributeType::Float as i32),
        f: Some(value),
        ..Default::default()
    }
}
