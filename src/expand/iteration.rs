//! Which loop iterations expansion is inside (`repeat`, `for`), so that an error inside a loop
//! says which iteration it first came from, with the loop variables' values, and how many
//! later iterations repeated it (those are reported once, not once per iteration).

use super::value::Value;
use super::Expander;

/// One iteration of a loop being expanded.
pub(super) struct Iteration {
    pub kind: LoopKind,
    /// Counted from 0.
    pub idx: usize,
    /// The loop variables and their values in this iteration.
    pub bindings: Vec<(String, Value)>,
}

pub(super) enum LoopKind {
    Repeat { count: usize },
    For { n_elements: usize },
}

impl Iteration {
    /// "in iteration 2 of `repeat 3` (`i` = 1)".
    fn describe(&self) -> String {
        let position = self.idx + 1;
        let mut text = match self.kind {
            LoopKind::Repeat { count } => format!("in iteration {position} of `repeat {count}`"),
            LoopKind::For { n_elements } => {
                format!("in iteration {position} of {n_elements} of a `for`")
            }
        };
        if !self.bindings.is_empty() {
            let values: Vec<String> = self
                .bindings
                .iter()
                .map(|(name, value)| format!("`{name}` = {}", show_value(value)))
                .collect();
            text.push_str(&format!(" ({})", values.join(", ")));
        }
        text
    }
}

impl Expander<'_> {
    pub(super) fn enter_iteration(&mut self, iteration: Iteration) {
        self.iterations.push(iteration);
    }

    pub(super) fn leave_iteration(&mut self) {
        self.iterations.pop();
    }

    /// One note per enclosing loop, innermost first, as the call chain's labels are.
    pub(super) fn iteration_notes(&self) -> Vec<String> {
        self.iterations
            .iter()
            .rev()
            .map(Iteration::describe)
            .collect()
    }

    /// Adds "the same error in N more iterations" to each error a later iteration repeated.
    pub(super) fn note_recurrences(&mut self) {
        for (&idx, &n) in &self.recurrences {
            let Some(diagnostic) = self.diags.get_mut(idx) else {
                continue;
            };
            let iterations = if n == 1 { "iteration" } else { "iterations" };
            diagnostic
                .notes
                .push(format!("the same error occurs in {n} more {iterations}"));
        }
        self.recurrences.clear();
    }
}

/// A loop variable's value as a note shows it; a long or deep list is cut short.
fn show_value(value: &Value) -> String {
    const MAX_CHARS: usize = 60;
    fn write(value: &Value, out: &mut String) {
        if out.len() > MAX_CHARS {
            return;
        }
        match value {
            Value::Int(v) => out.push_str(&v.to_string()),
            Value::Float(v) => out.push_str(&format!("{v:?}")),
            Value::Bool(b) => out.push_str(&b.to_string()),
            Value::Str(s) => out.push_str(&format!("{s:?}")),
            Value::List(items) => {
                out.push('[');
                for (idx, item) in items.iter().enumerate() {
                    if out.len() > MAX_CHARS {
                        out.push('…');
                        break;
                    }
                    if idx > 0 {
                        out.push_str(", ");
                    }
                    write(item, out);
                }
                out.push(']');
            }
            other => out.push_str(other.type_name()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
}
