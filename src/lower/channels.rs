//! `channel_shuffle` and `split`: copies that move channels within each pixel.
//!
//! A split's part is a contiguous run of each pixel's channels, copied in vectors; a shuffle
//! transposes each pixel's `groups × (C / groups)` channel matrix, one element at a time (the
//! indices stay affine: input `p·C + k·(C/g) + i` goes to output channel `i·g + k`). Both can
//! write straight into a concat's slice, like the elementwise kernels.

use super::elementwise::channel_vectors;
use super::ir::Affine;
use super::{LowerError, Lowering};
use crate::graph::{ChannelShuffleAttrs, NodeId, SplitAttrs};

impl Lowering<'_> {
    pub(super) fn channel_shuffle(
        &mut self,
        id: NodeId,
        attrs: ChannelShuffleAttrs,
    ) -> Result<(), LowerError> {
        let x = self.arg(id, 0)?;
        let s = x.shape;
        let (c, groups) = (s.c, attrs.groups);
        if groups == 0 || !c.is_multiple_of(groups) {
            return Err(self.malformed(id, "the groups do not divide the channels"));
        }
        let per_group = c / groups;
        let out = self.target(id);
        let comment = format!("channel_shuffle {s} in {groups} groups");
        let mut b = self.builder(id, "shuffle", comment);
        b.parallel(s.h * s.w, |b, p| {
            b.repeat(groups, |b, k| {
                b.repeat(per_group, |b, i| {
                    let from = p.clone() * c + k.clone() * per_group + i.clone();
                    let value = b.load(x.buffer, from, 1);
                    let to = out.index(p.clone(), i * groups + k.clone());
                    b.store(out.buffer, to, 1, value);
                });
            });
        });
        self.emit(b);
        self.set_target_value(id, out);
        Ok(())
    }

    pub(super) fn split(&mut self, id: NodeId, attrs: SplitAttrs) -> Result<(), LowerError> {
        let x = self.arg(id, 0)?;
        let s = x.shape;
        let part = self.graph.shape(id).c;
        let first = attrs.first_channel(s.c);
        if first + part > s.c {
            return Err(self.malformed(id, "the part is not within the channels"));
        }
        let out = self.target(id);
        let comment = format!("split {s}: channels {first}..{} of {}", first + part, s.c);
        let mut b = self.builder(id, "split", comment);
        b.parallel(s.h * s.w, |b, p| {
            for (c0, lanes) in channel_vectors(part) {
                let value = b.load(x.buffer, p.clone() * s.c + first + c0, lanes);
                let to = out.index(p.clone(), Affine::constant(c0));
                b.store(out.buffer, to, lanes, value);
            }
        });
        self.emit(b);
        self.set_target_value(id, out);
        Ok(())
    }
}
