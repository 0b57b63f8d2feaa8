//! Walks pest's pairs into the AST, one small function per rule.

use super::ast::*;
use super::errors;
use crate::diag::{Code, Diagnostic};
use crate::source::{FileId, Span};
use pest::iterators::Pair;
use pest::Parser;

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/cnn.pest"]
pub struct CnnParser;

// Boxed: a diagnostic is large and errors are rare, so the happy path stays small.
type Result<T> = std::result::Result<T, Box<Diagnostic>>;

/// The deepest syntax tree accepted. Brackets are limited before parsing, but operator chains
/// (`1 + 1 + ...`), `repeat 1 repeat 1 ...` and `else if` chains nest without brackets; every
/// later stage recurses over the tree, so its depth is bounded here.
pub const MAX_DEPTH: usize = 256;

struct Walker {
    file: FileId,
    /// The depth of the tree being built at the current point of the walk.
    depth: std::cell::Cell<usize>,
}

fn is_keyword(rule: Rule) -> bool {
    matches!(
        rule,
        Rule::kw_import
            | Rule::kw_use
            | Rule::kw_block
            | Rule::kw_network
            | Rule::kw_let
            | Rule::kw_return
            | Rule::kw_if
            | Rule::kw_else
            | Rule::kw_repeat
            | Rule::kw_as
            | Rule::kw_for
            | Rule::kw_in
    )
}

/// The children of a pair, keywords left out: they only guide the parse.
fn children(pair: Pair<'_, Rule>) -> impl Iterator<Item = Pair<'_, Rule>> {
    pair.into_inner().filter(|p| !is_keyword(p.as_rule()))
}

pub fn parse_file(file: FileId, text: &str) -> std::result::Result<File, Vec<Diagnostic>> {
    pest::set_error_detail(true);
    let mut pairs = CnnParser::parse(Rule::file, text)
        .map_err(|error| vec![errors::to_diagnostic(file, text, error)])?;
    let walker = Walker {
        file,
        depth: std::cell::Cell::new(0),
    };
    let mut items = Vec::new();
    let mut diagnostics = Vec::new();
    if let Some(file_pair) = pairs.next() {
        for pair in file_pair.into_inner() {
            let result = match pair.as_rule() {
                Rule::import => walker.import(pair).map(Item::Import),
                Rule::block_def => walker.block_def(pair).map(Item::Block),
                Rule::network_def => walker.network_def(pair).map(Item::Network),
                _ => continue,
            };
            match result {
                Ok(item) => items.push(item),
                Err(diagnostic) => diagnostics.push(*diagnostic),
            }
        }
    }
    if diagnostics.is_empty() {
        Ok(File { items })
    } else {
        Err(diagnostics)
    }
}

impl Walker {
    fn span(&self, pair: &Pair<'_, Rule>) -> Span {
        let s = pair.as_span();
        Span::new(self.file, s.start()..s.end())
    }

    fn ident(&self, pair: Pair<'_, Rule>) -> Ident {
        Ident {
            name: pair.as_str().to_string(),
            span: self.span(&pair),
        }
    }

    fn import(&self, pair: Pair<'_, Rule>) -> Result<Import> {
        // The span ends at the path: the rule itself also covers the whitespace after it.
        let start = pair.as_span().start();
        let mut pieces = children(pair);
        let inner = pieces.next();
        let alias = pieces.next().map(|p| self.ident(p));
        let end = match &alias {
            Some(alias) => alias.span.end as usize,
            None => inner.as_ref().map_or(start, |p| p.as_span().end()),
        };
        let span = Span::new(self.file, start..end);
        let path = match inner {
            Some(p) if p.as_rule() == Rule::string => string_value(self.file, p)?,
            Some(p) => format!("{}.cnn", p.as_str().replace("::", "/")),
            None => String::new(),
        };
        Ok(Import { path, span, alias })
    }

    fn block_def(&self, pair: Pair<'_, Rule>) -> Result<BlockDef> {
        let span = self.span(&pair);
        let mut inner = children(pair);
        let name = self.ident(next(&mut inner));
        let mut params = Vec::new();
        let mut body = None;
        for p in inner {
            match p.as_rule() {
                Rule::params => {
                    for param in p.into_inner() {
                        params.push(self.param(param)?);
                    }
                }
                Rule::body => body = Some(self.body(p)?),
                _ => {}
            }
        }
        Ok(BlockDef {
            name,
            params,
            body: body.unwrap_or(Body {
                stmts: Vec::new(),
                span,
            }),
            span,
        })
    }

    fn param(&self, pair: Pair<'_, Rule>) -> Result<Param> {
        let span = self.span(&pair);
        let mut inner = children(pair);
        let name = self.ident(next(&mut inner));
        let mut ty = None;
        let mut default = None;
        for p in inner {
            match p.as_rule() {
                Rule::type_name => {
                    let t = match p.as_str() {
                        "int" => TypeName::Int,
                        "float" => TypeName::Float,
                        "bool" => TypeName::Bool,
                        "tensor" => TypeName::Tensor,
                        "string" => TypeName::String,
                        _ => TypeName::List,
                    };
                    ty = Some((t, self.span(&p)));
                }
                _ => default = Some(self.expr(p)?),
            }
        }
        Ok(Param {
            name,
            ty,
            default,
            span,
        })
    }

    fn network_def(&self, pair: Pair<'_, Rule>) -> Result<NetworkDef> {
        let span = self.span(&pair);
        let mut inner = children(pair);
        let name = self.ident(next(&mut inner));
        let mut inputs = Vec::new();
        let mut params = Vec::new();
        let mut body = None;
        for p in inner {
            match p.as_rule() {
                Rule::net_inputs => {
                    for input in p.into_inner() {
                        if input.as_rule() == Rule::param {
                            params.push(self.param(input)?);
                        } else {
                            inputs.push(self.net_input(input)?);
                        }
                    }
                }
                Rule::body => body = Some(self.body(p)?),
                _ => {}
            }
        }
        Ok(NetworkDef {
            name,
            inputs,
            params,
            body: body.unwrap_or(Body {
                stmts: Vec::new(),
                span,
            }),
            span,
        })
    }

    fn net_input(&self, pair: Pair<'_, Rule>) -> Result<NetInput> {
        let mut inner = pair.into_inner();
        let name = self.ident(next(&mut inner));
        let shape = next(&mut inner);
        let shape_span = self.span(&shape);
        let mut dims = [0u64; 3];
        for (slot, digits) in dims.iter_mut().zip(shape.into_inner()) {
            *slot = digits.as_str().parse().map_err(|_| {
                Diagnostic::error(
                    Code::NumberTooLarge,
                    self.span(&digits),
                    "this dimension is too large",
                )
                .with_label("more than 2^64")
            })?;
        }
        Ok(NetInput {
            name,
            dims,
            shape_span,
        })
    }

    fn body(&self, pair: Pair<'_, Rule>) -> Result<Body> {
        let span = self.span(&pair);
        self.descend(span, 1, || self.body_node(pair))
    }

    fn body_node(&self, pair: Pair<'_, Rule>) -> Result<Body> {
        let span = self.span(&pair);
        let mut stmts = Vec::new();
        for p in pair.into_inner() {
            let stmt_span = self.span(&p);
            match p.as_rule() {
                Rule::let_stmt => {
                    let mut inner = children(p);
                    let name = self.ident(next(&mut inner));
                    let value = self.expr(next(&mut inner))?;
                    stmts.push(Stmt::Let {
                        name,
                        value,
                        span: stmt_span,
                    });
                }
                Rule::return_stmt => {
                    let returned = next(&mut children(p));
                    let values = if returned.as_rule() == Rule::outputs {
                        let exprs = children(returned).map(|e| self.expr(e));
                        exprs.collect::<Result<Vec<_>>>()?
                    } else {
                        vec![self.expr(returned)?]
                    };
                    stmts.push(Stmt::Return {
                        values,
                        span: stmt_span,
                    });
                }
                Rule::expr_stmt => stmts.push(Stmt::Expr(self.expr(next(&mut p.into_inner()))?)),
                _ => {}
            }
        }
        Ok(Body { stmts, span })
    }

    /// Runs `walk` one or more levels deeper in the tree, or reports that it is too deep.
    fn descend<T>(&self, span: Span, levels: usize, walk: impl FnOnce() -> Result<T>) -> Result<T> {
        let depth = self.depth.get() + levels;
        if depth > MAX_DEPTH {
            return Err(Box::new(
                Diagnostic::error(
                    Code::NestingTooDeep,
                    span,
                    format!("this expression is nested more than {MAX_DEPTH} levels deep"),
                )
                .with_label("too deep")
                .with_help("split it with `let` bindings or blocks"),
            ));
        }
        let saved = self.depth.replace(depth);
        let result = walk();
        self.depth.set(saved);
        result
    }

    /// Any expression rule. The rules that only wrap one child add no level to the tree; an
    /// operator chain adds one per operator, as it folds into nested nodes.
    fn expr(&self, pair: Pair<'_, Rule>) -> Result<Expr> {
        let n_children = || pair.clone().into_inner().count();
        let levels = match pair.as_rule() {
            Rule::expr => usize::from(n_children() > 1),
            Rule::or_expr | Rule::and_expr | Rule::cmp_expr | Rule::sum | Rule::product => {
                n_children().saturating_sub(1) / 2
            }
            Rule::not_expr | Rule::unary => n_children().saturating_sub(1),
            Rule::call | Rule::list | Rule::if_expr => 1,
            _ => 0,
        };
        let span = self.span(&pair);
        let is_chain = matches!(
            pair.as_rule(),
            Rule::or_expr | Rule::and_expr | Rule::cmp_expr | Rule::sum | Rule::product
        );
        if is_chain && levels > MAX_DEPTH {
            // A long flat chain is not deep nesting to the user: say what it is, and point at
            // the first operator past the limit rather than at the whole (long) line.
            let first_over = pair.clone().into_inner().nth(2 * MAX_DEPTH + 1);
            let at = first_over.map_or(span, |p| self.span(&p));
            return Err(Box::new(
                Diagnostic::error(
                    Code::NestingTooDeep,
                    at,
                    format!(
                        "this expression chains {levels} operators; at most {MAX_DEPTH} may \
                         follow each other"
                    ),
                )
                .with_label(format!("operator {}", MAX_DEPTH + 1))
                .with_help("compute it in parts with `let` bindings: `let a = ...` then `a + ...`"),
            ));
        }
        self.descend(span, levels, || self.expr_node(pair))
    }

    fn expr_node(&self, pair: Pair<'_, Rule>) -> Result<Expr> {
        let span = self.span(&pair);
        match pair.as_rule() {
            Rule::expr => {
                let mut inner = pair.into_inner();
                let head = self.expr(next(&mut inner))?;
                let stages = inner.map(|p| self.stage(p)).collect::<Result<Vec<_>>>()?;
                if stages.is_empty() {
                    Ok(head)
                } else {
                    Ok(Expr {
                        kind: ExprKind::Pipeline {
                            head: Box::new(head),
                            stages,
                        },
                        span,
                    })
                }
            }
            Rule::or_expr | Rule::and_expr | Rule::cmp_expr | Rule::sum | Rule::product => {
                self.binary_chain(pair)
            }
            Rule::not_expr | Rule::unary => {
                let mut ops = Vec::new();
                let mut operand: Option<Expr> = None;
                for p in pair.into_inner() {
                    match p.as_rule() {
                        Rule::not_op => ops.push((UnaryOp::Not, self.span(&p))),
                        Rule::neg_op => ops.push((UnaryOp::Neg, self.span(&p))),
                        Rule::index => {
                            let index_span = self.span(&p);
                            let index = self.expr(next(&mut p.into_inner()))?;
                            let base = operand.take().ok_or_else(|| internal(span))?;
                            operand = Some(Expr {
                                span: base.span.to(index_span),
                                kind: ExprKind::Index {
                                    base: Box::new(base),
                                    index: Box::new(index),
                                },
                            });
                        }
                        _ => operand = Some(self.expr(p)?),
                    }
                }
                let mut expr = operand.ok_or_else(|| internal(span))?;
                for (op, op_span) in ops.into_iter().rev() {
                    expr = Expr {
                        span: op_span.to(expr.span),
                        kind: ExprKind::Unary {
                            op,
                            operand: Box::new(expr),
                        },
                    };
                }
                Ok(expr)
            }
            Rule::int => {
                let value = pair.as_str().parse::<i64>().map_err(|_| {
                    Diagnostic::error(Code::NumberTooLarge, span, "this integer is too large")
                        .with_label("larger than 9,223,372,036,854,775,807")
                })?;
                Ok(Expr {
                    kind: ExprKind::Int(value),
                    span,
                })
            }
            Rule::float => {
                let value = pair
                    .as_str()
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| {
                        Diagnostic::error(Code::NumberTooLarge, span, "this number is too large")
                            .with_label("not a finite 64-bit float")
                    })?;
                Ok(Expr {
                    kind: ExprKind::Float(value),
                    span,
                })
            }
            Rule::bool_lit => Ok(Expr {
                kind: ExprKind::Bool(pair.as_str() == "true"),
                span,
            }),
            Rule::pad_mode => Ok(Expr {
                kind: ExprKind::PadMode(if pair.as_str() == "same" {
                    PadMode::Same
                } else {
                    PadMode::Valid
                }),
                span,
            }),
            Rule::string => Ok(Expr {
                kind: ExprKind::Str(string_value(self.file, pair)?),
                span,
            }),
            Rule::ident => Ok(Expr {
                kind: ExprKind::Name(pair.as_str().to_string()),
                span,
            }),
            Rule::list => {
                let items = pair
                    .into_inner()
                    .map(|p| self.expr(p))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Expr {
                    kind: ExprKind::List(items),
                    span,
                })
            }
            Rule::paren | Rule::repeat_count => self.expr(next(&mut pair.into_inner())),
            Rule::call => {
                let (callee, args) = self.call(pair)?;
                Ok(Expr {
                    kind: ExprKind::Call { callee, args },
                    span,
                })
            }
            Rule::if_expr => self.if_expr(pair),
            _ => Err(internal(span)),
        }
    }

    fn binary_chain(&self, pair: Pair<'_, Rule>) -> Result<Expr> {
        let mut inner = pair.into_inner();
        let mut left = self.expr(next(&mut inner))?;
        while let Some(op_pair) = inner.next() {
            let op_span = self.span(&op_pair);
            let op = match op_pair.as_str() {
                "or" => BinaryOp::Or,
                "and" => BinaryOp::And,
                "==" => BinaryOp::Eq,
                "!=" => BinaryOp::Ne,
                "<" => BinaryOp::Lt,
                "<=" => BinaryOp::Le,
                ">" => BinaryOp::Gt,
                ">=" => BinaryOp::Ge,
                "+" => BinaryOp::Add,
                "-" => BinaryOp::Sub,
                "*" => BinaryOp::Mul,
                "/" => BinaryOp::Div,
                _ => BinaryOp::Rem,
            };
            let right = self.expr(next(&mut inner))?;
            left = Expr {
                span: left.span.to(right.span),
                kind: ExprKind::Binary {
                    op,
                    op_span,
                    left: Box::new(left),
                    right: Box::new(right),
                },
            };
        }
        Ok(left)
    }

    fn if_expr(&self, pair: Pair<'_, Rule>) -> Result<Expr> {
        let span = self.span(&pair);
        let mut inner = children(pair);
        let cond = self.expr(next(&mut inner))?;
        let then = self.body(next(&mut inner))?;
        let otherwise = match inner.next() {
            Some(p) if p.as_rule() == Rule::body => Some(self.body(p)?),
            Some(p) => {
                let nested_span = self.span(&p);
                let nested = self.descend(nested_span, 1, || self.if_expr(p))?;
                Some(Body {
                    span: nested.span,
                    stmts: vec![Stmt::Expr(nested)],
                })
            }
            None => None,
        };
        Ok(Expr {
            kind: ExprKind::If {
                cond: Box::new(cond),
                then,
                otherwise,
            },
            span,
        })
    }

    fn call(&self, pair: Pair<'_, Rule>) -> Result<(Ident, Vec<Arg>)> {
        let mut inner = pair.into_inner();
        let callee = self.ident(next(&mut inner));
        let mut args = Vec::new();
        if let Some(arg_list) = inner.next() {
            for arg in arg_list.into_inner() {
                let mut parts = arg.into_inner();
                let first = next(&mut parts);
                if first.as_rule() == Rule::keyword {
                    let keyword = self.ident(first);
                    let value = self.expr(next(&mut parts))?;
                    args.push(Arg {
                        keyword: Some(keyword),
                        value,
                    });
                } else {
                    args.push(Arg {
                        keyword: None,
                        value: self.expr(first)?,
                    });
                }
            }
        }
        Ok((callee, args))
    }

    fn stage(&self, pair: Pair<'_, Rule>) -> Result<Stage> {
        let span = self.span(&pair);
        self.descend(span, 1, || self.stage_node(pair))
    }

    fn stage_node(&self, pair: Pair<'_, Rule>) -> Result<Stage> {
        let span = self.span(&pair);
        let mut label = None;
        let mut label_parts = Vec::new();
        let mut frozen = false;
        let mut kind = None;
        for p in pair.into_inner() {
            match p.as_rule() {
                Rule::label => {
                    let inner = next(&mut p.into_inner());
                    if inner.as_rule() == Rule::label_string {
                        let (ident, parts) = self.label_string(inner)?;
                        label = Some(ident);
                        label_parts = parts;
                    } else {
                        label = Some(self.ident(inner));
                    }
                }
                Rule::frozen => frozen = true,
                _ => kind = Some(self.stage_kind(p)?),
            }
        }
        Ok(Stage {
            label,
            label_parts,
            frozen,
            kind: kind.ok_or_else(|| internal(span))?,
            span,
        })
    }

    /// `"block2-0"` → the label `block2-0`; `"layer{i + 1}"` → its source text and its pieces.
    fn label_string(&self, pair: Pair<'_, Rule>) -> Result<(Ident, Vec<LabelPart>)> {
        let span = self.span(&pair);
        let quoted = pair.as_str();
        let name = quoted[1..quoted.len() - 1].to_string();
        let mut parts = Vec::new();
        for piece in pair.into_inner() {
            match piece.as_rule() {
                Rule::label_hole => {
                    parts.push(LabelPart::Hole(self.expr(next(&mut piece.into_inner()))?))
                }
                _ => parts.push(LabelPart::Text(piece.as_str().to_string())),
            }
        }
        if parts.iter().all(|p| matches!(p, LabelPart::Text(_))) {
            parts.clear();
        }
        Ok((Ident { name, span }, parts))
    }

    fn stage_kind(&self, pair: Pair<'_, Rule>) -> Result<StageKind> {
        let span = self.span(&pair);
        match pair.as_rule() {
            Rule::call => {
                let (callee, args) = self.call(pair)?;
                Ok(StageKind::Call { callee, args })
            }
            Rule::ident | Rule::qualified_name => Ok(StageKind::Name(self.ident(pair))),
            Rule::repeat_stage => {
                let mut inner = children(pair);
                let count = self.expr(next(&mut inner))?;
                let mut var = None;
                let mut body = None;
                for p in inner {
                    match p.as_rule() {
                        Rule::ident => var = Some(self.ident(p)),
                        _ => body = Some(self.stage(p)?),
                    }
                }
                Ok(StageKind::Repeat {
                    count,
                    var,
                    body: Box::new(body.ok_or_else(|| internal(span))?),
                })
            }
            Rule::sequence => Ok(StageKind::Sequence(self.seq_items(pair)?)),
            Rule::stage_group => Ok(StageKind::Group(
                pair.into_inner()
                    .map(|p| self.stage(p))
                    .collect::<Result<Vec<_>>>()?,
            )),
            _ => Err(internal(span)),
        }
    }

    fn seq_items(&self, pair: Pair<'_, Rule>) -> Result<Vec<SeqItem>> {
        pair.into_inner().map(|p| self.seq_item(p)).collect()
    }

    fn seq_item(&self, pair: Pair<'_, Rule>) -> Result<SeqItem> {
        let span = self.span(&pair);
        self.descend(span, 1, || self.seq_item_node(pair))
    }

    fn seq_item_node(&self, pair: Pair<'_, Rule>) -> Result<SeqItem> {
        let span = self.span(&pair);
        match pair.as_rule() {
            Rule::stage => Ok(SeqItem::Stage(self.stage(pair)?)),
            Rule::seq_for => {
                let mut inner = children(pair);
                let binding = next(&mut inner);
                let destructure = binding.as_rule() == Rule::pattern;
                let vars = if destructure {
                    binding.into_inner().map(|p| self.ident(p)).collect()
                } else {
                    vec![self.ident(binding)]
                };
                let iter = self.expr(next(&mut inner))?;
                let items = self.seq_items(next(&mut inner))?;
                Ok(SeqItem::For {
                    vars,
                    destructure,
                    iter,
                    items,
                    span,
                })
            }
            Rule::seq_if => {
                let mut inner = children(pair);
                let cond = self.expr(next(&mut inner))?;
                let then = self.seq_items(next(&mut inner))?;
                let otherwise = match inner.next() {
                    Some(p) if p.as_rule() == Rule::seq_items => Some(self.seq_items(p)?),
                    Some(p) => Some(vec![self.seq_item(p)?]),
                    None => None,
                };
                Ok(SeqItem::If {
                    cond,
                    then,
                    otherwise,
                    span,
                })
            }
            Rule::seq_items => Err(internal(span)),
            _ => Ok(SeqItem::Stage(Stage {
                label: None,
                label_parts: Vec::new(),
                frozen: false,
                kind: self.stage_kind(pair)?,
                span,
            })),
        }
    }
}

fn next<'a>(pairs: &mut impl Iterator<Item = Pair<'a, Rule>>) -> Pair<'a, Rule> {
    // The grammar guarantees the child exists; a missing one is a bug in this file.
    pairs.next().expect("the grammar guarantees this child")
}

fn internal(span: Span) -> Box<Diagnostic> {
    Box::new(super::errors::internal(span))
}

/// The text of a string literal: `\\`, `\"`, `\n` and `\t` are the only escapes.
fn string_value(file: FileId, pair: Pair<'_, Rule>) -> Result<String> {
    let Some(inner) = pair.into_inner().next() else {
        return Ok(String::new());
    };
    let start = inner.as_span().start();
    let raw = inner.as_str();
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.char_indices();
    while let Some((idx, c)) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some((_, 'n')) => out.push('\n'),
            Some((_, 't')) => out.push('\t'),
            Some((_, '\\')) => out.push('\\'),
            Some((_, '"')) => out.push('"'),
            other => {
                let end = other.map_or(idx + 1, |(i, ch)| i + ch.len_utf8());
                let span = Span::new(file, start + idx..start + end);
                return Err(Box::new(
                    Diagnostic::error(
                        Code::InvalidEscape,
                        span,
                        format!("unknown escape `{}` in a string", &raw[idx..end]),
                    )
                    .with_label("not an escape")
                    .with_help("the escapes are `\\\\`, `\\\"`, `\\n` and `\\t`; paths use `/`"),
                ));
            }
        }
    }
    Ok(out)
}
