//! `ArrayFeatureExtractor` (ONNX-ML): the selected entries of the last axis. A scalar index
//! keeps the axis (with one entry), as onnxruntime does; tract's version dropped it, which
//! scikit-learn's SVC export then fails to concatenate. Indices of higher rank replace the last
//! axis with their shape, as before.

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_core::ops::array::Gather;
use tract_onnx::tract_core::ops::change_axes::AxisOp;
use tract_onnx::tract_hir::internal::*;

#[derive(Clone, Debug, Default)]
pub struct ArrayFeatureExtractor;

pub fn array_feature_extractor(
    _ctx: &ParsingContext,
    _node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok((expand(ArrayFeatureExtractor), vec![]))
}

impl Expansion for ArrayFeatureExtractor {
    fn name(&self) -> StaticName {
        "ArrayFeatureExtractor".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 2)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, &outputs[0].datum_type)?;
        s.equals(&inputs[1].datum_type, i64::datum_type())?;
        s.given_2(
            &inputs[0].shape,
            &inputs[1].shape,
            move |s, shape, indices| {
                let mut out: TVec<TDim> = shape
                    .iter()
                    .take(shape.len().saturating_sub(1))
                    .cloned()
                    .collect();
                if indices.is_empty() {
                    out.push(1.to_dim());
                } else {
                    out.extend(indices.iter().cloned());
                }
                s.equals(&outputs[0].rank, out.len() as i64)?;
                s.equals(&outputs[0].shape, out)
            },
        )
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let rank = model.outlet_fact(inputs[0])?.rank();
        ensure!(
            rank >= 1,
            "ArrayFeatureExtractor needs an input of rank 1 or more"
        );
        let mut indices = inputs[1];
        if model.outlet_fact(indices)?.rank() == 0 {
            indices = model.wire_node(format!("{prefix}.indices"), AxisOp::Add(0), &[indices])?[0];
        }
        model.wire_node(
            prefix,
            Gather {
                axis: rank - 1,
                output_type: None,
            },
            &[inputs[0], indices],
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::{load, NamedTensor, TensorData};

    #[test]
    fn a_scalar_index_keeps_the_last_axis() {
        // scikit-learn's linear SVC export picks columns with scalar indices, then concatenates.
        let model = load(&std::fs::read("tests/fixtures/zoo/svc_linear.onnx").unwrap()).unwrap();
        let out = model
            .run(vec![NamedTensor {
                name: "X".into(),
                shape: vec![2, 4],
                data: TensorData::F32(vec![5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3]),
            }])
            .unwrap();
        let probabilities = out.iter().find(|t| t.name == "probabilities").unwrap();
        assert_eq!(probabilities.shape, vec![2, 3]);
    }
}
