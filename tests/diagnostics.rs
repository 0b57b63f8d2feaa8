//! The diagnostics that no program in `examples/bad/` can show, because they are about the
//! files and flags of a run (a weights file, an input, an output path, a batch too large): one
//! test per diagnostic code, each building its bad files in a temp folder and snapshotting
//! what `cnnc` prints. `src/diag/code.rs` names each test here as the fixture of its code.

use std::path::{Path, PathBuf};

mod common;

use common::{cnnc, Output};

/// A folder of this test binary's own files under `target/`, created on first use.
fn temp_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("diagnostics");
    std::fs::create_dir_all(&dir).expect("the temp folder can be created");
    dir
}

/// Writes `text` to `name` in the temp folder and gives back its path.
fn temp_file(name: &str, text: impl AsRef<[u8]>) -> String {
    let path = temp_dir().join(name);
    std::fs::write(&path, text).expect("the temp file can be written");
    path.display().to_string()
}

/// Exit code, stdout and stderr, with the temp folder written as `[TMP]` so that snapshots do
/// not depend on where the repository is checked out.
fn transcript(out: &Output) -> String {
    common::transcript(out).replace(&temp_dir().display().to_string(), "[TMP]")
}

/// A one-conv network on a 4×4 gray image whose weights are `c1.weight` (2×1×3×3), `c1.bias`,
/// written as `{stem}.cnn` (one file per test: the tests run in parallel).
fn small_network(stem: &str) -> String {
    temp_file(
        &format!("{stem}.cnn"),
        "network small(x: 4x4x1) {\n    x -> c1: conv(2, 3) -> relu\n}\n",
    )
}

/// A network of 4,000,000,000 parameters (a dense layer of 2e9 outputs on one input): each
/// tensor is within the per-tensor limit, their total is not.
fn huge_network(stem: &str) -> String {
    temp_file(
        &format!("{stem}.cnn"),
        "network huge(x: 1x1x1) {\n    x -> flatten -> dense(2000000000)\n}\n",
    )
}

#[test]
fn input_batch_too_large() {
    let network = small_network("input_batch_too_large");
    let out = cnnc(&["run", &network, "--batch", "1000000000"]);
    assert_eq!(out.code, 1);
    insta::assert_snapshot!(transcript(&out));
}

#[test]
fn input_count_differs() {
    let network = small_network("input_count_differs");
    let out = cnnc(&["run", &network, "--input", "a.npy", "--input", "b.npy"]);
    assert_eq!(out.code, 1);
    insta::assert_snapshot!(transcript(&out));
}

#[test]
fn output_file_unwritable() {
    let network = small_network("output_file_unwritable");
    let output = temp_dir().join("no_such_folder").join("out.npy");
    let out = cnnc(&["run", &network, "--output", &output.display().to_string()]);
    assert_eq!(out.code, 1);
    insta::assert_snapshot!(transcript(&out));
}

/// A batch whose output is over the 2^31-element limit, with the interpreter and with the JIT:
/// both point at the layer that makes the output.
#[test]
fn run_output_too_large() {
    let network = temp_file(
        "wide.cnn",
        "network wide(x: 1x1x1) {\n    x -> flatten -> dense(4096)\n}\n",
    );
    let mut transcripts = Vec::new();
    for backend in ["reference", "jit"] {
        let out = cnnc(&["run", &network, "--batch", "600000", "--backend", backend]);
        assert_eq!(out.code, 1);
        transcripts.push(transcript(&out));
    }
    insta::assert_snapshot!(transcripts.join("\n"));
}

#[test]
fn weights_too_large_to_seed() {
    let network = huge_network("weights_too_large_to_seed");
    let out = cnnc(&["run", &network]);
    assert_eq!(out.code, 1);
    insta::assert_snapshot!(transcript(&out));
}

#[test]
fn bench_weights_too_large_to_seed() {
    let network = huge_network("bench_weights_too_large_to_seed");
    let out = cnnc(&["bench", &network]);
    assert_eq!(out.code, 1);
    insta::assert_snapshot!(transcript(&out));
}

/// A safetensors file whose `c1.weight` holds integers (I32), which cnnc does not convert.
#[test]
fn weights_of_wrong_dtype() {
    let network = small_network("weights_of_wrong_dtype");
    let header = concat!(
        "{\"c1.weight\":{\"dtype\":\"I32\",\"shape\":[2,1,3,3],\"data_offsets\":[0,72]},",
        "\"c1.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[72,80]}}"
    );
    let mut header = header.to_string();
    while !header.len().is_multiple_of(8) {
        header.push(' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.resize(bytes.len() + 80, 0);
    let weights = temp_file("i32.safetensors", bytes);
    let out = cnnc(&["run", &network, "--weights", &weights]);
    assert_eq!(out.code, 1);
    insta::assert_snapshot!(transcript(&out));
}

// ---------------------------------------------------------------------------------------------
// Diagnostics only a bug in cnnc reaches: rendered from the stage's own error value through
// the conversion that sits next to its definition, so the text a user would report is seen.

use cnnc::codegen::CodegenError;
use cnnc::diag::{self, Code, Fixture};
use cnnc::driver::{self, Compilation, Select};
use cnnc::opt::OptError;
use cnnc::runtime::{Dims, WeightsError};
use cnnc::source::{SourceMap, Span};

/// `examples/lenet5.cnn`, compiled, for diagnostics that point at one of its layers.
fn lenet5() -> Compilation {
    let program = driver::load(Path::new("examples/lenet5.cnn")).expect("the example is readable");
    let compilation = driver::compile(program, &Select::All);
    assert!(!compilation.has_errors());
    compilation
}

#[test]
fn internal_parser_error() {
    let mut sources = SourceMap::new();
    let text = "network n(x: 8x8x3) {\n    x -> relu\n}\n";
    let file = sources.add("n.cnn", text);
    let at = text.find("relu").expect("in the text");
    let diagnostic = cnnc::syntax::internal_error(Span::new(file, at..at + 4));
    insta::assert_snapshot!(diag::render_plain(&sources, &[diagnostic]));
}

#[test]
fn optimizer_broke_the_graph() {
    let errors = [
        OptError::Broken {
            pass: "fold_batch_norm",
            problems: "node 3 reads node 7, which comes after it".into(),
        },
        OptError::UnknownPass {
            name: "fuse_everything".into(),
            known: "fold_batch_norm, fuse_conv_activation".into(),
        },
    ];
    let diagnostics: Vec<_> = errors.iter().map(OptError::to_diagnostic).collect();
    insta::assert_snapshot!(diag::render_plain(&SourceMap::new(), &diagnostics));
}

#[test]
fn codegen_failed() {
    let compilation = lenet5();
    let graph = compilation.graphs().next().expect("one network");
    let conv1 = graph
        .nodes
        .keys()
        .find(|&id| graph.nodes[id].path == "conv1")
        .expect("lenet5 has conv1");
    let errors = [
        CodegenError::Weights(WeightsError::Missing {
            name: "conv1.weight".into(),
            expected: Dims::of(&[6, 1, 5, 5]),
            node: conv1,
            layer: "conv `conv1`".into(),
            found_as: None,
        }),
        CodegenError::Cranelift("Verifier errors".into()),
    ];
    let diagnostics: Vec<_> = errors.iter().map(|e| e.to_diagnostic(graph)).collect();
    insta::assert_snapshot!(diag::render_plain(
        &compilation.program.sources,
        &diagnostics
    ));
}

// ---------------------------------------------------------------------------------------------
// The registry

/// The snapshot file a fixture's rendering is recorded in.
fn snapshot_of(fixture: Fixture) -> PathBuf {
    let snapshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots");
    match fixture {
        Fixture::Program(path) => {
            let file_name = Path::new(path)
                .file_name()
                .expect("a file")
                .to_string_lossy();
            snapshots.join(format!(
                "examples__bad_examples_diagnostics@{file_name}.snap"
            ))
        }
        Fixture::Case { test_file, name } => {
            let stem = Path::new(test_file)
                .file_stem()
                .expect("a file")
                .to_string_lossy();
            snapshots.join(format!("{stem}__{name}.snap"))
        }
    }
}

/// Every code has a fixture that exists, a reviewed snapshot of it, and that snapshot shows the
/// code: a code cannot be added without showing once what a user reads.
#[test]
fn every_code_has_a_fixture_and_a_snapshot() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut problems = Vec::new();
    for &code in Code::ALL {
        let fixture = code.fixture();
        match fixture {
            Fixture::Program(path) => match std::fs::read_to_string(root.join(path)) {
                Ok(text) if text.starts_with("// expect: ") => {}
                Ok(_) => problems.push(format!("{code}: {path} does not start with `// expect: `")),
                Err(error) => problems.push(format!("{code}: cannot read {path}: {error}")),
            },
            Fixture::Case { test_file, name } => {
                let text = std::fs::read_to_string(root.join(test_file)).unwrap_or_default();
                if !text.contains(&format!("fn {name}()")) {
                    problems.push(format!("{code}: {test_file} has no test `{name}`"));
                }
            }
        }
        let snapshot = snapshot_of(fixture);
        match std::fs::read_to_string(&snapshot) {
            Ok(text) if text.contains(&format!("[{code}]")) => {}
            Ok(_) => problems.push(format!("{code}: {} does not show it", snapshot.display())),
            Err(_) => problems.push(format!("{code}: no snapshot {}", snapshot.display())),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every code is spelled once, in kebab-case, and every code a snapshot shows is registered.
#[test]
fn every_rendered_code_is_registered() {
    let mut seen = std::collections::HashSet::new();
    for &code in Code::ALL {
        let text = code.as_str();
        assert!(seen.insert(text), "`{text}` is registered twice");
        assert!(
            text.split('-')
                .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase())),
            "`{text}` is not kebab-case"
        );
        assert!(!code.title().is_empty(), "`{text}` has no title");
    }
    let snapshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots");
    for entry in std::fs::read_dir(snapshots).expect("the snapshots folder") {
        let path = entry.expect("an entry").path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for severity in ["error[", "warning["] {
            for rest in text.split(severity).skip(1) {
                let Some((code, _)) = rest.split_once(']') else {
                    continue;
                };
                assert!(
                    seen.contains(code),
                    "{} shows `{code}`, which src/diag/code.rs does not list",
                    path.display()
                );
            }
        }
    }
}
