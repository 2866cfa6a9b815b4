//! ONNX-ML operators that tract does not implement (or implements slowly or without text labels), registered with
//! tract's ONNX loader so that scikit-learn, XGBoost and LightGBM exports load and run.
//!
//! Each operator is a [`Kernel`]: it reads its attributes once when the model is loaded, says
//! what its outputs look like, and evaluates a batch in plain Rust. [`Native`] makes a kernel a
//! tract operator (for the optimised plan) and [`Expand`] makes it an inference operator (for
//! the loader's type and shape analysis); both are generic, so an operator is only its kernel.
//!
//! `DictVectorizer` and `CastMap` are not operators either: [`maps::densify`] makes the map
//! they read an input of named columns.
//!
//! `ZipMap` is not an operator here: tract has no sequence or map types, so [`zipmap::unzip`]
//! rewrites the graph before loading to keep the probability tensor ZipMap would have zipped
//! with the class labels, and remembers the labels.

mod array;
mod encoders;
mod linear;
pub mod maps;
mod svm;
pub mod text;
pub mod tree;
mod vectorizer;
pub mod zipmap;

use std::fmt;
use std::sync::Arc;

use tract_onnx::model::OnnxOpRegister;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

mod post_transform;

pub use post_transform::{logistic, probit, PostTransform};

/// Sizes a model file implies rather than holds: each is refused at load, with the reason, when
/// over its cap. (Sizes a file holds are bounded by the upload limit already.)
pub mod caps {
    /// Classes of a classifier, targets of a regressor.
    pub const MAX_CLASSES: usize = 10_000;
    /// Categories of a `OneHotEncoder`.
    pub const MAX_CATEGORIES: usize = 100_000;
    /// Nodes of a tree ensemble.
    pub const MAX_TREE_NODES: usize = 1 << 24;
    /// Elements one operator may produce for one request.
    pub const MAX_OUTPUT_ELEMENTS: usize = 1 << 24;
}

/// Refuses an output of `rows × columns` elements over the per-request budget.
fn check_output(op: &str, rows: usize, columns: usize) -> TractResult<()> {
    match rows.checked_mul(columns) {
        Some(n) if n <= caps::MAX_OUTPUT_ELEMENTS => Ok(()),
        _ => bail!(
            "{op}: {rows} rows of {columns} columns is more output than one request may produce ({} values)",
            caps::MAX_OUTPUT_ELEMENTS
        ),
    }
}

/// Registers Plinth's operators, replacing tract's where both exist.
pub fn register(register: &mut OnnxOpRegister) {
    register.insert("TreeEnsembleClassifier", tree::classifier);
    register.insert("TreeEnsembleRegressor", tree::regressor);
    register.insert("TreeEnsemble", tree::tree_ensemble);
    register.insert("LinearClassifier", linear::classifier);
    register.insert("ArrayFeatureExtractor", array::array_feature_extractor);
    register.insert("SVMClassifier", svm::classifier);
    register.insert("SVMRegressor", svm::regressor);
    register.insert("Scaler", encoders::scaler);
    register.insert("Imputer", encoders::imputer);
    register.insert("Binarizer", encoders::binarizer);
    register.insert("OneHotEncoder", encoders::one_hot_encoder);
    register.insert("LabelEncoder", encoders::label_encoder);
    register.insert("FeatureVectorizer", vectorizer::feature_vectorizer);
    register.insert("StringNormalizer", text::string_normalizer);
    register.insert("TfIdfVectorizer", text::tfidf_vectorizer);
}

/// The shape of an output, from the first input's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dims {
    /// `[N]`: one value per row.
    Rows,
    /// `[N, c]`.
    Columns(usize),
    /// The first input's shape.
    Input,
    /// The first input's shape with one more dimension of `c` at the end.
    Appended(usize),
}

/// What one output is: its element type (`None`: the first input's) and shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Output {
    pub dt: Option<DatumType>,
    pub dims: Dims,
}

impl Output {
    pub fn new(dt: DatumType, dims: Dims) -> Output {
        Output { dt: Some(dt), dims }
    }
}

/// An operator's computation.
pub trait Kernel: fmt::Debug + Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn outputs(&self) -> Vec<Output>;
    /// Refuses inputs the operator cannot take, when the model is prepared (the first input's
    /// type and shape, as far as known).
    fn check(&self, _input: &TypedFact) -> TractResult<()> {
        Ok(())
    }
    fn eval(&self, inputs: TVec<TValue>) -> TractResult<TVec<Tensor>>;
}

/// A kernel as a tract operator.
#[derive(Clone, Debug)]
pub struct Native(pub Arc<dyn Kernel>);

impl PartialEq for Native {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for Native {}

impl Op for Native {
    fn name(&self) -> StaticName {
        self.0.name().into()
    }

    op_as_typed_op!();
}

impl EvalOp for Native {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        Ok(self
            .0
            .eval(inputs)?
            .into_iter()
            .map(IntoTValue::into_tvalue)
            .collect())
    }
}

impl TypedOp for Native {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let Some(input) = inputs.first() else {
            bail!("{} needs an input", self.0.name());
        };
        ensure!(
            input.rank() >= 1,
            "{} needs an input of rank 1 or more",
            self.0.name()
        );
        self.0.check(input)?;
        let n = input.shape[0].clone();
        Ok(self
            .0
            .outputs()
            .iter()
            .map(|o| {
                let dt = o.dt.unwrap_or(input.datum_type);
                let shape: TVec<TDim> = match o.dims {
                    Dims::Rows => tvec![n.clone()],
                    Dims::Columns(c) => tvec![n.clone(), c.to_dim()],
                    Dims::Input => input.shape.to_tvec(),
                    Dims::Appended(c) => {
                        let mut s = input.shape.to_tvec();
                        s.push(c.to_dim());
                        s
                    }
                };
                dt.fact(shape)
            })
            .collect())
    }

    as_op!();
}

/// A kernel as an inference operator: type and shape rules, then [`Native`] in the typed graph.
#[derive(Clone, Debug)]
pub struct Expand(pub Arc<dyn Kernel>);

impl Expansion for Expand {
    fn name(&self) -> StaticName {
        self.0.name().into()
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(self.0.outputs().len())
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        let specs = self.0.outputs();
        check_output_arity(outputs, specs.len())?;
        if inputs.is_empty() {
            bail!("{} needs an input", self.0.name());
        }
        for (o, spec) in outputs.iter().zip(specs) {
            match spec.dt {
                Some(dt) => s.equals(&o.datum_type, dt)?,
                None => s.equals(&o.datum_type, &inputs[0].datum_type)?,
            }
            match spec.dims {
                Dims::Rows => {
                    s.equals(&o.rank, 1)?;
                    s.equals(&o.shape[0], &inputs[0].shape[0])?;
                }
                Dims::Columns(c) => {
                    s.equals(&o.rank, 2)?;
                    s.equals(&o.shape[0], &inputs[0].shape[0])?;
                    s.equals(&o.shape[1], c.to_dim())?;
                }
                Dims::Input => s.equals(&o.shape, &inputs[0].shape)?,
                Dims::Appended(c) => {
                    s.given(&inputs[0].rank, move |s, rank| {
                        let rank = rank as usize;
                        s.equals(&o.rank, (rank + 1) as i64)?;
                        for axis in 0..rank {
                            s.equals(&o.shape[axis], &inputs[0].shape[axis])?;
                        }
                        s.equals(&o.shape[rank], c.to_dim())
                    })?;
                }
            }
        }
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, Native(self.0.clone()), inputs)
    }
}

/// How errors name a node: its operator, and its name when it has one.
pub(crate) fn named(node: &NodeProto) -> String {
    if node.name.is_empty() {
        node.op_type.clone()
    } else {
        format!("{} {}", node.op_type, node.name)
    }
}

/// The loader's result for a kernel.
fn built(kernel: impl Kernel) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok((expand(Expand(Arc::new(kernel))), vec![]))
}

/// Class labels of a classifier: `classlabels_int64s` or `classlabels_strings`.
#[derive(Clone, Debug, PartialEq)]
pub enum Labels {
    Ints(Vec<i64>),
    Strings(Vec<String>),
}

impl Labels {
    fn parse(node: &NodeProto, ints: &str, strings: &str) -> TractResult<Labels> {
        let i: Option<Vec<i64>> = node.get_attr_opt_vec(ints)?;
        let s: Option<Vec<String>> = node.get_attr_opt_vec(strings)?;
        let given = i
            .as_ref()
            .map_or(0, Vec::len)
            .max(s.as_ref().map_or(0, Vec::len));
        ensure!(
            given <= caps::MAX_CLASSES,
            "{}: {given} classes is more than Plinth serves ({})",
            named(node),
            caps::MAX_CLASSES
        );
        match (i, s) {
            (Some(i), None) => Ok(Labels::Ints(i)),
            (None, Some(s)) => Ok(Labels::Strings(s)),
            (Some(i), Some(s)) if s.is_empty() => Ok(Labels::Ints(i)),
            (Some(i), Some(_)) if i.is_empty() => Ok(Labels::Strings(node.get_attr_vec(strings)?)),
            _ => bail!(
                "{}: exactly one of {ints} and {strings} must be given",
                named(node)
            ),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Labels::Ints(v) => v.len(),
            Labels::Strings(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Class `k`'s label as text.
    pub fn text(&self, k: usize) -> String {
        match self {
            Labels::Ints(v) => v.get(k).map(|i| i.to_string()).unwrap_or_default(),
            Labels::Strings(v) => v.get(k).cloned().unwrap_or_default(),
        }
    }

    pub fn datum_type(&self) -> DatumType {
        match self {
            Labels::Ints(_) => DatumType::I64,
            Labels::Strings(_) => DatumType::String,
        }
    }

    /// The labels of classes `picks`, as a `[N]` tensor.
    pub fn pick(&self, picks: &[usize]) -> Tensor {
        match self {
            Labels::Ints(v) => tensor1(&picks.iter().map(|&i| v[i]).collect::<Vec<_>>()),
            Labels::Strings(v) => tensor1(&picks.iter().map(|&i| v[i].clone()).collect::<Vec<_>>()),
        }
    }
}

/// The first input as a `[N, width]` matrix of `f32`, however it was typed.
fn matrix_f32(input: &TValue) -> TractResult<(usize, usize, std::borrow::Cow<'_, [f32]>)> {
    let shape = input.shape();
    let (n, width) = match shape {
        [w] => (1, *w),
        [n, rest @ ..] => (*n, rest.iter().product()),
        [] => (1, 1),
    };
    let data = if input.datum_type() == DatumType::F32 {
        std::borrow::Cow::Borrowed(input.try_as_plain_ram()?.as_slice::<f32>()?)
    } else {
        let cast = input.cast_to::<f32>()?;
        std::borrow::Cow::Owned(cast.try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
    };
    Ok((n, width, data))
}

/// The first input as a matrix of exactly `columns` columns (`what` names the operator in the
/// refusal): fewer columns would make a kernel read past the row.
fn matrix_of<'a>(
    input: &'a TValue,
    columns: usize,
    what: &str,
) -> TractResult<(usize, std::borrow::Cow<'a, [f32]>)> {
    let (n, width, x) = matrix_f32(input)?;
    ensure!(
        width == columns,
        "the {what} takes {columns} columns, not {width}"
    );
    Ok((n, x))
}

/// Refuses, when the model is prepared, an input whose column count is known and wrong.
fn check_columns(input: &TypedFact, columns: usize, what: &str) -> TractResult<()> {
    if input.rank() == 2 {
        if let Ok(width) = input.shape[1].to_usize() {
            ensure!(
                width == columns,
                "the {what} was trained on {columns} columns but its input has {width}"
            );
        }
    }
    Ok(())
}

/// `[N, c]` of `f32` from `f64` values.
fn f32_matrix(n: usize, c: usize, values: &[f64]) -> TractResult<Tensor> {
    let data: Vec<f32> = values.iter().map(|v| *v as f32).collect();
    Ok(tract_ndarray::Array2::from_shape_vec((n, c), data)?.into_tensor())
}

#[cfg(test)]
mod zoo_tests;
