//! pest's parse failures as diagnostics, with every grammar rule given an English name.

use super::parser::Rule;
use crate::diag::{Code, Diagnostic};
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
        Rule::ident | Rule::ident_raw | Rule::callee | Rule::keyword | Rule::qualified_name => {
            "a name"
        }
        Rule::params | Rule::param => "a parameter",
        Rule::type_name => "a type (`int`, `float`, `bool`, `tensor`, `string` or `list`)",
        Rule::net_inputs | Rule::net_input => "an input such as `image: 224x224x3`",
        Rule::pattern => "`[` and names",
        Rule::shape_lit | Rule::digits => "a shape such as `224x224x3`",
        Rule::body => "`{`",
        Rule::let_stmt | Rule::kw_let => "`let`",
        Rule::return_stmt | Rule::kw_return => "`return`",
        Rule::outputs => "the network's outputs in parentheses, `(a, b)`",
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
        Rule::label | Rule::label_string | Rule::label_text | Rule::label_hole => "a label",
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

/// Characters that look like the ASCII a program needs, as editors and word processors
/// substitute them: the character, its Unicode name, and what to write instead.
const LOOKALIKES: &[(char, &str, &str)] = &[
    ('\u{00A0}', "NO-BREAK SPACE", " "),
    ('\u{2000}', "EN QUAD", " "),
    ('\u{2002}', "EN SPACE", " "),
    ('\u{2003}', "EM SPACE", " "),
    ('\u{2009}', "THIN SPACE", " "),
    ('\u{202F}', "NARROW NO-BREAK SPACE", " "),
    ('\u{3000}', "IDEOGRAPHIC SPACE", " "),
    ('\u{200B}', "ZERO WIDTH SPACE", ""),
    ('\u{FEFF}', "ZERO WIDTH NO-BREAK SPACE", ""),
    ('\u{2212}', "MINUS SIGN", "-"),
    ('\u{2010}', "HYPHEN", "-"),
    ('\u{2013}', "EN DASH", "-"),
    ('\u{2014}', "EM DASH", "-"),
    ('\u{2192}', "RIGHTWARDS ARROW", "->"),
    ('\u{2018}', "LEFT SINGLE QUOTATION MARK", "\""),
    ('\u{2019}', "RIGHT SINGLE QUOTATION MARK", "\""),
    ('\u{201C}', "LEFT DOUBLE QUOTATION MARK", "\""),
    ('\u{201D}', "RIGHT DOUBLE QUOTATION MARK", "\""),
    ('\u{FF08}', "FULLWIDTH LEFT PARENTHESIS", "("),
    ('\u{FF09}', "FULLWIDTH RIGHT PARENTHESIS", ")"),
    ('\u{FF0C}', "FULLWIDTH COMMA", ","),
    ('\u{FF1A}', "FULLWIDTH COLON", ":"),
    ('\u{2236}', "RATIO", ":"),
    ('\u{00D7}', "MULTIPLICATION SIGN", "*"),
];

/// A diagnostic for a character that is not ASCII where a token was expected: a letter that
/// no name may contain, or a lookalike of the ASCII a program needs.
fn non_ascii(file: FileId, text: &str, pos: usize) -> Option<Diagnostic> {
    let found = text.get(pos..)?.chars().next()?;
    if found.is_ascii() {
        return None;
    }
    let span = Span::new(file, pos..pos + found.len_utf8());
    if found.is_alphabetic() {
        return Some(
            Diagnostic::error(
                Code::Syntax,
                span,
                format!("expected a name of ASCII letters, digits and `_`, found `{found}`"),
            )
            .with_label("not allowed in a name"),
        );
    }
    let code = format!("U+{:04X}", u32::from(found));
    let Some(&(_, name, ascii)) = LOOKALIKES.iter().find(|(c, ..)| *c == found) else {
        return Some(
            Diagnostic::error(
                Code::Syntax,
                span,
                format!("unexpected character `{found}` ({code})"),
            )
            .with_label("not part of the language")
            .with_help("programs are written in ASCII outside strings and comments"),
        );
    };
    // A Unicode minus or dash before `>` was meant as the arrow.
    let arrow = ascii == "-" && text[pos + found.len_utf8()..].starts_with('>');
    let message = match ascii {
        "" => format!("found an invisible {code} {name}"),
        " " => format!("found a {code} {name}, which looks like a space but is not one"),
        _ => format!("found `{found}` ({code} {name}), which looks like `{ascii}` but is not"),
    };
    let help = match ascii {
        _ if arrow => "did you mean `->`? write the arrow with an ASCII `-`".to_string(),
        "" => "delete it".to_string(),
        " " => "replace it with an ordinary space".to_string(),
        _ => format!("replace it with `{ascii}`"),
    };
    Some(
        Diagnostic::error(Code::Syntax, span, message)
            .with_label("not ASCII")
            .with_help(help),
    )
}

/// The position of `//` when it opens a comment inside brackets that are still open at `pos`:
/// `conv(channels(x) // 2, 1)` means an integer division, but `//` starts a comment, so the
/// parse fails at a later line. A comment outside any bracket is left alone.
fn comment_in_open_brackets(text: &str, pos: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut found = None;
    let mut idx = 0;
    while idx < pos.min(bytes.len()) {
        match (bytes[idx], bytes.get(idx + 1).copied()) {
            (b'/', Some(b'/')) => {
                // Only a comment that follows an operand on its own line reads as division.
                let line_start = text[..idx].rfind('\n').map_or(0, |i| i + 1);
                let before = text[line_start..idx].trim_end();
                let after = text[idx + 2..].trim_start();
                let operand_before = before
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == ')' || c == ']');
                let operand_after = after
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '(');
                if depth > 0 && operand_before && operand_after && found.is_none() {
                    found = Some((idx, depth));
                }
                while idx < bytes.len() && bytes[idx] != b'\n' {
                    idx += 1;
                }
                continue;
            }
            (b'/', Some(b'*')) => {
                let end = text[idx + 2..]
                    .find("*/")
                    .map_or(bytes.len(), |e| idx + 4 + e);
                idx = end;
                continue;
            }
            (b'"', _) => {
                idx += 1;
                while idx < bytes.len() && bytes[idx] != b'"' && bytes[idx] != b'\n' {
                    idx += if bytes[idx] == b'\\' { 2 } else { 1 };
                }
            }
            // Braces are left out: a network's body is open around every line of it.
            (b'(' | b'[', _) => depth += 1,
            (b')' | b']', _) => {
                depth = depth.saturating_sub(1);
                // The bracket open at the comment closed before the error: not our case.
                if found.is_some_and(|(_, d)| depth < d) {
                    found = None;
                }
            }
            _ => {}
        }
        idx += 1;
    }
    found.map(|(idx, _)| idx)
}

/// `frozen c1: conv(...)`: the label was written after `frozen` instead of before it. Returns
/// the label's text when the text before `pos` (a `:`) ends with `frozen <name>`.
fn label_after_frozen(text: &str, pos: usize) -> Option<&str> {
    if !text[pos..].starts_with(':') {
        return None;
    }
    let before = text[..pos].trim_end();
    let name_start = before
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(0, |i| i + 1);
    let name = &before[name_start..];
    let rest = before[..name_start].trim_end();
    let is_frozen = rest.ends_with("frozen")
        && !rest[..rest.len() - "frozen".len()]
            .ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
    (!name.is_empty() && is_frozen).then_some(name)
}

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
    let pos = match error.location {
        InputLocation::Pos(pos) => pos,
        InputLocation::Span((start, _)) => start,
    };
    if let ErrorVariant::CustomError { message } = &error.variant {
        // pest's own guard against deep recursion, for nesting without brackets.
        let span = Span::new(file, pos.min(text.len())..pos.min(text.len()));
        return Diagnostic::error(
            Code::NestingTooDeep,
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
            if further.is_some_and(|c| c.is_alphabetic() && !c.is_ascii()) {
                if let Some(diagnostic) = non_ascii(file, text, attempts.max_position) {
                    return diagnostic;
                }
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
    if let Some(diagnostic) = non_ascii(file, text, pos) {
        return diagnostic;
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
    let mut diagnostic = Diagnostic::error(
        Code::Syntax,
        span,
        format!("expected {}, found {found}", join_alternatives(&items)),
    )
    .with_label(format!("unexpected {found}"));
    if let Some(comment) = comment_in_open_brackets(text, pos) {
        diagnostic = diagnostic
            .with_secondary(
                Span::new(file, comment..comment + 2),
                "`//` starts a comment, which runs to the end of the line",
            )
            .with_help("for an integer division write `floor(a / b)`; `/` divides");
    } else if let Some(label) = label_after_frozen(text, pos) {
        diagnostic = diagnostic.with_help(format!(
            "a label comes before `frozen`: write `{label}: frozen ...`"
        ));
    }
    diagnostic
}

/// The parser met a tree the grammar should not produce: a bug in cnnc, not in the program.
pub fn internal(span: Span) -> Diagnostic {
    Diagnostic::error(
        Code::Internal,
        span,
        "internal error: unexpected syntax tree shape",
    )
    .with_label("the parser did not expect this")
    .with_help("this is a bug in cnnc, not in the program: please report it with this file")
}
