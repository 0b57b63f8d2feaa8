//! Expansion: blocks, repeats, conditionals and arithmetic are evaluated away, leaving a graph
//! of layer nodes, each with its weight path, its source span and the block calls that led to
//! it. Shapes are inferred as each node is inserted (`graph::infer`), so a shape error is
//! reported here, at the layer call that caused it.
//!
//! Errors do not stop the expansion: the failing expression evaluates to `Value::Poison`,
//! which silently propagates, so every independent mistake of a network is reported at once.

mod args;
mod augment;
mod builtins;
mod calls;
mod catalogue;
mod converters;
mod declarations;
mod eval;
mod iteration;
mod labels;
mod lookup;
mod outputs;
mod recipe;
mod stage;
mod suggest;
mod unused;
mod value;

use crate::diag::{Code, Diagnostic};
use crate::graph::{infer, Graph, NodeId, Op, Origin, Shape, ShapeError};
use crate::source::Span;
use crate::syntax::ast::{BlockDef, NetworkDef, Stmt};
use std::collections::HashMap;
pub use suggest::closest as closest_name;
pub use unused::unused_warnings;

/// Whether `name` is a built-in layer or function, which a block or network may not take.
pub fn is_builtin_name(name: &str) -> bool {
    catalogue::is_callable(name)
}
pub use value::Value;

/// The most nodes one network may expand to; past it the program is almost surely a mistake
/// (a repeat count off by orders of magnitude) and would exhaust memory.
pub const MAX_NODES: usize = 100_000;
/// The most stage applications, block calls and loop iterations one network may take.
pub const MAX_STEPS: usize = 1_000_000;
/// The largest `repeat` count.
pub const MAX_REPEAT: i64 = 10_000;
/// The most errors reported for one network; past it, expansion stops.
pub const MAX_ERRORS: usize = 50;
/// The deepest chain of block (and network) calls.
pub const MAX_CALL_DEPTH: usize = 64;

/// Everything the expander may refer to by name: the blocks and networks of the program,
/// keyed by their name in the root's namespace (`basic`, or `resnet.basic` for a file
/// imported `as resnet`).
#[derive(Default)]
pub struct Definitions<'a> {
    pub blocks: HashMap<String, &'a BlockDef>,
    pub networks: HashMap<String, &'a NetworkDef>,
    /// The prefix of each file's names (`resnet.`; empty for the root and files imported
    /// without `as`): a name written in that file is looked up with it.
    pub namespaces: HashMap<crate::source::FileId, String>,
}

/// Expands one network into its graph, or returns every diagnostic found. Warnings are
/// returned in both cases.
pub fn expand_network(
    defs: &Definitions<'_>,
    network: &NetworkDef,
) -> (Option<Graph>, Vec<Diagnostic>) {
    let mut expander = Expander::new(defs, &network.name.name);
    expander.graph.span = network.name.span;
    let graph = expander.network(network);
    expander.note_recurrences();
    // Errors first: they are what stops the program; warnings follow in source order.
    expander.diags.sort_by_key(|d| !d.is_error());
    let has_errors = expander.diags.iter().any(Diagnostic::is_error);
    (if has_errors { None } else { graph }, expander.diags)
}

struct Binding {
    name: String,
    value: Value,
}

/// One level of the weight-path hierarchy (`layer1`, then `0`, then `conv1`).
struct Scope {
    segment: String,
    /// How many unlabelled items of each kind this scope has named, for `conv`, `conv_1`, ...
    counters: HashMap<String, usize>,
    /// The computed labels given in this scope, with where (which iteration) each was first.
    computed_labels: HashMap<String, String>,
}

/// How a stage's item is named when it has no label of its own.
#[derive(Clone, Debug)]
enum Naming {
    Label(String),
    Index(usize),
    Auto,
}

struct CallSite {
    block: String,
    span: Span,
    /// A network used as a stage; its declarations (`preprocess`, `labels`) are ignored.
    is_network: bool,
}

struct Expander<'a> {
    defs: &'a Definitions<'a>,
    graph: Graph,
    diags: Vec<Diagnostic>,
    /// Variable frames of the block (or network) being expanded, innermost last.
    frames: Vec<Vec<Binding>>,
    calls: Vec<CallSite>,
    scopes: Vec<Scope>,
    steps: usize,
    /// Set once expansion gives up (budget spent, or too many errors): every later step fails
    /// at once, and the reason is reported once.
    stopped: bool,
    /// The errors already reported, so that a mistake in a repeated block is reported once,
    /// with the position of the diagnostic in `diags` (none when it was over `MAX_ERRORS`).
    reported: HashMap<(Code, Span, String), Option<usize>>,
    /// The loop iterations being expanded, innermost last.
    iterations: Vec<iteration::Iteration>,
    /// For an error first reported inside a loop: how many later iterations repeated it.
    recurrences: HashMap<usize, usize>,
    /// The `let` bindings already warned about.
    warned: std::collections::HashSet<Span>,
    /// Set by `network` for its own body only: the one place `return (a, b)` may stand.
    outputs_allowed: bool,
    /// The tensors of the network's `return (a, b)`, in order, once evaluated.
    returned_outputs: Vec<NodeId>,
}

impl<'a> Expander<'a> {
    fn new(defs: &'a Definitions<'a>, name: &str) -> Expander<'a> {
        Expander {
            defs,
            graph: Graph::new(name),
            diags: Vec::new(),
            frames: Vec::new(),
            calls: Vec::new(),
            scopes: vec![Scope {
                segment: String::new(),
                counters: HashMap::new(),
                computed_labels: HashMap::new(),
            }],
            steps: 0,
            stopped: false,
            reported: HashMap::new(),
            iterations: Vec::new(),
            recurrences: HashMap::new(),
            outputs_allowed: false,
            returned_outputs: Vec::new(),
            warned: std::collections::HashSet::new(),
        }
    }

    /// Whether this exact error was reported already (it is dropped as a repeat, and counted
    /// when a later loop iteration repeats it).
    fn is_reported(&mut self, code: Code, span: Span, message: &str) -> bool {
        let key = (code, span, message.to_string());
        let Some(&first) = self.reported.get(&key) else {
            return false;
        };
        if let Some(idx) = first.filter(|_| !self.iterations.is_empty()) {
            *self.recurrences.entry(idx).or_insert(0) += 1;
        }
        true
    }

    fn error(&mut self, diagnostic: Diagnostic) {
        let span = diagnostic
            .primary
            .as_ref()
            .map_or(Span::default(), |p| p.span);
        if self.is_reported(diagnostic.code, span, &diagnostic.message) {
            return;
        }
        let key = (diagnostic.code, span, diagnostic.message.clone());
        let n_errors = self.diags.iter().filter(|d| d.is_error()).count();
        if n_errors >= MAX_ERRORS {
            self.reported.insert(key, None);
            if !self.stopped {
                self.stopped = true;
                self.diags.push(Diagnostic::global(
                    Code::TooManyErrors,
                    format!(
                        "stopped after {MAX_ERRORS} errors in network `{}`",
                        self.graph.name
                    ),
                ));
            }
            return;
        }
        let mut diagnostic = self.with_call_chain(diagnostic);
        // Where expansion stopped for its size is not about one iteration.
        if diagnostic.code != Code::ExpansionTooLarge {
            let mut notes = self.iteration_notes();
            notes.append(&mut diagnostic.notes);
            diagnostic.notes = notes;
        }
        self.reported.insert(key, Some(self.diags.len()));
        self.diags.push(diagnostic);
    }

    /// Errors inside a block point at the line inside the block; the calls that led there are
    /// shown as secondary labels, innermost first.
    fn with_call_chain(&self, mut diagnostic: Diagnostic) -> Diagnostic {
        for call in self.calls.iter().rev() {
            diagnostic =
                diagnostic.with_secondary(call.span, format!("in this call to `{}`", call.block));
        }
        diagnostic
    }

    fn network(&mut self, network: &NetworkDef) -> Option<Graph> {
        self.frames.push(Vec::new());
        for input in &network.inputs {
            let [h, w, c] = input.dims;
            let too_big = [h, w, c].iter().any(|&d| d > usize::MAX as u64 / 4);
            let shape = Shape::spatial(h as usize, w as usize, c as usize);
            let check = if too_big {
                Err(ShapeError::TooLarge {
                    what: format!("the input {h}×{w}×{c}"),
                    elements: Some("more than 2^62".into()),
                })
            } else {
                infer::check_shape(shape, &format!("the input {shape}"))
            };
            if let Err(error) = check {
                self.error(
                    Diagnostic::error(Code::InputShape, input.shape_span, error.to_string())
                        .with_label(format!("input `{}` is declared here", input.name.name)),
                );
                self.bind(&input.name.name, Value::Poison);
                continue;
            }
            let id = self
                .graph
                .add_input(&input.name.name, shape, input.name.span);
            self.bind(&input.name.name, Value::Tensor(id));
        }
        for param in &network.params {
            if param.default.is_none() {
                self.error(
                    Diagnostic::error(
                        Code::MissingDefault,
                        param.span,
                        format!(
                            "hyperparameter `{}` of network `{}` needs a default",
                            param.name.name, network.name.name
                        ),
                    )
                    .with_label("no default")
                    .with_help(
                        "a network must be usable on its own; callers can still override it",
                    ),
                );
            }
        }
        self.bind_params(&network.params, Vec::new(), network.name.span);
        self.outputs_allowed = true;
        let value = self.body_statements(&network.body.stmts, network.body.span);
        self.pop_frame();
        match value {
            Value::Tensor(_) if !self.returned_outputs.is_empty() => {
                self.graph.outputs = std::mem::take(&mut self.returned_outputs);
            }
            Value::Tensor(id) => self.graph.set_output(id),
            Value::Poison => {}
            other => {
                let span = network
                    .body
                    .stmts
                    .last()
                    .map_or(network.body.span, stmt_span);
                self.error(
                    Diagnostic::error(
                        Code::NetworkOutput,
                        span,
                        format!(
                            "a network must end with a tensor, but this is {}",
                            other.type_name()
                        ),
                    )
                    .with_label("the network's output")
                    .with_secondary(
                        network.name.span,
                        format!("network `{}`", network.name.name),
                    ),
                );
            }
        }
        // Layers that do not lead to the output (a network cut short with `until`, an unused
        // `let`) own no weights and are not run.
        self.graph.prune_unreachable();
        self.check_duplicate_paths();
        self.check_unfreeze();
        if self.diags.iter().any(Diagnostic::is_error) {
            None
        } else {
            Some(std::mem::take(&mut self.graph))
        }
    }

    /// Two layers with parameters may not share a weight path: their tensors would collide.
    fn check_duplicate_paths(&mut self) {
        let mut seen: HashMap<String, NodeId> = HashMap::new();
        let mut found = Vec::new();
        for (id, node) in self.graph.nodes.iter() {
            if self.graph.params(id).is_empty() {
                continue;
            }
            if let Some(&first) = seen.get(&node.path) {
                found.push((first, id));
            } else {
                seen.insert(node.path.clone(), id);
            }
        }
        for (first, second) in found {
            let path = self.graph.nodes[second].path.clone();
            let mut diagnostic = Diagnostic::error(
                Code::DuplicateWeightPath,
                self.graph.origins[second].span,
                format!("two layers have the weight path `{path}`"),
            )
            .with_label(format!(
                "this layer's tensors would be named `{path}.weight`, ..."
            ))
            .with_secondary(
                self.graph.origins[first].span,
                "the first layer with this path",
            )
            .with_help("give one of them a different label");
            for call in &self.graph.origins[second].call_chain {
                diagnostic = diagnostic.with_secondary(*call, "in this call");
            }
            self.diags.push(diagnostic);
        }
    }

    fn bind(&mut self, name: &str, value: Value) {
        if let Some(frame) = self.frames.last_mut() {
            frame.push(Binding {
                name: name.to_string(),
                value,
            });
        }
    }

    fn lookup(&self, name: &str) -> Option<Value> {
        for frame in self.frames.iter().rev() {
            if let Some(binding) = frame.iter().rev().find(|b| b.name == name) {
                return Some(binding.value.clone());
            }
        }
        None
    }

    fn names_in_scope(&self) -> Vec<String> {
        self.frames
            .iter()
            .flat_map(|f| f.iter().map(|b| b.name.clone()))
            .collect()
    }

    fn pop_frame(&mut self) {
        self.frames.pop();
    }

    /// Warns about a `let` that no later statement of its body refers to. The check is on the
    /// source, so it does not depend on which branch one expansion took, and each binding is
    /// reported once however often its block is expanded.
    fn check_unused_let(&mut self, name: &crate::syntax::ast::Ident, rest: &[Stmt]) {
        // Up to (and with the value of) a `let` that binds the name again: a value read only
        // after that is the new one's.
        let rebinding = rest.iter().position(
            |stmt| matches!(stmt, Stmt::Let { name: other, .. } if other.name == name.name),
        );
        let until = rebinding.map_or(rest, |idx| &rest[..=idx]);
        if name.name.starts_with('_')
            || crate::syntax::visit::mentions(until, &name.name)
            || !self.warned.insert(name.span)
        {
            return;
        }
        if let Some(Stmt::Let { name: again, .. }) = rebinding.map(|idx| &rest[idx]) {
            self.diags.push(
                Diagnostic::warning(
                    Code::UnusedLet,
                    name.span,
                    format!("`{}` is bound again before it is used", name.name),
                )
                .with_label("this value is never read")
                .with_secondary(again.span, "bound again here")
                .with_help("remove the first binding, or use it before binding the name again"),
            );
            return;
        }
        self.diags.push(
            Diagnostic::warning(
                Code::UnusedLet,
                name.span,
                format!("`{}` is never used", name.name),
            )
            .with_label("bound here")
            .with_help(format!(
                "remove the binding, or name it `_{}` to keep it unused",
                name.name
            )),
        );
    }

    /// Evaluates statements in a fresh frame; the value is the `return`ed expression or the
    /// last expression statement.
    fn body_statements(&mut self, stmts: &[Stmt], span: Span) -> Value {
        // Only the network's own body may return several outputs, not the bodies inside it.
        let outputs_allowed = std::mem::take(&mut self.outputs_allowed);
        self.frames.push(Vec::new());
        let mut result = None;
        for (idx, stmt) in stmts.iter().enumerate() {
            let is_last = idx + 1 == stmts.len();
            match stmt {
                Stmt::Let { name, value, .. } => {
                    let v = self.eval(value);
                    self.check_unused_let(name, &stmts[idx + 1..]);
                    self.bind(&name.name, v);
                }
                Stmt::Return { values, span } => {
                    result = Some(match values.as_slice() {
                        [value] => self.eval(value),
                        several => self.several_outputs(several, *span, outputs_allowed),
                    });
                    if !is_last {
                        self.error(
                            Diagnostic::error(
                                Code::Unreachable,
                                stmt_span(&stmts[idx + 1]),
                                "this code comes after a `return`",
                            )
                            .with_label("never evaluated")
                            .with_secondary(*span, "the body returns here"),
                        );
                    }
                    break;
                }
                Stmt::Expr(expr) => {
                    let v = self.eval(expr);
                    if is_last {
                        result = Some(v);
                    } else if let Value::Tensor(_) = v {
                        self.diags.push(
                            Diagnostic::warning(
                                Code::UnusedValue,
                                expr.span,
                                "this tensor is computed but never used",
                            )
                            .with_label("its value is dropped")
                            .with_help("bind it with `let`, or remove it"),
                        );
                    }
                }
            }
        }
        self.pop_frame();
        match result {
            Some(Value::Unit) | None => {
                self.error(
                    Diagnostic::error(Code::MissingValue, span, "this body has no value")
                        .with_label("expected a final expression or `return`"),
                );
                Value::Poison
            }
            Some(v) => v,
        }
    }

    /// Counts one unit of expansion work; false once the budget is spent.
    fn step(&mut self, span: Span) -> bool {
        self.charge(1, span)
    }

    /// Counts `work` units of expansion work (a walk over a list costs its length).
    fn charge(&mut self, work: u64, span: Span) -> bool {
        if self.stopped {
            return false;
        }
        self.steps = self.steps.saturating_add(work as usize);
        if self.steps > MAX_STEPS || self.graph.nodes.len() > MAX_NODES {
            if !self.stopped {
                self.stopped = true;
                self.error(
                    Diagnostic::error(
                        Code::ExpansionTooLarge,
                        span,
                        format!(
                            "this network expands to more than {MAX_NODES} layers or {MAX_STEPS} steps"
                        ),
                    )
                    .with_label("expansion stopped here")
                    .with_help("check the repeat counts and the lists being iterated"),
                );
            }
            return false;
        }
        true
    }

    /// The current weight path prefix, `layer1.0`.
    fn path_prefix(&self) -> String {
        self.scopes
            .iter()
            .filter(|s| !s.segment.is_empty())
            .map(|s| s.segment.as_str())
            .collect::<Vec<_>>()
            .join(".")
    }

    fn resolve_name(&mut self, naming: &Naming, kind: &str) -> String {
        match naming {
            Naming::Label(label) => label.clone(),
            Naming::Index(idx) => idx.to_string(),
            Naming::Auto => {
                let scope = self
                    .scopes
                    .last_mut()
                    .expect("the root scope is never popped");
                let counter = scope.counters.entry(kind.to_string()).or_insert(0);
                let n = *counter;
                *counter += 1;
                if n == 0 {
                    kind.to_string()
                } else {
                    format!("{kind}_{n}")
                }
            }
        }
    }

    fn full_path(&self, name: &str) -> String {
        let prefix = self.path_prefix();
        if prefix.is_empty() {
            name.to_string()
        } else if name.is_empty() {
            prefix
        } else {
            format!("{prefix}.{name}")
        }
    }

    /// Opens a weight-path scope; `kind` (a block's name, `sequence`, …) is what
    /// `summary --depth` shows for the scope's collapsed row.
    fn push_scope(&mut self, segment: String, kind: &str) {
        if !segment.is_empty() {
            let path = self.full_path(&segment);
            self.graph
                .meta
                .scopes
                .entry(path)
                .or_insert_with(|| kind.to_string());
        }
        self.scopes.push(Scope {
            segment,
            counters: HashMap::new(),
            computed_labels: HashMap::new(),
        });
    }

    fn pop_scope(&mut self) {
        if self.scopes.len() > 1 {
            self.scopes.pop();
        }
    }

    /// Inserts a node. `operands` are the spans of the expressions that produced each input,
    /// for the secondary labels of a shape error.
    fn add_node(
        &mut self,
        op: Op,
        inputs: Vec<NodeId>,
        operands: &[Span],
        naming: &Naming,
        span: Span,
        literal_span: Option<Span>,
    ) -> Value {
        if !self.step(span) {
            return Value::Poison;
        }
        let name = self.resolve_name(naming, op.name());
        let path = self.full_path(&name);
        let origin = Origin {
            span,
            call_chain: self.calls.iter().rev().map(|c| c.span).collect(),
        };
        let input_shapes: Vec<Shape> = inputs.iter().map(|&id| self.graph.shape(id)).collect();
        let op_name = op.name();
        match self.graph.add(op, inputs, path, origin) {
            Ok(id) => Value::Tensor(id),
            Err(error) => {
                let diagnostic =
                    error.to_diagnostic(op_name, span, operands, &input_shapes, literal_span);
                self.error(diagnostic);
                Value::Poison
            }
        }
    }
}

fn stmt_span(stmt: &Stmt) -> Span {
    match stmt {
        Stmt::Let { span, .. } | Stmt::Return { span, .. } => *span,
        Stmt::Expr(expr) => expr.span,
    }
}
