//! Exact TreeSHAP (path-dependent): how much each feature moved one row's raw score away from
//! what the trees give on average, computed from the trees themselves.
//!
//! This is Algorithm 2 of Lundberg, Erion and Lee, *Consistent Individualized Feature
//! Attribution for Tree Ensembles* (2018), the algorithm the `shap` package's `TreeExplainer`
//! runs: one walk of each tree per row, keeping along the path the share of every coalition of
//! features that reaches each node. "On average" means over the data the covers were counted
//! on: how many rows of a reference set pass through each node ([`Ensemble::covers`]).
//!
//! Contributions are in the ensemble's raw score (before `base_values` and any post-transform);
//! per row and target, `expected + Σ contributions = raw score` (the additivity check,
//! [`Explanation::check_additivity`]).

use super::{Aggregate, Ensemble};

/// Deepest tree explained: the walk recurses once per level, and its path buffer grows with the
/// square of the depth.
pub const MAX_EXPLAINED_DEPTH: usize = 256;

/// One row's explanation, per target.
#[derive(Clone, Debug, PartialEq)]
pub struct Explanation {
    /// What the trees give on average (the covers' weighted mean of the leaves), per target.
    pub expected: Vec<f64>,
    /// `[n_features × n_targets]`, feature-major.
    pub contributions: Vec<f64>,
    /// The row's raw score, per target (aggregated leaves, as evaluation computes it).
    pub score: Vec<f64>,
    pub n_targets: usize,
}

impl Explanation {
    /// The largest `|expected + Σ contributions − score|` over the targets, relative to the
    /// score's scale (at least 1).
    pub fn additivity_error(&self) -> f64 {
        let t = self.n_targets;
        (0..t)
            .map(|k| {
                let total: f64 =
                    self.expected[k] + self.contributions.iter().skip(k).step_by(t).sum::<f64>();
                (total - self.score[k]).abs() / self.score[k].abs().max(1.0)
            })
            .fold(0.0, f64::max)
    }

    /// Refuses an explanation whose parts do not add up to the score (within 1e-6 relative).
    pub fn check_additivity(&self) -> Result<(), String> {
        let err = self.additivity_error();
        if err.is_finite() && err <= 1e-6 {
            Ok(())
        } else {
            Err(format!(
                "the contributions do not add up to the score (off by {err:e} relative)"
            ))
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct PathElement {
    feature: i64,
    zero_fraction: f64,
    one_fraction: f64,
    weight: f64,
}

impl Ensemble {
    /// Per node, how many of the `n` rows of `x` (`width` values each) pass through it; leaves
    /// included. Rows take the branches evaluation takes (NaN down its missing-value track).
    pub fn covers(&self, x: &[f32], n: usize, width: usize) -> Result<Vec<f64>, String> {
        self.check_width(width)?;
        if x.len() < n * width {
            return Err(format!(
                "{} values are fewer than {n} rows of {width}",
                x.len()
            ));
        }
        let mut covers = vec![0.0f64; self.branches.len()];
        for row in x.chunks_exact(width).take(n) {
            for &root in &self.roots {
                let mut at = root;
                loop {
                    covers[at as usize] += 1.0;
                    if self.is_leaf_node(at) {
                        break;
                    }
                    at = self.child(at, row).0;
                }
            }
        }
        Ok(covers)
    }

    fn is_leaf_node(&self, at: u32) -> bool {
        at >= self.first_leaf
    }

    /// The child a row goes to from branch `at`, and the other one.
    fn child(&self, at: u32, row: &[f32]) -> (u32, u32) {
        let i = at as usize;
        let b = self.branches[i];
        let x = row.get(b.feature as usize).copied().unwrap_or(f32::NAN);
        let m = self.modes[i];
        let yes = if x.is_nan() {
            self.missing_true[i] || m.holds(x, b.threshold)
        } else {
            m.holds(x, b.threshold)
        };
        if yes {
            (b.yes, b.no)
        } else {
            (b.no, b.yes)
        }
    }

    /// How deep the deepest tree is (branches on the longest path from a root).
    pub fn depth(&self) -> usize {
        let mut depth = vec![0usize; self.branches.len()];
        for i in 0..self.first_leaf as usize {
            let b = self.branches[i];
            depth[i] = 1 + depth[b.yes as usize].max(depth[b.no as usize]);
        }
        self.roots
            .iter()
            .map(|r| depth[*r as usize])
            .max()
            .unwrap_or(0)
    }

    /// Whether TreeSHAP applies: trees that add up (sum or average), not too deep.
    pub fn explainable(&self) -> Result<(), String> {
        if !matches!(self.aggregate, Aggregate::Sum | Aggregate::Average) {
            return Err(
                "the trees are combined by their minimum or maximum, which has no additive explanation"
                    .into(),
            );
        }
        let depth = self.depth();
        if depth > MAX_EXPLAINED_DEPTH {
            return Err(format!(
                "a tree is {depth} levels deep; Plinth explains trees up to {MAX_EXPLAINED_DEPTH}"
            ));
        }
        Ok(())
    }

    /// One row's exact TreeSHAP values, with `covers` from [`Ensemble::covers`].
    pub fn explain(&self, covers: &[f64], row: &[f32]) -> Result<Explanation, String> {
        self.explainable()?;
        self.check_width(row.len())?;
        if covers.len() != self.branches.len() {
            return Err("the covers are not this ensemble's".into());
        }
        let t = self.n_targets;
        let f = row.len();
        let scale = match self.aggregate {
            Aggregate::Average => 1.0 / self.roots.len().max(1) as f64,
            _ => 1.0,
        };
        let mut out = Explanation {
            expected: vec![0.0; t],
            contributions: vec![0.0; f * t],
            score: vec![0.0; t],
            n_targets: t,
        };
        let depth = self.depth();
        let mut path = vec![PathElement::default(); (depth + 2) * (depth + 3) / 2];
        for &root in &self.roots {
            if covers[root as usize] <= 0.0 {
                return Err("no reference row reaches a tree's root".into());
            }
            self.expected_into(covers, root, scale, &mut out.expected);
            // The row's own leaf: its score.
            let mut at = root;
            while !self.is_leaf_node(at) {
                at = self.child(at, row).0;
            }
            let score = &mut out.score;
            self.leaf_weights(at, |k, v| score[k] += scale * v);
            let mut walk = Walk {
                e: self,
                covers,
                row,
                scale,
                out: &mut out,
            };
            walk.recurse(root, &mut path, 0, 0, 1.0, 1.0, -1);
        }
        Ok(out)
    }

    /// Adds one tree's covers-weighted mean leaf to `expected`.
    fn expected_into(&self, covers: &[f64], root: u32, scale: f64, expected: &mut [f64]) {
        let total = covers[root as usize];
        let mut stack = vec![root];
        while let Some(at) = stack.pop() {
            if self.is_leaf_node(at) {
                let share = covers[at as usize] / total * scale;
                self.leaf_weights(at, |k, w| expected[k] += share * w);
            } else {
                let b = self.branches[at as usize];
                stack.push(b.yes);
                stack.push(b.no);
            }
        }
    }

    fn leaf_weights(&self, at: u32, mut each: impl FnMut(usize, f64)) {
        let leaf = (at - self.first_leaf) as usize;
        let (from, to) = (
            self.leaf_start[leaf] as usize,
            self.leaf_start[leaf + 1] as usize,
        );
        for k in from..to {
            each(self.targets[k] as usize, self.weights[k]);
        }
    }
}

struct Walk<'a> {
    e: &'a Ensemble,
    covers: &'a [f64],
    row: &'a [f32],
    scale: f64,
    out: &'a mut Explanation,
}

impl Walk<'_> {
    /// `path[start..]` is this node's own copy of the path; the parent's is just before it.
    #[allow(clippy::too_many_arguments)]
    fn recurse(
        &mut self,
        at: u32,
        buffer: &mut [PathElement],
        start: usize,
        mut unique_depth: usize,
        parent_zero: f64,
        parent_one: f64,
        parent_feature: i64,
    ) {
        // This node's path starts after the parent's (which has `unique_depth` elements).
        let (before, rest) = buffer.split_at_mut(start + unique_depth);
        if unique_depth > 0 {
            rest[..unique_depth].copy_from_slice(&before[start..start + unique_depth]);
        }
        let own = start + unique_depth;
        let path = &mut buffer[own..];
        extend(path, unique_depth, parent_zero, parent_one, parent_feature);
        let e = self.e;
        if e.is_leaf_node(at) {
            let t = self.out.n_targets;
            for i in 1..=unique_depth {
                let w = unwound_sum(path, unique_depth, i);
                let el = path[i];
                let factor = w * (el.one_fraction - el.zero_fraction) * self.scale;
                let feature = el.feature as usize;
                let contributions = &mut self.out.contributions;
                e.leaf_weights(at, |k, v| contributions[feature * t + k] += factor * v);
            }
            return;
        }
        let (hot, cold) = e.child(at, self.row);
        let feature = e.branches[at as usize].feature as i64;
        let (mut incoming_zero, mut incoming_one) = (1.0, 1.0);
        // A feature split on before: undo that split, and carry its fractions on.
        if let Some(k) = (0..=unique_depth).find(|&k| path[k].feature == feature) {
            incoming_zero = path[k].zero_fraction;
            incoming_one = path[k].one_fraction;
            unwind(path, unique_depth, k);
            unique_depth -= 1;
        }
        let cover = self.covers[at as usize];
        let fraction = |child: u32| {
            if cover > 0.0 {
                self.covers[child as usize] / cover
            } else {
                0.0
            }
        };
        let (hot_zero, cold_zero) = (fraction(hot), fraction(cold));
        let next = own;
        self.recurse(
            hot,
            buffer,
            next,
            unique_depth + 1,
            hot_zero * incoming_zero,
            incoming_one,
            feature,
        );
        // A branch no reference row took adds nothing to any coalition.
        if cold_zero * incoming_zero > 0.0 {
            self.recurse(
                cold,
                buffer,
                next,
                unique_depth + 1,
                cold_zero * incoming_zero,
                0.0,
                feature,
            );
        }
    }
}

fn extend(path: &mut [PathElement], unique_depth: usize, zero: f64, one: f64, feature: i64) {
    path[unique_depth] = PathElement {
        feature,
        zero_fraction: zero,
        one_fraction: one,
        weight: if unique_depth == 0 { 1.0 } else { 0.0 },
    };
    let d = unique_depth as f64;
    for i in (0..unique_depth).rev() {
        path[i + 1].weight += one * path[i].weight * (i as f64 + 1.0) / (d + 1.0);
        path[i].weight = zero * path[i].weight * (d - i as f64) / (d + 1.0);
    }
}

fn unwind(path: &mut [PathElement], unique_depth: usize, index: usize) {
    let one = path[index].one_fraction;
    let zero = path[index].zero_fraction;
    let d = unique_depth as f64;
    let mut next_one_portion = path[unique_depth].weight;
    for i in (0..unique_depth).rev() {
        if one != 0.0 {
            let tmp = path[i].weight;
            path[i].weight = next_one_portion * (d + 1.0) / ((i as f64 + 1.0) * one);
            next_one_portion = tmp - path[i].weight * zero * (d - i as f64) / (d + 1.0);
        } else {
            path[i].weight = path[i].weight * (d + 1.0) / (zero * (d - i as f64));
        }
    }
    for i in index..unique_depth {
        path[i].feature = path[i + 1].feature;
        path[i].zero_fraction = path[i + 1].zero_fraction;
        path[i].one_fraction = path[i + 1].one_fraction;
    }
}

fn unwound_sum(path: &[PathElement], unique_depth: usize, index: usize) -> f64 {
    let one = path[index].one_fraction;
    let zero = path[index].zero_fraction;
    let d = unique_depth as f64;
    let mut next_one_portion = path[unique_depth].weight;
    let mut total = 0.0;
    for i in (0..unique_depth).rev() {
        if one != 0.0 {
            let tmp = next_one_portion * (d + 1.0) / ((i as f64 + 1.0) * one);
            total += tmp;
            next_one_portion = path[i].weight - tmp * zero * ((d - i as f64) / (d + 1.0));
        } else if zero != 0.0 {
            total += (path[i].weight / zero) / ((d - i as f64) / (d + 1.0));
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explain::tests::{floats, numbers, proto};
    use serde_json::Value;

    fn trees(model: &str) -> super::super::Trees {
        let graph = proto(&format!("tests/fixtures/zoo/{model}")).graph.unwrap();
        graph
            .node
            .iter()
            .find_map(|n| super::super::trees_of(n).unwrap())
            .unwrap()
    }

    /// Every tree model of the zoo, explained as `shap.TreeExplainer` explained it
    /// (`models/zoo_shap.py`): the same values within 1e-5 of the output's scale, the same
    /// expected value, and parts that add up to the score.
    #[test]
    fn tree_shap_matches_the_shap_package_on_every_tree_model_of_the_zoo() {
        let mut fixtures: Vec<_> = std::fs::read_dir("tests/fixtures/zoo/shap")
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        fixtures.sort();
        assert!(fixtures.len() >= 23, "{} shap fixtures", fixtures.len());
        let mut report = Vec::new();
        let mut explained = 0;
        for path in fixtures {
            let json: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            if json["kind"] != "trees" {
                continue;
            }
            let name = path.file_stem().unwrap().to_string_lossy().to_string();
            let trees = trees(json["model"].as_str().unwrap());
            let e = &trees.ensemble;
            let (reference, width) = floats(&json["reference"]);
            let covers = e
                .covers(&reference, reference.len() / width, width)
                .unwrap();
            let (rows, width) = floats(&json["rows"]);
            let t = json["targets"].as_u64().unwrap() as usize;
            assert_eq!(e.n_targets, t, "{name}: targets");
            let want = |key: &str| numbers(&json[key]);
            let (expected, raw, contributions) =
                (want("expected"), want("raw"), want("contributions"));
            let scale = raw.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            let mut worst = 0.0f64;
            for (r, row) in rows.chunks_exact(width).enumerate() {
                let got = e.explain(&covers, row).unwrap();
                got.check_additivity()
                    .unwrap_or_else(|err| panic!("{name} row {r}: {err}"));
                for k in 0..t {
                    let d = (got.expected[k] - expected[k]).abs() / scale;
                    assert!(d < 1e-9, "{name}: expected value {k} differs by {d}");
                    let d = (got.score[k] - raw[r * t + k]).abs() / scale;
                    assert!(d < 1e-9, "{name} row {r}: score {k} differs by {d}");
                }
                for (i, c) in got.contributions.iter().enumerate() {
                    let w = contributions[(r * width) * t + i];
                    worst = worst.max((c - w).abs() / scale);
                }
            }
            assert!(worst < 1e-5, "{name}: contributions differ by {worst:e}");
            explained += 1;
            report.push(format!("{name}: {worst:.1e}"));
        }
        assert_eq!(explained, 19, "every tree model of the zoo");
        eprintln!("largest differences from shap: {}", report.join(", "));
    }

    #[test]
    fn a_branch_no_reference_row_took_adds_nothing_and_the_parts_still_add_up() {
        let trees = trees("decision_tree_regressor.onnx");
        let e = &trees.ensemble;
        // Ten copies of one row: every other branch has no cover.
        let row = [
            0.03f32, 0.05, 0.06, 0.02, -0.01, 0.0, -0.07, 0.07, 0.03, -0.01,
        ];
        let reference: Vec<f32> = row.iter().copied().cycle().take(100).collect();
        let covers = e.covers(&reference, 10, 10).unwrap();
        let same = e.explain(&covers, &row).unwrap();
        assert!(same.contributions.iter().all(|c| *c == 0.0), "{same:?}");
        assert_eq!(same.expected, same.score);
        let other = [
            -0.05f32, -0.04, -0.06, -0.05, 0.04, 0.03, 0.05, -0.04, -0.05, 0.02,
        ];
        let moved = e.explain(&covers, &other).unwrap();
        moved.check_additivity().unwrap();
        assert!(moved.contributions.iter().any(|c| *c != 0.0));
    }

    #[test]
    fn trees_combined_by_their_maximum_are_not_explained() {
        let mut trees = trees("decision_tree_regressor.onnx");
        trees.ensemble.aggregate = Aggregate::Max;
        let err = trees.ensemble.explainable().unwrap_err();
        assert!(err.contains("maximum"), "{err}");
    }
}
