//! Loading: the attributes' `(tree id, node id)` lists placed into the flat node array, and
//! shallow trees laid out again as perfect binary trees.

use std::collections::HashMap;

use super::{
    Aggregate, Attributes, Branch, Ensemble, Mode, Perfect, GROUP, LEAF_TAG, MAX_NODES,
    PERFECT_BYTES, PERFECT_DEPTH, SHALLOW_DEPTH, SMALL_ENSEMBLE_BYTES,
};

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
        if n > crate::ml::caps::MAX_TREE_NODES {
            return Err(format!(
                "{n} nodes is more than Plinth serves ({})",
                crate::ml::caps::MAX_TREE_NODES
            ));
        }
        if n_targets > crate::ml::caps::MAX_CLASSES {
            return Err(format!(
                "{n_targets} classes or targets is more than Plinth serves ({})",
                crate::ml::caps::MAX_CLASSES
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
}
