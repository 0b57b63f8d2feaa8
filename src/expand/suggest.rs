//! "Did you mean": the closest known name to a misspelt one.

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

/// Names longer than this get no suggestion: no layer or block name is that long, and the
/// edit distance costs the product of the two lengths.
const MAX_NAME: usize = 64;

/// The candidate closest to `name`, if it is close enough to be a plausible typo.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let length = name.chars().count();
    if length > MAX_NAME {
        return None;
    }
    let limit = (length / 3).clamp(1, 3);
    let lowered = name.to_lowercase();
    candidates
        .into_iter()
        .filter(|c| *c != name && c.chars().count().abs_diff(length) <= limit)
        .map(|c| (edit_distance(&lowered, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(b.1)))
        .map(|(_, c)| c)
}

/// The candidates at the smallest edit distance from `name`, when it is a plausible typo: all
/// of them, so that a tie (`layer5` among `layer1`…`layer4`) is shown as a tie rather than
/// settled by the alphabet.
pub fn closest_all<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let length = name.chars().count();
    if length > MAX_NAME {
        return Vec::new();
    }
    let limit = (length / 3).clamp(1, 3);
    let lowered = name.to_lowercase();
    let mut scored: Vec<(usize, &str)> = candidates
        .into_iter()
        .filter(|c| *c != name && c.chars().count().abs_diff(length) <= limit)
        .map(|c| (edit_distance(&lowered, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .collect();
    let Some(best) = scored.iter().map(|(d, _)| *d).min() else {
        return Vec::new();
    };
    scored.retain(|(d, _)| *d == best);
    let mut names: Vec<&str> = scored.into_iter().map(|(_, c)| c).collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// "did you mean `a`?" or "did you mean one of `a`, `b` or `c`?".
pub fn did_you_mean(names: &[&str]) -> Option<String> {
    match names {
        [] => None,
        [one] => Some(format!("did you mean `{one}`?")),
        [init @ .., last] => {
            let init: Vec<String> = init.iter().map(|n| format!("`{n}`")).collect();
            Some(format!(
                "did you mean one of {} or `{last}`?",
                init.join(", ")
            ))
        }
    }
}

/// What a layer name from PyTorch or Keras is called in cnnc, or that cnnc lacks it. Users
/// type the names they know (`Conv2d`, `linear`, `BatchNorm2d`); an edit distance would offer
/// unrelated layers for them (`gelu` is one letter from `relu`, and means something else).
pub enum Equivalent {
    /// The cnnc layer of that name.
    Layer(&'static str),
    /// An operation cnnc does not provide (yet).
    Missing(&'static str),
}

/// Keys are lower case without `_`, so `MaxPool2d`, `max_pool2d` and `maxpool2d` all match.
const EQUIVALENTS: &[(&str, Equivalent)] = &[
    ("linear", Equivalent::Layer("dense")),
    ("fullyconnected", Equivalent::Layer("dense")),
    ("fc", Equivalent::Layer("dense")),
    ("conv2d", Equivalent::Layer("conv")),
    ("convolution", Equivalent::Layer("conv")),
    ("convolution2d", Equivalent::Layer("conv")),
    ("depthwiseconv", Equivalent::Layer("dwconv")),
    ("depthwiseconv2d", Equivalent::Layer("dwconv")),
    ("batchnorm2d", Equivalent::Layer("batchnorm")),
    ("batchnormalization", Equivalent::Layer("batchnorm")),
    ("bn", Equivalent::Layer("batchnorm")),
    ("maxpool2d", Equivalent::Layer("maxpool")),
    ("maxpooling2d", Equivalent::Layer("maxpool")),
    ("avgpool2d", Equivalent::Layer("avgpool")),
    ("averagepooling2d", Equivalent::Layer("avgpool")),
    ("adaptiveavgpool2d", Equivalent::Layer("adaptive_avgpool")),
    (
        "globalaveragepooling2d",
        Equivalent::Layer("global_avgpool"),
    ),
    ("globalavgpool", Equivalent::Layer("global_avgpool")),
    ("globalmaxpooling2d", Equivalent::Layer("global_maxpool")),
    ("channelshuffle", Equivalent::Layer("channel_shuffle")),
    ("chunk", Equivalent::Layer("split")),
    ("cat", Equivalent::Layer("concat")),
    ("concatenate", Equivalent::Layer("concat")),
    ("leakyrelu", Equivalent::Layer("leaky_relu")),
    ("gelu", Equivalent::Layer("gelu")),
    ("elu", Equivalent::Layer("elu")),
    ("selu", Equivalent::Missing("SELU")),
    ("prelu", Equivalent::Missing("PReLU")),
    ("hardsigmoid", Equivalent::Layer("hardsigmoid")),
    ("hardswish", Equivalent::Layer("hardswish")),
    ("mish", Equivalent::Missing("Mish")),
    ("layernorm", Equivalent::Missing("layer normalisation")),
    ("groupnorm", Equivalent::Missing("group normalisation")),
    (
        "instancenorm",
        Equivalent::Missing("instance normalisation"),
    ),
    (
        "instancenorm2d",
        Equivalent::Missing("instance normalisation"),
    ),
    ("upsample", Equivalent::Layer("upsample")),
    ("upsampling2d", Equivalent::Layer("upsample")),
    ("interpolate", Equivalent::Layer("upsample")),
    (
        "convtranspose2d",
        Equivalent::Missing("transposed convolution"),
    ),
    (
        "conv2dtranspose",
        Equivalent::Missing("transposed convolution"),
    ),
    ("deconv", Equivalent::Missing("transposed convolution")),
];

/// The cnnc equivalent of a framework's layer name, when the name is one.
pub fn equivalent(name: &str) -> Option<&'static Equivalent> {
    let key: String = name
        .chars()
        .filter(|c| *c != '_')
        .flat_map(char::to_lowercase)
        .collect();
    EQUIVALENTS.iter().find(|(k, _)| *k == key).map(|(_, e)| e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_close_names() {
        assert_eq!(closest("comv", ["conv", "dense", "relu"]), Some("conv"));
        assert_eq!(
            closest("batchnrom", ["batchnorm", "relu"]),
            Some("batchnorm")
        );
        assert_eq!(closest("xyz", ["conv", "dense"]), None);
    }

    #[test]
    fn ties_are_all_shown() {
        let layers = ["layer1", "layer2", "layer3", "layer4", "fc"];
        assert_eq!(
            closest_all("layer5", layers),
            ["layer1", "layer2", "layer3", "layer4"]
        );
        assert_eq!(closest_all("layr2", layers), ["layer2"]);
        assert_eq!(
            did_you_mean(&["a", "b", "c"]).as_deref(),
            Some("did you mean one of `a`, `b` or `c`?")
        );
    }

    #[test]
    fn framework_names_map_to_cnnc_layers() {
        for (name, expected) in [
            ("Conv2d", "conv"),
            ("linear", "dense"),
            ("BatchNorm2d", "batchnorm"),
            ("MaxPool2d", "maxpool"),
            ("max_pool2d", "maxpool"),
            ("depthwise_conv", "dwconv"),
            ("DepthwiseConv2D", "dwconv"),
        ] {
            match equivalent(name) {
                Some(Equivalent::Layer(layer)) => assert_eq!(*layer, expected, "{name}"),
                _ => panic!("{name} has no equivalent"),
            }
        }
        for (name, expected) in [
            ("GELU", "gelu"),
            ("LeakyReLU", "leaky_relu"),
            ("ELU", "elu"),
            ("Hardsigmoid", "hardsigmoid"),
            ("ChannelShuffle", "channel_shuffle"),
            ("chunk", "split"),
            ("UpSampling2D", "upsample"),
            ("interpolate", "upsample"),
        ] {
            assert!(
                matches!(equivalent(name), Some(Equivalent::Layer(l)) if *l == expected),
                "{name}"
            );
        }
        assert!(matches!(equivalent("selu"), Some(Equivalent::Missing(_))));
        assert!(equivalent("conv").is_none());
    }
}
