//! `FeatureVectorizer` (ONNX-ML): several inputs' rows side by side in one float matrix. Input
//! `i` gives `inputdimensions[i]` columns: its first values of each row, cut when it has more,
//! and zeros after them when it has fewer (as onnxruntime reads the spec).

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

use super::{built, check_output, matrix_f32, named, Dims, Kernel, Output};

#[derive(Debug)]
pub struct FeatureVectorizer {
    /// Columns each input gives, in order.
    dimensions: Vec<usize>,
    total: usize,
}

pub fn feature_vectorizer(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let given: Vec<i64> = node
        .get_attr_opt_vec("inputdimensions")?
        .unwrap_or_default();
    ensure!(
        given.len() == node.input.len(),
        "{}: inputdimensions has {} entries for {} inputs",
        named(node),
        given.len(),
        node.input.len()
    );
    let mut dimensions = Vec::with_capacity(given.len());
    let mut total = 0usize;
    for d in given {
        let d = usize::try_from(d)
            .map_err(|_| format_err!("{}: an input dimension of {d}", named(node)))?;
        total = total.saturating_add(d);
        dimensions.push(d);
    }
    ensure!(
        (1..=crate::MAX_INPUT_COLUMNS).contains(&total),
        "{}: {total} columns in all; Plinth serves 1 to {}",
        named(node),
        crate::MAX_INPUT_COLUMNS
    );
    built(FeatureVectorizer { dimensions, total })
}

impl Kernel for FeatureVectorizer {
    fn name(&self) -> &'static str {
        "FeatureVectorizer"
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::new(DatumType::F32, Dims::Columns(self.total))]
    }

    fn eval(&self, inputs: TVec<TValue>) -> TractResult<TVec<Tensor>> {
        ensure!(
            inputs.len() == self.dimensions.len(),
            "FeatureVectorizer: {} inputs for {} input dimensions",
            inputs.len(),
            self.dimensions.len()
        );
        let mut matrices = Vec::with_capacity(inputs.len());
        for input in &inputs {
            matrices.push(matrix_f32(input)?);
        }
        let n = matrices.first().map_or(0, |m| m.0);
        ensure!(
            matrices.iter().all(|m| m.0 == n),
            "FeatureVectorizer: the inputs have different numbers of rows"
        );
        check_output("FeatureVectorizer", n, self.total)?;
        let mut out = vec![0f32; n * self.total];
        for r in 0..n {
            let row = &mut out[r * self.total..(r + 1) * self.total];
            let mut at = 0;
            for ((_, width, x), &d) in matrices.iter().zip(&self.dimensions) {
                let take = d.min(*width);
                row[at..at + take].copy_from_slice(&x[r * width..r * width + take]);
                at += d;
            }
        }
        Ok(tvec!(tract_ndarray::Array2::from_shape_vec(
            (n, self.total),
            out
        )?
        .into_tensor()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(dimensions: Vec<usize>, inputs: Vec<Tensor>) -> Vec<f32> {
        let total = dimensions.iter().sum();
        let k = FeatureVectorizer { dimensions, total };
        let out = k
            .eval(inputs.into_iter().map(IntoTValue::into_tvalue).collect())
            .unwrap();
        assert_eq!(out[0].shape()[1], total);
        out[0]
            .try_as_plain_ram()
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec()
    }

    #[test]
    fn inputs_are_joined_row_by_row_whatever_their_type() {
        let a = tract_ndarray::arr2(&[[1.0f32, 2.0], [3.0, 4.0]]).into_tensor();
        let b = tract_ndarray::arr2(&[[10i64, 20, 30], [40, 50, 60]]).into_tensor();
        let c = tract_ndarray::arr2(&[[0.5f64], [0.25]]).into_tensor();
        assert_eq!(
            run(vec![2, 3, 1], vec![a, b, c]),
            vec![1.0, 2.0, 10.0, 20.0, 30.0, 0.5, 3.0, 4.0, 40.0, 50.0, 60.0, 0.25]
        );
    }

    #[test]
    fn a_narrower_input_is_padded_with_zeros_and_a_wider_one_cut() {
        let a = tract_ndarray::arr2(&[[1.0f32], [2.0]]).into_tensor();
        let b = tract_ndarray::arr2(&[[5i32, 6, 7], [8, 9, 10]]).into_tensor();
        assert_eq!(
            run(vec![3, 2], vec![a, b]),
            vec![1.0, 0.0, 0.0, 5.0, 6.0, 2.0, 0.0, 0.0, 8.0, 9.0]
        );
    }

    #[test]
    fn inputs_with_different_rows_are_refused() {
        let a = tract_ndarray::arr2(&[[1.0f32], [2.0]]).into_tensor();
        let b = tract_ndarray::arr2(&[[5.0f32]]).into_tensor();
        let k = FeatureVectorizer {
            dimensions: vec![1, 1],
            total: 2,
        };
        let err = k.eval(tvec![a.into_tvalue(), b.into_tvalue()]).unwrap_err();
        assert!(
            err.to_string().contains("different numbers of rows"),
            "{err}"
        );
    }
}
