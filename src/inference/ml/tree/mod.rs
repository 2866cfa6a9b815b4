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

use super::{built, f32_matrix, matrix_f32, Dims, Kernel, Labels, Output, PostTransform};

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

const LEAF: u32 = 1 << 31;
const MISSING_TRUE: u32 = 1 << 31;
const MODE_SHIFT: u32 = 24;
const FEATURE_MASK: u32 = (1 << MODE_SHIFT) - 1;

/// One branch node: 16 bytes. `feature` holds the feature index in its low 24 bits, the mode
/// above it and the missing-value track in the top bit. A child with the top bit set is a leaf.
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
    /// Per tree: its root, a branch index or a tagged leaf.
    roots: Vec<u32>,
    /// Per leaf, the start of its weights; one more entry than leaves.
    leaf_start: Vec<u32>,
    targets: Vec<u32>,
    weights: Vec<f64>,
    /// The mode every branch uses, when they all use the same one.
    uniform: Option<Mode>,
    pub n_targets: usize,
    pub n_features: usize,
    pub aggregate: Aggregate,
}

impl Ensemble {
    /// Builds the flat form; refuses dangling children, cycles and weights on branches.
    pub fn build(a: &Attributes, n_targets: usize, aggregate: Aggregate) -> Result<Ensemble, String> {
        let n = a.node_ids.len();
        if n == 0 {
            return Err("the ensemble has no nodes".into());
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
            return Err(format!("the leaf {name} have {len} entries for {w} weights"));
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
        // Trees in id order; each one's root is its lowest node id.
        let mut trees: Vec<(i64, i64)> = Vec::new();
        for i in 0..n {
            match trees.iter_mut().find(|(t, _)| *t == a.tree_ids[i]) {
                Some((_, root)) => *root = (*root).min(a.node_ids[i]),
                None => trees.push((a.tree_ids[i], a.node_ids[i])),
            }
        }
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
            roots: Vec::with_capacity(trees.len()),
            leaf_start: vec![0],
            targets: Vec::new(),
            weights: Vec::new(),
            uniform: None,
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
        let modes: Vec<Mode> = e
            .branches
            .iter()
            .map(|b| Mode::from_u8(((b.feature >> MODE_SHIFT) & 0x7f) as u8))
            .collect();
        e.uniform = match modes.first() {
            Some(&m) if modes.iter().all(|&x| x == m) => Some(m),
            None => Some(Mode::Leq),
            _ => None,
        };
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
                    let Some(mode) = a.modes[i] else {
                        let leaf = (self.leaf_start.len() - 1) as u32;
                        for &(t, w) in leaf_weights.get(&i).into_iter().flatten() {
                            self.targets.push(t);
                            self.weights.push(w);
                        }
                        self.leaf_start.push(self.targets.len() as u32);
                        placed.insert(i, leaf | LEAF);
                        continue;
                    };
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
                    if !(0..FEATURE_MASK as i64).contains(&feature) {
                        return Err(format!("node {} reads feature {feature}", a.node_ids[i]));
                    }
                    self.n_features = self.n_features.max(feature as usize + 1);
                    debug_assert!(a.modes[i] == Some(mode));
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
                    if at >= LEAF {
                        return Err("the ensemble has too many nodes".into());
                    }
                    self.branches.push(Branch {
                        threshold: a.values[i],
                        feature: a.feature_ids[i] as u32
                            | (mode as u32) << MODE_SHIFT
                            | if a.missing_true[i] { MISSING_TRUE } else { 0 },
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

    /// The leaf `row` reaches from `root`.
    #[inline(always)]
    fn leaf<const UNIFORM: bool>(&self, mode: Mode, mut at: u32, row: &[f32]) -> usize {
        while at & LEAF == 0 {
            // SAFETY: every reference below LEAF was created by `place` as an index into
            // `branches`, and features were checked against the row width before evaluation.
            let b = unsafe { self.branches.get_unchecked(at as usize) };
            let x = unsafe { *row.get_unchecked((b.feature & FEATURE_MASK) as usize) };
            let m = if UNIFORM {
                mode
            } else {
                Mode::from_u8(((b.feature >> MODE_SHIFT) & 0x7f) as u8)
            };
            let yes = m.holds(x, b.threshold) || (b.feature & MISSING_TRUE != 0 && x.is_nan());
            at = if yes { b.yes } else { b.no };
        }
        (at & !LEAF) as usize
    }

    /// Aggregated scores `[n, n_targets]` before base values and transforms, and whether each
    /// target got any weight.
    pub fn aggregate(&self, x: &[f32], n: usize, width: usize) -> (Vec<f64>, Vec<bool>) {
        match self.uniform {
            Some(mode) => self.aggregate_with::<true>(mode, x, n, width),
            None => self.aggregate_with::<false>(Mode::Leq, x, n, width),
        }
    }

    fn aggregate_with<const UNIFORM: bool>(
        &self,
        mode: Mode,
        x: &[f32],
        n: usize,
        width: usize,
    ) -> (Vec<f64>, Vec<bool>) {
        let t = self.n_targets;
        let mut scores = vec![0.0f64; n * t];
        let mut has = vec![false; n * t];
        for r in 0..n {
            let row = &x[r * width..(r + 1) * width];
            let scores = &mut scores[r * t..(r + 1) * t];
            let has = &mut has[r * t..(r + 1) * t];
            for &root in &self.roots {
                let leaf = self.leaf::<UNIFORM>(mode, root, row);
                let (from, to) = (self.leaf_start[leaf] as usize, self.leaf_start[leaf + 1] as usize);
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
        }
        (scores, has)
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
            node.name
        ),
    };
    let weights = match node.get_attr_opt_vec::<f32>(&format!("{prefix}_weights"))? {
        Some(v) => v,
        None => bail!("{}: {prefix}_weights is missing", node.name),
    };
    let modes = node
        .get_attr_opt_vec::<String>("nodes_modes")?
        .unwrap_or_default()
        .iter()
        .map(|m| Mode::parse(m).ok_or_else(|| format_err!("{}: unknown node mode {m:?}", node.name)))
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
    ensure!(n_targets >= 1, "{}: n_targets must be at least 1", node.name);
    let aggregate = match node
        .get_attr_opt::<&str>("aggregate_function")?
        .unwrap_or("SUM")
    {
        "SUM" => Aggregate::Sum,
        "AVERAGE" => Aggregate::Average,
        "MIN" => Aggregate::Min,
        "MAX" => Aggregate::Max,
        other => bail!("{}: unknown aggregate_function {other:?}", node.name),
    };
    let a = attributes(node, "target")?;
    let ensemble = Ensemble::build(&a, n_targets as usize, aggregate)
        .map_err(|e| format_err!("{}: {e}", node.name))?;
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
        self.ensemble.check_width(width).map_err(|e| format_err!(e))?;
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
    ensure!(labels.len() >= 1, "{}: the classifier has no classes", node.name);
    let a = attributes(node, "class")?;
    let ensemble = Ensemble::build(&a, labels.len(), Aggregate::Sum)
        .map_err(|e| format_err!("{}: {e}", node.name))?;
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
        self.ensemble.check_width(width).map_err(|e| format_err!(e))?;
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
