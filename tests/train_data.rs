//! Data sets for training: the MNIST files shipped with the repository, and every bad input
//! rendered as the diagnostic a user would see (one snapshot per problem).

use cnnc::diag::render_plain;
use cnnc::driver::{self, Select};
use cnnc::graph::Graph;
use cnnc::source::SourceMap;
use cnnc::train::data::{class_count, InputSpec};
use cnnc::train::data_error::DataError;
use cnnc::train::data_files::{labels_path_for, open_dataset};
use std::path::{Path, PathBuf};

const LENET5: &str = "
network lenet5(image: 32x32x1) {
    preprocess(mean: [0.1307], std: [0.3081])
    image
      -> conv1: conv(6, 5) -> relu -> avgpool(2)
      -> conv2: conv(16, 5) -> relu -> avgpool(2)
      -> flatten
      -> fc1: dense(120) -> relu
      -> fc2: dense(84) -> relu
      -> fc3: dense(10) -> softmax
}
";

fn graph(source: &str) -> Graph {
    let compilation = driver::compile(driver::load_source("test.cnn", source), &Select::First);
    assert!(
        !compilation.has_errors(),
        "{}",
        compilation.render_diagnostics()
    );
    let graph = compilation.graphs().next().expect("one network").clone();
    graph
}

fn lenet5_spec(pad: usize) -> (InputSpec, usize) {
    let graph = graph(LENET5);
    let spec = InputSpec::from_graph(&graph, pad).expect("one input");
    (spec, class_count(&graph).expect("a classifier"))
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn mnist_subset_loads_with_padding_and_sane_labels() {
    let (spec, n_classes) = lenet5_spec(2);
    let train = open_dataset(
        &repo("tests/data/mnist/train-images.npy"),
        None,
        &spec,
        n_classes,
    )
    .expect("the subset loads");
    assert_eq!(train.len(), 512);
    // The counts written in tests/data/mnist/README.md.
    assert_eq!(
        train.label_histogram(),
        [48, 69, 60, 44, 49, 52, 50, 44, 52, 44]
    );
    let test = open_dataset(
        &repo("tests/data/mnist/test-images.npy"),
        Some(&repo("tests/data/mnist/test-labels.npy")),
        &spec,
        n_classes,
    )
    .expect("the subset loads");
    assert_eq!(
        test.label_histogram(),
        [22, 35, 17, 28, 30, 24, 33, 21, 20, 26]
    );

    let batch = train.batch(&[0, 1]);
    assert_eq!(batch.images.shape(), [2, 32, 32, 1]);
    // The border is black normalized: (0 − 0.1307)/0.3081 = −0.4242129.
    let black = -0.1307f32 / 0.3081;
    assert!((batch.images[[0, 0, 0, 0]] - black).abs() < 1e-6);
    assert!((batch.images[[1, 31, 31, 0]] - black).abs() < 1e-6);
    // A digit has ink: the brightest pixel of each image is white, (1 − 0.1307)/0.3081.
    let white = (1.0f32 - 0.1307) / 0.3081;
    for image_idx in 0..2 {
        let brightest = (0..32)
            .flat_map(|y| (0..32).map(move |x| (y, x)))
            .map(|(y, x)| batch.images[[image_idx, y, x, 0]])
            .fold(f32::MIN, f32::max);
        assert!(
            (brightest - white).abs() < 1e-5,
            "image {image_idx}: {brightest}"
        );
    }
    // MNIST's mean pixel is about 0.13: normalized, the mean of a batch is near 0 (the
    // padding, 22 % of a 32×32 image, pulls it below).
    let all = train.batch(&train.epoch_order(0, 0, false)).images;
    let mean = all.iter().map(|&v| v as f64).sum::<f64>() / all.len() as f64;
    assert!((-0.2..0.1).contains(&mean), "mean {mean}");
}

#[test]
fn full_mnist_files_load() {
    let (spec, n_classes) = lenet5_spec(2);
    let train = open_dataset(
        &repo("examples/data/mnist/train-images.npy"),
        None,
        &spec,
        n_classes,
    )
    .expect("loads");
    // The counts in examples/data/mnist/README.md.
    assert_eq!(
        train.label_histogram(),
        [699, 800, 704, 709, 679, 606, 701, 766, 680, 656]
    );
    let (rest, val) = train.split_validation(0.1, 1).expect("valid");
    assert_eq!((rest.len(), val.len()), (6300, 700));
    let val_counts = val.label_histogram();
    // A random 10 % has each class near 70: a sanity check of the split, not of chance.
    assert!(
        val_counts.iter().all(|&n| (40..=100).contains(&n)),
        "{val_counts:?}"
    );
}

#[test]
fn labels_are_found_beside_the_images() {
    let find = |p: &str| labels_path_for(Path::new(p)).map(|p| p.display().to_string());
    assert_eq!(find("d/train-images.npy").unwrap(), "d/train-labels.npy");
    assert_eq!(find("images.npy").unwrap(), "labels.npy");
    // The last `images` of the file name, never the folder's.
    assert_eq!(
        find("images/test-images-v2.npy").unwrap(),
        "images/test-labels-v2.npy"
    );
    assert!(find("images/digits.npy").is_err());
}

// ---------------------------------------------------------------------------------------------
// Bad inputs: each renders as a diagnostic, with the scratch folder shown as `$DIR`.

/// A scratch folder of this test process, emptied first.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cnnc-train-data-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

/// A `.npy` file of `descr` with the given shape and raw little-endian data.
fn write_npy(path: &Path, descr: &str, shape: &[usize], data: &[u8]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).expect("write .npy");
}

/// `n` digits of 28×28 (blank) with labels `labels` as int64.
fn write_pair(dir: &Path, n: usize, labels: &[i64]) -> PathBuf {
    let images = dir.join("train-images.npy");
    write_npy(&images, "|u1", &[n, 28, 28, 1], &vec![0u8; n * 784]);
    let bytes: Vec<u8> = labels.iter().flat_map(|l| l.to_le_bytes()).collect();
    write_npy(
        &dir.join("train-labels.npy"),
        "<i8",
        &[labels.len()],
        &bytes,
    );
    images
}

fn rendered(error: DataError, dir: &Path) -> String {
    render_plain(&SourceMap::new(), &[error.diagnostic()])
        .replace(&dir.display().to_string(), "$DIR")
}

fn load_error(dir: &Path, images: &Path, labels: Option<&Path>, pad: usize) -> String {
    let (spec, n_classes) = lenet5_spec(pad);
    match open_dataset(images, labels, &spec, n_classes) {
        Ok(data) => panic!("loaded {} images", data.len()),
        Err(error) => rendered(error, dir),
    }
}

#[test]
fn label_out_of_range() {
    let dir = scratch("range");
    let images = write_pair(&dir, 4, &[0, 10, 3, -1]);
    insta::assert_snapshot!(load_error(&dir, &images, None, 2));
}

#[test]
fn images_of_the_wrong_size_suggest_the_padding() {
    let dir = scratch("size");
    let images = write_pair(&dir, 2, &[0, 1]);
    insta::assert_snapshot!(load_error(&dir, &images, None, 0));
}

#[test]
fn images_of_the_wrong_channels() {
    let dir = scratch("channels");
    let images = dir.join("rgb-images.npy");
    write_npy(&images, "|u1", &[2, 28, 28, 3], &[0u8; 2 * 784 * 3]);
    write_npy(&dir.join("rgb-labels.npy"), "|u1", &[2], &[0, 1]);
    insta::assert_snapshot!(load_error(&dir, &images, None, 2));
}

#[test]
fn images_array_of_the_wrong_rank() {
    let dir = scratch("rank");
    let images = dir.join("images.npy");
    write_npy(&images, "<f4", &[784], &[0u8; 784 * 4]);
    insta::assert_snapshot!(load_error(&dir, &images, Some(&dir.join("labels.npy")), 2));
}

#[test]
fn image_and_label_counts_differ() {
    let dir = scratch("count");
    let images = write_pair(&dir, 3, &[0, 1]);
    insta::assert_snapshot!(load_error(&dir, &images, None, 2));
}

#[test]
fn missing_labels_file() {
    let dir = scratch("missing");
    let images = dir.join("test-images.npy");
    write_npy(&images, "|u1", &[1, 28, 28, 1], &[0u8; 784]);
    insta::assert_snapshot!(load_error(&dir, &images, None, 2));
}

#[test]
fn labels_name_cannot_be_derived() {
    let dir = scratch("noname");
    let images = dir.join("digits.npy");
    write_npy(&images, "|u1", &[1, 28, 28, 1], &[0u8; 784]);
    insta::assert_snapshot!(load_error(&dir, &images, None, 2));
}

#[test]
fn float_labels() {
    let dir = scratch("float");
    let images = dir.join("images.npy");
    write_npy(&images, "|u1", &[2, 28, 28, 1], &[0u8; 2 * 784]);
    let floats: Vec<u8> = [0.0f32, 1.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    write_npy(&dir.join("labels.npy"), "<f4", &[2], &floats);
    insta::assert_snapshot!(load_error(&dir, &images, None, 2));
}

#[test]
fn labels_of_two_dimensions() {
    let dir = scratch("labels2d");
    let images = dir.join("images.npy");
    write_npy(&images, "|u1", &[2, 28, 28, 1], &[0u8; 2 * 784]);
    write_npy(&dir.join("labels.npy"), "<i4", &[2, 1], &[0u8; 8]);
    insta::assert_snapshot!(load_error(&dir, &images, None, 2));
}

#[test]
fn labels_file_that_is_not_npy() {
    let dir = scratch("notnpy");
    let images = dir.join("images.npy");
    write_npy(&images, "|u1", &[2, 28, 28, 1], &[0u8; 2 * 784]);
    std::fs::write(dir.join("labels.npy"), "0\n1\n").expect("write");
    insta::assert_snapshot!(load_error(&dir, &images, None, 2));
}

#[test]
fn int32_and_uint8_labels_load() {
    let dir = scratch("widths");
    let images = dir.join("images.npy");
    write_npy(&images, "|u1", &[3, 28, 28, 1], &[0u8; 3 * 784]);
    let int32: Vec<u8> = [9i32, 0, 4].iter().flat_map(|v| v.to_le_bytes()).collect();
    write_npy(&dir.join("labels.npy"), "<i4", &[3], &int32);
    let (spec, n_classes) = lenet5_spec(2);
    let data = open_dataset(&images, None, &spec, n_classes).expect("int32 labels load");
    assert_eq!((data.label(0), data.label(1), data.label(2)), (9, 0, 4));
    write_npy(&dir.join("labels.npy"), "|u1", &[3], &[1, 2, 3]);
    let data = open_dataset(&images, None, &spec, n_classes).expect("uint8 labels load");
    assert_eq!(data.label_histogram()[1..4], [1, 1, 1]);
}

// ---------------------------------------------------------------------------------------------
// Image folders

/// A network for 8×8 RGB images in `n_classes` classes.
fn small_rgb(n_classes: usize) -> (InputSpec, usize) {
    let source =
        format!("network small(image: 8x8x3) {{ image -> flatten -> fc: dense({n_classes}) }}");
    let graph = graph(&source);
    (
        InputSpec::from_graph(&graph, 0).expect("one input"),
        class_count(&graph).expect("classifier"),
    )
}

fn write_png(path: &Path, width: u32, height: u32, rgb: [u8; 3]) {
    let image = image::RgbImage::from_pixel(width, height, image::Rgb(rgb));
    image.save(path).expect("write png");
}

#[test]
fn image_folder_loads_classes_in_sorted_order() {
    let dir = scratch("folder");
    for (class, colour) in [("red", [255, 0, 0]), ("blue", [0, 0, 255])] {
        std::fs::create_dir(dir.join(class)).expect("mkdir");
        write_png(&dir.join(class).join("a.png"), 8, 8, colour);
        write_png(&dir.join(class).join("b.PNG"), 16, 16, colour);
        std::fs::write(dir.join(class).join("notes.txt"), "skipped").expect("write");
    }
    let (spec, n_classes) = small_rgb(2);
    let data = open_dataset(&dir, None, &spec, n_classes).expect("loads");
    assert_eq!(data.class_names(), ["blue", "red"]);
    assert_eq!(data.len(), 4);
    assert_eq!(data.label_histogram(), [2, 2]);
    // Blue first: pixel (0, 0) of image 0 is 0, 0, 1; of image 2 (red) 1, 0, 0. Resizing a
    // uniform 16×16 image keeps its colour.
    let batch = data.batch(&[0, 1, 2]);
    assert_eq!(batch.labels, [0, 0, 1]);
    let pixel = |i: usize| -> Vec<f32> { (0..3).map(|c| batch.images[[i, 3, 5, c]]).collect() };
    assert_eq!(pixel(0), [0.0, 0.0, 1.0]);
    assert_eq!(pixel(1), [0.0, 0.0, 1.0]);
    assert_eq!(pixel(2), [1.0, 0.0, 0.0]);
}

#[test]
fn empty_folder() {
    let dir = scratch("empty");
    let (spec, n_classes) = small_rgb(2);
    let error = open_dataset(&dir, None, &spec, n_classes).unwrap_err();
    insta::assert_snapshot!(rendered(error, &dir));
}

#[test]
fn class_folder_without_images() {
    let dir = scratch("emptyclass");
    std::fs::create_dir(dir.join("cat")).expect("mkdir");
    std::fs::create_dir(dir.join("dog")).expect("mkdir");
    write_png(&dir.join("cat").join("1.png"), 8, 8, [1, 2, 3]);
    std::fs::write(dir.join("dog").join("readme.txt"), "no dogs yet").expect("write");
    let (spec, n_classes) = small_rgb(2);
    let error = open_dataset(&dir, None, &spec, n_classes).unwrap_err();
    insta::assert_snapshot!(rendered(error, &dir));
}

#[test]
fn folder_with_the_wrong_number_of_classes() {
    let dir = scratch("classes");
    for class in ["a", "b", "c"] {
        std::fs::create_dir(dir.join(class)).expect("mkdir");
        write_png(&dir.join(class).join("1.png"), 8, 8, [0, 0, 0]);
    }
    let (spec, n_classes) = small_rgb(2);
    let error = open_dataset(&dir, None, &spec, n_classes).unwrap_err();
    insta::assert_snapshot!(rendered(error, &dir));
}

#[test]
fn folder_with_a_broken_image() {
    let dir = scratch("broken");
    for class in ["a", "b"] {
        std::fs::create_dir(dir.join(class)).expect("mkdir");
        write_png(&dir.join(class).join("1.png"), 8, 8, [0, 0, 0]);
    }
    std::fs::write(dir.join("b").join("2.jpg"), "not a jpeg").expect("write");
    let (spec, n_classes) = small_rgb(2);
    let error = open_dataset(&dir, None, &spec, n_classes).unwrap_err();
    insta::assert_snapshot!(rendered(error, &dir));
}

#[test]
fn network_that_is_not_a_classifier() {
    let graph = graph("network features(image: 8x8x3) { image -> conv(4, 3) }");
    let error = class_count(&graph).unwrap_err();
    insta::assert_snapshot!(render_plain(&SourceMap::new(), &[error.diagnostic()]));
}

// ---------------------------------------------------------------------------------------------
// Integer .npy arrays (labels)

fn npy_in_memory(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dir = scratch(&format!("npy-{}", descr.replace(['<', '>', '|'], "_")));
    let path = dir.join("a.npy");
    write_npy(&path, descr, shape, data);
    std::fs::read(path).expect("read back")
}

#[test]
fn integer_arrays_of_every_width_and_byte_order() {
    use cnnc::runtime::parse_npy_integers;
    let cases: [(&str, Vec<u8>, Vec<i64>); 6] = [
        ("|i1", vec![0xff, 0x05], vec![-1, 5]),
        ("<u2", vec![0x01, 0x02, 0xff, 0xff], vec![0x0201, 65535]),
        (">i2", vec![0x01, 0x02, 0xff, 0xfe], vec![0x0102, -2]),
        ("<u4", vec![0, 0, 0, 0x80, 7, 0, 0, 0], vec![1 << 31, 7]),
        (
            ">i8",
            vec![
                0, 0, 0, 0, 0, 0, 0, 9, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfd,
            ],
            vec![9, -3],
        ),
        ("|u1", vec![200, 3], vec![200, 3]),
    ];
    for (descr, data, expected) in cases {
        let bytes = npy_in_memory(descr, &[2], &data);
        let (shape, values) = parse_npy_integers(&bytes).expect(descr);
        assert_eq!(shape, [2], "{descr}");
        assert_eq!(values, expected, "{descr}");
    }
    let too_large = npy_in_memory("<u8", &[1], &u64::MAX.to_le_bytes());
    assert_eq!(
        parse_npy_integers(&too_large).unwrap_err().to_string(),
        "it holds an unsigned 64-bit integer too large for cnnc"
    );
    let booleans = npy_in_memory("|b1", &[1], &[1]);
    assert_eq!(
        parse_npy_integers(&booleans).unwrap_err().to_string(),
        "its dtype is bool (`|b1`), not an integer type"
    );
    let short = npy_in_memory("<i4", &[3], &[0; 8]);
    assert!(parse_npy_integers(&short).is_err());
}
