//! `LinearClassifier` (ONNX-ML): `X · coefficientsᵀ + intercepts`, then the post transform.
//! tract has one, but it cannot give text labels; this one can. One score column with two
//! labels is a binary model: the label is the positive one when the score is above zero, and
//! the scores gain the negative class's column, as onnxruntime writes them.

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

use super::{
    built, check_columns, f32_matrix, matrix_of, named, Dims, Kernel, Labels, Output, PostTransform,
};

#[derive(Debug)]
pub struct Classifier {
    labels: Labels,
    coefficients: Vec<f32>,
    intercepts: Vec<f32>,
    features: usize,
    post_transform: PostTransform,
}

pub fn classifier(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let labels = Labels::parse(node, "classlabels_ints", "classlabels_strings")?;
    let coefficients: Vec<f32> = node.get_attr_opt_vec("coefficients")?.unwrap_or_default();
    let intercepts: Vec<f32> = node.get_attr_opt_vec("intercepts")?.unwrap_or_default();
    let targets = intercepts.len();
    ensure!(targets >= 1, "{}: intercepts are empty", named(node));
    ensure!(
        !coefficients.is_empty() && coefficients.len().is_multiple_of(targets),
        "{}: coefficients must be {targets} rows of features",
        named(node)
    );
    ensure!(
        targets == labels.len() || (targets == 1 && labels.len() == 2),
        "{}: {targets} score columns for {} labels",
        named(node),
        labels.len()
    );
    built(Classifier {
        features: coefficients.len() / targets,
        labels,
        coefficients,
        intercepts,
        post_transform: PostTransform::parse(node)?,
    })
}

impl Classifier {
    fn binary(&self) -> bool {
        self.intercepts.len() == 1
    }
}

impl Kernel for Classifier {
    fn name(&self) -> &'static str {
        "LinearClassifier"
    }

    fn outputs(&self) -> Vec<Output> {
        let columns = if self.binary() {
            2
        } else {
            self.intercepts.len()
        };
        vec![
            Output::new(self.labels.datum_type(), Dims::Rows),
            Output::new(DatumType::F32, Dims::Columns(columns)),
        ]
    }

    fn check(&self, input: &TypedFact) -> TractResult<()> {
        check_columns(input, self.features, "classifier")
    }

    fn eval(&self, inputs: TVec<TValue>) -> TractResult<TVec<Tensor>> {
        let (n, x) = matrix_of(&inputs[0], self.features, "classifier")?;
        let width = self.features;
        let t = self.intercepts.len();
        let columns = if self.binary() { 2 } else { t };
        super::check_output("LinearClassifier", n, columns)?;
        let mut classes = Vec::with_capacity(n);
        let mut scores = Vec::with_capacity(n * columns);
        for r in 0..n {
            let row = &x[r * width..(r + 1) * width];
            // Single precision, as onnxruntime's GEMM computes it.
            let mut s: Vec<f64> = (0..t)
                .map(|k| {
                    let w = &self.coefficients[k * width..(k + 1) * width];
                    (row.iter().zip(w).map(|(a, b)| a * b).sum::<f32>() + self.intercepts[k]) as f64
                })
                .collect();
            if self.binary() {
                classes.push(usize::from(s[0] > 0.0));
                self.post_transform.apply(&mut s);
                scores.extend([1.0 - s[0], s[0]]);
            } else {
                let mut best = 0;
                for k in 1..t {
                    if s[k] > s[best] {
                        best = k;
                    }
                }
                classes.push(best);
                self.post_transform.apply(&mut s);
                scores.extend(s);
            }
        }
        Ok(tvec![
            self.labels.pick(&classes),
            f32_matrix(n, columns, &scores)?
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(c: &Classifier, x: Tensor) -> (Tensor, Vec<f32>) {
        let mut out = c.eval(tvec![x.into_tvalue()]).unwrap();
        let scores = out
            .remove(1)
            .to_plain_array_view::<f32>()
            .unwrap()
            .iter()
            .copied()
            .collect();
        (out.remove(0), scores)
    }

    #[test]
    fn one_score_column_with_two_text_labels_is_a_binary_model() {
        let c = Classifier {
            labels: Labels::Strings(vec!["no".into(), "yes".into()]),
            coefficients: vec![1.0, -1.0],
            intercepts: vec![0.0],
            features: 2,
            post_transform: PostTransform::Logistic,
        };
        let (labels, scores) = run(&c, tensor2(&[[2.0f32, 1.0], [0.0, 3.0]]));
        let labels: Vec<String> = labels
            .to_plain_array_view::<String>()
            .unwrap()
            .iter()
            .cloned()
            .collect();
        assert_eq!(labels, vec!["yes", "no"]);
        let p = super::super::logistic(1.0) as f32;
        assert!((scores[0] - (1.0 - p)).abs() < 1e-6 && (scores[1] - p).abs() < 1e-6);
        assert!((scores[2] + scores[3] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn several_classes_pick_the_highest_score() {
        let c = Classifier {
            labels: Labels::Ints(vec![3, 5, 7]),
            coefficients: vec![1.0, 0.0, 0.0, 1.0, 0.5, 0.5],
            intercepts: vec![0.0, 0.0, 0.25],
            features: 2,
            post_transform: PostTransform::None,
        };
        let (labels, scores) = run(&c, tensor2(&[[1.0f32, 2.0]]));
        assert_eq!(labels.to_plain_array_view::<i64>().unwrap()[0], 5);
        assert_eq!(scores, vec![1.0, 2.0, 1.75]);
    }
}
