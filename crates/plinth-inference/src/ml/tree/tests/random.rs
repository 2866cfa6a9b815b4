//! The flat evaluator checked against a plain walk of the trees on random ensembles.

use super::*;

/// The spec read literally: find each node by its ids, compare, follow, sum the leaf weights.
pub(super) fn reference(
    a: &Attributes,
    targets: usize,
    aggregate: Aggregate,
    row: &[f32],
) -> (Vec<f64>, Vec<bool>) {
    let mut trees = a.tree_ids.clone();
    trees.sort_unstable();
    trees.dedup();
    let mut scores = vec![0.0f64; targets];
    let mut has = vec![false; targets];
    for tree in trees {
        let mut id = (0..a.node_ids.len())
            .filter(|&i| a.tree_ids[i] == tree)
            .map(|i| a.node_ids[i])
            .min()
            .unwrap();
        loop {
            let i = (0..a.node_ids.len())
                .find(|&i| a.tree_ids[i] == tree && a.node_ids[i] == id)
                .unwrap();
            let Some(mode) = a.modes[i] else {
                for j in 0..a.weights.len() {
                    if a.weight_tree_ids[j] == tree && a.weight_node_ids[j] == id {
                        let (t, w) = (a.weight_targets[j] as usize, a.weights[j] as f64);
                        scores[t] = match (aggregate, has[t]) {
                            (Aggregate::Min, true) => scores[t].min(w),
                            (Aggregate::Max, true) => scores[t].max(w),
                            (Aggregate::Min | Aggregate::Max, false) => w,
                            _ => scores[t] + w,
                        };
                        has[t] = true;
                    }
                }
                break;
            };
            let (x, t) = (row[a.feature_ids[i] as usize], a.values[i]);
            let yes = if x.is_nan() && a.missing_true[i] {
                true
            } else {
                match mode {
                    Mode::Leq => x <= t,
                    Mode::Lt => x < t,
                    Mode::Gte => x >= t,
                    Mode::Gt => x > t,
                    Mode::Eq => x == t,
                    Mode::Neq => x != t,
                }
            };
            id = if yes { a.true_ids[i] } else { a.false_ids[i] };
        }
    }
    (scores, has)
}

/// A random ensemble: random shapes, modes, tracks, thresholds; node ids shuffled per tree.
pub(super) fn random_ensemble(
    rng: &mut StdRng,
    features: usize,
    targets: usize,
    uniform: bool,
    one_weight: bool,
) -> Attributes {
    let modes = [
        "BRANCH_LEQ",
        "BRANCH_LT",
        "BRANCH_GTE",
        "BRANCH_GT",
        "BRANCH_EQ",
        "BRANCH_NEQ",
    ];
    let tree_mode = modes[rng.random_range(0..modes.len())];
    let mut a = Attributes::default();
    for k in 0..rng.random_range(1..20) {
        let tree = 3 * k + 1;
        // Grow: each open node becomes a leaf or splits, up to a size.
        let mut kinds: Vec<Option<(usize, usize)>> = vec![None];
        let mut open = vec![0usize];
        while let Some(at) = open.pop() {
            // Small trees where one weight per leaf, so that many fit the perfect layout.
            let most = if one_weight { 15 } else { 40 };
            if kinds.len() < most && rng.random_bool(0.6) {
                let (yes, no) = (kinds.len(), kinds.len() + 1);
                kinds.push(None);
                kinds.push(None);
                kinds[at] = Some((yes, no));
                open.push(yes);
                open.push(no);
            }
        }
        let mut ids: Vec<i64> = (0..kinds.len() as i64).map(|i| i * 2 + 5).collect();
        // The root keeps the lowest id; the rest are shuffled.
        for i in (2..ids.len()).rev() {
            let j = rng.random_range(1..=i);
            ids.swap(i, j);
        }
        for (i, kind) in kinds.iter().enumerate() {
            a.tree_ids.push(tree);
            a.node_ids.push(ids[i]);
            match kind {
                Some((yes, no)) => {
                    let mode = if uniform {
                        tree_mode
                    } else {
                        modes[rng.random_range(0..modes.len())]
                    };
                    a.modes.push(Mode::parse(mode).unwrap());
                    a.feature_ids.push(rng.random_range(0..features) as i64);
                    // Thresholds on a coarse grid so that equality happens.
                    a.values.push(rng.random_range(-4..=4) as f32 * 0.5);
                    a.true_ids.push(ids[*yes]);
                    a.false_ids.push(ids[*no]);
                    a.missing_true.push(rng.random_bool(0.5));
                }
                None => {
                    a.modes.push(None);
                    a.feature_ids.push(0);
                    a.values.push(0.0);
                    a.true_ids.push(0);
                    a.false_ids.push(0);
                    a.missing_true.push(false);
                    for t in 0..targets {
                        if one_weight || rng.random_bool(0.7) {
                            a.weight_tree_ids.push(tree);
                            a.weight_node_ids.push(ids[i]);
                            a.weight_targets.push(t as i64);
                            a.weights.push(rng.random_range(-10.0..10.0));
                        }
                    }
                }
            }
        }
    }
    // The attribute lists need not be sorted: shuffle the node entries.
    let n = a.node_ids.len();
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    let pick = |v: &Vec<i64>| order.iter().map(|&i| v[i]).collect::<Vec<_>>();
    Attributes {
        tree_ids: pick(&a.tree_ids),
        node_ids: pick(&a.node_ids),
        feature_ids: pick(&a.feature_ids),
        true_ids: pick(&a.true_ids),
        false_ids: pick(&a.false_ids),
        modes: order.iter().map(|&i| a.modes[i]).collect(),
        values: order.iter().map(|&i| a.values[i]).collect(),
        missing_true: order.iter().map(|&i| a.missing_true[i]).collect(),
        ..a
    }
}

#[test]
fn the_flat_evaluator_agrees_with_a_plain_walk_on_random_trees() {
    let mut rng = StdRng::seed_from_u64(20261126);
    let mut perfect_cases = 0;
    for case in 0..400 {
        let features = rng.random_range(1..6);
        // Every third case: one target, one weight per leaf (the single-weight fast paths).
        let one_weight = case % 3 == 0;
        let targets = if one_weight {
            1
        } else {
            rng.random_range(1..4)
        };
        let aggregate = [
            Aggregate::Sum,
            Aggregate::Average,
            Aggregate::Min,
            Aggregate::Max,
        ][case % 4];
        let a = random_ensemble(&mut rng, features, targets, case % 2 == 0, one_weight);
        let e = Ensemble::build(&a, targets, aggregate).unwrap();
        perfect_cases += usize::from(e.perfect.is_some());
        let n = rng.random_range(1..20);
        let rows: Vec<f32> = (0..n * features)
            .map(|_| match rng.random_range(0..10) {
                0 => f32::NAN,
                1..=4 => rng.random_range(-4..=4) as f32 * 0.5,
                _ => rng.random_range(-3.0..3.0),
            })
            .collect();
        for (way, (scores, has)) in e
            .aggregate_every_way(&rows, n, features)
            .into_iter()
            .enumerate()
        {
            for r in 0..n {
                let (want, want_has) = reference(
                    &a,
                    targets,
                    aggregate,
                    &rows[r * features..(r + 1) * features],
                );
                let at = format!("case {case}, way {way}, row {r}");
                assert_eq!(&has[r * targets..(r + 1) * targets], &want_has[..], "{at}");
                for (g, w) in scores[r * targets..(r + 1) * targets].iter().zip(&want) {
                    assert!((g - w).abs() < 1e-9, "{at}: {g} vs {w}");
                }
            }
        }
    }
    assert!(
        perfect_cases > 25,
        "only {perfect_cases} cases took the perfect layout"
    );
}
