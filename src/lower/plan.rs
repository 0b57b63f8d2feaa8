//! The memory plan: every intermediate tensor gets an offset in one arena, and space is
//! reused once the tensor is dead.
//!
//! A tensor is live from the first kernel that touches it to the last. Kernels run in order,
//! so at each kernel the plan first places the tensors born there (first fit in the gaps
//! between live tensors, else at the end), and only then frees the tensors that die there:
//! a kernel's outputs never overlap its own inputs. Offsets are aligned to 64 bytes so that
//! tensors start on cache lines.

use super::ir::{BufferId, Expr, Stmt};
use super::program::{LoopProgram, Storage};

/// Elements per alignment unit: 64 bytes of f32.
const ALIGN: usize = 16;

/// Calls `f` for every buffer a list of statements touches.
pub(super) fn for_each_access(stmts: &[Stmt], f: &mut impl FnMut(BufferId)) {
    for stmt in stmts {
        match stmt {
            Stmt::Assign(_, Expr::Load { at, .. } | Expr::LoadSplat(at)) => f(at.buffer),
            Stmt::Assign(..) => {}
            Stmt::Store { at, .. } => f(at.buffer),
            Stmt::Loop(l) => for_each_access(&l.body, f),
        }
    }
}

pub(super) fn plan_memory(program: &mut LoopProgram) {
    let n = program.buffers.len();
    let mut first = vec![usize::MAX; n];
    let mut last = vec![0usize; n];
    for (k, kernel) in program.kernels.iter().enumerate() {
        for_each_access(&kernel.body, &mut |b| {
            let i = b.0 as usize;
            first[i] = first[i].min(k);
            last[i] = last[i].max(k);
        });
    }
    // (offset, len, buffer) of the tensors live now, sorted by offset.
    let mut live: Vec<(usize, usize, usize)> = Vec::new();
    let mut arena_len = 0;
    for k in 0..program.kernels.len() {
        for (i, buffer) in program.buffers.iter_mut().enumerate() {
            if first[i] != k || !matches!(buffer.storage, Storage::Arena { .. }) {
                continue;
            }
            let len = buffer.len.next_multiple_of(ALIGN);
            let mut offset = 0;
            for &(start, size, _) in &live {
                if start >= offset + len {
                    break;
                }
                offset = offset.max(start + size);
            }
            buffer.storage = Storage::Arena { offset };
            arena_len = arena_len.max(offset + len);
            let at = live.partition_point(|&(start, _, _)| start < offset);
            live.insert(at, (offset, len, i));
        }
        live.retain(|&(_, _, i)| last[i] != k);
    }
    program.arena_len = arena_len;
}
