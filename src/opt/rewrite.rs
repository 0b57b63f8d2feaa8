//! The few graph edits every pass is made of: count a node's readers, send its readers to
//! another node.
//!
//! Who reads what is kept in a [`Readers`] table, built once at the start of a pass and
//! kept up to date by the edits that change inputs ([`Readers::replace_uses`],
//! [`Readers::detach`], [`Readers::set_inputs`]). Asking it is proportional to the node's
//! readers rather than to the graph, so a pass is linear in the size of the graph where a
//! scan of every node per candidate would make it quadratic (a 90,000-node chain took a
//! minute). A pass must therefore never assign a node's inputs directly; debug builds check
//! the table against a fresh scan before the pass prunes.
//!
//! Passes never delete nodes themselves. A node that is bypassed is detached (its inputs
//! cleared, so it stops counting as a reader of them) and left in the arena; the pass ends
//! with `Graph::prune_unreachable`, which drops it and renumbers the rest in order. The table
//! is not carried across that renumbering: each pass builds its own.

use crate::graph::{Graph, NodeId};
use cranelift_entity::SecondaryMap;
use std::collections::BTreeMap;

/// For every node, the nodes that read it, and how often it is read in all.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Readers {
    /// Per node, each reader with the number of times it lists the node among its inputs
    /// (`add(x, x)` reads `x` twice). A map rather than a list, so that detaching one of a
    /// node's many readers does not walk all of them; ordered, so that walks are
    /// deterministic.
    readers: SecondaryMap<NodeId, BTreeMap<NodeId, usize>>,
    /// Per node, the sum of its readers' counts plus one if it is the network's output: the
    /// number of values that would have to be kept if the node were fused away.
    n_reads: SecondaryMap<NodeId, usize>,
}

impl Readers {
    /// Scans the graph once.
    pub(super) fn of(graph: &Graph) -> Readers {
        let mut table = Readers {
            readers: SecondaryMap::with_capacity(graph.nodes.len()),
            n_reads: SecondaryMap::with_capacity(graph.nodes.len()),
        };
        for (reader, node) in graph.nodes.iter() {
            for &input in &node.inputs {
                table.add_read(input, reader);
            }
        }
        for &output in &graph.outputs {
            table.n_reads[output] += 1;
        }
        table
    }

    /// How many times the value of `id` is read: once per occurrence in a node's inputs (so
    /// `add(x, x)` reads `x` twice), plus once per network output it is.
    pub(super) fn use_count(&self, id: NodeId) -> usize {
        self.n_reads[id]
    }

    /// The nodes that read `id`, each listed once, in node order.
    pub(super) fn users(&self, id: NodeId) -> Vec<NodeId> {
        self.readers[id].keys().copied().collect()
    }

    /// Makes every reader of `old` (and the outputs that are `old`) read `new` instead, then
    /// detaches `old`. The caller guarantees that `new` comes before every reader of `old`,
    /// so the graph stays in topological order. Only `old`'s readers are visited.
    pub(super) fn replace_uses(&mut self, graph: &mut Graph, old: NodeId, new: NodeId) {
        let moved = std::mem::take(&mut self.readers[old]);
        for (&reader, &n_times) in &moved {
            for input in graph.nodes[reader].inputs.iter_mut() {
                if *input == old {
                    *input = new;
                }
            }
            *self.readers[new].entry(reader).or_insert(0) += n_times;
        }
        // Every read of `old`, the output's included, is now a read of `new`.
        self.n_reads[new] += std::mem::take(&mut self.n_reads[old]);
        for output in graph.outputs.iter_mut() {
            if *output == old {
                *output = new;
            }
        }
        self.detach(graph, old);
    }

    /// Clears the inputs of a node that is about to become unreachable, so that it no
    /// longer counts as a reader of them while the pass goes on.
    pub(super) fn detach(&mut self, graph: &mut Graph, id: NodeId) {
        self.set_inputs(graph, id, Vec::new());
    }

    /// Gives `id` new inputs, moving its reads from the old ones to them.
    pub(super) fn set_inputs(&mut self, graph: &mut Graph, id: NodeId, inputs: Vec<NodeId>) {
        let old_inputs = std::mem::replace(&mut graph.nodes[id].inputs, inputs);
        for input in old_inputs {
            self.remove_read(input, id);
        }
        for &input in &graph.nodes[id].inputs {
            self.add_read(input, id);
        }
    }

    /// Whether the table says what a fresh scan of `graph` would: every edit of the pass so
    /// far went through it. Checked in debug builds.
    pub(super) fn agrees_with(&self, graph: &Graph) -> bool {
        *self == Readers::of(graph)
    }

    fn add_read(&mut self, input: NodeId, reader: NodeId) {
        *self.readers[input].entry(reader).or_insert(0) += 1;
        self.n_reads[input] += 1;
    }

    fn remove_read(&mut self, input: NodeId, reader: NodeId) {
        let readers = &mut self.readers[input];
        if let Some(n_times) = readers.get_mut(&reader) {
            *n_times -= 1;
            if *n_times == 0 {
                readers.remove(&reader);
            }
            self.n_reads[input] -= 1;
        }
    }
}
