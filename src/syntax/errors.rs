//! pest's parse failures as diagnostics, with every grammar rule given an English name.

use super::parser::Rule;
use crate::diag::Diagnostic;
use crate::source::{FileId, Span};
use pest::error::{ErrorVariant, InputLocation};
use std::collections::BTreeSet;

/// What a user reads for each rule the parser expected.
fn rule_name(rule: Rule) -> Option<&'static str> {
    Some(match rule {
        Rule::EOI => "end of file",
        Rule::file | Rule::item => "`network`, `block` or `import`",
        Rule::kw_import | Rule::kw_use | Rule::kw_block | Rule::kw_network => {
            "`network`, `block` or `import`"
        }
        Rule::import | Rule::string | Rule::string_inner => "a string",
        Rule::module_path => "a module path such as `std::resnet`",
        Rule::ident | Rule::ident_raw | Rule::callee | Rule::keyword => "a name",
        Rule::params | Rule::param => "a parameter",
        Rule::type_name => "a type (`int`, `float`, `bool`, `tensor`, `string` or `list`)",
        Rule::net_inputs | Rule::net_input => "an input such as `image: 224x224x3`",
        Rule::pattern => "`[` and names",
        Rule::shape_lit | Rule::digits => "a shape such as `224x224x3`",
        Rule::body => "`{`",
        Rule::let_stmt | Rule::kw_let => "`let`",
        Rule::return_stmt | Rule::kw_return => "`return`",
        Rule::expr_stmt
        | Rule::expr
        | Rule::or_expr
        | Rule::and_expr
        | Rule::not_expr
        | Rule::cmp_expr
        | Rule::sum
        | Rule::product
        | Rule::unary
        | Rule::paren
        | Rule::call
        | Rule::list
        | Rule::bool_lit
        | Rule::pad_mode
        | Rule::if_expr
        | Rule::not_op
        | Rule::neg_op => "an expression",
        Rule::int => "an integer",
        Rule::float | Rule::exponent => "a number",
        Rule::or_op | Rule::and_op | Rule::cmp_op | Rule::add_op | Rule::mul_op => "an operator",
        Rule::args | Rule::arg => "an argument",
        Rule::stage | Rule::stage_group | Rule::sequence | Rule::repeat_stage => {
            "a layer or block call"
        }
        Rule::label => "a label",
        Rule::frozen => "`frozen`",
        Rule::kw_repeat => "`repeat`",
        Rule::repeat_count => "a repeat count (a number, a name, or an expression in parentheses)",
        Rule::kw_as => "`as`",
        Rule::seq_items | Rule::seq_for | Rule::seq_if => "a sequence item",
        Rule::kw_for => "`for`",
        Rule::kw_in => "`in`",
        Rule::kw_if => "`if`",
        Rule::kw_else => "`else`",
        _ => return None,
    })
}

/// Punctuation worth naming in an expectation; other literal tokens (the `e` of an exponent,
/// the `x` of a shape) would only confuse.
const PUNCTUATION: &[&str] = &["(", ")", "[", "]", "{", "}", ",", ":", ";", "->", "="];

fn describe_found(text: &str, pos: usize) -> String {
    let rest = &text[pos.min(text.len())..];
    let Some(first) = rest.chars().next() else {
        return "end of file".to_string();
    };
    if first.is_alphanumeric() || first == '_' {
        let word: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '.')
            .take(40)
            .collect();
        format!("`{word}`")
    } else if first == '\n' {
        "end of line".to_string()
    } else {
        format!("`{first}`")
    }
}

fn join_alternatives(items: &[String]) -> String {
    match items {
        [] => "something else".to_string(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

pub fn to_diagnostic(file: FileId, text: &str, error: pest::error::Error<Rule>) -> Diagnostic {
    let mut pos = match error.location {
        InputLocation::Pos(pos) => pos,
        InputLocation::Span((start, _)) => start,
    };
    if let ErrorVariant::CustomError { message } = &error.variant {
        // pest's own guard against deep recursion, for nesting without brackets.
        let span = Span::new(file, pos.min(text.len())..pos.min(text.len()));
        return Diagnostic::error(
            "nesting-too-deep",
            span,
            format!("this program is nested more than the parser can follow ({message})"),
        )
        .with_label("too deep")
        .with_help("split long `repeat` or `else if` chains with `let` bindings or blocks");
    }
    let mut expected: BTreeSet<&'static str> = BTreeSet::new();
    if let ErrorVariant::ParsingError { positives, .. } = &error.variant {
        expected.extend(positives.iter().filter_map(|&rule| rule_name(rule)));
    }
    let mut punctuation: BTreeSet<String> = BTreeSet::new();
    if let Some(attempts) = error.parse_attempts() {
        // Tokens may have been tried further on than rules. The rules' place usually explains
        // the mistake better (a shape cut short, a call left open); but a letter that no name
        // may contain is pointed at where it is.
        if attempts.max_position > pos {
            let further = text
                .get(attempts.max_position..)
                .and_then(|t| t.chars().next());
            if let Some(letter) = further.filter(|c| c.is_alphabetic() && !c.is_ascii()) {
                pos = attempts.max_position;
                let span = Span::new(file, pos..pos + letter.len_utf8());
                return Diagnostic::error(
                    "syntax",
                    span,
                    format!("expected a name of ASCII letters, digits and `_`, found `{letter}`"),
                )
                .with_label("not allowed in a name");
            }
        }
        for token in attempts.expected_tokens() {
            // pest does not export its token type; its display is the token's text.
            let token = token.to_string();
            if PUNCTUATION.contains(&token.as_str()) {
                punctuation.insert(format!("`{token}`"));
            }
        }
    }
    // Where a stage may start, "a layer or block call" says it all: the ways a stage can
    // begin (a name, a label, `repeat`, brackets) would only lengthen the list.
    const STAGE: &str = "a layer or block call";
    if expected.contains(STAGE) {
        expected.retain(|e| !matches!(*e, "a name" | "a label" | "`repeat`" | "`frozen`"));
        for token in ["`(`", "`[`", "`:`"] {
            punctuation.remove(token);
        }
    }
    let mut items: Vec<String> = punctuation.into_iter().collect();
    for name in expected {
        if !items.iter().any(|item| item == name) {
            items.push(name.to_string());
        }
    }
    let found = describe_found(text, pos);
    let end = text[pos.min(text.len())..]
        .chars()
        .next()
        .map_or(pos, |c| pos + c.len_utf8());
    let span = Span::new(file, pos.min(text.len())..end.min(text.len()));
    Diagnostic::error(
        "syntax",
        span,
        format!("expected {}, found {found}", join_alternatives(&items)),
    )
    .with_label(format!("unexpected {found}"))
}
