//! The standard library, embedded in the binary so that an installed `cnnc` finds `std/`
//! from any directory.

/// Every file of `std/`, by the path an import names it with.
pub static FILES: &[(&str, &str)] = &[("std/lenet.cnn", include_str!("../std/lenet.cnn"))];

/// The text of a standard-library file.
pub fn get(path: &str) -> Option<&'static str> {
    FILES
        .iter()
        .find(|(name, _)| *name == path)
        .map(|(_, text)| *text)
}
