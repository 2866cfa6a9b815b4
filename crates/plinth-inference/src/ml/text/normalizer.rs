//! StringNormalizer: case changed one character at a time, as onnxruntime does.

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

use super::super::{built, named, Dims, Kernel, Output};

// --- StringNormalizer -----------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Case {
    Lower,
    Upper,
    None,
}

#[derive(Debug)]
pub struct StringNormalizer {
    pub(super) case: Case,
}

pub fn string_normalizer(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let case = match node
        .get_attr_opt::<&str>("case_change_action")?
        .unwrap_or("NONE")
    {
        "LOWER" => Case::Lower,
        "UPPER" => Case::Upper,
        "NONE" => Case::None,
        other => bail!("{}: unknown case_change_action {other:?}", named(node)),
    };
    let stopwords = node
        .get_attr_opt_vec::<String>("stopwords")?
        .unwrap_or_default();
    ensure!(
        stopwords.is_empty(),
        "{}: removing stopwords changes how many strings there are, and Plinth gives one answer a row; export without stopwords (skl2onnx leaves them out of the vocabulary)",
        named(node)
    );
    built(StringNormalizer { case })
}

/// Changes the case a character at a time, as onnxruntime does (a character that would become
/// several, such as `İ`, is kept).
pub(super) fn change_case(text: &str, case: Case) -> String {
    pub(super) fn single(mut changed: impl Iterator<Item = char>, c: char) -> char {
        match (changed.next(), changed.next()) {
            (Some(x), None) => x,
            _ => c,
        }
    }
    match case {
        Case::None => text.to_string(),
        Case::Lower => text.chars().map(|c| single(c.to_lowercase(), c)).collect(),
        Case::Upper => text.chars().map(|c| single(c.to_uppercase(), c)).collect(),
    }
}

impl Kernel for StringNormalizer {
    fn name(&self) -> &'static str {
        "StringNormalizer"
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::new(DatumType::String, Dims::Input)]
    }

    fn check(&self, input: &TypedFact) -> TractResult<()> {
        ensure!(
            input.datum_type == DatumType::String,
            "StringNormalizer takes text, not {:?}",
            input.datum_type
        );
        Ok(())
    }

    fn eval(&self, inputs: TVec<TValue>) -> TractResult<TVec<Tensor>> {
        let x = &inputs[0];
        let out: Vec<String> = x
            .try_as_plain_ram()?
            .as_slice::<String>()?
            .iter()
            .map(|s| change_case(s, self.case))
            .collect();
        Ok(tvec![tract_ndarray::ArrayD::from_shape_vec(
            x.shape().to_vec(),
            out
        )?
        .into_tensor()])
    }
}
