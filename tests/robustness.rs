//! Robustness: no input makes cnnc panic, hang or use unbounded memory.
//!
//! Every case goes through what `cnnc check`, `cnnc summary` and `cnnc emit ast|graph` do with
//! a file: load, compile, render the diagnostics, dump the syntax tree, and print the summary
//! table, the graph dump and the JSON report. A case runs on a thread of its own, so that a
//! hang becomes a failed test naming its input instead of a stuck test run, and under a
//! counting allocator, so that runaway memory is caught too. The parts:
//!
//! - a deterministic fuzz-style sweep (random bytes, token soup, generated programs,
//!   truncations and mutations of the example and standard-library files);
//! - hand-written hostile inputs, each of which must give a specific, clean diagnostic;
//! - the sliding-window output-size formula against a brute-force count;
//! - known bugs, as ignored tests that say what goes wrong today.
//!
//! The longer-running coverage-guided fuzzer over the same pipeline lives in `fuzz/`.

use cnnc::driver::{self, Select};
use cnnc::graph::infer::{same_padding, window_output};
use cnnc::graph::summary::Summary;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fmt::Write as _;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Memory accounting

/// Counts the bytes each thread holds, so a case (which runs on a thread of its own) can be
/// checked against a memory budget. Bytes freed by a thread other than the one that allocated
/// them make the counts drift, which is harmless here: a case allocates and frees its own data.
struct CountingAllocator;

thread_local! {
    static LIVE_BYTES: Cell<isize> = const { Cell::new(0) };
    static PEAK_BYTES: Cell<isize> = const { Cell::new(0) };
}

/// Past this, allocations fail and the process aborts: a last resort so that a runaway case
/// cannot take the machine down before its peak is checked against [`MEMORY_BUDGET`].
const HARD_MEMORY_LIMIT: isize = 2 << 30;

/// The most a single case may hold at once. cnnc keeps the source, its syntax tree and a graph
/// of at most 100,000 nodes; the largest legitimate case (expanding up to that limit) holds
/// about 125 MiB.
const MEMORY_BUDGET: isize = 256 << 20;

fn reserve(bytes: usize) -> bool {
    LIVE_BYTES
        .try_with(|live| {
            let new = live.get().saturating_add(bytes as isize);
            if new > HARD_MEMORY_LIMIT {
                return false;
            }
            live.set(new);
            let _ = PEAK_BYTES.try_with(|peak| peak.set(peak.get().max(new)));
            true
        })
        .unwrap_or(true)
}

fn release(bytes: usize) {
    let _ = LIVE_BYTES.try_with(|live| live.set(live.get() - bytes as isize));
}

// SAFETY: every method forwards to `System` with the same arguments; the bookkeeping around
// the calls touches only const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !reserve(layout.size()) {
            return std::ptr::null_mut();
        }
        let ptr = unsafe { System.alloc(layout) };
        if ptr.is_null() {
            release(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !reserve(layout.size()) {
            return std::ptr::null_mut();
        }
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if ptr.is_null() {
            release(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        release(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() && !reserve(new_size - layout.size()) {
            return std::ptr::null_mut();
        }
        let new_ptr = unsafe { System.realloc(ptr, layout, new_size) };
        if new_ptr.is_null() {
            if new_size > layout.size() {
                release(new_size - layout.size());
            }
        } else if new_size < layout.size() {
            release(layout.size() - new_size);
        }
        new_ptr
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

// ---------------------------------------------------------------------------------------------
// Running one case

/// A hang check, not a performance assertion: the slowest legitimate cases (the exponential
/// block calls and the 1 MB pipeline, which run into the expansion limits) take about 0.6 s
/// of CPU in the dev profile. The limit is on the case thread's own CPU time, so a machine
/// busy with other work (tests run in parallel; CI may share a host) does not trip it, while
/// a quadratic or exponential blow-up on these inputs still does.
const CASE_CPU_LIMIT: Duration = Duration::from_secs(2);

/// Wall time after which a case counts as hung whatever its CPU time (a deadlock, or a
/// machine so loaded that nothing can be judged).
const CASE_WALL_LIMIT: Duration = Duration::from_secs(60);

/// CPU time consumed so far by the calling thread.
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write to; the clock id is a constant Linux and
    // macOS both define.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(status, 0, "the thread CPU clock is readable");
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// The CLI runs the compiler on the main thread, whose stack is 8 MiB on Linux; a case gets
/// the same, not the 2 MiB of a test thread, so stack use is judged as the CLI would meet it.
const CASE_STACK_SIZE: usize = 8 << 20;

/// What the pipeline produced for one input.
struct Outcome {
    rendered: String,
    has_errors: bool,
    n_networks: usize,
    /// Networks that compiled without errors but whose graph is missing or has no output.
    networks_without_output: Vec<String>,
    elapsed: Duration,
    /// CPU time of the case's thread.
    cpu: Duration,
    peak_bytes: isize,
}

/// Inputs up to this size also go through the AST dump of `cnnc emit ast`, which is quadratic
/// in the file's size today (see `emit_ast_is_linear_in_the_file_size`); past it, the 1 MB
/// hostile inputs would trip the hang check on that known bug instead of testing the rest.
const AST_DUMP_MAX_BYTES: usize = 64 << 10;

/// What `cnnc check`, `cnnc summary`, `cnnc emit ast` and `cnnc emit graph` do with a file,
/// minus the file system.
fn pipeline(text: &str, dump_ast: bool) -> Outcome {
    let start = Instant::now();
    let program = driver::load_source("input.cnn", text);
    let compilation = driver::compile(program, &Select::All);
    let rendered = compilation.render_diagnostics();
    let mut networks_without_output = Vec::new();
    for network in &compilation.networks {
        match &network.graph {
            Some(graph)
                if !graph.outputs.is_empty()
                    && graph
                        .outputs
                        .iter()
                        .all(|&id| graph.nodes.get(id).is_some()) =>
            {
                // The printers read every node, shape and parameter: run them for coverage.
                let _ = Summary::of(graph).table();
                let _ = graph.dump();
            }
            _ if network.diagnostics.iter().any(|d| d.is_error()) => {}
            _ => networks_without_output.push(network.name.clone()),
        }
    }
    if dump_ast {
        for file in &compilation.program.files {
            let _ = cnnc::syntax::dump(&compilation.program.sources, &file.ast);
        }
    }
    let _ = cnnc::cli::json::check_report(&compilation);
    Outcome {
        has_errors: compilation.has_errors(),
        n_networks: compilation.networks.len(),
        rendered,
        networks_without_output,
        elapsed: start.elapsed(),
        cpu: Duration::ZERO,
        peak_bytes: 0,
    }
}

/// The input, shortened for a failure message: a 1 MB input must not flood the terminal.
fn excerpt(text: &str) -> String {
    const MAX: usize = 3000;
    if text.len() <= MAX {
        return format!("{text:?}");
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}... ({} bytes in all)", &text[..end], text.len())
}

/// Runs the pipeline on its own thread; fails the test, naming the case and printing its input,
/// if it panics, uses more than [`CASE_CPU_LIMIT`] of CPU (or hangs past [`CASE_WALL_LIMIT`])
/// or holds more than [`MEMORY_BUDGET`].
fn run_case(name: &str, text: &str) -> Outcome {
    run_case_with(name, text, text.len() <= AST_DUMP_MAX_BYTES)
}

fn run_case_with(name: &str, text: &str, dump_ast: bool) -> Outcome {
    let (sender, receiver) = mpsc::channel();
    let owned = text.to_string();
    std::thread::Builder::new()
        .name(name.to_string())
        .stack_size(CASE_STACK_SIZE)
        .spawn(move || {
            LIVE_BYTES.with(|live| live.set(0));
            PEAK_BYTES.with(|peak| peak.set(0));
            let cpu_start = thread_cpu_time();
            let result = panic::catch_unwind(AssertUnwindSafe(|| pipeline(&owned, dump_ast)));
            let cpu = thread_cpu_time().saturating_sub(cpu_start);
            let peak = PEAK_BYTES.with(Cell::get);
            let _ = sender.send(result.map(|outcome| Outcome {
                peak_bytes: peak,
                cpu,
                ..outcome
            }));
        })
        .expect("a thread can be spawned");
    let outcome = match receiver.recv_timeout(CASE_WALL_LIMIT) {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(payload)) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!(
                "case `{name}` panicked: {message}\ninput: {}",
                excerpt(text)
            )
        }
        Err(_) => panic!(
            "case `{name}` did not finish within {CASE_WALL_LIMIT:?}\ninput: {}",
            excerpt(text)
        ),
    };
    assert!(
        outcome.cpu <= CASE_CPU_LIMIT,
        "case `{name}` took {:?} of CPU, more than {CASE_CPU_LIMIT:?}\ninput: {}",
        outcome.cpu,
        excerpt(text)
    );
    assert!(
        outcome.peak_bytes <= MEMORY_BUDGET,
        "case `{name}` held {} MiB at its peak, over the budget of {} MiB\ninput: {}",
        outcome.peak_bytes >> 20,
        MEMORY_BUDGET >> 20,
        excerpt(text)
    );
    outcome
}

/// The properties every outcome must have, whatever the input.
fn check_invariants(name: &str, text: &str, outcome: &Outcome) {
    if outcome.has_errors {
        assert!(
            outcome.rendered.contains("error"),
            "case `{name}` has errors but renders {:?}\ninput: {}",
            outcome.rendered,
            excerpt(text)
        );
    } else {
        assert!(
            outcome.n_networks > 0 && outcome.networks_without_output.is_empty(),
            "case `{name}` compiled without errors but networks {:?} (of {}) have no output\ninput: {}",
            outcome.networks_without_output,
            outcome.n_networks,
            excerpt(text)
        );
    }
}

/// With `ROBUSTNESS_SHOW=1`, prints what a hostile input rendered, to review the messages.
fn show(name: &str, outcome: &Outcome) {
    if std::env::var_os("ROBUSTNESS_SHOW").is_some() {
        eprintln!(
            "=== {name} ({:.1?}, {} KiB)\n{}",
            outcome.elapsed,
            outcome.peak_bytes >> 10,
            excerpt(&outcome.rendered)
        );
    }
}

/// Runs a hostile input and expects an error whose rendering contains `phrase`.
fn expect_error(name: &str, text: &str, phrase: &str) -> Outcome {
    let outcome = run_case(name, text);
    show(name, &outcome);
    check_invariants(name, text, &outcome);
    assert!(
        outcome.has_errors && outcome.rendered.contains(phrase),
        "case `{name}`: expected an error mentioning {phrase:?}, got:\n{}",
        excerpt(&outcome.rendered)
    );
    outcome
}

/// Runs an input that must compile cleanly.
fn expect_ok(name: &str, text: &str) -> Outcome {
    let outcome = run_case(name, text);
    show(name, &outcome);
    check_invariants(name, text, &outcome);
    assert!(
        !outcome.has_errors,
        "case `{name}` should compile, but:\n{}",
        excerpt(&outcome.rendered)
    );
    outcome
}

// ---------------------------------------------------------------------------------------------
// Random inputs

/// splitmix64: tiny, fast and good enough to spread cases; a fixed seed makes every run test
/// the same inputs, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`; `n` must be positive.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// The words and symbols of the language, plus near misses, for token soup.
#[rustfmt::skip]
const TOKENS: &[&str] = &[
    "network", "block", "let", "return", "if", "else", "repeat", "as", "import", "use", "true",
    "false", "and", "or", "not", "for", "in", "same", "valid", "int", "float", "bool", "tensor",
    "list", "conv", "dwconv", "dense", "maxpool", "avgpool", "global_avgpool", "flatten",
    "batchnorm", "dropout", "identity", "relu", "relu6", "softmax", "concat", "channels",
    "height", "width", "len", "min", "max", "floor", "make_divisible", "preprocess", "labels",
    "x", "y", "n", "c", "stride", "pad", "groups", "bias", "weights", "dilation", "ceil_mode",
    "0", "1", "2", "3", "8", "16", "-1", "0.5", "1e3", "1e999", "99999999999999999999",
    "9223372036854775807", "2147483648", "8x8x3", "1x1x1", "32×32×1", "0x4x4", "(", ")", "[",
    "]", "{", "}", ",", ":", ";", "->", "+", "-", "*", "/", "%", "==", "!=", "<=", ">=", "<",
    ">", "=", ".", "::", "\"std/lenet.cnn\"", "\"a\\qb\"", "\"\"", "\"", "// note\n", "/*",
    "*/", "/* c */", " ", " ", " ", "\n", "\t", "\r\n", "×", "é", "\0",
];

/// Numbers that stress the checked arithmetic when they replace a number of a valid program.
const NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1",
    "2147483648",
    "4294967297",
    "9223372036854775807",
    "99999999999999999999",
    "1e999",
    "0.0",
    "100000",
];

fn token_soup(rng: &mut Rng) -> String {
    let n_tokens = 1 + rng.below(60);
    let mut out = String::new();
    for _ in 0..n_tokens {
        let token = rng.pick(TOKENS);
        out.push_str(token);
        if rng.chance(60) {
            out.push(' ');
        }
    }
    out
}

fn random_bytes(rng: &mut Rng) -> String {
    let bytes: Vec<u8> = (0..rng.below(200)).map(|_| rng.next() as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn small_int(rng: &mut Rng) -> String {
    let values = [
        "0", "1", "1", "2", "3", "3", "5", "8", "16", "64", "-1", "100000",
    ];
    rng.pick(&values).to_string()
}

/// A hyperparameter expression: mostly small numbers, sometimes arithmetic or a shape query.
fn gen_value(rng: &mut Rng) -> String {
    match rng.below(10) {
        0 => format!(
            "{} {} {}",
            small_int(rng),
            rng.pick(&["+", "-", "*", "/", "%"]),
            small_int(rng)
        ),
        1 => format!(
            "channels(x) {} {}",
            rng.pick(&["*", "/", "+"]),
            small_int(rng)
        ),
        2 => "c".to_string(),
        _ => small_int(rng),
    }
}

/// One pipeline stage of a generated program, nested at most `depth` more levels.
fn gen_stage(rng: &mut Rng, depth: usize, n_blocks: usize) -> String {
    let choice = if depth == 0 {
        rng.below(6)
    } else {
        rng.below(11)
    };
    let stage = match choice {
        0 => {
            let mut call = format!("conv({}, {}", gen_value(rng), small_int(rng));
            if rng.chance(40) {
                let _ = write!(call, ", stride: {}", small_int(rng));
            }
            if rng.chance(40) {
                let _ = write!(
                    call,
                    ", pad: {}",
                    rng.pick(&["same", "valid", "1", "[1, 2]", "-1"])
                );
            }
            if rng.chance(15) {
                let _ = write!(call, ", groups: {}", small_int(rng));
            }
            if rng.chance(10) {
                call.push_str(", weights: [[1, 0], [0, 1]]");
            }
            call + ")"
        }
        1 => format!(
            "{}pool({}, stride: {}{})",
            rng.pick(&["max", "avg"]),
            small_int(rng),
            small_int(rng),
            if rng.chance(30) {
                ", ceil_mode: true"
            } else {
                ""
            }
        ),
        2 => format!("dwconv({}, pad: same)", small_int(rng)),
        3 => rng
            .pick(&[
                "relu",
                "batchnorm",
                "identity",
                "flatten",
                "softmax",
                "global_avgpool",
                "dropout(0.5)",
            ])
            .to_string(),
        4 => format!("dense({})", gen_value(rng)),
        5 if n_blocks > 0 => format!("b{}({})", rng.below(n_blocks), gen_value(rng)),
        5 => format!("adaptive_avgpool({})", small_int(rng)),
        6 | 7 => {
            let items: Vec<String> = (0..1 + rng.below(4))
                .map(|_| gen_stage(rng, depth - 1, n_blocks))
                .collect();
            format!("[{}]", items.join(", "))
        }
        // Repeat counts stay small: an error inside a repeat is reported once per iteration
        // (see `errors_inside_repeats_are_reported_once`), and nested repeats of a failing
        // layer would make a case slow enough to trip the hang check on a busy machine.
        8 => format!(
            "repeat {} {}",
            rng.pick(&["0", "1", "2", "3", "-1", "100000"]),
            gen_stage(rng, depth - 1, n_blocks)
        ),
        9 => format!(
            "({} -> {})",
            gen_stage(rng, depth - 1, n_blocks),
            gen_stage(rng, depth - 1, n_blocks)
        ),
        _ => format!(
            "[for c in [{}, {}] {{ conv(c, 1) }}, if c > 1 {{ relu }} else {{ identity }}]",
            small_int(rng),
            small_int(rng)
        ),
    };
    if rng.chance(10) {
        format!("l{}: {stage}", rng.below(3))
    } else {
        stage
    }
}

fn gen_pipeline(rng: &mut Rng, n_blocks: usize) -> String {
    let stages: Vec<String> = (0..1 + rng.below(5))
        .map(|_| gen_stage(rng, 3, n_blocks))
        .collect();
    stages.join(" -> ")
}

/// A program that is usually well formed, so that the cases reach expansion and inference.
fn gen_program(rng: &mut Rng) -> String {
    let mut out = String::new();
    let n_blocks = rng.below(3);
    for idx in 0..n_blocks {
        // A block may call only earlier blocks, unless a mutation later makes it recursive.
        let _ = writeln!(
            out,
            "block b{idx}(x, c: int = {}) {{\n    x -> {}\n}}",
            small_int(rng),
            gen_pipeline(rng, idx)
        );
    }
    let dims = [
        rng.pick(&["1", "4", "8", "32", "224"]),
        rng.pick(&["1", "4", "8", "32", "224"]),
        rng.pick(&["1", "3", "16"]),
    ];
    let _ = writeln!(
        out,
        "network net(x: {}x{}x{}) {{\n    let c = {}",
        dims[0],
        dims[1],
        dims[2],
        small_int(rng)
    );
    if rng.chance(30) {
        let combine = rng.pick(&["a + b", "a * b", "concat(a, b)"]);
        let _ = writeln!(
            out,
            "    let a = x -> {}\n    let b = x -> {}\n    {combine}\n}}",
            gen_pipeline(rng, n_blocks),
            gen_pipeline(rng, n_blocks)
        );
    } else {
        let _ = writeln!(out, "    x -> {}\n}}", gen_pipeline(rng, n_blocks));
    }
    out
}

/// A stage that keeps its input's shape, for repeats, residual branches and blocks.
fn gen_same_shape_stage(rng: &mut Rng, n_blocks: usize) -> String {
    match rng.below(7) {
        0 => "relu".to_string(),
        1 => "batchnorm".to_string(),
        2 => "conv(channels(x), 3, pad: same)".to_string(),
        3 => "dwconv(3, pad: 1)".to_string(),
        4 if n_blocks > 0 => format!("b{}(channels(x))", rng.below(n_blocks)),
        5 => format!("repeat {} [conv(channels(x), 1), relu]", 1 + rng.below(3)),
        _ => "(identity -> dropout(0.1))".to_string(),
    }
}

/// A pipeline that follows the shapes it produces (downsampling only while the image is large
/// enough, `dense` only after `flatten`), so that most such programs compile and the cases
/// reach shape inference, the printers and the JSON report.
fn gen_plausible_pipeline(rng: &mut Rng, size: usize, n_blocks: usize) -> String {
    let mut size = size;
    let mut flat = false;
    let mut stages = Vec::new();
    for _ in 0..1 + rng.below(8) {
        let stage = if flat {
            match rng.below(3) {
                0 => format!("dense({})", 1 + rng.below(32)),
                1 => "relu".to_string(),
                _ => "dropout(0.5)".to_string(),
            }
        } else {
            match rng.below(8) {
                0 => format!(
                    "conv({}, {}, pad: same)",
                    1 + rng.below(16),
                    1 + 2 * rng.below(3)
                ),
                1 if size >= 2 => {
                    size = size.div_ceil(2);
                    format!(
                        "{}pool(2, stride: 2, ceil_mode: true)",
                        rng.pick(&["max", "avg"])
                    )
                }
                2 if size >= 3 => {
                    size -= 2;
                    format!("conv({}, 3)", 1 + rng.below(16))
                }
                3 => "[for c in [4, 8] { conv(c, 1) }, if channels(x) > 3 { relu }]".to_string(),
                4 => {
                    flat = true;
                    rng.pick(&["flatten", "global_avgpool -> flatten"])
                        .to_string()
                }
                _ => gen_same_shape_stage(rng, n_blocks),
            }
        };
        stages.push(stage);
    }
    stages.join(" -> ")
}

/// A program that mostly compiles: blocks that keep their input's shape, and a network whose
/// pipeline follows its shapes, sometimes with a residual add or a concatenation.
fn gen_plausible_program(rng: &mut Rng) -> String {
    let mut out = String::new();
    let n_blocks = rng.below(3);
    for idx in 0..n_blocks {
        let body = gen_same_shape_stage(rng, idx);
        let _ = writeln!(
            out,
            "block b{idx}(x, c: int = 8) {{\n    let y = x -> conv(c, 1) -> {body}\n    return y\n}}"
        );
    }
    let size = *rng.pick(&[1, 2, 5, 8, 16, 32]);
    let channels = *rng.pick(&[1, 3, 8]);
    let _ = writeln!(out, "network net(x: {size}x{size}x{channels}) {{");
    if rng.chance(30) {
        let branch = gen_same_shape_stage(rng, n_blocks);
        let combine = rng.pick(&["x + y", "concat(x, y)", "x * y"]);
        let _ = writeln!(out, "    let y = x -> {branch}\n    {combine}\n}}");
    } else {
        let pipeline = gen_plausible_pipeline(rng, size, n_blocks);
        let _ = writeln!(out, "    x -> {pipeline}\n}}");
    }
    out
}

/// The byte ranges of the identifiers and the numbers of a text.
fn words(text: &[u8]) -> (Vec<std::ops::Range<usize>>, Vec<std::ops::Range<usize>>) {
    let (mut identifiers, mut numbers) = (Vec::new(), Vec::new());
    let mut idx = 0;
    while idx < text.len() {
        let start = idx;
        if text[idx].is_ascii_alphabetic() || text[idx] == b'_' {
            while idx < text.len() && (text[idx].is_ascii_alphanumeric() || text[idx] == b'_') {
                idx += 1;
            }
            identifiers.push(start..idx);
        } else if text[idx].is_ascii_digit() {
            while idx < text.len() && (text[idx].is_ascii_digit() || text[idx] == b'.') {
                idx += 1;
            }
            numbers.push(start..idx);
        } else {
            idx += 1;
        }
    }
    (identifiers, numbers)
}

/// Applies one to three random edits. `identifiers` are borrowed from every corpus file, so a
/// network may end up calling another file's blocks or using a layer name as a variable.
fn mutate(rng: &mut Rng, text: &str, identifiers: &[String]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for _ in 0..1 + rng.below(3) {
        let len = bytes.len();
        let (idents, numbers) = words(&bytes);
        let at = rng.below(len + 1);
        let span_end = (at + 1 + rng.below(40)).min(len);
        match rng.below(7) {
            0 if at < len => {
                bytes.drain(at..span_end);
            }
            1 if at < len => {
                let copy = bytes[at..span_end].to_vec();
                let to = rng.below(len + 1);
                bytes.splice(to..to, copy);
            }
            2 if at < len => {
                // Swap two spans by rotating the region between their starts.
                let other = rng.below(len);
                let (lo, hi) = (at.min(other), at.max(other));
                let split = (hi - lo) / 2;
                bytes[lo..hi].rotate_left(split);
            }
            3 if !numbers.is_empty() => {
                let range = rng.pick(&numbers).clone();
                bytes.splice(range, rng.pick(NUMBERS).bytes());
            }
            4 if !idents.is_empty() && !identifiers.is_empty() => {
                let range = rng.pick(&idents).clone();
                bytes.splice(range, rng.pick(identifiers).bytes());
            }
            5 => {
                let bracket = rng.pick(&["(", ")", "[", "]", "{", "}", "/*", "*/", "\""]);
                bytes.splice(at..at, bracket.bytes());
            }
            _ => {
                bytes.splice(at..at, rng.pick(TOKENS).bytes());
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The example programs and the standard library, sorted by path so the cases are stable.
fn corpus() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["examples", "examples/bad", "std"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "cnn") {
                if let Ok(text) = std::fs::read_to_string(&path) {
                    files.push((
                        format!("{dir}/{}", entry.file_name().to_string_lossy()),
                        text,
                    ));
                }
            }
        }
    }
    files.sort();
    files
}

#[test]
fn fuzz_style_inputs_never_panic_hang_or_exhaust_memory() {
    let corpus = corpus();
    assert!(
        !corpus.is_empty(),
        "no .cnn files found under examples/ or std/"
    );
    let mut identifiers: Vec<String> = corpus
        .iter()
        .flat_map(|(_, text)| {
            let (idents, _) = words(text.as_bytes());
            idents
                .into_iter()
                .map(|r| text[r].to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    identifiers.sort();
    identifiers.dedup();

    let start = Instant::now();
    let mut counts: Vec<(&str, usize)> = Vec::new();
    let mut slowest = (Duration::ZERO, String::new());
    let mut most_memory = (0, String::new());
    let mut n_clean = 0;
    let mut run = |name: String, text: &str| {
        let outcome = run_case(&name, text);
        check_invariants(&name, text, &outcome);
        n_clean += usize::from(!outcome.has_errors);
        if outcome.elapsed > slowest.0 {
            slowest = (outcome.elapsed, name.clone());
        }
        if outcome.peak_bytes > most_memory.0 {
            most_memory = (outcome.peak_bytes, name);
        }
    };

    let mut rng = Rng(0x5eed_0001);
    for idx in 0..500 {
        run(format!("random bytes #{idx}"), &random_bytes(&mut rng));
    }
    counts.push(("random bytes", 500));

    let mut rng = Rng(0x5eed_0002);
    for idx in 0..1500 {
        run(format!("token soup #{idx}"), &token_soup(&mut rng));
    }
    counts.push(("token soup", 1500));

    let mut rng = Rng(0x5eed_0003);
    let mut generated = Vec::new();
    for idx in 0..1500 {
        // Half chaotic programs (which mostly reach an expansion or shape error), half
        // plausible ones (which mostly compile).
        let program = if idx % 2 == 0 {
            gen_program(&mut rng)
        } else {
            gen_plausible_program(&mut rng)
        };
        run(format!("generated program #{idx}"), &program);
        generated.push(program);
    }
    counts.push(("generated programs", 1500));

    // Every file cut at evenly spaced points and around each of its first brackets; fewer
    // points per file as the corpus grows, so the test's time stays put.
    let mut n_truncations = 0;
    let cuts_per_file = (4000 / corpus.len()).clamp(10, 80);
    for (path, text) in &corpus {
        let n_cuts = cuts_per_file.min(text.len());
        let mut cuts: Vec<usize> = (0..=n_cuts)
            .map(|i| i * text.len() / n_cuts.max(1))
            .collect();
        cuts.extend(
            text.match_indices(['(', '[', '{', '"'])
                .take(20)
                .flat_map(|(i, _)| [i, i + 1]),
        );
        for cut in cuts {
            let mut cut = cut.min(text.len());
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            run(format!("{path} cut at byte {cut}"), &text[..cut]);
            n_truncations += 1;
        }
    }
    counts.push(("truncations", n_truncations));

    let mut rng = Rng(0x5eed_0004);
    let n_mutations = 3000;
    for idx in 0..n_mutations {
        let (source, text) = if idx % 3 == 2 {
            ("generated", rng.pick(&generated).as_str())
        } else {
            let (path, text) = rng.pick(&corpus);
            (path.as_str(), text.as_str())
        };
        let mutated = mutate(&mut rng, text, &identifiers);
        run(format!("mutation #{idx} of {source}"), &mutated);
    }
    counts.push(("mutations", n_mutations));

    let total: usize = counts.iter().map(|(_, n)| n).sum();
    eprintln!(
        "{total} cases {counts:?}, {n_clean} without errors, in {:.1?}; slowest {:.1?} ({}); most memory {} KiB ({})",
        start.elapsed(),
        slowest.0,
        slowest.1,
        most_memory.0 >> 10,
        most_memory.1
    );
}

// ---------------------------------------------------------------------------------------------
// Hostile inputs

/// A network around `body`, for inputs that only matter inside a network.
fn network(body: &str) -> String {
    format!("network n(x: 8x8x3) {{\n    {body}\n}}\n")
}

#[test]
fn deep_brackets_are_rejected_before_they_reach_the_parser() {
    let depth = 10_000;
    let square = format!("x -> {}relu{}", "[".repeat(depth), "]".repeat(depth));
    expect_error("10,000 nested [", &network(&square), "nested more than");
    let round = format!("x -> {}relu{}", "(".repeat(depth), ")".repeat(depth));
    expect_error("10,000 nested (", &network(&round), "nested more than");
    let curly = format!(
        "{}x{}",
        "if true {".repeat(depth),
        "} else { x }".repeat(depth)
    );
    expect_error("10,000 nested {", &network(&curly), "nested more than");
    let unclosed = format!("x -> {}", "[".repeat(depth));
    expect_error("10,000 unclosed [", &network(&unclosed), "nested more than");
    let comments = format!(
        "{}{}\n{}",
        "/*".repeat(depth),
        "*/".repeat(depth),
        network("x")
    );
    expect_error("10,000 nested /*", &comments, "nested more than");
}

#[test]
fn a_one_megabyte_line_is_handled() {
    let name = "a".repeat(1 << 20);
    expect_error("1 MB unknown name", &network(&name), "unknown name");
    let comment = format!("// {name}\n{}", network("x -> relu"));
    expect_ok("1 MB comment", &comment);
    let pipeline = format!("x{}", " -> relu".repeat((1 << 20) / 8));
    expect_error("1 MB pipeline", &network(&pipeline), "expands to more than");
}

#[test]
fn numbers_too_large_for_their_type_are_diagnosed() {
    expect_error(
        "huge integer",
        &network("x -> conv(99999999999999999999, 3)"),
        "too large",
    );
    expect_error("huge float", &network("x -> dropout(1e999)"), "too large");
    expect_error(
        "i64 overflow",
        &network("x -> conv(9223372036854775807 + 1, 3)"),
        "overflow",
    );
    expect_error(
        "huge input dimension",
        "network n(x: 99999999999999999999x1x1) { x }",
        "too large",
    );
    expect_error(
        "huge input tensor",
        "network n(x: 1000000x1000000x3) { x -> relu }",
        "limit of 2^31 elements",
    );
    expect_error(
        "huge weight tensor",
        "network n(x: 2000x2000x3) { x -> conv(1000000, 1000) }",
        "limit of 2^31 elements",
    );
}

#[test]
fn invalid_arithmetic_and_hyperparameters_are_diagnosed() {
    expect_error(
        "int division by zero",
        &network("x -> conv(8 / 0, 3)"),
        "division by zero",
    );
    expect_error(
        "remainder by zero",
        &network("x -> conv(8 % 0, 3)"),
        "division by zero",
    );
    expect_error(
        "stride 0",
        &network("x -> conv(8, 3, stride: 0)"),
        "at least 1",
    );
    expect_error("zero filters", &network("x -> conv(0, 3)"), "at least 1");
    expect_error(
        "ragged weights",
        &network("x -> conv(1, 2, weights: [[1, 2], [3]], bias: false)"),
        "rectangular",
    );
}

#[test]
fn expansion_is_bounded() {
    expect_error(
        "repeat count too large",
        &network("x -> repeat 1000000000 conv(8, 3)"),
        "repeat count",
    );
    expect_error(
        "nested repeats",
        &network("x -> repeat 10000 [repeat 10000 identity]"),
        "expands to more than",
    );
    // Each level calls the one below twice: 2^40 layers if nothing stopped it.
    let mut program = String::from("block b0(x) { x -> relu }\n");
    for level in 1..=40 {
        let below = level - 1;
        let _ = writeln!(program, "block b{level}(x) {{ x -> b{below} -> b{below} }}");
    }
    program.push_str(&network("x -> b40"));
    expect_error("exponential block calls", &program, "expands to more than");
}

#[test]
fn files_without_networks_are_diagnosed() {
    expect_error("empty file", "", "defines no network");
    expect_error(
        "only comments",
        "// one\n/* two */\n// three",
        "defines no network",
    );
    expect_error("only whitespace", " \n\t\r\n", "defines no network");
}

#[test]
fn unusual_characters_are_handled() {
    expect_error(
        "non-ASCII identifier",
        "network réseau(x: 8x8x3) { x -> relu }",
        "expected",
    );
    expect_ok("× in shapes", "network n(x: 8×8×3) { x -> relu }");
    let crlf = network("x\r\n        -> conv(4, 3)\r\n        -> relu").replace('\n', "\r\n");
    expect_ok("CRLF line endings", &crlf);
    let crlf_error = network("x\r\n        -> conv(4, 30)").replace('\n', "\r\n");
    expect_error("CRLF with an error", &crlf_error, "larger than the padded");
    expect_error("NUL byte", &network("x \0 -> relu"), "expected");
    for (path, text) in corpus() {
        let crlf = text.replace('\n', "\r\n");
        let outcome = run_case(&format!("{path} with CRLF"), &crlf);
        check_invariants(&path, &crlf, &outcome);
    }
}

// ---------------------------------------------------------------------------------------------
// Output sizes

/// The window positions along one axis, counted one by one: a window of `kernel` taps spaced
/// `dilation` apart, starting at every multiple of `stride`, that fits in the padded input.
/// With `ceil_mode`, a last window may hang over the end by less than a stride, provided it
/// starts inside the input or its left padding (PyTorch's rule).
fn brute_force_windows(
    n: usize,
    kernel: usize,
    stride: usize,
    pad: (usize, usize),
    dilation: usize,
    ceil_mode: bool,
) -> Option<usize> {
    let padded = n + pad.0 + pad.1;
    let extent = dilation * (kernel - 1) + 1;
    if extent > padded {
        return None;
    }
    let count = (0..padded)
        .step_by(stride)
        .filter(|&start| {
            if ceil_mode {
                start + extent < padded + stride && start < n + pad.0
            } else {
                start + extent <= padded
            }
        })
        .count();
    Some(count)
}

#[test]
fn window_output_matches_a_brute_force_count() {
    let mut n_checked = 0;
    for n in 1..=40 {
        for kernel in 1..=11 {
            for stride in 1..=5 {
                for dilation in 1..=3 {
                    let extent = dilation * (kernel - 1) + 1;
                    for pad_before in 0..=5 {
                        for pad_after in 0..=5 {
                            let expected = brute_force_windows(
                                n,
                                kernel,
                                stride,
                                (pad_before, pad_after),
                                dilation,
                                false,
                            );
                            let found = window_output(
                                n, kernel, stride, pad_before, pad_after, dilation, false,
                            );
                            assert_eq!(
                                found, expected,
                                "n={n} k={kernel} s={stride} pad=({pad_before}, {pad_after}) d={dilation}"
                            );
                            // PyTorch allows ceil mode only with padding of at most half the
                            // window, so no window can lie wholly in the right padding.
                            if pad_before.max(pad_after) <= extent / 2 {
                                let expected = brute_force_windows(
                                    n,
                                    kernel,
                                    stride,
                                    (pad_before, pad_after),
                                    dilation,
                                    true,
                                );
                                let found = window_output(
                                    n, kernel, stride, pad_before, pad_after, dilation, true,
                                );
                                assert_eq!(
                                    found, expected,
                                    "ceil mode: n={n} k={kernel} s={stride} pad=({pad_before}, {pad_after}) d={dilation}"
                                );
                            }
                            n_checked += 1;
                        }
                    }
                }
            }
        }
    }
    assert_eq!(n_checked, 40 * 11 * 5 * 3 * 6 * 6);
}

#[test]
fn window_output_rejects_degenerate_windows() {
    assert_eq!(window_output(8, 0, 1, 0, 0, 1, false), None, "kernel 0");
    assert_eq!(window_output(8, 3, 0, 0, 0, 1, false), None, "stride 0");
    assert_eq!(
        window_output(8, 9, 1, 0, 0, 1, false),
        None,
        "kernel larger than input"
    );
    assert_eq!(
        window_output(usize::MAX, 3, 1, 1, 1, 1, false),
        None,
        "padded size overflows"
    );
    assert_eq!(
        window_output(8, usize::MAX, 1, 0, 0, 2, false),
        None,
        "extent overflows"
    );
}

#[test]
fn same_padding_gives_ceil_of_n_over_stride() {
    for n in 1..=64 {
        for kernel in 1..=11 {
            for stride in 1..=5 {
                for dilation in 1..=3 {
                    let (before, after) = same_padding(n, kernel, stride, dilation);
                    assert!(
                        after == before || after == before + 1,
                        "n={n} k={kernel} s={stride} d={dilation}: padding ({before}, {after}) is lopsided"
                    );
                    assert_eq!(
                        window_output(n, kernel, stride, before, after, dilation, false),
                        Some(n.div_ceil(stride)),
                        "n={n} k={kernel} s={stride} d={dilation}: padding ({before}, {after})"
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Found by this suite, fixed since
//
// Each test below once failed; its doc comment says how. Those about stack depth would take
// the whole test process down if they regressed (no `catch_unwind` stops a stack overflow).

/// Operator chains have no brackets, so the bracket-nesting check does not see them, but the
/// parser builds them as nested nodes and the expander recurses once per operator.
#[test]
fn long_operator_chains_are_rejected() {
    let n = 100_000;
    let sum = network(&format!("x -> conv(1{}, 1)", " + 1".repeat(n)));
    expect_error("100,000 `+ 1`", &sum, "chains 100000 operators");
    let negations = network(&format!("x -> conv({}1, 1)", "-".repeat(n)));
    expect_error("100,000 `-`", &negations, "nested more than");
    let nots = network(&format!(
        "x -> conv(if {}true {{ 1 }} else {{ 2 }}, 1)",
        "not ".repeat(n)
    ));
    expect_error("100,000 `not`", &nots, "nested more than");
    let residuals = network(&format!("x{}", " + x".repeat(n)));
    expect_error("100,000 `+ x`", &residuals, "chains 100000 operators");
}

/// `repeat 1 repeat 1 ...` and `else if` chains nest without brackets too. pest's own stack
/// guard stops very deep ones, but with a misleading message, and shallower ones get through
/// pest only to overflow the stack in the syntax-tree walker.
#[test]
fn long_keyword_chains_are_rejected() {
    for n in [10_000, 40_000] {
        let repeats = network(&format!("x -> {}relu", "repeat 1 ".repeat(n)));
        expect_error(&format!("{n} `repeat 1`"), &repeats, "nested more than");
        let else_ifs = network(&format!("{}{{ x }}", "if false { x } else ".repeat(n)));
        expect_error(&format!("{n} `else if`"), &else_ifs, "nested more than");
        let seq_ifs = network(&format!(
            "x -> [{}{{ relu }}]",
            "if false { relu } else ".repeat(n)
        ));
        expect_error(
            &format!("{n} sequence `else if`"),
            &seq_ifs,
            "nested more than",
        );
    }
}

/// Every use of a list-valued name copies the list, and building a list is not counted as
/// expansion work, so six lines of ten-element lists hold 10^7 values.
#[test]
fn nested_list_copies_are_bounded() {
    let mut body = String::from("let a0 = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]\n");
    for level in 1..=6 {
        let items = vec![format!("a{}", level - 1); 10].join(", ");
        let _ = writeln!(body, "    let a{level} = [{items}]");
    }
    body.push_str("    x -> conv(len(a6), 1)");
    let text = network(&body);
    let outcome = run_case("list of lists of ... 10^7 values", &text);
    check_invariants("list of lists", &text, &outcome);
}

/// A block call copies its list argument; with the step budget spent on such calls, the work is
/// steps × list length, not bounded by the step limit alone.
#[test]
fn list_arguments_do_not_make_expansion_quadratic() {
    let list = vec!["0"; 10_000].join(", ");
    let text = format!(
        "block id(x, l: list) {{ x }}\n{}",
        network(&format!(
            "let a = [{list}]\n    x -> repeat 10000 repeat 99 id(a)"
        ))
    );
    expect_error(
        "10,000-element list passed 500,000 times",
        &text,
        "expands to more than",
    );
}

/// Imports are read whole, whatever they are: a device never ends and a pipe may never close.
#[cfg(unix)]
#[test]
fn importing_a_device_is_diagnosed() {
    expect_error(
        "import /dev/zero",
        "import \"/dev/zero\"\nnetwork n(x: 8x8x3) { x }",
        "/dev/zero",
    );
}

/// The nesting pre-check treats `//` and `"` inside a block comment as starting a line comment
/// or a string, which skips the comment's `*/`; each such comment then counts as one level.
#[test]
fn comments_containing_slashes_or_quotes_are_not_nesting() {
    let urls = "/* see http://example.com */\n".repeat(200);
    expect_ok(
        "200 comments with URLs",
        &format!("{urls}{}", network("x -> relu")),
    );
    let quotes = "/* a \" quote */\n".repeat(200);
    expect_ok(
        "200 comments with quotes",
        &format!("{quotes}{}", network("x -> relu")),
    );
}

/// After an error, expansion goes on with a poison value so that independent mistakes are all
/// reported; but a repeat then evaluates its failing body again on every iteration.
#[test]
fn errors_inside_repeats_are_reported_once() {
    let text = network("x -> repeat 10000 repeat 99 conv(0, 1)");
    let outcome = expect_error("failing layer in nested repeats", &text, "at least 1");
    let n_errors = outcome.rendered.matches("error[").count();
    assert!(n_errors <= 10, "{n_errors} errors for one mistake");
}

/// "Did you mean" compares an unknown name with every layer and block name by edit distance,
/// even candidates whose length alone rules them out.
#[test]
fn a_huge_unknown_layer_name_is_quick() {
    let name = "a".repeat(4 << 20);
    expect_error(
        "4 MB unknown layer",
        &network(&format!("x -> {name}")),
        "unknown layer or block",
    );
}

/// pest reports a failure at the furthest position a rule was tried, but `syntax/errors.rs`
/// adds the punctuation expected at the furthest position any token was tried, which can be
/// further on: the message then joins expectations from two places.
#[test]
fn a_non_ascii_identifier_is_pointed_at() {
    expect_error(
        "non-ASCII identifier",
        "network réseau(x: 8x8x3) { x -> relu }",
        "found `é",
    );
}

/// `SourceMap::line_col` counts lines and characters from the start of the file on every call,
/// and the AST dump calls it once per node.
#[test]
fn emit_ast_is_linear_in_the_file_size() {
    let pipeline = format!("x{}", " -> relu".repeat((1 << 20) / 8));
    let outcome = run_case_with("1 MB pipeline, AST dump", &network(&pipeline), true);
    check_invariants("1 MB pipeline, AST dump", "", &outcome);
}

#[test]
fn invalid_string_escapes_are_diagnosed() {
    expect_error(
        "`\\.` in an import",
        "import \"std/lenet\\.cnn\"\nnetwork n(x: 8x8x3) { x }",
        "escape",
    );
    expect_error(
        "`\\q` in labels",
        &network("labels(\"a\\qb\")\n    x"),
        "escape",
    );
}

#[test]
fn syntax_errors_name_each_expectation_once() {
    let outcome = expect_error(
        "else without braces",
        &network("if false { x } else x"),
        "expected",
    );
    assert!(
        !outcome.rendered.contains("`{`, `if` or `{`"),
        "{}",
        outcome.rendered
    );
}

/// A chain of distinct blocks, each calling the next, recurses once per call in the expander
/// without ever being recursive; its depth is bounded too.
#[test]
fn long_block_call_chains_are_rejected() {
    let n = 5_000;
    let mut text = String::new();
    for idx in 0..n {
        let _ = writeln!(text, "block b{idx}(x) {{ x -> b{} }}", idx + 1);
    }
    let _ = writeln!(text, "block b{n}(x) {{ x -> relu }}");
    text.push_str(&network("x -> b0"));
    expect_error("5,000 chained blocks", &text, "nested more than 64 deep");
}
