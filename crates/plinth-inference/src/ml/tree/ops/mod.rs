//! The ONNX operators: `TreeEnsembleRegressor` and `TreeEnsembleClassifier`, read from their
//! attributes (every size they imply capped) into an [`Ensemble`], and their kernels.

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

use super::{Aggregate, Attributes, Ensemble, Mode};
use crate::ml::{
    built, f32_matrix, matrix_f32, named, Dims, Kernel, Labels, Output, PostTransform,
};

mod classifier;

use classifier::classifier_kernel;
pub use classifier::{classifier, Classifier};

/// Refuses a tensor attribute whose data lives in another file: a model file does not get to
/// make Plinth read other files.
fn check_inline(node: &NodeProto, name: &str, t: &tract_onnx::pb::TensorProto) -> TractResult<()> {
    if !t.external_data.is_empty() || t.data_location == Some(1) {
        bail!(
            "{}: {name} keeps its data in another file, which Plinth does not read",
            named(node)
        );
    }
    Ok(())
}

/// The numbers of a tensor attribute held in the file itself (`float_data`, `double_data` or
/// `raw_data`). A tensor whose data lives in another file is refused: a model file does not get
/// to make Plinth read other files.
fn inline_numbers(
    node: &NodeProto,
    name: &str,
    t: &tract_onnx::pb::TensorProto,
) -> TractResult<Vec<f64>> {
    const FLOAT: i32 = 1;
    const DOUBLE: i32 = 11;
    check_inline(node, name, t)?;
    let elements: usize = t
        .dims
        .iter()
        .try_fold(1usize, |n, d| {
            usize::try_from(*d).ok().and_then(|d| n.checked_mul(d))
        })
        .ok_or_else(|| format_err!("{}: {name} has a negative or huge shape", named(node)))?;
    let out: Vec<f64> = match t.data_type {
        FLOAT if !t.raw_data.is_empty() => t
            .raw_data
            .chunks_exact(4)
            .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect(),
        FLOAT => t.float_data.iter().copied().map(f64::from).collect(),
        DOUBLE if !t.raw_data.is_empty() => t
            .raw_data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .collect(),
        DOUBLE => t.double_data.clone(),
        other => bail!(
            "{}: {name} holds ONNX data type {other}; thresholds and weights are float or double",
            named(node)
        ),
    };
    ensure!(
        t.dims.is_empty() || out.len() == elements,
        "{}: {name} has {} values for a shape of {elements}",
        named(node),
        out.len()
    );
    Ok(out)
}

/// A list of numbers given as `name` (floats) or as the tensor `name_as_tensor` (float or
/// double, as opset 3 allows; read as f32, the precision the ensemble computes in).
fn numbers(node: &NodeProto, name: &str) -> TractResult<Option<Vec<f32>>> {
    if let Some(v) = node.get_attr_opt_vec::<f32>(name)? {
        return Ok(Some(v));
    }
    let tensor_name = format!("{name}_as_tensor");
    match node.get_attr_opt::<&tract_onnx::pb::TensorProto>(&tensor_name)? {
        Some(t) => Ok(Some(
            inline_numbers(node, &tensor_name, t)?
                .into_iter()
                .map(|v| v as f32)
                .collect(),
        )),
        None => Ok(None),
    }
}

fn attributes(node: &NodeProto, prefix: &str) -> TractResult<Attributes> {
    let ints = |name: &str| -> TractResult<Vec<i64>> {
        Ok(node.get_attr_opt_vec::<i64>(name)?.unwrap_or_default())
    };
    let values = match numbers(node, "nodes_values")? {
        Some(v) => v,
        None => bail!(
            "{}: the thresholds are missing (nodes_values or nodes_values_as_tensor)",
            named(node)
        ),
    };
    let weights = match numbers(node, &format!("{prefix}_weights"))? {
        Some(v) => v,
        None => bail!(
            "{}: {prefix}_weights (or {prefix}_weights_as_tensor) is missing",
            named(node)
        ),
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

/// The small integers of a `uint8` tensor attribute held in the file (`raw_data` or
/// `int32_data`), such as opset 5's `nodes_modes`.
fn inline_small_ints(node: &NodeProto, name: &str) -> TractResult<Vec<u8>> {
    const UINT8: i32 = 2;
    let Some(t) = node.get_attr_opt::<&tract_onnx::pb::TensorProto>(name)? else {
        bail!("{}: {name} is missing", named(node));
    };
    check_inline(node, name, t)?;
    ensure!(
        t.data_type == UINT8,
        "{}: {name} must be a uint8 tensor",
        named(node)
    );
    if !t.raw_data.is_empty() {
        return Ok(t.raw_data.clone());
    }
    t.int32_data
        .iter()
        .map(|v| {
            u8::try_from(*v)
                .map_err(|_| format_err!("{}: {name} holds {v}, not a uint8", named(node)))
        })
        .collect()
}

/// `TreeEnsemble` (ai.onnx.ml opset 5, what current converters emit): its split nodes and
/// separate leaves are laid out again as opset 3's per-tree nodes, then built and served as a
/// `TreeEnsembleRegressor` (the same checks, caps and kernels). `BRANCH_MEMBER` splits are
/// refused, naming the operator and mode.
pub fn tree_ensemble(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    built(tree_ensemble_kernel(node)?)
}

fn tree_ensemble_kernel(node: &NodeProto) -> TractResult<Regressor> {
    let ints = |name: &str| -> TractResult<Vec<i64>> {
        Ok(node.get_attr_opt_vec::<i64>(name)?.unwrap_or_default())
    };
    let max_targets = crate::ml::caps::MAX_CLASSES as i64;
    let n_targets: i64 = node
        .get_attr_opt("n_targets")?
        .ok_or_else(|| format_err!("{}: n_targets is missing", named(node)))?;
    ensure!(
        (1..=max_targets).contains(&n_targets),
        "{}: n_targets must be between 1 and {max_targets}, not {n_targets}",
        named(node)
    );
    let aggregate = match node.get_attr_opt::<i64>("aggregate_function")?.unwrap_or(1) {
        0 => Aggregate::Average,
        1 => Aggregate::Sum,
        2 => Aggregate::Min,
        3 => Aggregate::Max,
        other => bail!("{}: unknown aggregate_function {other}", named(node)),
    };
    let post_transform = match node.get_attr_opt::<i64>("post_transform")?.unwrap_or(0) {
        0 => PostTransform::None,
        1 => PostTransform::Softmax,
        2 => PostTransform::Logistic,
        3 => PostTransform::SoftmaxZero,
        4 => PostTransform::Probit,
        other => bail!("{}: unknown post_transform {other}", named(node)),
    };
    let roots = ints("tree_roots")?;
    let features = ints("nodes_featureids")?;
    let (true_ids, true_leaf) = (ints("nodes_truenodeids")?, ints("nodes_trueleafs")?);
    let (false_ids, false_leaf) = (ints("nodes_falsenodeids")?, ints("nodes_falseleafs")?);
    let missing = ints("nodes_missing_value_tracks_true")?;
    let leaf_targets = ints("leaf_targetids")?;
    let splits = match node.get_attr_opt::<&tract_onnx::pb::TensorProto>("nodes_splits")? {
        Some(t) => inline_numbers(node, "nodes_splits", t)?,
        None => bail!("{}: nodes_splits is missing", named(node)),
    };
    let leaf_weights = match node.get_attr_opt::<&tract_onnx::pb::TensorProto>("leaf_weights")? {
        Some(t) => inline_numbers(node, "leaf_weights", t)?,
        None => bail!("{}: leaf_weights is missing", named(node)),
    };
    let modes = inline_small_ints(node, "nodes_modes")?;
    let n = features.len();
    ensure!(
        [
            true_ids.len(),
            true_leaf.len(),
            false_ids.len(),
            false_leaf.len(),
            splits.len(),
            modes.len()
        ]
        .iter()
        .all(|l| *l == n)
            && (missing.is_empty() || missing.len() == n),
        "{}: the nodes_* attributes must all have one entry per node ({n})",
        named(node)
    );
    ensure!(
        leaf_targets.len() == leaf_weights.len(),
        "{}: leaf_targetids and leaf_weights differ in length",
        named(node)
    );
    let cap = crate::ml::caps::MAX_TREE_NODES;
    ensure!(
        n + leaf_weights.len() <= cap && roots.len() <= cap,
        "{}: more than {cap} nodes",
        named(node)
    );
    let mut a = Attributes {
        tree_ids: Vec::new(),
        node_ids: Vec::new(),
        feature_ids: Vec::new(),
        modes: Vec::new(),
        values: Vec::new(),
        true_ids: Vec::new(),
        false_ids: Vec::new(),
        missing_true: Vec::new(),
        weight_tree_ids: Vec::new(),
        weight_node_ids: Vec::new(),
        weight_targets: Vec::new(),
        weights: Vec::new(),
    };
    let index = |v: i64, len: usize, what: &str| -> TractResult<usize> {
        usize::try_from(v)
            .ok()
            .filter(|i| *i < len)
            .ok_or_else(|| format_err!("{}: {what} {v} does not exist", named(node)))
    };
    // A node of a tree being laid out: a split (its index) or a leaf (its index).
    enum Place {
        Split(usize),
        Leaf(usize),
    }
    // Which tree last reached each split node (one array for all trees: a tree that reaches a
    // node twice has a cycle or shares a subtree, and is refused).
    let mut reached_by = vec![usize::MAX; n];
    for (tree_index, root) in roots.iter().enumerate() {
        let tree = tree_index as i64;
        let mut queue =
            std::collections::VecDeque::from([Place::Split(index(*root, n, "root node")?)]);
        let mut next_id = 1i64;
        let mut id = 0i64;
        while let Some(place) = queue.pop_front() {
            ensure!(
                a.node_ids.len() < cap,
                "{}: the trees unfold to more than {cap} nodes",
                named(node)
            );
            a.tree_ids.push(tree);
            a.node_ids.push(id);
            match place {
                Place::Split(i) => {
                    ensure!(
                        reached_by[i] != tree_index,
                        "{}: tree {tree} reaches node {i} twice",
                        named(node)
                    );
                    reached_by[i] = tree_index;
                    let mode = match modes[i] {
                        m @ 0..=5 => Mode::from_code(m),
                        6 => bail!("{}: BRANCH_MEMBER splits are not supported", named(node)),
                        other => bail!("{}: unknown node mode {other}", named(node)),
                    };
                    a.feature_ids.push(features[i]);
                    a.modes.push(Some(mode));
                    a.values.push(splits[i] as f32);
                    a.missing_true.push(missing.get(i).is_some_and(|m| *m != 0));
                    for (child, is_leaf, ids) in [
                        (true_ids[i], true_leaf[i], &mut a.true_ids),
                        (false_ids[i], false_leaf[i], &mut a.false_ids),
                    ] {
                        ids.push(next_id);
                        next_id += 1;
                        queue.push_back(if is_leaf != 0 {
                            Place::Leaf(index(child, leaf_weights.len(), "leaf")?)
                        } else {
                            Place::Split(index(child, n, "node")?)
                        });
                    }
                }
                Place::Leaf(l) => {
                    a.feature_ids.push(0);
                    a.modes.push(None);
                    a.values.push(0.0);
                    a.missing_true.push(false);
                    a.true_ids.push(0);
                    a.false_ids.push(0);
                    a.weight_tree_ids.push(tree);
                    a.weight_node_ids.push(id);
                    a.weight_targets.push(leaf_targets[l]);
                    a.weights.push(leaf_weights[l] as f32);
                }
            }
            id += 1;
        }
    }
    let ensemble = Ensemble::build(&a, n_targets as usize, aggregate)
        .map_err(|e| format_err!("{}: {e}", named(node)))?;
    Ok(Regressor {
        ensemble,
        base_values: Vec::new(),
        post_transform,
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
    built(regressor_kernel(node)?)
}

fn regressor_kernel(node: &NodeProto) -> TractResult<Regressor> {
    let n_targets: i64 = node.get_attr_opt("n_targets")?.unwrap_or(1);
    ensure!(
        (1..=crate::ml::caps::MAX_CLASSES as i64).contains(&n_targets),
        "{}: n_targets must be between 1 and {}, not {n_targets}",
        named(node),
        crate::ml::caps::MAX_CLASSES
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
    Ok(Regressor {
        ensemble,
        base_values: base_values(node)?,
        post_transform: PostTransform::parse(node)?,
    })
}

/// The trees of a tree-ensemble node (`TreeEnsembleClassifier`, `TreeEnsembleRegressor` or
/// opset 5's `TreeEnsemble`), read as loading reads them, for explanations; None for any
/// other node.
pub fn trees_of(node: &NodeProto) -> TractResult<Option<Trees>> {
    Ok(Some(match node.op_type.as_str() {
        "TreeEnsembleClassifier" => {
            let c = classifier_kernel(node)?;
            Trees {
                ensemble: c.ensemble,
                base_values: c.base_values,
                post_transform: c.post_transform,
                classes: Some(c.labels),
            }
        }
        "TreeEnsembleRegressor" | "TreeEnsemble" => {
            let r = if node.op_type == "TreeEnsemble" {
                tree_ensemble_kernel(node)?
            } else {
                regressor_kernel(node)?
            };
            Trees {
                ensemble: r.ensemble,
                base_values: r.base_values,
                post_transform: r.post_transform,
                classes: None,
            }
        }
        _ => return Ok(None),
    }))
}

/// A tree-ensemble node's trees and what follows them.
#[derive(Debug)]
pub struct Trees {
    pub ensemble: Ensemble,
    /// Added to the aggregated scores, per target (when there is one per target).
    pub base_values: Vec<f64>,
    pub post_transform: PostTransform,
    /// A classifier's labels, in target order.
    pub classes: Option<Labels>,
}

fn base_values(node: &NodeProto) -> TractResult<Vec<f64>> {
    Ok(numbers(node, "base_values")?
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
        crate::ml::check_output("TreeEnsembleRegressor", n, self.ensemble.n_targets)?;
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
