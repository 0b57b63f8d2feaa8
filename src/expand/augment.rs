//! The data augmentation declaration, `augment(...)`, beside `preprocess(...)` and `train(...)`
//! in a network:
//!
//! ```text
//! augment(mirror: true, crop: 32, pad: 4, resized_crop: [0.08, 1.0], rotate: 10, shear: 5,
//!         scale: [0.9, 1.1], color_shift: 0.1, pca_color: 0.1)
//! ```
//!
//! Every option is optional and named; each is checked here (type, range, duplicates, unknown
//! names), and against the network's input: the crop must give the input's size, and the
//! input must be one image. What each transform does is in `train/augment.rs`.

use super::eval::EvalArg;
use super::value::Value;
use super::Expander;
use crate::diag::{Code, Diagnostic};
use crate::graph::{Op, Shape};
use crate::source::Span;
use crate::syntax::ast::Ident;
use crate::train::augment::{Augmentation, RandomCrop};

const OPTIONS: [&str; 9] = [
    "mirror",
    "crop",
    "pad",
    "resized_crop",
    "rotate",
    "shear",
    "scale",
    "color_shift",
    "pca_color",
];

/// torchvision's `RandomResizedCrop` default area range, for `resized_crop: true`.
const DEFAULT_RESIZED_CROP: (f64, f64) = (0.08, 1.0);

impl Expander<'_> {
    pub(super) fn augment(&mut self, callee: &Ident, args: Vec<EvalArg>) -> Value {
        if !self.declaration_allowed(callee) {
            return Value::Unit;
        }
        if let Some(first) = self.graph.meta.augment_span {
            // The same statement evaluated again (in a loop) is not a second declaration.
            if first != callee.span {
                self.error(
                    Diagnostic::error(
                        Code::Augment,
                        callee.span,
                        "the network declares `augment(...)` twice; the second would silently replace the first",
                    )
                    .with_label("second declaration")
                    .with_secondary(first, "first declared here")
                    .with_help("merge the two into one `augment(...)`"),
                );
            }
            return Value::Unit;
        }
        let mut config = Augmentation::default();
        let mut crop: Option<((usize, usize), Span)> = None;
        let mut pad: Option<(usize, Span)> = None;
        let mut seen: Vec<String> = Vec::new();
        for arg in &args {
            let Some(keyword) = arg.keyword.clone() else {
                self.error(
                    Diagnostic::error(
                        Code::ArgumentType,
                        arg.span,
                        "`augment` takes keyword arguments only",
                    )
                    .with_label("name this argument")
                    .with_help("e.g. `augment(mirror: true, crop: 32, pad: 4)`"),
                );
                continue;
            };
            let name = keyword.name.as_str();
            if seen.iter().any(|s| s == name) {
                self.error(
                    Diagnostic::error(
                        Code::DuplicateArgument,
                        keyword.span,
                        format!("`{name}` is given twice"),
                    )
                    .with_label("given again here"),
                );
                continue;
            }
            match name {
                "mirror" => match &arg.value {
                    Value::Bool(b) => config.mirror = *b,
                    _ => self.type_error(arg, name, "a bool"),
                },
                "crop" => crop = self.crop_size(arg).map(|size| (size, arg.span)),
                "pad" => {
                    pad = self
                        .int_to_usize(arg, &arg.value, name, 0)
                        .map(|n| (n, arg.span))
                }
                "resized_crop" => {
                    config.resized_crop = match &arg.value {
                        Value::Bool(true) => Some(DEFAULT_RESIZED_CROP),
                        Value::Bool(false) => None,
                        _ => self.number_pair(arg, name, (0.0, 1.0)),
                    }
                }
                "rotate" => config.rotate = self.number_in(arg, name, (0.0, 180.0)).unwrap_or(0.0),
                "shear" => config.shear = self.number_in(arg, name, (0.0, 60.0)).unwrap_or(0.0),
                "scale" => config.scale = self.number_pair(arg, name, (0.0, 10.0)),
                "color_shift" => {
                    config.color_shift = self.number_in(arg, name, (0.0, 1.0)).unwrap_or(0.0)
                }
                "pca_color" => {
                    config.pca_color = self.number_in(arg, name, (0.0, 1.0)).unwrap_or(0.0)
                }
                other => {
                    let mut diagnostic = Diagnostic::error(
                        Code::UnknownArgument,
                        keyword.span,
                        format!("`augment` has no option named `{other}`"),
                    )
                    .with_label("unknown option")
                    .with_note(format!("its options are {}", OPTIONS.join(", ")));
                    if let Some(s) = super::suggest::closest(other, OPTIONS) {
                        diagnostic = diagnostic.with_help(format!("did you mean `{s}`?"));
                    }
                    self.error(diagnostic);
                    continue;
                }
            }
            seen.push(name.to_string());
        }
        self.check_augment_input(callee, &mut config, crop, pad);
        self.graph.meta.augment = Some(config);
        self.graph.meta.augment_span = Some(callee.span);
        Value::Unit
    }

    /// Checks the options against the network's input and fills in the random crop.
    fn check_augment_input(
        &mut self,
        callee: &Ident,
        config: &mut Augmentation,
        crop: Option<((usize, usize), Span)>,
        pad: Option<(usize, Span)>,
    ) {
        let images: Vec<(String, Shape, Span)> = self
            .graph
            .inputs
            .iter()
            .filter_map(|&id| match &self.graph.nodes[id].op {
                Op::Input { name, .. } => Some((
                    name.clone(),
                    self.graph.shapes[id],
                    self.graph.origins[id].span,
                )),
                _ => None,
            })
            .collect();
        let [(name, shape, input_span)] = images.as_slice() else {
            self.error(
                Diagnostic::error(
                    Code::Augment,
                    callee.span,
                    format!(
                        "`augment` applies to a network with one image input, but this one has {}",
                        images.len()
                    ),
                )
                .with_label("cannot tell which input to augment"),
            );
            return;
        };
        if shape.flat {
            self.error(
                Diagnostic::error(
                    Code::Augment,
                    callee.span,
                    format!("`augment` transforms images, but input `{name}` is a flat vector ({shape})"),
                )
                .with_label("nothing to augment")
                .with_secondary(*input_span, format!("{shape}")),
            );
            return;
        }
        match (crop, pad) {
            (None, Some((_, pad_span))) => self.error(
                Diagnostic::error(
                    Code::Augment,
                    pad_span,
                    "`pad` is the zero padding of the random crop, but `augment` has no `crop`",
                )
                .with_label("padding for no crop")
                .with_help(format!(
                    "add the crop, of the input's size: `crop: {}`",
                    crop_text(shape.h, shape.w)
                )),
            ),
            (Some(((h, w), crop_span)), pad) => {
                if (h, w) != (shape.h, shape.w) {
                    self.error(
                        Diagnostic::error(
                            Code::Augment,
                            crop_span,
                            format!(
                                "a random crop of {h}×{w} does not give input `{name}` ({shape})"
                            ),
                        )
                        .with_label(format!("{h}×{w}"))
                        .with_secondary(*input_span, format!("{shape}"))
                        .with_help(format!(
                            "the crop is taken from the padded image and keeps the input's size: `crop: {}`",
                            crop_text(shape.h, shape.w)
                        )),
                    );
                } else {
                    config.crop = Some(RandomCrop {
                        height: h,
                        width: w,
                        pad: pad.map_or(0, |(p, _)| p),
                    });
                }
            }
            (None, None) => {}
        }
    }

    /// `crop: 32` (square) or `crop: [h, w]`.
    fn crop_size(&mut self, arg: &EvalArg) -> Option<(usize, usize)> {
        match &arg.value {
            Value::Int(_) => {
                let n = self.int_to_usize(arg, &arg.value, "crop", 1)?;
                Some((n, n))
            }
            Value::List(items) if items.len() == 2 => {
                let h = self.int_to_usize(arg, &items[0], "crop", 1);
                let w = self.int_to_usize(arg, &items[1], "crop", 1);
                Some((h?, w?))
            }
            _ => {
                self.type_error(arg, "crop", "an int or a list [height, width]");
                None
            }
        }
    }

    /// A number in [lo, hi].
    fn number_in(&mut self, arg: &EvalArg, name: &str, (lo, hi): (f64, f64)) -> Option<f64> {
        let Some(x) = arg.value.as_f64() else {
            self.type_error(arg, name, "a number");
            return None;
        };
        if x.is_finite() && (lo..=hi).contains(&x) {
            return Some(x);
        }
        self.error(
            Diagnostic::error(
                Code::ArgumentRange,
                arg.span,
                format!("`{name}` must be between {lo} and {hi}, but this is {x}"),
            )
            .with_label("out of range"),
        );
        None
    }

    /// `[a, b]` with lo < a ≤ b ≤ hi.
    fn number_pair(
        &mut self,
        arg: &EvalArg,
        name: &str,
        (lo, hi): (f64, f64),
    ) -> Option<(f64, f64)> {
        let pair = match &arg.value {
            Value::List(items) if items.len() == 2 => items[0].as_f64().zip(items[1].as_f64()),
            _ => None,
        };
        let Some((a, b)) = pair else {
            self.type_error(arg, name, "a list of two numbers [low, high]");
            return None;
        };
        if a.is_finite() && b.is_finite() && lo < a && a <= b && b <= hi {
            return Some((a, b));
        }
        self.error(
            Diagnostic::error(
                Code::ArgumentRange,
                arg.span,
                format!("`{name}` must be [low, high] with {lo} < low ≤ high ≤ {hi}, but this is [{a}, {b}]"),
            )
            .with_label("out of range"),
        );
        None
    }
}

fn crop_text(h: usize, w: usize) -> String {
    if h == w {
        format!("{h}")
    } else {
        format!("[{h}, {w}]")
    }
}
