//! The `.npy` array format, read and written by hand: it is small enough that a dependency
//! would cost more than it saves.
//!
//! A file is a magic string, a version, a header length, a Python dict literal such as
//! `{'descr': '<f4', 'fortran_order': False, 'shape': (224, 224, 3), }` and the raw data.
//! Reading is strict: an unknown dtype, a malformed header, or data shorter or longer than the
//! shape says are errors, never guesses. Writing produces version 1.0, `<f4`, C order.

use super::{Dims, MAX_ELEMENTS};
use half::f16;
use ndarray::{ArrayD, IxDyn, ShapeBuilder};
use thiserror::Error;

const MAGIC: &[u8] = b"\x93NUMPY";

/// An array read from a `.npy` file, in the element type it was stored in.
#[derive(Clone, Debug, PartialEq)]
pub enum NpyArray {
    /// Any float dtype (`f2`, `f4`, `f8`), converted to f32.
    Float(ArrayD<f32>),
    /// Raw bytes (`u1`), typically image pixels.
    U8(ArrayD<u8>),
}

impl NpyArray {
    pub fn shape(&self) -> &[usize] {
        match self {
            NpyArray::Float(a) => a.shape(),
            NpyArray::U8(a) => a.shape(),
        }
    }
}

#[derive(Clone, Debug, Error, PartialEq)]
pub enum NpyError {
    #[error("it does not start with the .npy magic string")]
    BadMagic,
    #[error("it is .npy version {0}.{1}; cnnc reads versions 1.0, 2.0 and 3.0")]
    UnsupportedVersion(u8, u8),
    #[error("the file ends inside its header")]
    TruncatedHeader,
    #[error("its header is malformed: {0}")]
    BadHeader(String),
    #[error("its dtype `{0}` is not supported; cnnc reads float16/32/64 and uint8 arrays")]
    UnsupportedDtype(String),
    #[error("its shape {shape} needs {expected} bytes of data but the file holds {found}")]
    DataLength {
        shape: Dims,
        expected: u64,
        found: u64,
    },
    #[error("its shape {0} has more than cnnc's limit of 2^31 elements")]
    TooLarge(Dims),
    #[error("its dtype is {0}, not an integer type")]
    NotIntegers(String),
    #[error("it holds an unsigned 64-bit integer too large for cnnc")]
    IntegerTooLarge,
}

/// A value of the header's Python literal.
#[derive(Debug)]
enum PyValue {
    Str(String),
    Bool(bool),
    Int(usize),
    Tuple(Vec<PyValue>),
    Dict(Vec<(String, PyValue)>),
}

/// A recursive-descent reader of the tiny subset of Python literals numpy writes.
struct HeaderParser<'a> {
    text: &'a [u8],
    pos: usize,
}

impl HeaderParser<'_> {
    fn bad(&self, what: &str) -> NpyError {
        NpyError::BadHeader(format!("{what} at byte {}", self.pos))
    }

    fn skip_spaces(&mut self) {
        while self.pos < self.text.len() && self.text[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_spaces();
        self.text.get(self.pos).copied()
    }

    fn expect(&mut self, byte: u8) -> Result<(), NpyError> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.bad(&format!("expected `{}`", byte as char)))
        }
    }

    /// Items separated by commas up to `close`; a trailing comma is allowed, as Python does.
    fn items<T>(
        &mut self,
        close: u8,
        mut item: impl FnMut(&mut Self) -> Result<T, NpyError>,
    ) -> Result<Vec<T>, NpyError> {
        let mut out = Vec::new();
        loop {
            if self.peek() == Some(close) {
                self.pos += 1;
                return Ok(out);
            }
            out.push(item(self)?);
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(c) if c == close => {}
                _ => return Err(self.bad(&format!("expected `,` or `{}`", close as char))),
            }
        }
    }

    fn value(&mut self) -> Result<PyValue, NpyError> {
        match self.peek() {
            Some(b'{') => {
                self.pos += 1;
                let entries = self.items(b'}', |p| {
                    let PyValue::Str(key) = p.value()? else {
                        return Err(p.bad("expected a string key"));
                    };
                    p.expect(b':')?;
                    Ok((key, p.value()?))
                })?;
                Ok(PyValue::Dict(entries))
            }
            Some(b'(') => {
                self.pos += 1;
                Ok(PyValue::Tuple(self.items(b')', |p| p.value())?))
            }
            Some(quote @ (b'\'' | b'"')) => {
                let start = self.pos + 1;
                let len = self.text[start..]
                    .iter()
                    .position(|&c| c == quote)
                    .ok_or_else(|| self.bad("unterminated string"))?;
                self.pos = start + len + 1;
                let text = std::str::from_utf8(&self.text[start..start + len])
                    .map_err(|_| self.bad("a string that is not UTF-8"))?;
                Ok(PyValue::Str(text.to_string()))
            }
            Some(b'0'..=b'9') => {
                let start = self.pos;
                while self.pos < self.text.len() && self.text[self.pos].is_ascii_digit() {
                    self.pos += 1;
                }
                // Digits only, so the text is ASCII; a number too large for usize is an error.
                let digits = std::str::from_utf8(&self.text[start..self.pos]).unwrap_or("");
                let value = digits
                    .parse()
                    .map_err(|_| self.bad("an integer too large"))?;
                // numpy on Windows once wrote `3L`; accept the suffix.
                if self.text.get(self.pos) == Some(&b'L') {
                    self.pos += 1;
                }
                Ok(PyValue::Int(value))
            }
            _ if self.text[self.pos..].starts_with(b"True") => {
                self.pos += 4;
                Ok(PyValue::Bool(true))
            }
            _ if self.text[self.pos..].starts_with(b"False") => {
                self.pos += 5;
                Ok(PyValue::Bool(false))
            }
            _ => Err(self.bad("unexpected text")),
        }
    }
}

/// The element type named by a `descr` string.
#[derive(Copy, Clone, Debug, PartialEq)]
enum Element {
    F16 { big_endian: bool },
    F32 { big_endian: bool },
    F64 { big_endian: bool },
    U8,
}

impl Element {
    fn parse(descr: &str) -> Option<Element> {
        let (order, kind) = descr.split_at_checked(1)?;
        let big_endian = match order {
            "<" | "=" | "|" => false,
            ">" => true,
            _ => return None,
        };
        match kind {
            "f2" if order != "|" => Some(Element::F16 { big_endian }),
            "f4" if order != "|" => Some(Element::F32 { big_endian }),
            "f8" if order != "|" => Some(Element::F64 { big_endian }),
            "u1" => Some(Element::U8),
            _ => None,
        }
    }

    fn size(self) -> usize {
        match self {
            Element::F16 { .. } => 2,
            Element::F32 { .. } => 4,
            Element::F64 { .. } => 8,
            Element::U8 => 1,
        }
    }
}

/// Takes bytes `N` at a time, in the stored byte order, as a little-endian array.
fn chunks<const N: usize>(data: &[u8], big_endian: bool) -> impl Iterator<Item = [u8; N]> + '_ {
    data.chunks_exact(N).map(move |chunk| {
        let mut bytes = [0u8; N];
        bytes.copy_from_slice(chunk);
        if big_endian {
            bytes.reverse();
        }
        bytes
    })
}

/// A file's header, read but not yet interpreted, and its data bytes.
struct RawNpy<'a> {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
    data: &'a [u8],
}

impl RawNpy<'_> {
    /// Checks that the data holds exactly the shape's elements of `element_size` bytes.
    fn check_length(&self, element_size: usize) -> Result<(), NpyError> {
        let dims = Dims(self.shape.clone());
        let numel = dims.numel_saturating();
        if numel > MAX_ELEMENTS {
            return Err(NpyError::TooLarge(dims));
        }
        let expected = numel * element_size as u64;
        if self.data.len() as u64 != expected {
            return Err(NpyError::DataLength {
                shape: dims,
                expected,
                found: self.data.len() as u64,
            });
        }
        Ok(())
    }
}

/// Reads the magic string, version and header dict of a `.npy` file.
fn parse_raw(bytes: &[u8]) -> Result<RawNpy<'_>, NpyError> {
    if !bytes.starts_with(MAGIC) {
        return Err(NpyError::BadMagic);
    }
    let (major, minor) = match bytes.get(6..8) {
        Some(&[major, minor]) => (major, minor),
        _ => return Err(NpyError::TruncatedHeader),
    };
    let (header_len, header_start) = match (major, minor) {
        (1, 0) => match bytes.get(8..10) {
            Some(&[a, b]) => (u16::from_le_bytes([a, b]) as usize, 10usize),
            _ => return Err(NpyError::TruncatedHeader),
        },
        (2 | 3, 0) => match bytes.get(8..12) {
            Some(&[a, b, c, d]) => (u32::from_le_bytes([a, b, c, d]) as usize, 12),
            _ => return Err(NpyError::TruncatedHeader),
        },
        _ => return Err(NpyError::UnsupportedVersion(major, minor)),
    };
    let data_start = header_start
        .checked_add(header_len)
        .ok_or(NpyError::TruncatedHeader)?;
    let header = bytes
        .get(header_start..data_start)
        .ok_or(NpyError::TruncatedHeader)?;
    let mut parser = HeaderParser {
        text: header,
        pos: 0,
    };
    let PyValue::Dict(entries) = parser.value()? else {
        return Err(NpyError::BadHeader("the header is not a dict".into()));
    };
    if parser.peek().is_some() {
        return Err(parser.bad("text after the header dict"));
    }

    let field = |key: &str| {
        entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .ok_or_else(|| NpyError::BadHeader(format!("it has no `{key}` entry")))
    };
    let descr = match field("descr")? {
        PyValue::Str(descr) => descr.clone(),
        other => return Err(NpyError::UnsupportedDtype(format!("{other:?}"))),
    };
    let PyValue::Bool(fortran_order) = field("fortran_order")? else {
        return Err(NpyError::BadHeader(
            "`fortran_order` is not True or False".into(),
        ));
    };
    let PyValue::Tuple(dims) = field("shape")? else {
        return Err(NpyError::BadHeader("`shape` is not a tuple".into()));
    };
    let shape = dims
        .iter()
        .map(|d| match d {
            PyValue::Int(n) => Ok(*n),
            _ => Err(NpyError::BadHeader(
                "`shape` holds something other than integers".into(),
            )),
        })
        .collect::<Result<Vec<usize>, _>>()?;
    Ok(RawNpy {
        descr,
        fortran_order: *fortran_order,
        shape,
        data: &bytes[data_start..],
    })
}

/// Parses a whole `.npy` file.
pub fn parse_npy(bytes: &[u8]) -> Result<NpyArray, NpyError> {
    let raw = parse_raw(bytes)?;
    let element =
        Element::parse(&raw.descr).ok_or_else(|| NpyError::UnsupportedDtype(raw.descr.clone()))?;
    raw.check_length(element.size())?;
    let data = raw.data;
    let shape = IxDyn(&raw.shape).set_f(raw.fortran_order);
    let corrupt = |e: ndarray::ShapeError| NpyError::BadHeader(e.to_string());
    let array = match element {
        Element::U8 => {
            return ArrayD::from_shape_vec(shape, data.to_vec())
                .map(|a| NpyArray::U8(a.as_standard_layout().into_owned()))
                .map_err(corrupt)
        }
        Element::F16 { big_endian } => chunks::<2>(data, big_endian)
            .map(|b| f16::from_le_bytes(b).to_f32())
            .collect(),
        Element::F32 { big_endian } => chunks::<4>(data, big_endian)
            .map(f32::from_le_bytes)
            .collect(),
        Element::F64 { big_endian } => chunks::<8>(data, big_endian)
            .map(|b| f64::from_le_bytes(b) as f32)
            .collect(),
    };
    ArrayD::from_shape_vec(shape, array)
        .map(|a| NpyArray::Float(a.as_standard_layout().into_owned()))
        .map_err(corrupt)
}

/// An integer element type: signed or not, and its size in bytes.
fn integer_element(descr: &str) -> Option<(bool, usize, bool)> {
    let (order, kind) = descr.split_at_checked(1)?;
    let big_endian = match order {
        "<" | "=" | "|" => false,
        ">" => true,
        _ => return None,
    };
    let (signed, size) = match kind {
        "i1" => (true, 1),
        "u1" => (false, 1),
        "i2" => (true, 2),
        "u2" => (false, 2),
        "i4" => (true, 4),
        "u4" => (false, 4),
        "i8" => (true, 8),
        "u8" => (false, 8),
        _ => return None,
    };
    if order == "|" && size > 1 {
        return None;
    }
    Some((signed, size, big_endian))
}

/// numpy's name for a dtype string, for messages: `<f4` is `float32`.
fn dtype_name(descr: &str) -> String {
    let kind = descr.get(1..).unwrap_or(descr);
    let name = match kind {
        "f2" => "float16",
        "f4" => "float32",
        "f8" => "float64",
        "b1" => "bool",
        _ => return format!("`{descr}`"),
    };
    format!("{name} (`{descr}`)")
}

/// Parses a `.npy` file of integers of any width (class labels), in C order, as i64 with its
/// shape. Float arrays are refused ([`NpyError::NotIntegers`]) rather than rounded: a label
/// of 2.5 is a mistake worth reporting. A `uint64` value above `i64::MAX` is
/// [`NpyError::IntegerTooLarge`].
pub fn parse_npy_integers(bytes: &[u8]) -> Result<(Vec<usize>, Vec<i64>), NpyError> {
    let raw = parse_raw(bytes)?;
    let Some((signed, size, big_endian)) = integer_element(&raw.descr) else {
        return Err(
            if Element::parse(&raw.descr).is_some() || raw.descr.ends_with("b1") {
                NpyError::NotIntegers(dtype_name(&raw.descr))
            } else {
                NpyError::UnsupportedDtype(raw.descr.clone())
            },
        );
    };
    raw.check_length(size)?;
    let values: Vec<i64> = match (size, signed) {
        (1, true) => raw.data.iter().map(|&b| i64::from(b as i8)).collect(),
        (1, false) => raw.data.iter().map(|&b| i64::from(b)).collect(),
        (2, true) => chunks::<2>(raw.data, big_endian)
            .map(|b| i64::from(i16::from_le_bytes(b)))
            .collect(),
        (2, false) => chunks::<2>(raw.data, big_endian)
            .map(|b| i64::from(u16::from_le_bytes(b)))
            .collect(),
        (4, true) => chunks::<4>(raw.data, big_endian)
            .map(|b| i64::from(i32::from_le_bytes(b)))
            .collect(),
        (4, false) => chunks::<4>(raw.data, big_endian)
            .map(|b| i64::from(u32::from_le_bytes(b)))
            .collect(),
        (_, true) => chunks::<8>(raw.data, big_endian)
            .map(i64::from_le_bytes)
            .collect(),
        (_, false) => chunks::<8>(raw.data, big_endian)
            .map(|b| i64::try_from(u64::from_le_bytes(b)).map_err(|_| NpyError::IntegerTooLarge))
            .collect::<Result<_, _>>()?,
    };
    let shape = IxDyn(&raw.shape).set_f(raw.fortran_order);
    let array =
        ArrayD::from_shape_vec(shape, values).map_err(|e| NpyError::BadHeader(e.to_string()))?;
    let standard = array.as_standard_layout().into_owned();
    Ok((raw.shape, standard.into_raw_vec_and_offset().0))
}

/// An f32 array as a version 1.0 `.npy` file in C order.
pub fn npy_bytes(array: &ArrayD<f32>) -> Vec<u8> {
    let dims: Vec<String> = array.shape().iter().map(|d| d.to_string()).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    // numpy aligns the data to 64 bytes and ends the header with a newline.
    let unpadded = MAGIC.len() + 4 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');

    let mut bytes = Vec::with_capacity(MAGIC.len() + 4 + header.len() + array.len() * 4);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&[1, 0]);
    // The header of an array of any realistic rank is far below 64 KiB.
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for value in array.iter() {
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    bytes
}

/// Checks, before any work is done, that a file can be written at `path`: its folder exists
/// and it is not itself a folder. A run that fails this would otherwise compute everything and
/// only then report that its result cannot be kept.
pub fn check_output_path(path: &std::path::Path) -> Result<(), super::InputError> {
    let unwritable = |reason: String| super::InputError::Unwritable {
        path: path.to_path_buf(),
        source: std::io::Error::other(reason),
    };
    if path.is_dir() {
        return Err(unwritable("it is a folder".to_string()));
    }
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => std::path::Path::new("."),
    };
    if !folder.is_dir() {
        let what = if folder.exists() {
            "is not a folder"
        } else {
            "does not exist"
        };
        return Err(unwritable(format!("`{}` {what}", folder.display())));
    }
    Ok(())
}

/// Writes `array` to `path` as `.npy` (the `--output` of `cnnc run`).
pub fn write_npy(path: &std::path::Path, array: &ArrayD<f32>) -> Result<(), super::InputError> {
    std::fs::write(path, npy_bytes(array)).map_err(|source| super::InputError::Unwritable {
        path: path.to_path_buf(),
        source,
    })
}
