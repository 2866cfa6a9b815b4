//! `TreeEnsembleClassifier` and `TreeEnsembleRegressor` (ONNX-ML), fast.
//!
//! The attributes list nodes by `(tree id, node id)`; loading turns them into one flat array of
//! 16-byte nodes whose children are array indices, with leaves tagged in the index itself, so a
//! row finds its leaf in a tree by following indices and nothing else (tract's own classifier
//! searched for each leaf). Scores accumulate in `f64`. The classifier's final step follows
//! onnxruntime's reading of the spec where the spec is vague (two classes, one base value),
//! so labels agree with what users already see from onnxruntime.

mod eval;
mod layout;
mod ops;
pub mod shap;

pub use ops::{classifier, regressor, tree_ensemble, trees_of, Classifier, Regressor, Trees};

/// How a node compares its feature with its threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    Leq = 0,
    Lt = 1,
    Gte = 2,
    Gt = 3,
    Eq = 4,
    Neq = 5,
}

impl Mode {
    fn parse(s: &str) -> Option<Option<Mode>> {
        Some(Some(match s {
            "BRANCH_LEQ" => Mode::Leq,
            "BRANCH_LT" => Mode::Lt,
            "BRANCH_GTE" => Mode::Gte,
            "BRANCH_GT" => Mode::Gt,
            "BRANCH_EQ" => Mode::Eq,
            "BRANCH_NEQ" => Mode::Neq,
            "LEAF" => return Some(None),
            _ => return None,
        }))
    }

    /// Opset 5's numbering (0 `BRANCH_LEQ` … 5 `BRANCH_NEQ`), which is this enum's.
    fn from_code(code: u8) -> Mode {
        match code {
            0 => Mode::Leq,
            1 => Mode::Lt,
            2 => Mode::Gte,
            3 => Mode::Gt,
            4 => Mode::Eq,
            _ => Mode::Neq,
        }
    }

    /// True when the row goes to the node's true branch.
    #[inline(always)]
    fn holds(self, x: f32, threshold: f32) -> bool {
        match self {
            Mode::Leq => x <= threshold,
            Mode::Lt => x < threshold,
            Mode::Gte => x >= threshold,
            Mode::Gt => x > threshold,
            Mode::Eq => x == threshold,
            Mode::Neq => x != threshold,
        }
    }

    fn from_u8(v: u8) -> Mode {
        match v {
            0 => Mode::Leq,
            1 => Mode::Lt,
            2 => Mode::Gte,
            3 => Mode::Gt,
            4 => Mode::Eq,
            _ => Mode::Neq,
        }
    }
}

/// How leaf weights from several trees combine (`aggregate_function`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregate {
    Sum,
    Average,
    Min,
    Max,
}

/// The ensemble's attributes, one entry per node and per leaf weight, as the spec lists them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Attributes {
    pub tree_ids: Vec<i64>,
    pub node_ids: Vec<i64>,
    pub feature_ids: Vec<i64>,
    pub modes: Vec<Option<Mode>>,
    pub values: Vec<f32>,
    pub true_ids: Vec<i64>,
    pub false_ids: Vec<i64>,
    pub missing_true: Vec<bool>,
    pub weight_tree_ids: Vec<i64>,
    pub weight_node_ids: Vec<i64>,
    pub weight_targets: Vec<i64>,
    pub weights: Vec<f32>,
}

/// Node indices stay below this; above it is room for `ON_PATH` while placing.
const MAX_NODES: u32 = 1 << 30;
/// Marks a leaf's number (rather than a branch's index) while placing.
const LEAF_TAG: u32 = 1 << 30;
/// Shallow ensembles up to this size are evaluated row by row (they stay in cache), others tree
/// by tree.
const SMALL_ENSEMBLE_BYTES: usize = 256 * 1024;
/// Trees up to this depth are walked a fixed number of steps (deeper ones are unbalanced enough
/// that rows stop at very different depths).
const SHALLOW_DEPTH: u32 = 10;
/// How many walkers go through trees together (rows through one tree, or one row through as
/// many trees), so that their memory loads overlap.
const GROUP: usize = 8;
/// Evaluation with each branch's own mode.
const MIXED: u8 = u8::MAX;

/// One node: 16 bytes. A leaf is a node whose children are itself, so that walking on from a
/// leaf stays there (and a walk knows it has arrived when a node leads to itself).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Branch {
    threshold: f32,
    feature: u32,
    yes: u32,
    no: u32,
}

/// The loaded ensemble: branches, roots, and per leaf a run of `(target, weight)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Ensemble {
    branches: Vec<Branch>,
    /// Nodes from this index on are leaves, leaf `i` at `first_leaf + i`.
    first_leaf: u32,
    /// Per node, its mode (read only when the modes are mixed) and its missing-value track
    /// (read only for NaN).
    modes: Vec<Mode>,
    missing_true: Vec<bool>,
    /// Whether any node sends NaN to its true branch.
    any_missing_true: bool,
    /// Per tree, its root; per group of `GROUP` trees, how many steps the deepest leaf of any of
    /// them is from its root.
    roots: Vec<u32>,
    group_depths: Vec<u32>,
    /// Batches go row by row (shallow ensembles small enough to stay in cache), else tree by tree.
    batch_rows_first: bool,
    /// Per leaf, the start of its weights; one more entry than leaves.
    leaf_start: Vec<u32>,
    targets: Vec<u32>,
    weights: Vec<f64>,
    /// The mode every branch uses, when they all use the same one.
    uniform: Option<Mode>,
    /// Each leaf's weight, when there is one target and every leaf has exactly one weight.
    single: Option<Vec<f64>>,
    /// The same trees as perfect binary trees in heap order, for shallow single-target sums.
    perfect: Option<Perfect>,
    pub n_targets: usize,
    pub n_features: usize,
    pub aggregate: Aggregate,
}

/// Shallow trees laid out as perfect binary trees of one depth: node `p`'s children are
/// `2p + 1` (true) and `2p + 2` (false), a leaf above the last level is repeated below it, so
/// every walk is `depth` steps of one load, one comparison and no child pointers, and the
/// whole ensemble takes half the space (8 bytes a node, 4 a leaf).
#[derive(Clone, Debug, PartialEq)]
struct Perfect {
    depth: u32,
    /// Per tree, `2^depth - 1` nodes: feature and threshold.
    nodes: Vec<(u32, f32)>,
    /// Per tree and node, its mode and missing-value track (read only when needed).
    modes: Vec<Mode>,
    missing_true: Vec<bool>,
    /// Per tree, `2^depth` leaf weights.
    leaves: Vec<f32>,
}

/// The deepest trees laid out perfectly, and the most space that may take.
const PERFECT_DEPTH: u32 = 6;
const PERFECT_BYTES: usize = 128 * 1024;

#[cfg(test)]
mod tests;
