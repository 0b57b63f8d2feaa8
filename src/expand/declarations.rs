//! Declarations a network makes about its use rather than its layers: `preprocess(...)` and
//! `labels("...")` (the training recipe, `train(...)`, is in `recipe.rs`).

use super::eval::EvalArg;
use super::value::Value;
use super::Expander;
use crate::diag::{Code, Diagnostic};
use crate::graph::{Op, Preprocess, Shape};
use crate::source::Span;
use crate::syntax::ast::Ident;

/// Where each argument of `preprocess(...)` was written, to point at the one at fault.
#[derive(Default)]
struct PreprocessSpans {
    resize: Option<Span>,
    crop: Option<Span>,
    mean: Option<Span>,
    std: Option<Span>,
    pad: Option<Span>,
}

impl Expander<'_> {
    /// Whether a declaration applies here: it does in the network being expanded, it is
    /// ignored in a network used as a stage, and it is an error in a block.
    pub(super) fn declaration_allowed(&mut self, callee: &Ident) -> bool {
        match self.calls.last() {
            None => return true,
            Some(call) if call.is_network => return false,
            Some(_) => {}
        }
        self.error(
            Diagnostic::error(
                Code::MisplacedDeclaration,
                callee.span,
                format!("`{}` declares something about a network and belongs in its body, not in a block", callee.name),
            )
            .with_label("inside a block"),
        );
        false
    }

    pub(super) fn preprocess(&mut self, callee: &Ident, args: Vec<EvalArg>) -> Value {
        if !self.declaration_allowed(callee) {
            return Value::Unit;
        }
        if let Some(first) = self.graph.meta.preprocess_span {
            // The same statement evaluated again (in a loop) is not a second declaration.
            if first != callee.span {
                self.error(
                    Diagnostic::error(
                        Code::Preprocess,
                        callee.span,
                        "the network declares `preprocess(...)` twice; the second would silently replace the first",
                    )
                    .with_label("second declaration")
                    .with_secondary(first, "first declared here")
                    .with_help("merge the two into one `preprocess(...)`"),
                );
            }
            return Value::Unit;
        }
        let mut pre = Preprocess::default();
        let mut spans = PreprocessSpans::default();
        for arg in args {
            let Some(keyword) = arg.keyword.clone() else {
                self.error(
                    Diagnostic::error(Code::ArgumentType, arg.span, "`preprocess` takes keyword arguments only")
                        .with_label("name this argument")
                        .with_help("e.g. `preprocess(resize: 256, crop: 224, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225])`"),
                );
                continue;
            };
            match keyword.name.as_str() {
                "pad" => {
                    let value = arg.value.clone();
                    if let Some(n) = self.int_to_usize(&arg, &value, "pad", 0) {
                        pre.pad = n;
                        spans.pad = Some(arg.span);
                    }
                }
                "resize" | "crop" => {
                    let value = arg.value.clone();
                    if let Some(n) = self.int_to_usize(&arg, &value, &keyword.name, 1) {
                        if keyword.name == "resize" {
                            pre.resize = Some(n);
                            spans.resize = Some(arg.span);
                        } else {
                            pre.crop = Some(n);
                            spans.crop = Some(arg.span);
                        }
                    }
                }
                "mean" | "std" => {
                    let numbers: Option<Vec<f32>> = match &arg.value {
                        Value::List(items) => {
                            items.iter().map(|v| v.as_f64().map(|x| x as f32)).collect()
                        }
                        _ => None,
                    };
                    let Some(numbers) = numbers else {
                        self.type_error(&arg, &keyword.name, "a list of numbers");
                        continue;
                    };
                    if keyword.name == "mean" {
                        pre.mean = numbers;
                        spans.mean = Some(arg.span);
                    } else if let Some(bad) =
                        numbers.iter().position(|&s| !(s > 0.0 && s.is_finite()))
                    {
                        self.error(
                            Diagnostic::error(
                                Code::Preprocess,
                                arg.span,
                                format!(
                                    "every `std` value must be positive (the pixels are divided by it), but value {} of {} is {:?}",
                                    bad + 1,
                                    numbers.len(),
                                    numbers[bad]
                                ),
                            )
                            .with_label(format!("value {} is {:?}", bad + 1, numbers[bad])),
                        );
                    } else {
                        pre.std = numbers;
                        spans.std = Some(arg.span);
                    }
                }
                other => {
                    let mut diagnostic = Diagnostic::error(
                        Code::UnknownArgument,
                        keyword.span,
                        format!("`preprocess` has no argument named `{other}`"),
                    )
                    .with_label("unknown argument");
                    if let Some(s) =
                        super::suggest::closest(other, ["resize", "crop", "mean", "std", "pad"])
                    {
                        diagnostic = diagnostic.with_help(format!("did you mean `{s}`?"));
                    }
                    self.error(diagnostic);
                }
            }
        }
        self.check_preprocess(&pre, &spans);
        self.graph.meta.preprocess = Some(pre);
        self.graph.meta.preprocess_span = Some(callee.span);
        Value::Unit
    }

    /// Reports, at `check` time, the preprocessing that `cnnc run` or `cnnc train` would
    /// reject for every image: the rules are those of `runtime::input::preprocess_image` and
    /// `runtime::input::normalization` (and the training data's padding), applied to each
    /// image input's declared shape.
    fn check_preprocess(&mut self, pre: &Preprocess, spans: &PreprocessSpans) {
        let mut crop_fits = true;
        if let (Some(resize), Some(crop), Some(crop_span)) = (pre.resize, pre.crop, spans.crop) {
            if crop > resize {
                self.error(
                    Diagnostic::error(
                        Code::Preprocess,
                        crop_span,
                        format!(
                            "a center crop of {crop}×{crop} does not fit an image resized to a shorter side of {resize}"
                        ),
                    )
                    .with_label(format!("larger than `resize: {resize}`"))
                    .with_help("the crop must be at most the resize, e.g. `resize: 256, crop: 224`"),
                );
                crop_fits = false;
            }
        }
        let inputs: Vec<(String, Shape, Span)> = self
            .graph
            .inputs
            .iter()
            .filter_map(|&id| match &self.graph.nodes[id].op {
                Op::Input { name, .. } if !self.graph.shapes[id].flat => Some((
                    name.clone(),
                    self.graph.shapes[id],
                    self.graph.origins[id].span,
                )),
                _ => None,
            })
            .collect();
        for (name, shape, input_span) in inputs {
            for (what, values, span) in [
                ("mean", &pre.mean, spans.mean),
                ("std", &pre.std, spans.std),
            ] {
                let (n, Some(span)) = (values.len(), span) else {
                    continue;
                };
                if !(n == 0 || n == 1 || n == shape.c) {
                    self.error(
                        Diagnostic::error(
                            Code::Preprocess,
                            span,
                            format!(
                                "`{what}` has {n} values, but input `{name}` ({shape}) has {} channel{}",
                                shape.c,
                                if shape.c == 1 { "" } else { "s" }
                            ),
                        )
                        .with_label(format!("{n} values"))
                        .with_secondary(input_span, format!("{} channel{}", shape.c, if shape.c == 1 { "" } else { "s" }))
                        .with_help(format!("give one value per channel ({}), or one value for all of them", shape.c)),
                    );
                }
            }
            if !crop_fits {
                continue;
            }
            let Some(target) = self.unpadded(pre, spans, &name, shape, input_span) else {
                continue;
            };
            let (h, w) = target;
            let (before, sized) = if pre.pad > 0 {
                (
                    format!(
                        " ({shape}) needs {h}×{w} before its padding of {} on each side",
                        pre.pad
                    ),
                    "the size before the padding",
                )
            } else {
                (format!(" is {shape}"), "the input's size")
            };
            if let (Some(crop), Some(span)) = (pre.crop, spans.crop) {
                if (crop, crop) != (h, w) {
                    let mut diagnostic = Diagnostic::error(
                        Code::Preprocess,
                        span,
                        format!("a center crop of {crop} gives a {crop}×{crop} image, but input `{name}`{before}"),
                    )
                    .with_label(format!("{crop}×{crop}"))
                    .with_secondary(input_span, format!("{shape}"));
                    diagnostic = diagnostic.with_help(if h == w {
                        format!("crop to {sized}: `crop: {h}`")
                    } else {
                        "a center crop is square; drop `crop` and `resize` to resize images to the input's size".to_string()
                    });
                    self.error(diagnostic);
                }
            } else if let (Some(resize), Some(span)) = (pre.resize, spans.resize) {
                // `resize` sets the shorter side; the longer one follows the image's aspect
                // ratio, so only the shorter side is known here.
                if resize != h.min(w) {
                    self.error(
                        Diagnostic::error(
                            Code::Preprocess,
                            span,
                            format!(
                                "resizing gives images whose shorter side is {resize}, but input `{name}`{before}"
                            ),
                        )
                        .with_label(format!("shorter side {resize}"))
                        .with_secondary(input_span, format!("{shape}"))
                        .with_help(if h == w {
                            format!("add `crop: {h}` after the resize, or resize to `resize: {h}`")
                        } else {
                            format!("resize to the shorter side of the input: `resize: {}`", h.min(w))
                        }),
                    );
                }
            }
        }
    }

    /// The H×W images must have before the declared padding, or `None` (reported) when the
    /// padding leaves nothing of the input (`train`'s `InputSpec::unpadded` rule).
    fn unpadded(
        &mut self,
        pre: &Preprocess,
        spans: &PreprocessSpans,
        name: &str,
        shape: Shape,
        input_span: Span,
    ) -> Option<(usize, usize)> {
        let border = pre.pad.checked_mul(2);
        match border.and_then(|b| Some((shape.h.checked_sub(b)?, shape.w.checked_sub(b)?))) {
            Some((h, w)) if h > 0 && w > 0 => Some((h, w)),
            _ => {
                if let Some(span) = spans.pad {
                    self.error(
                        Diagnostic::error(
                            Code::Preprocess,
                            span,
                            format!(
                                "a padding of {} on each side leaves nothing of input `{name}` ({shape})",
                                pre.pad
                            ),
                        )
                        .with_label("padding on each side")
                        .with_secondary(input_span, format!("{shape}"))
                        .with_help(format!(
                            "the padding must be less than half the input's height and width ({}×{})",
                            shape.h, shape.w
                        )),
                    );
                }
                None
            }
        }
    }

    pub(super) fn labels(&mut self, callee: &Ident, args: Vec<EvalArg>) -> Value {
        if !self.declaration_allowed(callee) {
            return Value::Unit;
        }
        match args.as_slice() {
            [EvalArg {
                keyword: None,
                value: Value::Str(file),
                ..
            }] => {
                self.graph.meta.labels_file = Some(file.clone());
                self.graph.meta.labels_span = Some(callee.span);
                Value::Unit
            }
            _ => {
                self.error(
                    Diagnostic::error(
                        Code::ArgumentType,
                        callee.span,
                        "`labels` takes one string: the file of class names, one per line",
                    )
                    .with_label("expected `labels(\"classes.txt\")`"),
                );
                Value::Poison
            }
        }
    }
}
