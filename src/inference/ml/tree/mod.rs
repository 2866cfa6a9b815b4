//! `TreeEnsembleClassifier` and `TreeEnsembleRegressor` (ONNX-ML), fast.
//!
//! The attributes list nodes by `(tree id, node id)`; loading turns them into one flat array of
//! 16-byte nodes whose children are array indices, with leaves tagged in the index itself, so a
//! row finds its leaf in a tree by following indices and nothing else (tract's own classifier
//! searched for each leaf). Scores accumulate in `f64`. The classifier's final step follows
//! onnxruntime's reading of the spec where the spec is vague (two classes, one base value),
//! so labels agree with what users already see from onnxruntime.

use std::collections::HashMap;

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

use super::{built, f32_matrix, matrix_f32, named, Dims, Kernel, Labels, Output, PostTransform};

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

impl Perfect {
    fn build(e: &Ensemble) -> Option<Perfect> {
        let single = e.single.as_ref()?;
        let depth = e.group_depths.iter().copied().max()?;
        let inner = (1usize << depth) - 1;
        let trees = e.roots.len();
        if depth > PERFECT_DEPTH || trees * (inner * 8 + (inner + 1) * 4) > PERFECT_BYTES {
            return None;
        }
        let mut p = Perfect {
            depth,
            nodes: vec![(0, 0.0); trees * inner],
            modes: vec![Mode::Leq; trees * inner],
            missing_true: vec![false; trees * inner],
            leaves: vec![0.0; trees * (inner + 1)],
        };
        for (t, &root) in e.roots.iter().enumerate() {
            // (node, heap position, level)
            let mut stack = vec![(root, 0usize, 0u32)];
            while let Some((at, pos, level)) = stack.pop() {
                if level == depth {
                    let leaf = (at - e.first_leaf) as usize;
                    p.leaves[t * (inner + 1) + pos - inner] = single[leaf] as f32;
                    continue;
                }
                let (yes, no) = if at >= e.first_leaf {
                    (at, at) // a leaf above the last level: the same leaf on both sides
                } else {
                    let b = e.branches[at as usize];
                    let k = t * inner + pos;
                    p.nodes[k] = (b.feature, b.threshold);
                    p.modes[k] = e.modes[at as usize];
                    p.missing_true[k] = e.missing_true[at as usize];
                    (b.yes, b.no)
                };
                stack.push((yes, 2 * pos + 1, level + 1));
                stack.push((no, 2 * pos + 2, level + 1));
            }
        }
        Some(p)
    }

    /// Sums the trees for each row into `scores`.
    fn sum<const M: u8, const NAN: bool>(
        &self,
        x: &[f32],
        n: usize,
        width: usize,
        scores: &mut [f64],
    ) {
        let inner = (1usize << self.depth) - 1;
        let trees = self.leaves.len() / (inner + 1);
        for (r, score) in scores.iter_mut().enumerate().take(n) {
            let row = &x[r * width..(r + 1) * width];
            let mut acc = 0.0f64;
            for first in (0..trees).step_by(GROUP) {
                let live = GROUP.min(trees - first);
                let mut pos = [0usize; GROUP];
                for _ in 0..self.depth {
                    for (k, pos) in pos.iter_mut().enumerate().take(live) {
                        let at = (first + k) * inner + *pos;
                        // SAFETY: `pos` stays below `inner` for `depth` steps, and features
                        // were checked against the row width.
                        let (feature, threshold) = unsafe { *self.nodes.get_unchecked(at) };
                        let x = unsafe { *row.get_unchecked(feature as usize) };
                        let m = if M == MIXED {
                            self.modes[at]
                        } else {
                            Mode::from_u8(M)
                        };
                        let yes = if NAN && x.is_nan() {
                            self.missing_true[at] || m.holds(x, threshold)
                        } else {
                            m.holds(x, threshold)
                        };
                        *pos = 2 * *pos + 1 + usize::from(!yes);
                    }
                }
                for (k, pos) in pos.iter().enumerate().take(live) {
                    acc += self.leaves[(first + k) * (inner + 1) + pos - inner] as f64;
                }
            }
            *score = acc;
        }
    }
}

impl Ensemble {
    /// Builds the flat form; refuses dangling children, cycles and weights on branches.
    pub fn build(
        a: &Attributes,
        n_targets: usize,
        aggregate: Aggregate,
    ) -> Result<Ensemble, String> {
        let n = a.node_ids.len();
        if n == 0 {
            return Err("the ensemble has no nodes".into());
        }
        if n > super::caps::MAX_TREE_NODES {
            return Err(format!(
                "{n} nodes is more than Plinth serves ({})",
                super::caps::MAX_TREE_NODES
            ));
        }
        if n_targets > super::caps::MAX_CLASSES {
            return Err(format!(
                "{n_targets} classes or targets is more than Plinth serves ({})",
                super::caps::MAX_CLASSES
            ));
        }
        let same = [
            ("nodes_treeids", a.tree_ids.len()),
            ("nodes_featureids", a.feature_ids.len()),
            ("nodes_modes", a.modes.len()),
            ("nodes_values", a.values.len()),
            ("nodes_truenodeids", a.true_ids.len()),
            ("nodes_falsenodeids", a.false_ids.len()),
            ("nodes_missing_value_tracks_true", a.missing_true.len()),
        ];
        if let Some((name, len)) = same.iter().find(|(_, len)| *len != n) {
            return Err(format!("{name} has {len} entries for {n} nodes"));
        }
        let w = a.weights.len();
        let weight_lists = [
            ("tree ids", a.weight_tree_ids.len()),
            ("node ids", a.weight_node_ids.len()),
            ("target ids", a.weight_targets.len()),
        ];
        if let Some((name, len)) = weight_lists.iter().find(|(_, len)| *len != w) {
            return Err(format!(
                "the leaf {name} have {len} entries for {w} weights"
            ));
        }
        let mut index: HashMap<(i64, i64), usize> = HashMap::with_capacity(n);
        for i in 0..n {
            if index.insert((a.tree_ids[i], a.node_ids[i]), i).is_some() {
                return Err(format!(
                    "node {} of tree {} is listed twice",
                    a.node_ids[i], a.tree_ids[i]
                ));
            }
        }
        // Trees in id order; each one's root is its lowest node id. (One pass with a map: a
        // search per node would be quadratic in the number of trees.)
        let mut roots: HashMap<i64, i64> = HashMap::new();
        for i in 0..n {
            roots
                .entry(a.tree_ids[i])
                .and_modify(|root| *root = (*root).min(a.node_ids[i]))
                .or_insert(a.node_ids[i]);
        }
        let mut trees: Vec<(i64, i64)> = roots.into_iter().collect();
        trees.sort_unstable();

        // Leaf weights by node.
        let mut leaf_weights: HashMap<usize, Vec<(u32, f64)>> = HashMap::new();
        for j in 0..w {
            let key = (a.weight_tree_ids[j], a.weight_node_ids[j]);
            let Some(&node) = index.get(&key) else {
                return Err(format!(
                    "a weight names node {} of tree {}, which does not exist",
                    key.1, key.0
                ));
            };
            if a.modes[node].is_some() {
                return Err(format!(
                    "a weight is attached to node {} of tree {}, which is not a leaf",
                    key.1, key.0
                ));
            }
            let target = a.weight_targets[j];
            if target < 0 || target as usize >= n_targets {
                return Err(format!(
                    "a weight names class or target {target}, but there are {n_targets}"
                ));
            }
            leaf_weights
                .entry(node)
                .or_default()
                .push((target as u32, a.weights[j] as f64));
        }

        let mut e = Ensemble {
            branches: Vec::new(),
            first_leaf: 0,
            modes: Vec::new(),
            missing_true: Vec::new(),
            any_missing_true: false,
            roots: Vec::with_capacity(trees.len()),
            group_depths: Vec::new(),
            batch_rows_first: false,
            leaf_start: vec![0],
            targets: Vec::new(),
            weights: Vec::new(),
            uniform: None,
            single: None,
            perfect: None,
            n_targets,
            n_features: 0,
            aggregate,
        };
        // Attribute index -> flat reference, filled as nodes are placed (depth first).
        let mut placed: HashMap<usize, u32> = HashMap::new();
        for &(tree, root) in &trees {
            let root = index[&(tree, root)];
            let r = e.place(a, &index, &leaf_weights, &mut placed, tree, root)?;
            e.roots.push(r);
        }
        // Leaves go after the branches: a node is a leaf when its index is `first_leaf` or
        // more, and a leaf leads to itself, so that walking on from it stays there. A leaf
        // never compares: its threshold holds its weight when it has exactly one (for the
        // single-target fast path).
        e.first_leaf = e.branches.len() as u32;
        let first_leaf = e.first_leaf;
        let resolve = |r: u32| {
            if r & LEAF_TAG != 0 {
                first_leaf + (r & !LEAF_TAG)
            } else {
                r
            }
        };
        for b in e.branches.iter_mut() {
            b.yes = resolve(b.yes);
            b.no = resolve(b.no);
        }
        for r in e.roots.iter_mut() {
            *r = resolve(*r);
        }
        for leaf in 0..e.leaf_start.len() - 1 {
            let at = first_leaf + leaf as u32;
            if at >= MAX_NODES {
                return Err("the ensemble has too many nodes".into());
            }
            let (from, to) = (e.leaf_start[leaf] as usize, e.leaf_start[leaf + 1] as usize);
            e.branches.push(Branch {
                threshold: if to == from + 1 {
                    e.weights[from] as f32
                } else {
                    0.0
                },
                feature: 0,
                yes: at,
                no: at,
            });
            e.modes.push(Mode::Leq);
            e.missing_true.push(false);
        }
        // Children come before their parents among the branches, so one pass gives the depths.
        let mut depth = vec![0u32; e.branches.len()];
        for i in 0..first_leaf as usize {
            let b = e.branches[i];
            depth[i] = 1 + depth[b.yes as usize].max(depth[b.no as usize]);
        }
        e.group_depths = e
            .roots
            .chunks(GROUP)
            .map(|roots| roots.iter().map(|r| depth[*r as usize]).max().unwrap_or(0))
            .collect();
        e.batch_rows_first = e.group_depths.iter().all(|d| *d <= SHALLOW_DEPTH)
            && e.branches.len() * std::mem::size_of::<Branch>() <= SMALL_ENSEMBLE_BYTES;
        e.any_missing_true = e.missing_true.iter().any(|m| *m);
        e.n_features = e.n_features.max(1);
        let modes = &e.modes[..first_leaf as usize];
        if n_targets == 1 && e.leaf_start.windows(2).all(|w| w[1] == w[0] + 1) {
            e.single = Some(e.weights.clone());
        }
        e.uniform = match modes.first() {
            Some(&m) if modes.iter().all(|&x| x == m) => Some(m),
            None => Some(Mode::Leq),
            _ => None,
        };
        e.perfect = Perfect::build(&e);
        Ok(e)
    }

    /// Places node `i` (and, depth first, what it leads to) and returns its flat reference.
    fn place(
        &mut self,
        a: &Attributes,
        index: &HashMap<(i64, i64), usize>,
        leaf_weights: &HashMap<usize, Vec<(u32, f64)>>,
        placed: &mut HashMap<usize, u32>,
        tree: i64,
        i: usize,
    ) -> Result<u32, String> {
        // An explicit stack: deep trees must not exhaust the thread's stack.
        enum Step {
            Enter(usize),
            Finish(usize),
        }
        const ON_PATH: u32 = u32::MAX;
        let mut stack = vec![Step::Enter(i)];
        while let Some(step) = stack.pop() {
            match step {
                Step::Enter(i) => {
                    match placed.get(&i) {
                        Some(&ON_PATH) => {
                            return Err(format!(
                                "tree {tree} has a cycle through node {}",
                                a.node_ids[i]
                            ))
                        }
                        Some(_) => continue,
                        None => {}
                    }
                    if a.modes[i].is_none() {
                        let leaf = (self.leaf_start.len() - 1) as u32;
                        let weights = leaf_weights.get(&i).map_or(&[][..], Vec::as_slice);
                        for &(t, w) in weights {
                            self.targets.push(t);
                            self.weights.push(w);
                        }
                        self.leaf_start.push(self.targets.len() as u32);
                        if leaf >= MAX_NODES {
                            return Err("the ensemble has too many nodes".into());
                        }
                        // Leaves are numbered apart while placing (tagged); `build` puts them
                        // after the branches.
                        placed.insert(i, leaf | LEAF_TAG);
                        continue;
                    }
                    let child = |id: i64| {
                        index.get(&(tree, id)).copied().ok_or_else(|| {
                            format!(
                                "node {} of tree {tree} leads to node {id}, which does not exist",
                                a.node_ids[i]
                            )
                        })
                    };
                    let (yes, no) = (child(a.true_ids[i])?, child(a.false_ids[i])?);
                    let feature = a.feature_ids[i];
                    if !(0..u32::MAX as i64).contains(&feature) {
                        return Err(format!("node {} reads feature {feature}", a.node_ids[i]));
                    }
                    self.n_features = self.n_features.max(feature as usize + 1);
                    placed.insert(i, ON_PATH);
                    stack.push(Step::Finish(i));
                    stack.push(Step::Enter(no));
                    stack.push(Step::Enter(yes));
                }
                Step::Finish(i) => {
                    let reference = |placed: &HashMap<usize, u32>, id: i64| {
                        placed
                            .get(&index[&(tree, id)])
                            .copied()
                            .filter(|r| *r != ON_PATH)
                            .ok_or_else(|| {
                                format!("tree {tree} has a cycle through node {}", a.node_ids[i])
                            })
                    };
                    let yes = reference(placed, a.true_ids[i])?;
                    let no = reference(placed, a.false_ids[i])?;
                    let mode = a.modes[i].unwrap_or(Mode::Leq);
                    let at = self.branches.len() as u32;
                    if at >= MAX_NODES {
                        return Err("the ensemble has too many nodes".into());
                    }
                    self.modes.push(mode);
                    self.missing_true.push(a.missing_true[i]);
                    self.branches.push(Branch {
                        threshold: a.values[i],
                        feature: a.feature_ids[i] as u32,
                        yes,
                        no,
                    });
                    placed.insert(i, at);
                }
            }
        }
        placed
            .get(&i)
            .copied()
            .ok_or_else(|| "a tree could not be placed".to_string())
    }

    pub fn n_trees(&self) -> usize {
        self.roots.len()
    }

    /// Is node `at` a leaf?
    #[inline(always)]
    fn is_leaf(&self, at: u32) -> bool {
        at >= self.first_leaf
    }

    /// Aggregated scores `[n, n_targets]` before base values and transforms, and whether each
    /// target got any weight.
    pub fn aggregate(&self, x: &[f32], n: usize, width: usize) -> (Vec<f64>, Vec<bool>) {
        // The mode as a constant where every branch uses the same one, and the missing-value
        // test only where some node needs it.
        macro_rules! with_mode {
            ($missing:literal) => {
                match self.uniform {
                    Some(Mode::Leq) => self.aggregate_with::<0, $missing>(x, n, width),
                    Some(Mode::Lt) => self.aggregate_with::<1, $missing>(x, n, width),
                    Some(Mode::Gte) => self.aggregate_with::<2, $missing>(x, n, width),
                    Some(Mode::Gt) => self.aggregate_with::<3, $missing>(x, n, width),
                    Some(Mode::Eq) => self.aggregate_with::<4, $missing>(x, n, width),
                    Some(Mode::Neq) => self.aggregate_with::<5, $missing>(x, n, width),
                    None => self.aggregate_with::<MIXED, $missing>(x, n, width),
                }
            };
        }
        if self.any_missing_true {
            with_mode!(true)
        } else {
            with_mode!(false)
        }
    }

    fn aggregate_with<const M: u8, const NAN: bool>(
        &self,
        x: &[f32],
        n: usize,
        width: usize,
    ) -> (Vec<f64>, Vec<bool>) {
        let t = self.n_targets;
        let mut scores = vec![0.0f64; n * t];
        let mut has = vec![false; n * t];
        if let (Some(perfect), Aggregate::Sum | Aggregate::Average) =
            (&self.perfect, self.aggregate)
        {
            perfect.sum::<M, NAN>(x, n, width, &mut scores);
            has.fill(!self.roots.is_empty());
        } else if n == 1 || self.batch_rows_first {
            self.rows_first::<M, NAN>(x, n, width, &mut scores, &mut has);
        } else {
            self.trees_first::<M, NAN>(x, n, width, &mut scores, &mut has);
        }
        (scores, has)
    }

    /// The scores by every evaluation order, for tests: whichever `aggregate` picks must agree.
    #[cfg(test)]
    pub(crate) fn aggregate_every_way(
        &self,
        x: &[f32],
        n: usize,
        width: usize,
    ) -> Vec<(Vec<f64>, Vec<bool>)> {
        let t = self.n_targets;
        let mut ways = vec![self.aggregate(x, n, width)];
        let (mut s, mut h) = (vec![0.0; n * t], vec![false; n * t]);
        self.rows_first::<MIXED, true>(x, n, width, &mut s, &mut h);
        ways.push((s, h));
        let (mut s, mut h) = (vec![0.0; n * t], vec![false; n * t]);
        self.trees_first::<MIXED, true>(x, n, width, &mut s, &mut h);
        ways.push((s, h));
        if let Some(perfect) = &self.perfect {
            if matches!(self.aggregate, Aggregate::Sum | Aggregate::Average) {
                let mut s = vec![0.0; n * t];
                perfect.sum::<MIXED, true>(x, n, width, &mut s);
                ways.push((s, vec![!self.roots.is_empty(); n * t]));
            }
        }
        ways
    }

    /// Tree by tree, for ensembles too large to stay in cache: a tree's nodes stay in cache for
    /// the whole batch, and rows walk it in groups, so that their memory loads overlap.
    fn trees_first<const M: u8, const NAN: bool>(
        &self,
        x: &[f32],
        n: usize,
        width: usize,
        scores: &mut [f64],
        has: &mut [bool],
    ) {
        let t = self.n_targets;
        for &root in &self.roots {
            for first in (0..n).step_by(GROUP) {
                let rows = GROUP.min(n - first);
                let block = &x[first * width..(first + rows) * width];
                let mut at = [root; GROUP];
                at = self.walk_to_leaves::<M, NAN>(at, rows, block, width, width);
                for (k, at) in at.iter().enumerate().take(rows) {
                    let r = first + k;
                    self.add_leaf(
                        (*at - self.first_leaf) as usize,
                        &mut scores[r * t..(r + 1) * t],
                        &mut has[r * t..(r + 1) * t],
                    );
                }
            }
        }
    }

    /// Row by row, for one row or for shallow ensembles small enough to stay in cache whole:
    /// each row walks groups of trees together (shallow ones a fixed number of steps, the
    /// group's depth), so that the trees' memory loads overlap and the row's score stays in a
    /// register.
    fn rows_first<const M: u8, const NAN: bool>(
        &self,
        x: &[f32],
        n: usize,
        width: usize,
        scores: &mut [f64],
        has: &mut [bool],
    ) {
        let t = self.n_targets;
        let sum_of_single =
            self.single.is_some() && matches!(self.aggregate, Aggregate::Sum | Aggregate::Average);
        for r in 0..n {
            let row = &x[r * width..(r + 1) * width];
            let (scores, has) = (
                &mut scores[r * t..(r + 1) * t],
                &mut has[r * t..(r + 1) * t],
            );
            let mut acc = 0.0f64;
            for (roots, &depth) in self.roots.chunks(GROUP).zip(&self.group_depths) {
                let mut at = [0u32; GROUP];
                at[..roots.len()].copy_from_slice(roots);
                if roots.len() == GROUP && depth <= SHALLOW_DEPTH {
                    // A whole group of shallow trees: fixed sizes, so the loop unrolls.
                    for _ in 0..depth {
                        for at in at.iter_mut() {
                            *at = self.step::<M, NAN>(*at, row);
                        }
                    }
                } else if depth <= SHALLOW_DEPTH {
                    for _ in 0..depth {
                        for at in at.iter_mut().take(roots.len()) {
                            *at = self.step::<M, NAN>(*at, row);
                        }
                    }
                } else {
                    at = self.walk_to_leaves::<M, NAN>(at, roots.len(), row, width, 0);
                }
                if sum_of_single {
                    for at in at.iter().take(roots.len()) {
                        // SAFETY: as in `step`.
                        acc +=
                            unsafe { self.branches.get_unchecked(*at as usize) }.threshold as f64;
                    }
                } else {
                    for at in at.iter().take(roots.len()) {
                        self.add_leaf((*at - self.first_leaf) as usize, scores, has);
                    }
                }
            }
            if sum_of_single {
                scores[0] = acc;
                has[0] = !self.roots.is_empty();
            }
        }
    }

    /// Steps the first `live` walkers until each stands on a leaf; walker `k` reads the `width`
    /// values at `k * stride` in `x` (a stride of 0: all read the same row). The walkers go in
    /// and out by value, so that they stay in registers.
    #[inline(always)]
    fn walk_to_leaves<const M: u8, const NAN: bool>(
        &self,
        mut at: [u32; GROUP],
        live: usize,
        x: &[f32],
        width: usize,
        stride: usize,
    ) -> [u32; GROUP] {
        loop {
            let mut walking = false;
            for (k, at) in at.iter_mut().enumerate().take(live) {
                if !self.is_leaf(*at) {
                    walking = true;
                    *at = self.step::<M, NAN>(*at, &x[k * stride..k * stride + width]);
                }
            }
            if !walking {
                return at;
            }
        }
    }

    /// One step from node `at` (a leaf stays where it is).
    #[inline(always)]
    fn step<const M: u8, const NAN: bool>(&self, at: u32, row: &[f32]) -> u32 {
        // SAFETY: node indices and their children were made by `place`, and features were
        // checked against the row width before evaluation (a leaf reads feature 0, and rows
        // have at least one column).
        let b = unsafe { self.branches.get_unchecked(at as usize) };
        let x = unsafe { *row.get_unchecked(b.feature as usize) };
        let m = if M == MIXED {
            unsafe { *self.modes.get_unchecked(at as usize) }
        } else {
            Mode::from_u8(M)
        };
        let yes = if NAN && x.is_nan() {
            (unsafe { *self.missing_true.get_unchecked(at as usize) }) || m.holds(x, b.threshold)
        } else {
            m.holds(x, b.threshold)
        };
        if yes {
            b.yes
        } else {
            b.no
        }
    }

    /// Adds a leaf's weights to one row's scores.
    #[inline(always)]
    fn add_leaf(&self, leaf: usize, scores: &mut [f64], has: &mut [bool]) {
        if let (Some(single), Aggregate::Sum | Aggregate::Average) = (&self.single, self.aggregate)
        {
            scores[0] += single[leaf];
            has[0] = true;
            return;
        }
        let (from, to) = (
            self.leaf_start[leaf] as usize,
            self.leaf_start[leaf + 1] as usize,
        );
        for k in from..to {
            let (target, w) = (self.targets[k] as usize, self.weights[k]);
            let s = &mut scores[target];
            match self.aggregate {
                Aggregate::Sum | Aggregate::Average => *s += w,
                Aggregate::Min => *s = if has[target] { s.min(w) } else { w },
                Aggregate::Max => *s = if has[target] { s.max(w) } else { w },
            }
            has[target] = true;
        }
    }

    /// Checks that rows of `width` values hold every feature the trees read.
    pub fn check_width(&self, width: usize) -> Result<(), String> {
        if width < self.n_features {
            Err(format!(
                "the trees read feature {} but the input has {width} columns",
                self.n_features - 1
            ))
        } else {
            Ok(())
        }
    }
}

fn attributes(node: &NodeProto, prefix: &str) -> TractResult<Attributes> {
    let ints = |name: &str| -> TractResult<Vec<i64>> {
        Ok(node.get_attr_opt_vec::<i64>(name)?.unwrap_or_default())
    };
    let values = match node.get_attr_opt_vec::<f32>("nodes_values")? {
        Some(v) => v,
        None => bail!(
            "{}: nodes_values is missing (thresholds given only as a tensor are not supported)",
            named(node)
        ),
    };
    let weights = match node.get_attr_opt_vec::<f32>(&format!("{prefix}_weights"))? {
        Some(v) => v,
        None => bail!("{}: {prefix}_weights is missing", named(node)),
    };
    let modes = node
        .get_attr_opt_vec::<String>("nodes_modes")?
        .unwrap_or_default()
        .iter()
        .map(|m| {
            Mode::parse(m).ok_or_else(|| format_err!("{}: unknown node mode {m:?}", named(node)))
        })
        .collect::<TractResult<Vec<_>>>()?;
    let node_ids = ints("nodes_nodeids")?;
    let missing = ints("nodes_missing_value_tracks_true")?;
    Ok(Attributes {
        missing_true: if missing.is_empty() {
            vec![false; node_ids.len()]
        } else {
            missing.iter().map(|m| *m != 0).collect()
        },
        tree_ids: ints("nodes_treeids")?,
        node_ids,
        feature_ids: ints("nodes_featureids")?,
        modes,
        values,
        true_ids: ints("nodes_truenodeids")?,
        false_ids: ints("nodes_falsenodeids")?,
        weight_tree_ids: ints(&format!("{prefix}_treeids"))?,
        weight_node_ids: ints(&format!("{prefix}_nodeids"))?,
        weight_targets: ints(&format!("{prefix}_ids"))?,
        weights,
    })
}

/// `TreeEnsembleRegressor`.
#[derive(Debug)]
pub struct Regressor {
    pub ensemble: Ensemble,
    pub base_values: Vec<f64>,
    pub post_transform: PostTransform,
}

pub fn regressor(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let n_targets: i64 = node.get_attr_opt("n_targets")?.unwrap_or(1);
    ensure!(
        (1..=super::caps::MAX_CLASSES as i64).contains(&n_targets),
        "{}: n_targets must be between 1 and {}, not {n_targets}",
        named(node),
        super::caps::MAX_CLASSES
    );
    let aggregate = match node
        .get_attr_opt::<&str>("aggregate_function")?
        .unwrap_or("SUM")
    {
        "SUM" => Aggregate::Sum,
        "AVERAGE" => Aggregate::Average,
        "MIN" => Aggregate::Min,
        "MAX" => Aggregate::Max,
        other => bail!("{}: unknown aggregate_function {other:?}", named(node)),
    };
    let a = attributes(node, "target")?;
    let ensemble = Ensemble::build(&a, n_targets as usize, aggregate)
        .map_err(|e| format_err!("{}: {e}", named(node)))?;
    built(Regressor {
        ensemble,
        base_values: base_values(node)?,
        post_transform: PostTransform::parse(node)?,
    })
}

fn base_values(node: &NodeProto) -> TractResult<Vec<f64>> {
    Ok(node
        .get_attr_opt_vec::<f32>("base_values")?
        .unwrap_or_default()
        .into_iter()
        .map(f64::from)
        .collect())
}

impl Regressor {
    /// Final values `[n, n_targets]` for aggregated scores.
    pub fn finish(&self, mut scores: Vec<f64>, has: &[bool]) -> Vec<f64> {
        let t = self.ensemble.n_targets;
        let trees = self.ensemble.n_trees().max(1) as f64;
        let base = |k: usize| {
            if self.base_values.len() == t {
                self.base_values[k]
            } else {
                0.0
            }
        };
        for (row, has) in scores.chunks_mut(t).zip(has.chunks(t)) {
            for (k, s) in row.iter_mut().enumerate() {
                *s = match self.ensemble.aggregate {
                    Aggregate::Average => *s / trees + base(k),
                    Aggregate::Sum => *s + base(k),
                    Aggregate::Min | Aggregate::Max if has[k] => *s + base(k),
                    Aggregate::Min | Aggregate::Max => base(k),
                };
            }
            self.post_transform.apply(row);
        }
        scores
    }
}

impl Kernel for Regressor {
    fn name(&self) -> &'static str {
        "TreeEnsembleRegressor"
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::new(
            DatumType::F32,
            Dims::Columns(self.ensemble.n_targets),
        )]
    }

    fn check(&self, input: &TypedFact) -> TractResult<()> {
        check_fact(&self.ensemble, input)
    }

    fn eval(&self, inputs: TVec<TValue>) -> TractResult<TVec<Tensor>> {
        let (n, width, x) = matrix_f32(&inputs[0])?;
        self.ensemble
            .check_width(width)
            .map_err(|e| format_err!(e))?;
        super::check_output("TreeEnsembleRegressor", n, self.ensemble.n_targets)?;
        let (scores, has) = self.ensemble.aggregate(&x, n, width);
        let values = self.finish(scores, &has);
        Ok(tvec![f32_matrix(n, self.ensemble.n_targets, &values)?])
    }
}

fn check_fact(ensemble: &Ensemble, input: &TypedFact) -> TractResult<()> {
    if input.rank() == 2 {
        if let Ok(width) = input.shape[1].to_usize() {
            ensemble.check_width(width).map_err(|e| format_err!(e))?;
        }
    }
    Ok(())
}

/// `TreeEnsembleClassifier`.
#[derive(Debug)]
pub struct Classifier {
    pub ensemble: Ensemble,
    pub labels: Labels,
    pub base_values: Vec<f64>,
    pub post_transform: PostTransform,
    /// Two classes and every leaf weight on one class: the other class's score is derived.
    binary_case: bool,
    weights_all_positive: bool,
}

pub fn classifier(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let labels = Labels::parse(node, "classlabels_int64s", "classlabels_strings")?;
    ensure!(
        !labels.is_empty(),
        "{}: the classifier has no classes",
        named(node)
    );
    let a = attributes(node, "class")?;
    let ensemble = Ensemble::build(&a, labels.len(), Aggregate::Sum)
        .map_err(|e| format_err!("{}: {e}", named(node)))?;
    built(Classifier::new(
        ensemble,
        labels,
        base_values(node)?,
        PostTransform::parse(node)?,
        &a,
    ))
}

impl Classifier {
    pub fn new(
        ensemble: Ensemble,
        labels: Labels,
        base_values: Vec<f64>,
        post_transform: PostTransform,
        a: &Attributes,
    ) -> Classifier {
        let mut classes: Vec<i64> = a.weight_targets.clone();
        classes.sort_unstable();
        classes.dedup();
        Classifier {
            binary_case: labels.len() == 2 && classes.len() == 1,
            weights_all_positive: a.weights.iter().all(|w| *w >= 0.0),
            ensemble,
            labels,
            base_values,
            post_transform,
        }
    }

    /// The class index and the output scores of one row.
    pub fn finish_row(&self, scores: &mut [f64], has: &mut [bool]) -> usize {
        let c = self.labels.len();
        let base = &self.base_values;
        if c != 2 {
            for (k, b) in base.iter().enumerate().take(c) {
                scores[k] += b;
                has[k] = true;
            }
            // The first class with the highest score among those that got one.
            let mut best: Option<usize> = None;
            for k in 0..c {
                if has[k] && best.is_none_or(|b| scores[k] > scores[b]) {
                    best = Some(k);
                }
            }
            self.post_transform.apply(scores);
            return best.unwrap_or(0);
        }
        // Two classes: onnxruntime's reading of the spec.
        let mut second = -1; // how the second score is derived when only one was computed
        let mut single = false;
        if base.len() == 2 {
            if has[1] {
                // onnxruntime ignores base_values[0] here (assuming both are equal).
                scores[1] = base[1] + scores[0];
                scores[0] = -scores[1];
            } else {
                scores[1] += base[1];
                scores[0] += base[0];
            }
        } else if base.len() == 1 {
            scores[0] += base[0];
            single = !has[1];
        } else if base.is_empty() {
            second = 3;
            single = !has[1];
        }
        let positive = if has[1] {
            scores[1]
        } else if has[0] {
            scores[0]
        } else {
            0.0
        };
        let class = if self.binary_case {
            let (class, how) = match (self.weights_all_positive, positive) {
                (true, p) if p > 0.5 => (1, 0),
                (true, _) => (0, 1),
                (false, p) if p > 0.0 => (1, 2),
                (false, _) => (0, 3),
            };
            second = how;
            class
        } else {
            usize::from(positive > 0.0)
        };
        if !single {
            self.post_transform.apply(scores);
            return class;
        }
        let s = scores[0];
        let pair = match (self.post_transform, second) {
            (PostTransform::Probit, _) => [super::probit(s), 0.0],
            (_, 0 | 1) => [1.0 - s, s],
            (PostTransform::Logistic, 2 | 3) => [super::logistic(-s), super::logistic(s)],
            (_, 2) => [-s, s],
            (_, 3) => [s, -s],
            _ => [s, 0.0],
        };
        scores.copy_from_slice(&pair);
        class
    }
}

impl Kernel for Classifier {
    fn name(&self) -> &'static str {
        "TreeEnsembleClassifier"
    }

    fn outputs(&self) -> Vec<Output> {
        vec![
            Output::new(self.labels.datum_type(), Dims::Rows),
            Output::new(DatumType::F32, Dims::Columns(self.labels.len())),
        ]
    }

    fn check(&self, input: &TypedFact) -> TractResult<()> {
        check_fact(&self.ensemble, input)
    }

    fn eval(&self, inputs: TVec<TValue>) -> TractResult<TVec<Tensor>> {
        let (n, width, x) = matrix_f32(&inputs[0])?;
        self.ensemble
            .check_width(width)
            .map_err(|e| format_err!(e))?;
        super::check_output("TreeEnsembleClassifier", n, self.ensemble.n_targets)?;
        let (mut scores, mut has) = self.ensemble.aggregate(&x, n, width);
        let c = self.labels.len();
        let classes: Vec<usize> = scores
            .chunks_mut(c)
            .zip(has.chunks_mut(c))
            .map(|(s, h)| self.finish_row(s, h))
            .collect();
        Ok(tvec![
            self.labels.pick(&classes),
            f32_matrix(n, c, &scores)?
        ])
    }
}

#[cfg(test)]
mod tests;
