//! The graph IR: layer nodes in an arena addressed by typed ids, with side tables for what
//! inference computed (shapes) and where each node came from (spans, call chains).
//!
//! A node's output shape is computed once, when the node is inserted, by the single shape rule
//! of its op (its file under `ops/`). A `Graph` therefore never holds a node without a shape:
//! code that has a `Graph` can ask for any node's shape.

pub mod constants;
mod diagnostic;
pub mod dot;
mod dump;
pub mod infer;
pub mod ops;
mod shape;
pub mod summary;
pub mod verify;

pub use constants::{ConstId, ConstSource, Constant};
pub use infer::ShapeError;
pub use ops::{
    Activation, AdaptiveAvgPoolAttrs, AddAttrs, ArithmeticOp, BatchNormAttrs, ChannelShuffleAttrs,
    Coefficient, ConcatAttrs, ConvAttrs, ConvTransposeAttrs, DenseAttrs, DropoutAttrs,
    FlattenAttrs, GlobalPoolAttrs, GroupNormAttrs, IdentityAttrs, InputAttrs, LayerNormAttrs,
    Literal, MulAttrs, Op, OpRule, PReluAttrs, PadAttrs, PadMode, Padding, ParameterAttrs,
    PointwiseDenseAttrs, PoolAttrs, PoolKind, ScalarAttrs, ScalarOp, SoftmaxAttrs, SplitAttrs,
    UpsampleAttrs, UpsampleMode, PARAMETER_SUFFIX,
};
pub use shape::Shape;

use crate::source::Span;
use cranelift_entity::{entity_impl, EntityRef, PrimaryMap, SecondaryMap};

/// A node of the graph.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(u32);
entity_impl!(NodeId, "n");

/// One layer (or input) of the network.
#[derive(Clone, Debug)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<NodeId>,
    /// The weight path, e.g. `layer1.0.conv1`; parameter tensors are named `{path}.weight`.
    pub path: String,
    /// Frozen layers' parameters count as non-trainable in summaries.
    pub frozen: bool,
    /// The node's constants by their name suffix (`weight`, `bias`, `running_mean`, …):
    /// its learned tensors, in `state_dict` order, then the numbers written in the source.
    pub consts: Vec<(&'static str, ConstId)>,
}

/// Where a node came from: the span of the layer call and, innermost first, the block call
/// sites that led to it.
#[derive(Clone, Debug, Default)]
pub struct Origin {
    pub span: Span,
    pub call_chain: Vec<Span>,
}

/// A parameter or buffer tensor of a layer, with its PyTorch name suffix and shape.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    /// `weight`, `bias`, `running_mean`, `running_var`.
    pub name: &'static str,
    /// PyTorch layout: conv `[out, in/groups, kh, kw]`, dense `[out, in]`.
    pub shape: Vec<usize>,
    /// Buffers (batch-norm running statistics) are not parameters.
    pub is_buffer: bool,
    /// How a fresh layer's tensor is filled (`Weights::seeded`).
    pub init: Init,
}

/// PyTorch's default initialization of a parameter or buffer tensor.
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum Init {
    /// Uniform in ±1/√fan_in, as conv and linear layers start.
    Uniform { fan_in: usize },
    /// Every element the same (batch norm starts as the identity).
    Constant(f32),
}

impl ParamSpec {
    pub fn numel(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }
}

/// Input preprocessing a network declares (`preprocess(...)`), applied to images by `run`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Preprocess {
    /// Resize so the shorter side has this length.
    pub resize: Option<usize>,
    /// Center crop to this square size.
    pub crop: Option<usize>,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// Black pixels added on each side of an image, after resizing and cropping and before
    /// normalization (`pad: 2` feeds 28×28 digits to a 32×32 input), in training and in
    /// `cnnc run` alike.
    pub pad: usize,
}

/// Declarations a network makes about its use rather than its layers.
#[derive(Clone, Debug, Default)]
pub struct NetworkMeta {
    pub preprocess: Option<Preprocess>,
    /// Where `preprocess(...)` was declared, to point at both when it is declared twice.
    pub preprocess_span: Option<Span>,
    /// The labels file named by `labels("...")`, resolved like an import.
    pub labels_file: Option<String>,
    /// Where `labels(...)` was declared, for diagnostics about the file.
    pub labels_span: Option<Span>,
    /// The class names, one per output, once the labels file has been read.
    pub labels: Vec<String>,
    /// The training recipe declared by `train(...)`.
    pub train: Option<crate::train::recipe::Recipe>,
    /// The data augmentation declared by `augment(...)`, applied by `cnnc train` only.
    pub augment: Option<crate::train::augment::Augmentation>,
    /// Where `augment(...)` was declared, to point at both when it is declared twice.
    pub augment_span: Option<Span>,
    /// What made each weight-path prefix a scope: a block's or network's name, `sequence`,
    /// `repeat` or `group` (`layer1` → `sequence`, `layer1.0` → `basic`), for `summary --depth`.
    pub scopes: std::collections::BTreeMap<String, String>,
}

/// A network: its nodes in insertion (= topological) order, its inputs and its outputs.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub name: String,
    pub nodes: PrimaryMap<NodeId, Node>,
    pub shapes: SecondaryMap<NodeId, Shape>,
    /// Every constant tensor the nodes compute with (`constants.rs`).
    pub consts: PrimaryMap<ConstId, Constant>,
    pub origins: SecondaryMap<NodeId, Origin>,
    pub inputs: Vec<NodeId>,
    /// The nodes the network returns, in the order of its `return (a, b)`; the first is *the*
    /// output of everything that needs one (training's logits, `--top`, the verdicts).
    pub outputs: Vec<NodeId>,
    pub meta: NetworkMeta,
    /// The span of the network's name, for diagnostics about the whole network.
    pub span: Span,
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Graph {
        Graph {
            name: name.into(),
            ..Graph::default()
        }
    }

    /// Inserts a node after inferring its shape from its inputs' shapes.
    pub fn add(
        &mut self,
        op: Op,
        inputs: Vec<NodeId>,
        path: String,
        origin: Origin,
    ) -> Result<NodeId, ShapeError> {
        let input_shapes: Vec<Shape> = inputs.iter().map(|&id| self.shapes[id]).collect();
        let shape = infer::output_shape(&op, &input_shapes)?;
        let input = input_shapes.first().copied().unwrap_or(shape);
        let consts = self.new_constants(&op, input, &path);
        let id = self.nodes.push(Node {
            op,
            inputs,
            path,
            frozen: false,
            consts,
        });
        self.shapes[id] = shape;
        self.origins[id] = origin;
        Ok(id)
    }

    /// The constants of a new node: its learned tensors seeded with seed 0 (so a fresh graph
    /// computes what `--seed 0` runs), and its literal numbers.
    fn new_constants(&mut self, op: &Op, input: Shape, path: &str) -> Vec<(&'static str, ConstId)> {
        let mut consts = Vec::new();
        for spec in infer::params(op, input) {
            let name = tensor_name(path, spec.name);
            let source = ConstSource::Seeded {
                seed: 0,
                init: spec.init,
            };
            let id = self
                .consts
                .push(Constant::new(name, spec.shape, true, source));
            consts.push((spec.name, id));
        }
        for (suffix, shape, literal) in op.literal_tensors(input) {
            let name = tensor_name(path, suffix);
            let constant = Constant::from_values(name, shape, false, literal.values.clone());
            consts.push((suffix, self.consts.push(constant)));
        }
        consts
    }

    /// The constant `suffix` (`weight`, `bias`, …) of node `id`, if it has one.
    pub fn node_const(&self, id: NodeId, suffix: &str) -> Option<ConstId> {
        self.nodes[id]
            .consts
            .iter()
            .find(|(name, _)| *name == suffix)
            .map(|&(_, c)| c)
    }

    /// The learned constant called `name` (`layer1.0.conv1.weight`), if there is one.
    pub fn const_named(&self, name: &str) -> Option<ConstId> {
        self.consts
            .iter()
            .find(|(_, c)| c.learned && c.name == name)
            .map(|(id, _)| id)
    }

    /// Reseeds every learned constant: the graph then computes with PyTorch's default
    /// initialisation from `seed`, generated when the numbers are first needed.
    pub fn seed_constants(&mut self, seed: u64) {
        for constant in self.consts.values_mut() {
            if constant.learned {
                if let ConstSource::Seeded { init, .. } = constant.source {
                    constant.set_source(ConstSource::Seeded { seed, init });
                }
            }
        }
    }

    /// Adds a network input of the given shape.
    pub fn add_input(&mut self, name: impl Into<String>, shape: Shape, span: Span) -> NodeId {
        let index = self.inputs.len();
        let id = self.nodes.push(Node {
            op: Op::Input {
                name: name.into(),
                index,
            },
            inputs: Vec::new(),
            path: String::new(),
            frozen: false,
            consts: Vec::new(),
        });
        self.shapes[id] = shape;
        self.origins[id] = Origin {
            span,
            call_chain: Vec::new(),
        };
        self.inputs.push(id);
        id
    }

    pub fn shape(&self, id: NodeId) -> Shape {
        self.shapes[id]
    }

    pub fn input_shape(&self, id: NodeId) -> Shape {
        match self.nodes[id].inputs.first() {
            Some(&input) => self.shapes[input],
            None => self.shapes[id],
        }
    }

    /// The (first) output node. Every expanded network has one.
    pub fn output(&self) -> NodeId {
        self.outputs
            .first()
            .copied()
            .unwrap_or_else(|| NodeId::from_u32(self.nodes.len().saturating_sub(1) as u32))
    }

    /// Every output node, in order: one but for a network that returns several.
    pub fn outputs(&self) -> Vec<NodeId> {
        if self.outputs.is_empty() {
            vec![self.output()]
        } else {
            self.outputs.clone()
        }
    }

    /// Sets the network's one output.
    pub fn set_output(&mut self, id: NodeId) {
        self.outputs = vec![id];
    }

    /// The parameter and buffer tensors of a node.
    pub fn params(&self, id: NodeId) -> Vec<ParamSpec> {
        infer::params(&self.nodes[id].op, self.input_shape(id))
    }

    /// Multiply-accumulates of a node (conv and dense only, by convention).
    pub fn macs(&self, id: NodeId) -> u64 {
        infer::macs(&self.nodes[id].op, self.input_shape(id), self.shapes[id])
    }

    /// The full name of one of a node's tensors, `{path}.{suffix}` (`layer1.0.conv1.weight`),
    /// as weights files, the interpreter, the optimizer and the code generator spell it.
    pub fn tensor_name(&self, id: NodeId, suffix: &str) -> String {
        tensor_name(&self.nodes[id].path, suffix)
    }

    /// Every parameter and buffer tensor with its full name (`layer1.0.conv1.weight`), in
    /// node order: the order of a PyTorch `state_dict`.
    pub fn named_params(&self) -> Vec<(String, NodeId, ParamSpec)> {
        let mut out = Vec::new();
        for id in self.nodes.keys() {
            for spec in self.params(id) {
                out.push((self.tensor_name(id, spec.name), id, spec));
            }
        }
        out
    }

    /// Trainable parameters of one node (buffers excluded).
    pub fn node_parameters(&self, id: NodeId) -> u64 {
        self.params(id)
            .iter()
            .filter(|p| !p.is_buffer)
            .map(|p| p.numel())
            .sum()
    }

    /// Trainable parameters (buffers excluded), frozen layers included.
    pub fn n_parameters(&self) -> u64 {
        self.nodes.keys().map(|id| self.node_parameters(id)).sum()
    }

    pub fn total_macs(&self) -> u64 {
        self.nodes.keys().map(|id| self.macs(id)).sum()
    }

    /// Removes the nodes no output depends on (inputs always stay), renumbering the rest in
    /// the same order.
    pub fn prune_unreachable(&mut self) {
        if self.outputs.is_empty() {
            return;
        }
        let mut live: SecondaryMap<NodeId, bool> = SecondaryMap::new();
        for &output in &self.outputs {
            live[output] = true;
        }
        for &input in &self.inputs {
            live[input] = true;
        }
        // Insertion order is a topological order, so one backward sweep finds every ancestor.
        for id in self.nodes.keys().rev() {
            if live[id] {
                for &input in &self.nodes[id].inputs {
                    live[input] = true;
                }
            }
        }
        if self.nodes.keys().all(|id| live[id]) {
            return;
        }
        let old = std::mem::take(self);
        let mut renumber: SecondaryMap<NodeId, Option<NodeId>> = SecondaryMap::new();
        let mut graph = Graph {
            name: old.name,
            meta: old.meta,
            span: old.span,
            ..Graph::default()
        };
        // The constants of dropped nodes go too; the others keep their order.
        let mut old_consts: Vec<Option<Constant>> =
            old.consts.into_iter().map(|(_, c)| Some(c)).collect();
        for (id, node) in old.nodes.into_iter() {
            if !live[id] {
                continue;
            }
            let mut node = node;
            node.inputs = node.inputs.iter().filter_map(|&i| renumber[i]).collect();
            for (_, constant) in &mut node.consts {
                if let Some(moved) = old_consts[constant.index()].take() {
                    *constant = graph.consts.push(moved);
                }
            }
            let new_id = graph.nodes.push(node);
            graph.shapes[new_id] = old.shapes[id];
            graph.origins[new_id] = old.origins[id].clone();
            renumber[id] = Some(new_id);
        }
        graph.inputs = old.inputs.iter().filter_map(|&i| renumber[i]).collect();
        graph.outputs = old.outputs.iter().filter_map(|&o| renumber[o]).collect();
        *self = graph;
    }

    /// The text dump of `cnnc emit graph`.
    pub fn dump(&self) -> String {
        dump::dump(self)
    }
}

/// `{path}.{suffix}`, or the suffix alone for an unlabelled layer.
fn tensor_name(path: &str, suffix: &str) -> String {
    if path.is_empty() {
        suffix.to_string()
    } else if suffix.is_empty() {
        // A `parameter` layer's one tensor is named by the layer's path alone.
        path.to_string()
    } else {
        format!("{path}.{suffix}")
    }
}
