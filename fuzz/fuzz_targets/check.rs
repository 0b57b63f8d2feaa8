//! Fuzz target: arbitrary bytes, read as UTF-8 (lossily), through what `cnnc check` does with
//! a file — parse, compile, render the diagnostics — and the graph printer.
//!
//! It asserts the same properties as the deterministic sweep of `tests/robustness.rs`: no
//! panic, errors render as text that says "error", and a program without errors has a graph
//! with an output for every network. Hangs and memory growth are libFuzzer's `-timeout` and
//! `-rss_limit_mb` (see `fuzz/README.md`).

#![no_main]

use cnnc::driver::{self, Select};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let program = driver::load_source("fuzz.cnn", &text);
    let compilation = driver::compile(program, &Select::All);
    let rendered = compilation.render_diagnostics();
    if compilation.has_errors() {
        assert!(
            rendered.contains("error"),
            "errors rendered as {rendered:?}"
        );
        return;
    }
    // Without errors, `compile` has found at least one network ("defines no network" is an
    // error) and expanded each one to a graph.
    assert!(
        !compilation.networks.is_empty(),
        "no errors and no networks"
    );
    for network in &compilation.networks {
        let graph = network
            .graph
            .as_ref()
            .unwrap_or_else(|| panic!("network `{}` has no errors and no graph", network.name));
        assert!(
            graph.output.is_some_and(|id| graph.nodes.get(id).is_some()),
            "network `{}` has no output node",
            network.name
        );
        let _ = graph.dump();
    }
});
