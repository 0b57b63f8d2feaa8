//! The registry of diagnostic codes: every kind of problem cnnc reports, with the text shown in
//! `error[…]`, a one-line title, and the fixture that shows it.
//!
//! A code is added here first (one row of the `codes!` table), then used as `Code::Variant` by
//! the stage that detects the problem. The fixture is a program in `examples/bad/` (rendered by
//! `tests/examples.rs`) or a test case that builds the bad files a run needs (a weights file, an
//! input, an output path) and snapshots what `cnnc` prints. `tests/diagnostics.rs` walks
//! [`Code::ALL`] and fails when a fixture or its snapshot is missing, so a code cannot be added
//! without showing once what a user will read.

use std::fmt;

/// Where a code is shown: the file or test case whose snapshot renders it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Fixture {
    /// A program in `examples/bad/`, by path from the package root; its snapshot is
    /// `tests/snapshots/examples__bad_examples_diagnostics@{file name}.snap`.
    Program(&'static str),
    /// A test function, by the path of its test file and its name; its snapshot is
    /// `tests/snapshots/{file stem}__{name}.snap`.
    Case {
        test_file: &'static str,
        name: &'static str,
    },
}

const fn program(path: &'static str) -> Fixture {
    Fixture::Program(path)
}

const fn case(test_file: &'static str, name: &'static str) -> Fixture {
    Fixture::Case { test_file, name }
}

const CLI_CHECK: &str = "tests/cli_check.rs";
const CLI_RUN: &str = "tests/cli_run.rs";
const DIAGNOSTICS: &str = "tests/diagnostics.rs";
const TRAIN_DATA: &str = "tests/train_data.rs";
const EXPORT_ONNX: &str = "tests/export_onnx.rs";
const CLI_TRAIN: &str = "tests/cli_train.rs";
const CLI_TRANSFER: &str = "tests/cli_transfer.rs";

/// Defines [`Code`] and its tables from one row per code, so that a code cannot exist without
/// its text, its title and its fixture, and [`Code::ALL`] cannot miss one.
macro_rules! codes {
    ($($variant:ident = $text:literal, $title:literal, $fixture:expr;)*) => {
        /// The kind of a diagnostic; rendered as its kebab-case text, e.g. `error[shape-mismatch]`.
        #[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
        pub enum Code {
            $(#[doc = $title] $variant,)*
        }

        impl Code {
            /// Every code, in the registry's order.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The text shown between the brackets of `error[…]`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $text,)*
                }
            }

            /// What the code is about, in one line.
            pub fn title(self) -> &'static str {
                match self {
                    $(Code::$variant => $title,)*
                }
            }

            /// The fixture whose snapshot shows this code.
            pub fn fixture(self) -> Fixture {
                match self {
                    $(Code::$variant => $fixture,)*
                }
            }
        }
    };
}

codes! {
    // Syntax and files (src/syntax/, src/driver.rs).
    Syntax = "syntax", "the text does not follow the grammar", program("examples/bad/syntax_missing_paren.cnn");
    InvalidEscape = "invalid-escape", "a string has an escape other than \\\\ \\\" \\n \\t", program("examples/bad/invalid_escape.cnn");
    NumberTooLarge = "number-too-large", "a number literal does not fit 64 bits", program("examples/bad/huge_number.cnn");
    NestingTooDeep = "nesting-too-deep", "brackets or expressions nested deeper than the parser allows", program("examples/bad/nesting_too_deep.cnn");
    Internal = "internal", "the parser met a syntax tree the grammar should not produce (a bug in cnnc)", case(DIAGNOSTICS, "internal_parser_error");
    CircularImport = "circular-import", "files import each other in a cycle", program("examples/bad/circular_import.cnn");
    MissingImport = "missing-import", "an imported file cannot be found or read", program("examples/bad/missing_import.cnn");
    DuplicateDefinition = "duplicate-definition", "two blocks or networks share a name", program("examples/bad/duplicate_definition.cnn");
    ImportCollision = "import-collision", "an import brings a block or network whose name the program already has", program("examples/bad/import_collision.cnn");
    BuiltinName = "builtin-name", "a block or network named like a built-in layer or function", program("examples/bad/builtin_name.cnn");
    NoNetwork = "no-network", "a file defines no network to check or run", program("examples/bad/empty.cnn");
    UnknownNetwork = "unknown-network", "`--net` names a network the program does not define", case(CLI_CHECK, "unknown_network");

    // Expansion: names, values and calls (src/expand/).
    UnknownName = "unknown-name", "a name is not defined", program("examples/bad/unknown_name.cnn");
    UnknownLayer = "unknown-layer", "a call names no layer, block or function", program("examples/bad/unknown_layer.cnn");
    NotAValue = "not-a-value", "a layer or block is used where a value is expected", program("examples/bad/not_a_value.cnn");
    TypeMismatch = "type-mismatch", "a value has the wrong type for where it is used", program("examples/bad/condition_type.cnn");
    ArgumentType = "argument-type", "an argument has the wrong type", program("examples/bad/argument_type.cnn");
    ArgumentRange = "argument-range", "an argument is out of its range (e.g. zero filters)", program("examples/bad/argument_range.cnn");
    UnknownArgument = "unknown-argument", "a keyword argument the callee does not have", program("examples/bad/unknown_argument.cnn");
    PositionalAfterKeyword = "positional-after-keyword", "a positional argument after a keyword argument", program("examples/bad/positional_after_keyword.cnn");
    DuplicateArgument = "duplicate-argument", "an argument is given twice", program("examples/bad/duplicate_argument.cnn");
    MissingArgument = "missing-argument", "a parameter without default is not given", program("examples/bad/missing_argument.cnn");
    TooManyArguments = "too-many-arguments", "more positional arguments than parameters", program("examples/bad/too_many_arguments.cnn");
    MissingDefault = "missing-default", "a network parameter has no default, so the network cannot be built alone", program("examples/bad/missing_default.cnn");
    MissingInput = "missing-input", "a layer is called without the tensor it applies to", program("examples/bad/missing_input_tensor.cnn");
    MissingValue = "missing-value", "a block or branch body ends without a value", program("examples/bad/missing_value.cnn");
    IfWithoutElse = "if-without-else", "an `if` used as a value has no `else`", program("examples/bad/if_without_else.cnn");
    Unreachable = "unreachable", "a statement after `return`", program("examples/bad/unreachable.cnn");
    NetworkOutput = "network-output", "a network's body does not end in a tensor", program("examples/bad/network_output.cnn");
    DuplicateOutput = "duplicate-output", "a network returns the same tensor twice", program("examples/bad/duplicate_output.cnn");
    OutputsOutsideNetwork = "outputs-outside-network", "several values returned by a block, a branch or a network used as a stage", program("examples/bad/outputs_outside_network.cnn");
    IndexOutOfRange = "index-out-of-range", "a list index past the list's end", program("examples/bad/index_out_of_range.cnn");
    DivisionByZero = "division-by-zero", "integer division or remainder by zero", program("examples/bad/division_by_zero.cnn");
    Overflow = "overflow", "arithmetic overflows 64 bits (an int beyond ±9.2e18, a float beyond ±1.8e308)", program("examples/bad/integer_overflow.cnn");
    ListTooLarge = "list-too-large", "a list holds too many values or is nested too deep", program("examples/bad/list_too_large.cnn");
    RepeatCount = "repeat-count", "a `repeat` count below 1 or above the limit", program("examples/bad/repeat_zero.cnn");
    RecursiveBlock = "recursive-block", "a block calls itself", program("examples/bad/recursive_block.cnn");
    ExpansionTooLarge = "expansion-too-large", "the network expands to too many layers or steps", program("examples/bad/expansion_too_large.cnn");
    MisplacedDeclaration = "misplaced-declaration", "`preprocess` or `labels` inside a block", program("examples/bad/misplaced_declaration.cnn");
    Preprocess = "preprocess", "a `preprocess(...)` that cannot give the input's size or channels, or a second one", program("examples/bad/preprocess.cnn");
    InvalidLabel = "invalid-label", "a quoted or computed label is not a valid weight-path segment", program("examples/bad/invalid_label.cnn");
    LabelCollision = "label-collision", "a computed label gives the same name twice in one scope", program("examples/bad/label_collision.cnn");
    DuplicateWeightPath = "duplicate-weight-path", "two layers would name their weights alike", program("examples/bad/duplicate_weight_path.cnn");
    TooManyErrors = "too-many-errors", "expansion stopped after too many errors", program("examples/bad/too_many_errors.cnn");
    UnusedLet = "unused-let", "warning: a `let` binding is never used", program("examples/bad/unused_let.cnn");
    UnusedValue = "unused-value", "warning: a tensor is computed and dropped", program("examples/bad/unused_value.cnn");
    UnusedBlock = "unused-block", "warning: a block that no network or block calls (so its body is not checked)", program("examples/bad/unused_block.cnn");
    UnusedParameter = "unused-parameter", "warning: a block parameter its body never reads", program("examples/bad/unused_parameter.cnn");

    // Shapes (src/graph/infer.rs, ShapeError).
    ShapeMismatch = "shape-mismatch", "`+`, `-`, `*` or `/` of tensors whose shapes differ", program("examples/bad/add_channel_mismatch.cnn");
    ConcatMismatch = "concat-mismatch", "`concat` of tensors whose heights or widths differ", program("examples/bad/concat_mismatch.cnn");
    KernelTooLarge = "kernel-too-large", "a window larger than its padded input", program("examples/bad/kernel_too_large.cnn");
    PoolPadding = "pool-padding", "a pool padded by more than half its window", program("examples/bad/pool_padding_too_large.cnn");
    PaddingTooLarge = "padding-too-large", "padding larger than the input or the kernel allows", program("examples/bad/absurd_window_attributes.cnn");
    LiteralShape = "literal-shape", "literal weights of the wrong shape for their layer", program("examples/bad/literal_weights_shape.cnn");
    OutputPadding = "output-padding", "a conv_transpose's output_padding not smaller than its stride or its dilation", program("examples/bad/conv_transpose_output_padding.cnn");
    Groups = "groups", "`groups` does not divide the channels", program("examples/bad/groups_dont_divide.cnn");
    TooLarge = "too-large", "a tensor over the 2^31-element limit", program("examples/bad/too_large.cnn");
    NeedsFlat = "needs-flat", "a layer that needs a flat vector gets an image", program("examples/bad/dense_needs_flat.cnn");
    NeedsImage = "needs-image", "a layer that needs an image gets a flat vector", program("examples/bad/needs_image.cnn");
    Arity = "arity", "an op is given the wrong number of input tensors", program("examples/bad/arity.cnn");
    InputShape = "input-shape", "an input's declared shape, or the data given for it, is wrong", program("examples/bad/huge_shape.cnn");

    // Running: weights, inputs, outputs (src/runtime/, src/cli/).
    WeightsFile = "weights-file", "the weights file cannot be read, written or parsed", case(CLI_RUN, "weights_file_missing");
    WeightsMissing = "weights-missing", "the weights file lacks a tensor a layer needs", case(CLI_RUN, "weights_allowed_to_miss_a_head");
    WeightsShape = "weights-shape", "a weights tensor has the wrong shape", case(CLI_RUN, "weights_of_wrong_shape");
    WeightsDtype = "weights-dtype", "a weights tensor is stored in a type cnnc does not read", case(DIAGNOSTICS, "weights_of_wrong_dtype");
    WeightsUnused = "weights-unused", "the weights file has a tensor no layer uses", case(CLI_RUN, "weights_unused_tensor_warns_and_strict_refuses");
    WeightsTooLarge = "weights-too-large", "the network's weights exceed cnnc's limit", case(DIAGNOSTICS, "weights_too_large_to_seed");
    Weights = "weights", "`cnnc bench` cannot make the seeded weights", case(DIAGNOSTICS, "bench_weights_too_large_to_seed");
    InputFile = "input-file", "an input file cannot be read or decoded", case(CLI_RUN, "input_file_missing");
    InputCount = "input-count", "the number of `--input` files differs from the network's inputs", case(DIAGNOSTICS, "input_count_differs");
    Input = "input", "the input batch cannot be made (too large or empty)", case(DIAGNOSTICS, "input_batch_too_large");
    LabelsFile = "labels-file", "the labels file cannot be read or does not match the outputs", case(CLI_RUN, "labels_file_missing");
    OutputFile = "output-file", "the `--output` file cannot be written", case(DIAGNOSTICS, "output_file_unwritable");
    Optimize = "optimize", "an optimizer pass broke the graph (a bug in cnnc)", case(DIAGNOSTICS, "optimizer_broke_the_graph");
    Codegen = "codegen", "the code generator failed (a bug in cnnc or an unsupported CPU)", case(DIAGNOSTICS, "codegen_failed");
    Run = "run", "running the network failed (e.g. a batch too large for a layer)", case(DIAGNOSTICS, "run_output_too_large");
    DataFile = "data-file", "a training data file that cannot be read or lacks its labels", case(TRAIN_DATA, "labels_file_that_is_not_npy");
    DataOption = "data-option", "a data option out of range (validation fraction, batch, padding)", case(TRAIN_DATA, "validation_fraction_out_of_range");
    Data = "data", "training data that does not fit the network (size, channels, labels, classes)", case(TRAIN_DATA, "empty_folder");
    Export = "export", "a network cannot be exported (file unwritable, model too large)", case(EXPORT_ONNX, "unwritable_path_is_a_diagnostic");
    Checkpoint = "checkpoint", "a checkpoint that cannot be read, written or resumed", case(TRAIN_DATA, "checkpoint_that_is_not_safetensors");
    Recipe = "recipe", "a training recipe setting that is unknown, out of range or for another optimizer", program("examples/bad/recipe_unknown_optimizer.cnn");
    FeatureCache = "feature-cache", "the folder of `--cache` cannot hold the cached frozen features", case(CLI_TRANSFER, "a_cache_folder_that_does_not_exist_is_a_diagnostic");
    Unfreeze = "unfreeze", "a training stage unfreezes a layer the network does not have frozen", program("examples/bad/recipe_unfreeze_unknown.cnn");
    Augment = "augment", "an `augment(...)` that does not fit the network's input (crop size, padding without a crop, no image input), or a second one", program("examples/bad/augment.cnn");
    SeveralOutputs = "several-outputs", "`cnnc train`, `eval` or `bench --train` given a network with several outputs", case(CLI_TRAIN, "a_network_with_several_outputs_is_not_trained");
    Diverged = "diverged", "training stopped: the loss or the gradients became NaN or infinite", case(CLI_TRAIN, "divergence_names_the_step");
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
