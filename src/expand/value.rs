//! The values a `.cnn` expression evaluates to while a network is expanded.

use crate::graph::NodeId;
use crate::syntax::ast::PadMode;

#[derive(Clone, Debug)]
pub enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Pad(PadMode),
    List(Vec<Value>),
    /// A tensor: the graph node that computes it.
    Tensor(NodeId),
    /// What a declaration such as `preprocess(...)` evaluates to.
    Unit,
    /// The result of an expression that already produced a diagnostic. Everything computed
    /// from it is poisoned too, silently, so one mistake is reported once.
    Poison,
}

impl Value {
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
