//! The table every generated function receives: the addresses it may touch.
//!
//! Slot 0 is the arena, then one slot per network input, then the output, then the
//! accumulator region if the program has one (a training step's), then the number of images
//! of the call if some kernel loops over images (`LoopStmt::Images`), then one per constant
//! buffer, then one per kernel function (read by the entry function). Addresses are
//! passed in this table instead of being baked into the code as immediates, which keeps the
//! generated code (and `cnnc emit clif`) identical from run to run, lets one compiled network
//! run on any caller's tensors, and keeps JIT-to-JIT calls free of relocations.

use crate::lower::ir::BufferId;
use crate::lower::{Buffer, LoopProgram, Storage};
use std::collections::HashMap;

pub(super) struct TableLayout {
    n_inputs: usize,
    /// Elements of each image's output region (every output of the network).
    output_len: usize,
    accumulators: bool,
    /// Whether some kernel loops over images: the images' arenas then lie one after another
    /// (`arena_len` apart) and the table holds the call's image count.
    images: bool,
    arena_len: usize,
    const_slots: HashMap<BufferId, usize>,
    first_kernel: usize,
    len: usize,
}

impl TableLayout {
    pub fn new(program: &LoopProgram) -> TableLayout {
        let n_inputs = program.input_lens.len();
        let accumulators = program
            .buffers
            .values()
            .any(|b| matches!(b.storage, Storage::Accumulator { .. }));
        let images = program.kernels.iter().any(|k| k.has_images());
        let mut next = n_inputs + 2 + usize::from(accumulators) + usize::from(images);
        let mut const_slots = HashMap::new();
        for buffer in program.buffers.values() {
            if matches!(buffer.storage, Storage::Const(_)) {
                const_slots.insert(buffer.id, next);
                next += 1;
            }
        }
        TableLayout {
            n_inputs,
            output_len: program.output_len,
            accumulators,
            images,
            arena_len: program.arena_len,
            const_slots,
            first_kernel: next,
            len: next + program.kernels.len(),
        }
    }

    /// The slot of a buffer's base address, how many elements to skip per image, and how
    /// many to skip from the slot's address.
    pub fn slot(&self, buffer: &Buffer) -> (usize, usize, usize) {
        match buffer.storage {
            Storage::Arena { offset } => (0, if self.images { self.arena_len } else { 0 }, offset),
            Storage::Input(k) => (1 + k, buffer.len, 0),
            Storage::Output { offset } => (1 + self.n_inputs, self.output_len, offset),
            Storage::Accumulator { offset } => (self.accumulator_slot().unwrap_or(0), 0, offset),
            Storage::Const(_) => (self.const_slots.get(&buffer.id).copied().unwrap_or(0), 0, 0),
        }
    }

    pub fn input_slot(&self, k: usize) -> usize {
        1 + k
    }

    pub fn output_slot(&self) -> usize {
        1 + self.n_inputs
    }

    pub fn accumulator_slot(&self) -> Option<usize> {
        self.accumulators.then_some(2 + self.n_inputs)
    }

    /// The slot of the call's image count, in programs with loops over images.
    pub fn images_slot(&self) -> Option<usize> {
        self.images
            .then_some(2 + self.n_inputs + usize::from(self.accumulators))
    }

    pub fn kernel_slot(&self, k: usize) -> usize {
        self.first_kernel + k
    }

    pub fn len(&self) -> usize {
        self.len
    }
}
