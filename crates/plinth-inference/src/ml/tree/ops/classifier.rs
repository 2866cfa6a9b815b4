//! TreeEnsembleClassifier: the trees' votes or scores per class, post-transformed, labels
//! chosen.

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

use super::super::{Aggregate, Attributes, Ensemble};
use super::{attributes, base_values, check_fact};
use crate::ml::{
    built, f32_matrix, matrix_f32, named, Dims, Kernel, Labels, Output, PostTransform,
};

/// `TreeEnsembleClassifier`.
#[derive(Debug)]
pub struct Classifier {
    pub ensemble: Ensemble,
    pub labels: Labels,
    pub base_values: Vec<f64>,
    pub post_transform: PostTransform,
    /// Two classes and every leaf weight on one class: the other class's score is derived.
    pub(super) binary_case: bool,
    pub(super) weights_all_positive: bool,
}

pub fn classifier(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    built(classifier_kernel(node)?)
}

pub(super) fn classifier_kernel(node: &NodeProto) -> TractResult<Classifier> {
    let labels = Labels::parse(node, "classlabels_int64s", "classlabels_strings")?;
    ensure!(
        !labels.is_empty(),
        "{}: the classifier has no classes",
        named(node)
    );
    let a = attributes(node, "class")?;
    let ensemble = Ensemble::build(&a, labels.len(), Aggregate::Sum)
        .map_err(|e| format_err!("{}: {e}", named(node)))?;
    Ok(Classifier::new(
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
            (PostTransform::Probit, _) => [crate::ml::probit(s), 0.0],
            (_, 0 | 1) => [1.0 - s, s],
            (PostTransform::Logistic, 2 | 3) => [crate::ml::logistic(-s), crate::ml::logistic(s)],
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
        crate::ml::check_output("TreeEnsembleClassifier", n, self.ensemble.n_targets)?;
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
