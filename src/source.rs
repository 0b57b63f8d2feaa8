//! Source files and spans: every diagnostic points into one of the files held here.
//!
//! A program is its root file plus every file it imports (the embedded standard library
//! included), so spans carry a `FileId` and the map implements codespan's `Files`.

use codespan_reporting::files::{self, Files, SimpleFile};
use std::ops::Range;

/// Index of a file in a [`SourceMap`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FileId(pub u32);

/// A byte range in one source file.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub file: FileId,
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(file: FileId, range: Range<usize>) -> Span {
        Span {
            file,
            start: range.start as u32,
            end: range.end as u32,
        }
    }

    pub fn range(self) -> Range<usize> {
        self.start as usize..self.end as usize
    }

    /// The smallest span covering both (they must be in the same file).
    pub fn to(self, other: Span) -> Span {
        Span {
            file: self.file,
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

/// The last position `line_col` answered for.
#[derive(Copy, Clone, Default)]
struct Cursor {
    file: FileId,
    line_start: usize,
    byte: usize,
    col: usize,
}

/// All source files of one compilation.
#[derive(Default)]
pub struct SourceMap {
    files: Vec<SimpleFile<String, String>>,
    cursor: std::cell::Cell<Cursor>,
}

impl SourceMap {
    pub fn new() -> SourceMap {
        SourceMap::default()
    }

    pub fn add(&mut self, name: impl Into<String>, text: impl Into<String>) -> FileId {
        self.files.push(SimpleFile::new(name.into(), text.into()));
        FileId(self.files.len() as u32 - 1)
    }

    pub fn text(&self, file: FileId) -> &str {
        self.files[file.0 as usize].source()
    }

    pub fn name(&self, file: FileId) -> &str {
        self.files[file.0 as usize].name()
    }

    /// The source text a span covers.
    pub fn snippet(&self, span: Span) -> &str {
        self.text(span.file).get(span.range()).unwrap_or("")
    }

    /// 1-based line and column (in characters) of a span's start. Lines are found by binary
    /// search; columns are counted from the line's start, or from the previous answer when it
    /// was earlier on the same line, so a dump that walks a long line stays linear.
    pub fn line_col(&self, span: Span) -> (usize, usize) {
        let text = self.text(span.file);
        let mut byte = (span.start as usize).min(text.len());
        while !text.is_char_boundary(byte) {
            byte -= 1;
        }
        let line_idx = Files::line_index(self, span.file, byte).unwrap_or(0);
        let line_start = Files::line_range(self, span.file, line_idx).map_or(0, |r| r.start);
        let mut cursor = self.cursor.get();
        if cursor.file != span.file || cursor.line_start != line_start || cursor.byte > byte {
            cursor = Cursor {
                file: span.file,
                line_start,
                byte: line_start,
                col: 0,
            };
        }
        cursor.col += text[cursor.byte..byte].chars().count();
        cursor.byte = byte;
        self.cursor.set(cursor);
        (line_idx + 1, cursor.col + 1)
    }

    fn get(&self, id: FileId) -> Result<&SimpleFile<String, String>, files::Error> {
        self.files
            .get(id.0 as usize)
            .ok_or(files::Error::FileMissing)
    }
}

impl<'a> Files<'a> for SourceMap {
    type FileId = FileId;
    type Name = &'a str;
    type Source = &'a str;

    fn name(&'a self, id: FileId) -> Result<&'a str, files::Error> {
        Ok(self.get(id)?.name())
    }

    fn source(&'a self, id: FileId) -> Result<&'a str, files::Error> {
        Ok(self.get(id)?.source())
    }

    fn line_index(&'a self, id: FileId, byte_index: usize) -> Result<usize, files::Error> {
        self.get(id)?.line_index((), byte_index)
    }

    fn line_range(&'a self, id: FileId, line_index: usize) -> Result<Range<usize>, files::Error> {
        self.get(id)?.line_range((), line_index)
    }
}

/// The largest `.cnn` or labels file read (a program is text written by people).
pub const MAX_SOURCE_BYTES: u64 = 16 << 20;

/// Refuses what is not a regular file (a device such as `/dev/zero` never ends, a pipe may
/// never close or cannot be mapped) and anything larger than `limit` bytes.
pub fn check_regular_file(metadata: &std::fs::Metadata, limit: u64) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    if !metadata.is_file() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "not a regular file (a directory, device or pipe)",
        ));
    }
    if metadata.len() > limit {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "the file has {} bytes, more than the limit of {limit}",
                metadata.len()
            ),
        ));
    }
    Ok(())
}

/// Reads a whole file, refusing what is not a regular file (a device such as `/dev/zero`
/// never ends, a pipe may never close) and anything larger than `limit` bytes.
pub fn read_regular_file(path: &std::path::Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind, Read};
    let metadata = std::fs::metadata(path)?;
    check_regular_file(&metadata, limit)?;
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    // The file may grow after the size check: never read past the limit.
    std::fs::File::open(path)?
        .take(limit + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "the file grew past the size limit",
        ));
    }
    Ok(bytes)
}
