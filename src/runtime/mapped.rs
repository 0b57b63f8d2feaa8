//! Tensors read in place from a memory-mapped safetensors file: the weights of `cnnc run` and
//! `cnnc bench`, packed straight from the file's pages and never copied whole into the process.
//!
//! Why a map and not a read: reading a file whole held its bytes, the decoded name-keyed
//! tensors and the graph's copy of them at once, and the graph's copy stayed beside the packed
//! blobs until the end — three copies of the weights at the peak where one (the packed blobs)
//! is needed. Mapped, an F32 tensor (what every exporter writes) is packed from the page
//! cache without a copy, and its pages leave the process ([`MappedTensor::release`]) as soon
//! as it is packed, so peak memory is the packed weights plus the tensors being packed.
//! Resident pages of a mapped file count in a process's RSS, hence the release.
//!
//! The map is read-only and shared. A file changed by another process while cnnc runs is what
//! no mmap reader can guard against: the numbers change, or a truncated file faults.

use half::{bf16, f16};
use memmap2::{Mmap, UncheckedAdvice};
use safetensors::Dtype;
use std::borrow::Cow;
use std::fmt;
use std::fs::File;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

/// The dtypes cnnc reads weights in, all converted to f32.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FileDtype {
    F32,
    F16,
    BF16,
    F64,
}

impl FileDtype {
    /// `None` for a dtype cnnc does not read (integers, bool, 8-bit floats).
    pub fn of(dtype: Dtype) -> Option<FileDtype> {
        match dtype {
            Dtype::F32 => Some(FileDtype::F32),
            Dtype::F16 => Some(FileDtype::F16),
            Dtype::BF16 => Some(FileDtype::BF16),
            Dtype::F64 => Some(FileDtype::F64),
            _ => None,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            FileDtype::F32 => 4,
            FileDtype::F16 | FileDtype::BF16 => 2,
            FileDtype::F64 => 8,
        }
    }

    /// Little-endian numbers of this dtype as f32, without any alignment assumption.
    pub fn decode(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            FileDtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            FileDtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            FileDtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            FileDtype::F64 => bytes
                .chunks_exact(8)
                .map(|b| {
                    f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
                })
                .collect(),
        }
    }
}

/// Maps `path` read-only, refusing what is not a regular file (a device such as `/dev/zero`
/// never ends, a pipe cannot be mapped) and anything larger than `limit` bytes.
pub fn map_regular_file(path: &Path, limit: u64) -> std::io::Result<Mmap> {
    let file = File::open(path)?;
    crate::source::check_regular_file(&file.metadata()?, limit)?;
    // SAFETY: the map is read-only; the one hazard is another process changing or truncating
    // the file while it is mapped, which the module's documentation owns up to (as every
    // mmap-based weights loader does).
    unsafe { Mmap::map(&file) }
}

/// One tensor of a mapped file: `len` elements of `dtype` from byte `offset`.
#[derive(Clone)]
pub struct MappedTensor {
    map: Arc<Mmap>,
    offset: usize,
    len: usize,
    dtype: FileDtype,
}

impl fmt::Debug for MappedTensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MappedTensor")
            .field("offset", &self.offset)
            .field("len", &self.len)
            .field("dtype", &self.dtype)
            .finish()
    }
}

impl MappedTensor {
    /// The tensor of `len` elements of `dtype` at byte `offset` of `map`; `None` when that
    /// runs past the end of the map.
    pub fn new(map: Arc<Mmap>, offset: usize, len: usize, dtype: FileDtype) -> Option<Self> {
        let end = len.checked_mul(dtype.size())?.checked_add(offset)?;
        (end <= map.len()).then_some(MappedTensor {
            map,
            offset,
            len,
            dtype,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The byte range of elements `range` in the map, clamped to the tensor.
    fn byte_range(&self, range: &Range<usize>) -> Range<usize> {
        let size = self.dtype.size();
        let (start, end) = (range.start.min(self.len), range.end.min(self.len));
        self.offset + start * size..self.offset + end.max(start) * size
    }

    /// Every element, as f32.
    pub fn read(&self) -> Cow<'_, [f32]> {
        self.read_range(0..self.len)
    }

    /// Elements `range` as f32: the file's own bytes when they are little-endian f32 at a
    /// 4-byte-aligned address (safetensors writers align the data), converted otherwise.
    pub fn read_range(&self, range: Range<usize>) -> Cow<'_, [f32]> {
        let bytes = &self.map[self.byte_range(&range)];
        if self.dtype == FileDtype::F32 && cfg!(target_endian = "little") {
            // SAFETY: every bit pattern is an f32; `align_to` hands out only the aligned part.
            let (head, floats, tail) = unsafe { bytes.align_to::<f32>() };
            if head.is_empty() && tail.is_empty() {
                return Cow::Borrowed(floats);
            }
        }
        Cow::Owned(self.dtype.decode(bytes))
    }

    /// Drops the tensor's pages from the process (they stay in the page cache): a packed
    /// tensor no longer counts in the process's memory. Reading it again is correct, and
    /// costs a page fault per page.
    pub fn release(&self) {
        self.release_range(0..self.len);
    }

    /// [`release`](Self::release) for elements `range`, with the pages they touch (a page
    /// shared with a neighbouring tensor is read again if that one is needed).
    pub fn release_range(&self, range: Range<usize>) {
        let bytes = self.byte_range(&range);
        if bytes.is_empty() {
            return;
        }
        // SAFETY: the map is a read-only mapping of a file: pages dropped with MADV_DONTNEED
        // are read again from the file on the next access, with the same contents, so slices
        // of it that other threads hold see no change. (The advice is "unchecked" because on
        // a private writable or anonymous map it would discard writes; there are none here.)
        // A failure only means the pages stay resident.
        let _ = unsafe {
            self.map
                .unchecked_advise_range(UncheckedAdvice::DontNeed, bytes.start, bytes.len())
        };
    }
}
