//! Hand-made cases from the ONNX-ML spec, malformed ensembles, and a fuzz of the flat evaluator
//! against a plain walk of the attributes.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::ml::{logistic, Labels, PostTransform};

mod random;

/// `(tree, node, mode, feature, threshold, true id, false id, missing goes true)`
type N = (i64, i64, &'static str, i64, f32, i64, i64, bool);
/// `(tree, node, target, weight)`
type W = (i64, i64, i64, f32);

fn attrs(nodes: &[N], weights: &[W]) -> Attributes {
    Attributes {
        tree_ids: nodes.iter().map(|n| n.0).collect(),
        node_ids: nodes.iter().map(|n| n.1).collect(),
        modes: nodes.iter().map(|n| Mode::parse(n.2).unwrap()).collect(),
        feature_ids: nodes.iter().map(|n| n.3).collect(),
        values: nodes.iter().map(|n| n.4).collect(),
        true_ids: nodes.iter().map(|n| n.5).collect(),
        false_ids: nodes.iter().map(|n| n.6).collect(),
        missing_true: nodes.iter().map(|n| n.7).collect(),
        weight_tree_ids: weights.iter().map(|w| w.0).collect(),
        weight_node_ids: weights.iter().map(|w| w.1).collect(),
        weight_targets: weights.iter().map(|w| w.2).collect(),
        weights: weights.iter().map(|w| w.3).collect(),
    }
}

/// One split on feature 0 at 2.0: leaf 1 (true) gives 10, leaf 2 (false) gives 20.
fn stump(mode: &'static str, missing_true: bool) -> Attributes {
    attrs(
        &[
            (0, 0, mode, 0, 2.0, 1, 2, missing_true),
            (0, 1, "LEAF", 0, 0.0, 0, 0, false),
            (0, 2, "LEAF", 0, 0.0, 0, 0, false),
        ],
        &[(0, 1, 0, 10.0), (0, 2, 0, 20.0)],
    )
}

fn regress(a: &Attributes, aggregate: Aggregate, rows: &[f32], width: usize) -> Vec<f64> {
    let r = Regressor {
        ensemble: Ensemble::build(a, 1, aggregate).unwrap(),
        base_values: vec![],
        post_transform: PostTransform::None,
    };
    let (s, h) = r.ensemble.aggregate(rows, rows.len() / width, width);
    r.finish(s, &h)
}

#[test]
fn branch_modes_compare_as_the_spec_says() {
    let at = |mode, x: f32| regress(&stump(mode, false), Aggregate::Sum, &[x], 1)[0];
    // x equal to the threshold separates LEQ from LT and GTE from GT.
    assert_eq!(at("BRANCH_LEQ", 2.0), 10.0);
    assert_eq!(at("BRANCH_LT", 2.0), 20.0);
    assert_eq!(at("BRANCH_GTE", 2.0), 10.0);
    assert_eq!(at("BRANCH_GT", 2.0), 20.0);
    assert_eq!(at("BRANCH_LEQ", 1.9), 10.0);
    assert_eq!(at("BRANCH_LT", 1.9), 10.0);
    assert_eq!(at("BRANCH_GT", 2.1), 10.0);
    // BRANCH_EQ and BRANCH_NEQ.
    assert_eq!(at("BRANCH_EQ", 2.0), 10.0);
    assert_eq!(at("BRANCH_EQ", 2.5), 20.0);
    assert_eq!(at("BRANCH_NEQ", 2.0), 20.0);
    assert_eq!(at("BRANCH_NEQ", 2.5), 10.0);
}

#[test]
fn nan_follows_the_missing_value_track() {
    let nan = f32::NAN;
    assert_eq!(
        regress(&stump("BRANCH_LEQ", true), Aggregate::Sum, &[nan], 1)[0],
        10.0
    );
    assert_eq!(
        regress(&stump("BRANCH_LEQ", false), Aggregate::Sum, &[nan], 1)[0],
        20.0
    );
    assert_eq!(
        regress(&stump("BRANCH_LT", true), Aggregate::Sum, &[nan], 1)[0],
        10.0
    );
    assert_eq!(
        regress(&stump("BRANCH_GT", false), Aggregate::Sum, &[nan], 1)[0],
        20.0
    );
    // A number is compared as usual whatever the track says.
    assert_eq!(
        regress(&stump("BRANCH_LEQ", true), Aggregate::Sum, &[3.0], 1)[0],
        20.0
    );
}

#[test]
fn a_tree_that_is_only_a_leaf_gives_its_weight() {
    let a = attrs(&[(0, 0, "LEAF", 0, 0.0, 0, 0, false)], &[(0, 0, 0, 7.5)]);
    assert_eq!(regress(&a, Aggregate::Sum, &[1.0, 2.0], 1), vec![7.5, 7.5]);
}

/// Three trees: the stump, a leaf-only tree giving 1, and a stump on feature 1 giving 4 or -6.
fn forest() -> Attributes {
    attrs(
        &[
            (0, 0, "BRANCH_LEQ", 0, 2.0, 1, 2, false),
            (0, 1, "LEAF", 0, 0.0, 0, 0, false),
            (0, 2, "LEAF", 0, 0.0, 0, 0, false),
            (1, 0, "LEAF", 0, 0.0, 0, 0, false),
            (2, 0, "BRANCH_LT", 1, 0.0, 1, 2, false),
            (2, 1, "LEAF", 0, 0.0, 0, 0, false),
            (2, 2, "LEAF", 0, 0.0, 0, 0, false),
        ],
        &[
            (0, 1, 0, 10.0),
            (0, 2, 0, 20.0),
            (1, 0, 0, 1.0),
            (2, 1, 0, 4.0),
            (2, 2, 0, -6.0),
        ],
    )
}

#[test]
fn leaves_from_several_trees_aggregate() {
    let a = forest();
    let rows = [1.0, -1.0, 3.0, 1.0]; // leaves 10, 1, 4 and 20, 1, -6
    assert_eq!(regress(&a, Aggregate::Sum, &rows, 2), vec![15.0, 15.0]);
    assert_eq!(regress(&a, Aggregate::Average, &rows, 2), vec![5.0, 5.0]);
    assert_eq!(regress(&a, Aggregate::Min, &rows, 2), vec![1.0, -6.0]);
    assert_eq!(regress(&a, Aggregate::Max, &rows, 2), vec![10.0, 20.0]);
}

#[test]
fn base_values_and_post_transforms_apply_after_aggregation() {
    let a = forest();
    let r = Regressor {
        ensemble: Ensemble::build(&a, 1, Aggregate::Average).unwrap(),
        base_values: vec![0.5],
        post_transform: PostTransform::None,
    };
    let (s, h) = r.ensemble.aggregate(&[1.0, -1.0], 1, 2);
    assert_eq!(r.finish(s, &h), vec![5.5]);
    let r = Regressor {
        post_transform: PostTransform::Logistic,
        base_values: vec![-15.0],
        ensemble: Ensemble::build(&a, 1, Aggregate::Sum).unwrap(),
    };
    let (s, h) = r.ensemble.aggregate(&[1.0, -1.0], 1, 2);
    assert_eq!(r.finish(s, &h), vec![0.5]);
}

#[test]
fn transforms_follow_their_definitions() {
    let mut v = [1.0, 2.0, 3.0];
    PostTransform::Softmax.apply(&mut v);
    let e: Vec<f64> = [1.0f64, 2.0, 3.0].iter().map(|x| x.exp()).collect();
    let sum: f64 = e.iter().sum();
    for (got, want) in v.iter().zip(&e) {
        assert!((got - want / sum).abs() < 1e-12);
    }
    let mut v = [0.0, 1.0, 1.0];
    PostTransform::SoftmaxZero.apply(&mut v);
    assert_eq!(v, [0.0, 0.5, 0.5]);
    let mut v = [0.0, -2.0];
    PostTransform::Logistic.apply(&mut v);
    assert!((v[0] - 0.5).abs() < 1e-12 && (v[1] - 1.0 / (1.0 + 2f64.exp())).abs() < 1e-12);
    let mut v = [0.5, 0.975, 0.025];
    PostTransform::Probit.apply(&mut v);
    assert!(
        v[0].abs() < 1e-9
            && (v[1] - 1.959_963_985).abs() < 1e-6
            && (v[2] + 1.959_963_985).abs() < 1e-6
    );
}

fn classify(c: &Classifier, rows: &[f32], width: usize) -> (Vec<usize>, Vec<f64>) {
    let n = rows.len() / width;
    let (mut s, mut h) = c.ensemble.aggregate(rows, n, width);
    let k = c.labels.len();
    let classes = s
        .chunks_mut(k)
        .zip(h.chunks_mut(k))
        .map(|(s, h)| c.finish_row(s, h))
        .collect();
    (classes, s)
}

#[test]
fn three_classes_pick_the_highest_score_after_base_values_and_softmax() {
    // Tree 0 votes class 0 or 2; tree 1 always adds 1 to class 1.
    let a = attrs(
        &[
            (0, 0, "BRANCH_LEQ", 0, 0.0, 1, 2, false),
            (0, 1, "LEAF", 0, 0.0, 0, 0, false),
            (0, 2, "LEAF", 0, 0.0, 0, 0, false),
            (1, 0, "LEAF", 0, 0.0, 0, 0, false),
        ],
        &[(0, 1, 0, 2.0), (0, 2, 2, 2.0), (1, 0, 1, 1.0)],
    );
    let labels = Labels::Strings(vec!["a".into(), "b".into(), "c".into()]);
    let e = Ensemble::build(&a, 3, Aggregate::Sum).unwrap();
    let c = Classifier::new(e, labels.clone(), vec![], PostTransform::None, &a);
    let (classes, scores) = classify(&c, &[-1.0, 1.0], 1);
    assert_eq!(classes, vec![0, 2]);
    assert_eq!(scores, vec![2.0, 1.0, 0.0, 0.0, 1.0, 2.0]);
    // A base value can overturn the trees.
    let e = Ensemble::build(&a, 3, Aggregate::Sum).unwrap();
    let c = Classifier::new(
        e,
        labels.clone(),
        vec![0.0, 1.5, 0.0],
        PostTransform::Softmax,
        &a,
    );
    let (classes, scores) = classify(&c, &[-1.0], 1);
    assert_eq!(classes, vec![1]);
    assert!((scores.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    assert_eq!(
        labels
            .pick(&classes)
            .to_plain_array_view::<String>()
            .unwrap()[0],
        "b"
    );
}

#[test]
fn one_class_always_answers_that_class() {
    let a = attrs(&[(0, 0, "LEAF", 0, 0.0, 0, 0, false)], &[(0, 0, 0, 0.25)]);
    let e = Ensemble::build(&a, 1, Aggregate::Sum).unwrap();
    let c = Classifier::new(e, Labels::Ints(vec![7]), vec![], PostTransform::None, &a);
    let (classes, scores) = classify(&c, &[3.0, -3.0], 1);
    assert_eq!(classes, vec![0, 0]);
    assert_eq!(scores, vec![0.25, 0.25]);
}

#[test]
fn two_classes_with_weights_on_one_derive_the_other() {
    // A binary forest that only scores the positive class (as scikit-learn's binary
    // gradient boosting exports): the score is a margin, LOGISTIC makes it a probability.
    let mut a = stump("BRANCH_LEQ", false);
    a.weights = vec![-1.0, 2.0];
    let e = Ensemble::build(&a, 2, Aggregate::Sum).unwrap();
    let c = Classifier::new(
        e,
        Labels::Ints(vec![0, 1]),
        vec![0.5],
        PostTransform::Logistic,
        &a,
    );
    let (classes, scores) = classify(&c, &[1.0, 3.0], 1);
    assert_eq!(classes, vec![0, 1]);
    let (lo, hi) = (logistic(-0.5), logistic(2.5));
    let want = [1.0 - lo, lo, 1.0 - hi, hi];
    for (g, w) in scores.iter().zip(want) {
        assert!((g - w).abs() < 1e-12, "{scores:?}");
    }
    // All weights positive and no transform: the weight is the positive class's probability.
    let mut a = stump("BRANCH_LEQ", false);
    a.weights = vec![0.2, 0.9];
    let e = Ensemble::build(&a, 2, Aggregate::Sum).unwrap();
    let c = Classifier::new(e, Labels::Ints(vec![0, 1]), vec![], PostTransform::None, &a);
    let (classes, scores) = classify(&c, &[1.0, 3.0], 1);
    assert_eq!(classes, vec![0, 1]);
    let want = [0.8, 0.2, 0.1, 0.9];
    for (g, w) in scores.iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "{scores:?}");
    }
}

#[test]
fn malformed_ensembles_are_refused_with_the_reason() {
    let cycle = attrs(
        &[
            (0, 0, "BRANCH_LEQ", 0, 0.0, 1, 2, false),
            (0, 1, "BRANCH_LEQ", 0, 0.0, 0, 2, false),
            (0, 2, "LEAF", 0, 0.0, 0, 0, false),
        ],
        &[(0, 2, 0, 1.0)],
    );
    let err = Ensemble::build(&cycle, 1, Aggregate::Sum).unwrap_err();
    assert!(err.contains("cycle"), "{err}");
    let mut dangling = stump("BRANCH_LEQ", false);
    dangling.false_ids[0] = 9;
    let err = Ensemble::build(&dangling, 1, Aggregate::Sum).unwrap_err();
    assert!(err.contains("node 9"), "{err}");
    let mut on_branch = stump("BRANCH_LEQ", false);
    on_branch.weight_node_ids[0] = 0;
    let err = Ensemble::build(&on_branch, 1, Aggregate::Sum).unwrap_err();
    assert!(err.contains("not a leaf"), "{err}");
    let mut short = stump("BRANCH_LEQ", false);
    short.values.pop();
    assert!(Ensemble::build(&short, 1, Aggregate::Sum).is_err());
    let e = Ensemble::build(&forest(), 1, Aggregate::Sum).unwrap();
    assert!(e.check_width(1).unwrap_err().contains("feature 1"));
    e.check_width(2).unwrap();
}
