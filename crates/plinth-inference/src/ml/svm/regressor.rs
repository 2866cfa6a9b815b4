//! SVMRegressor: support vectors and coefficients, or a one-class SVM's score.

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

use super::super::{
    built, check_columns, f32_matrix, matrix_of, named, Dims, Kernel, Output, PostTransform,
};
use super::{floats, KernelFn};

/// `SVMRegressor`.
#[derive(Debug)]
pub struct Regressor {
    pub(super) kernel: KernelFn,
    pub(super) supports: usize,
    pub(super) vectors: Vec<f32>,
    pub(super) coefficients: Vec<f32>,
    pub(super) rho: f64,
    pub(super) one_class: bool,
    pub(super) features: usize,
    pub(super) post_transform: PostTransform,
}

pub fn regressor(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let supports: i64 = node.get_attr_opt("n_supports")?.unwrap_or(0);
    let supports = usize::try_from(supports)
        .map_err(|_| format_err!("{}: negative n_supports", named(node)))?;
    let vectors = floats(node, "support_vectors")?;
    ensure!(
        supports <= vectors.len(),
        "{}: n_supports is {supports} but support_vectors holds {} values",
        named(node),
        vectors.len()
    );
    let coefficients = floats(node, "coefficients")?;
    let rho = floats(node, "rho")?;
    ensure!(
        !coefficients.is_empty(),
        "{}: coefficients are empty",
        named(node)
    );
    let features = if supports > 0 {
        ensure!(
            vectors.len() % supports == 0,
            "{}: support_vectors is not a whole number of vectors",
            named(node)
        );
        ensure!(
            coefficients.len() >= supports,
            "{}: too few coefficients",
            named(node)
        );
        vectors.len() / supports
    } else {
        coefficients.len()
    };
    built(Regressor {
        kernel: if supports > 0 {
            KernelFn::parse(node)?
        } else {
            KernelFn::Linear
        },
        supports,
        vectors,
        coefficients,
        rho: rho.first().copied().unwrap_or(0.0) as f64,
        one_class: node.get_attr_opt::<i64>("one_class")?.unwrap_or(0) != 0,
        features,
        post_transform: PostTransform::parse(node)?,
    })
}

impl Kernel for Regressor {
    fn name(&self) -> &'static str {
        "SVMRegressor"
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::new(DatumType::F32, Dims::Columns(1))]
    }

    fn check(&self, input: &TypedFact) -> TractResult<()> {
        check_columns(input, self.features, "SVM")
    }

    fn eval(&self, inputs: TVec<TValue>) -> TractResult<TVec<Tensor>> {
        let (n, x) = matrix_of(&inputs[0], self.features, "SVM")?;
        let width = self.features;
        let mut out = Vec::with_capacity(n);
        for r in 0..n {
            let row = &x[r * width..(r + 1) * width];
            let mut s = if self.supports > 0 {
                (0..self.supports)
                    .map(|v| {
                        self.coefficients[v] as f64
                            * self
                                .kernel
                                .eval(row, &self.vectors[v * width..(v + 1) * width])
                    })
                    .sum::<f64>()
            } else {
                KernelFn::Linear.eval(row, &self.coefficients)
            } + self.rho;
            if self.one_class {
                s = if s > 0.0 { 1.0 } else { -1.0 };
            }
            let mut v = [s];
            self.post_transform.apply(&mut v);
            out.push(v[0]);
        }
        Ok(tvec![f32_matrix(n, 1, &out)?])
    }
}
