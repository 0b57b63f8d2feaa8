//! Padding: the border a window op (conv, pool) reads around its input.
//!
//! Conv and pool kernels have no conditionals: they read their input from a buffer whose
//! border holds the padding value (0, or −∞ for max pooling) as far as any window reaches,
//! including the `ceil_mode` windows that run past the input. That buffer comes from one of
//! two places:
//!
//! - **the producer writes into it**: a conv whose only reader is a window op stores its
//!   output straight into the interior of the reader's padded buffer, and a small kernel
//!   fills the border (the border must be rewritten on every run, since the arena is shared).
//!   This removes the copy from the common `conv → conv` and `conv → dwconv` chains;
//! - **a copy**, for every other input (network inputs, tensors with several readers).

use super::ir::{Affine, BufferId};
use super::{KernelBuilder, Lowering, NodeBuffer};
use crate::graph::{NodeId, Op, Padding, Shape};

/// How a window op reads its input: its windows, its output size, and the padding value.
#[derive(Copy, Clone, Debug, PartialEq)]
pub(super) struct WindowRead {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    pub pad: Padding,
    pub out: (usize, usize),
    pub fill: f32,
}

/// Where a padded tensor sits in its buffer: `height × width` pixels, the tensor's own
/// starting at row `top`, column `left`, the rest holding `fill`.
#[derive(Copy, Clone, Debug, PartialEq)]
pub(super) struct PadLayout {
    pub top: usize,
    pub left: usize,
    pub height: usize,
    pub width: usize,
    pub fill: f32,
}

impl PadLayout {
    /// The element where the tensor's pixel (0, 0) starts, for `channels` channels.
    pub fn origin(&self, channels: usize) -> usize {
        (self.top * self.width + self.left) * channels
    }
}

/// A tensor as a window kernel reads it: its buffer, with the row stride in pixels.
pub(super) struct Padded {
    pub buffer: BufferId,
    /// Pixels per row.
    pub width: usize,
    pub channels: usize,
    /// The element where the first window starts: 0 but for a direct convolution that reads
    /// a cropped tensor (one phase of a strided conv's input gradient).
    pub origin: usize,
}

/// The layout an input of shape `s` needs for `read`, or `None` when no window leaves it.
/// The buffer holds every window's reach and the whole tensor.
pub(super) fn layout_for(s: Shape, read: &WindowRead) -> Option<PadLayout> {
    let reach = |o: usize, st: usize, k: usize, d: usize| (o - 1) * st + (k - 1) * d + 1;
    let rows = reach(read.out.0, read.stride[0], read.kernel[0], read.dilation[0]);
    let cols = reach(read.out.1, read.stride[1], read.kernel[1], read.dilation[1]);
    let (top, left) = (read.pad.top, read.pad.left);
    if top == 0 && left == 0 && rows <= s.h && cols <= s.w {
        return None;
    }
    Some(PadLayout {
        top,
        left,
        height: rows.max(top + s.h),
        width: cols.max(left + s.w),
        fill: read.fill,
    })
}

impl Lowering<'_> {
    /// How node `reader` reads its first input, if it is a window op.
    pub(super) fn window_read(&self, reader: NodeId) -> Option<WindowRead> {
        let out = self.graph.shape(reader);
        if let Op::Conv(attrs) = &self.graph.nodes[reader].op {
            return Some(WindowRead {
                kernel: attrs.kernel,
                stride: attrs.stride,
                dilation: attrs.dilation,
                pad: attrs.pad,
                // Winograd reads whole tiles, past the last output row and column.
                out: self
                    .winograd_extent(reader, attrs)
                    .unwrap_or((out.h, out.w)),
                fill: 0.0,
            });
        }
        let Op::Pool(attrs) = &self.graph.nodes[reader].op else {
            return None;
        };
        Some(WindowRead {
            kernel: attrs.kernel,
            stride: attrs.stride,
            dilation: [1, 1],
            pad: attrs.pad,
            out: (out.h, out.w),
            fill: super::pool::initial(attrs.kind),
        })
    }

    /// The buffer a conv node writes its output to, and where in it: the interior of its
    /// reader's padded input when it has one reader that needs padding, else a plain tensor.
    /// Emits the kernel that fills the border.
    /// (A conv written into a concat's buffer has the concat as its only reader, so never
    /// needs this.)
    pub(super) fn conv_result(&mut self, id: NodeId) -> (BufferId, Option<PadLayout>) {
        let shape = self.graph.shape(id);
        let readers = &self.readers[id];
        let layout = match readers.as_slice() {
            [reader] if self.output_writer != Some(id) && !self.is_output(id) => {
                let first_input = self.graph.nodes[*reader].inputs.first() == Some(&id);
                let read = self.window_read(*reader).filter(|_| first_input);
                read.and_then(|read| layout_for(shape, &read))
            }
            _ => None,
        };
        let Some(layout) = layout else {
            return (self.result_buffer(id), None);
        };
        let c = shape.c;
        let name = format!("{} (padded)", self.describe(id));
        let buffer = self.add_temp(name, layout.height * layout.width * c);
        let mut b = self.builder(
            id,
            "border",
            format!(
                "fill the border of {}×{}×{c} around {shape} at ({}, {}) with {}",
                layout.height, layout.width, layout.top, layout.left, layout.fill
            ),
        );
        let (row, fill) = (layout.width * c, layout.fill);
        let (left, right) = (layout.left * c, (layout.width - layout.left - shape.w) * c);
        b.fill_range(buffer, Affine::constant(0), layout.top * row, fill);
        b.parallel(shape.h, |b, iy| {
            let start = (iy + layout.top) * row;
            b.fill_range(buffer, start.clone(), left, fill);
            b.fill_range(buffer, start + (row - right), right, fill);
        });
        let bottom = (layout.top + shape.h) * row;
        b.fill_range(
            buffer,
            Affine::constant(bottom),
            layout.height * row - bottom,
            fill,
        );
        self.emit(b);
        (buffer, Some(layout))
    }

    /// `x` as a window kernel reading it with `read` needs it: itself, if no window leaves it
    /// or its producer already wrote it padded as needed, else a padded copy.
    pub(super) fn pad_input(&mut self, id: NodeId, x: NodeBuffer, read: &WindowRead) -> Padded {
        let s = x.shape;
        let Some(layout) = layout_for(s, read) else {
            return Padded {
                buffer: x.buffer,
                width: s.w,
                channels: s.c,
                origin: 0,
            };
        };
        if x.padded == Some(layout) {
            return Padded {
                buffer: x.buffer,
                width: layout.width,
                channels: s.c,
                origin: 0,
            };
        }
        let c = s.c;
        let (row, fill) = (layout.width * c, layout.fill);
        let dst = self.add_temp(format!("{} padded", self.describe(id)), layout.height * row);
        let mut b: KernelBuilder = self.builder(
            id,
            "pad",
            format!(
                "pad {s} to {}×{}×{c} at ({}, {}) with {fill}",
                layout.height, layout.width, layout.top, layout.left
            ),
        );
        let right = (layout.width - layout.left - s.w) * c;
        b.fill_range(dst, Affine::constant(0), layout.top * row, fill);
        b.parallel(s.h, |b, iy| {
            let start = (iy.clone() + layout.top) * row;
            b.fill_range(dst, start.clone(), layout.left * c, fill);
            let src_row = iy * (s.w * c);
            b.copy_range(
                dst,
                start.clone() + layout.left * c,
                x.buffer,
                src_row,
                s.w * c,
            );
            b.fill_range(dst, start + (row - right), right, fill);
        });
        let bottom = (layout.top + s.h) * row;
        b.fill_range(
            dst,
            Affine::constant(bottom),
            layout.height * row - bottom,
            fill,
        );
        self.emit(b);
        Padded {
            buffer: dst,
            width: layout.width,
            channels: c,
            origin: 0,
        }
    }
}
