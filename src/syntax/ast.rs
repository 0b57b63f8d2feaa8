//! The owned syntax tree. Every node carries the span it was parsed from; no pest types here.

use crate::source::Span;

#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Clone, Debug, Default)]
pub struct File {
    pub items: Vec<Item>,
}

#[derive(Clone, Debug)]
pub enum Item {
    Import(Import),
    Block(BlockDef),
    Network(NetworkDef),
}

/// `import "std/resnet.cnn"` or `use std::resnet` (the same file), optionally `as name`.
#[derive(Clone, Debug)]
pub struct Import {
    pub path: String,
    pub span: Span,
    /// `import "x.cnn" as name`: the file's blocks and networks are `name.block`.
    pub alias: Option<Ident>,
}

#[derive(Clone, Debug)]
pub struct BlockDef {
    pub name: Ident,
    pub params: Vec<Param>,
    pub body: Body,
    pub span: Span,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum TypeName {
    Int,
    Float,
    Bool,
    Tensor,
    String,
    List,
}

impl TypeName {
    pub fn name(self) -> &'static str {
        match self {
            TypeName::Int => "int",
            TypeName::Float => "float",
            TypeName::Bool => "bool",
            TypeName::Tensor => "tensor",
            TypeName::String => "string",
            TypeName::List => "list",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Param {
    pub name: Ident,
    pub ty: Option<(TypeName, Span)>,
    pub default: Option<Expr>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct NetworkDef {
    pub name: Ident,
    pub inputs: Vec<NetInput>,
    /// Hyperparameters, each with a default; set when the network is used as a stage.
    pub params: Vec<Param>,
    pub body: Body,
    pub span: Span,
}

/// `image: 224x224x3`; dimensions are kept wide so absurd sizes can be reported, not wrapped.
#[derive(Clone, Debug)]
pub struct NetInput {
    pub name: Ident,
    pub dims: [u64; 3],
    pub shape_span: Span,
}

#[derive(Clone, Debug)]
pub struct Body {
    pub stmts: Vec<Stmt>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum Stmt {
    Let {
        name: Ident,
        value: Expr,
        span: Span,
    },
    /// `return x`, or `return (a, b)` for a network with several outputs: `values` holds one
    /// expression per output, never none.
    Return {
        values: Vec<Expr>,
        span: Span,
    },
    Expr(Expr),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum UnaryOp {
    Neg,
    Not,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl BinaryOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Or => "or",
            BinaryOp::And => "and",
            BinaryOp::Eq => "==",
            BinaryOp::Ne => "!=",
            BinaryOp::Lt => "<",
            BinaryOp::Le => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Rem => "%",
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PadMode {
    Same,
    Valid,
}

#[derive(Clone, Debug)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum ExprKind {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    PadMode(PadMode),
    Name(String),
    List(Vec<Expr>),
    Call {
        callee: Ident,
        args: Vec<Arg>,
    },
    Unary {
        op: UnaryOp,
        operand: Box<Expr>,
    },
    Binary {
        op: BinaryOp,
        op_span: Span,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    /// `else if` chains are an `otherwise` body holding one `If` expression.
    If {
        cond: Box<Expr>,
        then: Body,
        otherwise: Option<Body>,
    },
    Pipeline {
        head: Box<Expr>,
        stages: Vec<Stage>,
    },
    /// `list[i]`.
    Index {
        base: Box<Expr>,
        index: Box<Expr>,
    },
}

#[derive(Clone, Debug)]
pub struct Arg {
    pub keyword: Option<Ident>,
    pub value: Expr,
}

impl Arg {
    pub fn span(&self) -> Span {
        match &self.keyword {
            Some(keyword) => keyword.span.to(self.value.span),
            None => self.value.span,
        }
    }
}

/// A piece of a computed label (`"denselayer{i + 1}"`): text, or an expression's value.
#[derive(Clone, Debug)]
pub enum LabelPart {
    Text(String),
    Hole(Expr),
}

/// One step of a pipeline, optionally labelled (`conv1: conv(64, 7)`).
#[derive(Clone, Debug)]
pub struct Stage {
    /// The label's text (`conv1`, or a quoted label's contents); for a computed label, its
    /// source text (`denselayer{i + 1}`), with the pieces in `label_parts`.
    pub label: Option<Ident>,
    /// The pieces of a computed label; empty unless the label has a `{…}`.
    pub label_parts: Vec<LabelPart>,
    /// `frozen`: the layers this stage creates are not trainable.
    pub frozen: bool,
    pub kind: StageKind,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum StageKind {
    /// `conv(64, 3)`: called with the pipeline's tensor as its first argument.
    Call { callee: Ident, args: Vec<Arg> },
    /// `relu`: a call without further arguments.
    Name(Ident),
    /// `repeat 3 basic(64)`; items are numbered `.0`, `.1`, …
    Repeat {
        count: Expr,
        var: Option<Ident>,
        body: Box<Stage>,
    },
    /// `[a, b, c]`: applied in order, items numbered `.0`, `.1`, … (a label replaces the number).
    Sequence(Vec<SeqItem>),
    /// `(a -> b)`: applied in order with no scope of its own.
    Group(Vec<Stage>),
}

#[derive(Clone, Debug)]
pub enum SeqItem {
    Stage(Stage),
    /// `for v in cfg { ... }`: the items for each element, spliced into the sequence.
    For {
        /// One name, or several for `for [a, b] in rows` (then `destructure` is set).
        vars: Vec<Ident>,
        destructure: bool,
        iter: Expr,
        items: Vec<SeqItem>,
        span: Span,
    },
    /// `if c { ... } else { ... }`: the chosen items, spliced into the sequence.
    If {
        cond: Expr,
        then: Vec<SeqItem>,
        otherwise: Option<Vec<SeqItem>>,
        span: Span,
    },
}
