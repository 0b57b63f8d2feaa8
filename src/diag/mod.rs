//! The diagnostic model and its rendering with codespan-reporting.
//!
//! Stages build [`Diagnostic`]s (a message, a primary span, secondary labels, notes and a
//! help line); this module is the only place that knows how they look on a terminal. Every
//! diagnostic has a [`Code`] from the registry in `code.rs`.

mod code;

pub use code::{Code, Fixture};

use crate::source::{SourceMap, Span};
use codespan_reporting::diagnostic as cs;
use codespan_reporting::term;
use std::io::IsTerminal;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Clone, Debug)]
pub struct Label {
    pub span: Span,
    pub message: String,
}

#[derive(Clone, Debug)]
pub struct Diagnostic {
    pub severity: Severity,
    /// The kind of problem, rendered as e.g. `shape-mismatch`.
    pub code: Code,
    pub message: String,
    /// `None` for a diagnostic about no place in particular (a network name on the command line).
    pub primary: Option<Label>,
    pub secondary: Vec<Label>,
    pub notes: Vec<String>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(code: Code, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            primary: Some(Label {
                span,
                message: String::new(),
            }),
            secondary: Vec::new(),
            notes: Vec::new(),
            help: None,
        }
    }

    pub fn warning(code: Code, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, span, message)
        }
    }

    /// An error about no place in the source.
    pub fn global(code: Code, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            primary: None,
            ..Diagnostic::error(code, Span::default(), message)
        }
    }

    /// The text under the primary caret.
    pub fn with_label(mut self, message: impl Into<String>) -> Diagnostic {
        if let Some(primary) = &mut self.primary {
            primary.message = message.into();
        }
        self
    }

    pub fn with_secondary(mut self, span: Span, message: impl Into<String>) -> Diagnostic {
        self.secondary.push(Label {
            span,
            message: message.into(),
        });
        self
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    fn to_codespan(&self) -> cs::Diagnostic<crate::source::FileId> {
        let severity = match self.severity {
            Severity::Error => cs::Severity::Error,
            Severity::Warning => cs::Severity::Warning,
        };
        let mut labels: Vec<_> = self
            .primary
            .iter()
            .map(|p| cs::Label::primary(p.span.file, p.span.range()).with_message(&p.message))
            .collect();
        for label in &self.secondary {
            labels.push(
                cs::Label::secondary(label.span.file, label.span.range())
                    .with_message(&label.message),
            );
        }
        let mut notes = self.notes.clone();
        if let Some(help) = &self.help {
            notes.push(format!("help: {help}"));
        }
        cs::Diagnostic::new(severity)
            .with_message(&self.message)
            .with_code(self.code.as_str())
            .with_labels(labels)
            .with_notes(notes)
    }
}

/// Renders diagnostics as plain text (what the snapshot tests record).
pub fn render_plain(sources: &SourceMap, diagnostics: &[Diagnostic]) -> String {
    let config = term::Config::default();
    let mut out = String::new();
    for diagnostic in diagnostics {
        // A span outside its file would be a compiler bug; render the message alone then.
        match term::emit_into_string(&config, sources, &diagnostic.to_codespan()) {
            Ok(text) => out.push_str(&text),
            Err(_) => out.push_str(&format!(
                "error[{}]: {}\n",
                diagnostic.code, diagnostic.message
            )),
        }
    }
    out
}

/// Writes diagnostics to standard error, coloured when it is a terminal.
pub fn emit_stderr(sources: &SourceMap, diagnostics: &[Diagnostic]) {
    use term::termcolor::{ColorChoice, StandardStream};
    if !std::io::stderr().is_terminal() {
        eprint!("{}", render_plain(sources, diagnostics));
        return;
    }
    let config = term::Config::default();
    let styles = term::Styles::default();
    let stream = StandardStream::stderr(ColorChoice::Auto);
    let mut lock = stream.lock();
    let mut writer = term::StylesWriter::new(&mut lock, &styles);
    for diagnostic in diagnostics {
        let _ = term::emit_to_write_style(&mut writer, &config, sources, &diagnostic.to_codespan());
    }
}

/// Formats a count with thousands separators: `11,689,512`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (idx, ch) in digits.chars().enumerate() {
        if idx > 0 && (digits.len() - idx).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}
