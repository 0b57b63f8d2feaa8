//! The standard library, embedded in the binary so that an installed `cnnc` finds `std/`
//! from any directory.

/// Every file of `std/`, by the path an import names it with.
pub static FILES: &[(&str, &str)] = &[
    ("std/alexnet.cnn", include_str!("../std/alexnet.cnn")),
    ("std/convnext.cnn", include_str!("../std/convnext.cnn")),
    (
        "std/efficientnet.cnn",
        include_str!("../std/efficientnet.cnn"),
    ),
    ("std/googlenet.cnn", include_str!("../std/googlenet.cnn")),
    ("std/lenet.cnn", include_str!("../std/lenet.cnn")),
    ("std/mobilenet.cnn", include_str!("../std/mobilenet.cnn")),
    ("std/resnet.cnn", include_str!("../std/resnet.cnn")),
    ("std/shufflenet.cnn", include_str!("../std/shufflenet.cnn")),
    ("std/vgg.cnn", include_str!("../std/vgg.cnn")),
];

/// The text of a standard-library file.
pub fn get(path: &str) -> Option<&'static str> {
    FILES
        .iter()
        .find(|(name, _)| *name == path)
        .map(|(_, text)| *text)
}

/// Data files of `std/` that networks refer to but never import, such as the class names a
/// `labels("...")` declaration names. Kept apart from [`FILES`] so that an import cannot
/// name them and the list of importable files stays a list of programs.
pub static DATA_FILES: &[(&str, &str)] = &[(
    "std/imagenet_classes.txt",
    include_str!("../std/imagenet_classes.txt"),
)];

/// The text of a standard-library data file.
pub fn get_data(path: &str) -> Option<&'static str> {
    DATA_FILES
        .iter()
        .find(|(name, _)| *name == path)
        .map(|(_, text)| *text)
}
