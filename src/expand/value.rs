//! The values a `.cnn` expression evaluates to while a network is expanded.

use crate::graph::NodeId;
use crate::syntax::ast::PadMode;
use std::ops::Deref;
use std::rc::Rc;

/// The most numbers (at any depth) one list may hold, and the deepest nesting: lists are
/// shared, not copied, so these bound what any walk over one list costs.
pub const MAX_LIST_VALUES: u64 = 1_000_000;
pub const MAX_LIST_DEPTH: u32 = 32;

/// A list value, shared between the names that hold it.
#[derive(Debug)]
pub struct List {
    pub items: Vec<Value>,
    /// How many non-list values it holds at any depth.
    pub leaves: u64,
    /// 1 for a list of plain values.
    pub depth: u32,
}

impl Deref for List {
    type Target = Vec<Value>;

    fn deref(&self) -> &Vec<Value> {
        &self.items
    }
}

#[derive(Clone, Debug)]
pub enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Pad(PadMode),
    List(Rc<List>),
    /// A tensor: the graph node that computes it.
    Tensor(NodeId),
    /// What a declaration such as `preprocess(...)` evaluates to.
    Unit,
    /// The result of an expression that already produced a diagnostic. Everything computed
    /// from it is poisoned too, silently, so one mistake is reported once.
    Poison,
}

impl Value {
    /// A list of these items, or `None` when it would exceed `MAX_LIST_VALUES` or
    /// `MAX_LIST_DEPTH`.
    pub fn list(items: Vec<Value>) -> Option<Value> {
        let mut leaves = 0u64;
        let mut depth = 1u32;
        for item in &items {
            match item {
                Value::List(inner) => {
                    leaves = leaves.saturating_add(inner.leaves);
                    depth = depth.max(inner.depth + 1);
                }
                _ => leaves = leaves.saturating_add(1),
            }
        }
        (leaves <= MAX_LIST_VALUES && depth <= MAX_LIST_DEPTH).then(|| {
            Value::List(Rc::new(List {
                items,
                leaves,
                depth,
            }))
        })
    }

    /// The work a walk over this value costs: its number of values.
    pub fn size(&self) -> u64 {
        match self {
            Value::List(list) => list.leaves,
            _ => 1,
        }
    }

    /// The type's name as a user reads it in "expected an int, found a tensor".
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Int(_) => "an int",
            Value::Float(_) => "a float",
            Value::Bool(_) => "a bool",
            Value::Str(_) => "a string",
            Value::Pad(_) => "a padding mode",
            Value::List(_) => "a list",
            Value::Tensor(_) => "a tensor",
            Value::Unit => "nothing",
            Value::Poison => "an error",
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(v) => Some(*v as f64),
            Value::Float(v) => Some(*v),
            _ => None,
        }
    }

    pub fn is_poison(&self) -> bool {
        matches!(self, Value::Poison)
    }
}
