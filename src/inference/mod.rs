//! The only module that knows tract: loading ONNX files, their signature, running them.
//!
//! A [`LoadedModel`] holds one optimised plan with a symbolic batch dimension `N`, shared by every
//! worker (`run` takes `&self`). Graphs whose shapes cannot stay symbolic fall back to one plan
//! per batch size, built on first use. Inputs are checked against the signature before tract
//! sees them: given too few columns, some ONNX-ML operators read out of bounds instead of failing.

pub mod ml;
mod tensor;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;
use tract_onnx::tract_hir::internal::DimLike;

pub use tensor::{DType, TensorData};

/// A named tensor going into or coming out of a model.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: TensorData,
}

/// One input or output as the model declares it. `None` dimensions are free (the batch).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<Option<usize>>,
}

impl TensorSpec {
    /// Elements per batch row: the product of the fixed dimensions after the first.
    pub fn row_width(&self) -> usize {
        self.shape.iter().skip(1).map(|d| d.unwrap_or(1)).product()
    }
}

/// What a model takes and gives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Signature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    /// A classifier's class labels in the order of its probability columns, as the graph
    /// declares them (ZipMap's, or the classifier operator's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    /// For text inputs, the categories the model's encoder knows (input name → values).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub categories: BTreeMap<String, Vec<String>>,
}

/// Why a file could not become a model.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("This is not an ONNX model file ({0}).")]
    NotOnnx(String),
    #[error("The model uses the operator {op} ({domain}), which Plinth cannot run.")]
    UnsupportedOperator { op: String, domain: String },
    #[error("The model cannot be prepared for serving: {0}")]
    Invalid(String),
}

/// Why a run was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    BadInput(String),
    #[error("the model failed to run: {0}")]
    Failed(String),
}

type Plan = Arc<TypedRunnableModel>;

/// A model ready to serve.
pub struct LoadedModel {
    pub signature: Signature,
    /// `onnx.metadata_props.*` and the doc string, as strings.
    pub metadata: BTreeMap<String, String>,
    plan: Option<Plan>,
    /// For graphs that need a fixed batch: the source model and its plans by batch size.
    per_batch: Option<(InferenceModel, Mutex<HashMap<usize, Plan>>)>,
    /// Recent cost of one run in microseconds, to decide where the next one runs.
    recent_micros: AtomicU64,
}

/// The most values one input row may have (a form field or a card feature each).
pub const MAX_INPUT_COLUMNS: usize = 65_536;

/// Runs taking longer than this go to the blocking pool, off the async workers.
const INLINE_LIMIT_MICROS: u64 = 300;

/// Where a run's time went.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunTimes {
    /// Waiting for a blocking thread (zero for runs made inline).
    pub queue: std::time::Duration,
    /// Running the model.
    pub compute: std::time::Duration,
}

/// Runs `inputs` through `model`: inline when the model is quick, on the blocking pool when it
/// is not, so slow models never stall page loads.
pub async fn run_async(
    model: Arc<LoadedModel>,
    inputs: Vec<NamedTensor>,
) -> Result<(Vec<NamedTensor>, RunTimes), RunError> {
    let rows = inputs
        .first()
        .and_then(|t| t.shape.first().copied())
        .unwrap_or(1) as u64;
    let expected = model
        .recent_micros
        .load(Ordering::Relaxed)
        .saturating_mul(rows);
    let queued = Instant::now();
    let inline = expected <= INLINE_LIMIT_MICROS;
    let timed = move || {
        let queue = if inline {
            std::time::Duration::ZERO
        } else {
            queued.elapsed()
        };
        let started = Instant::now();
        let outputs = model.run(inputs)?;
        let compute = started.elapsed();
        Ok((outputs, RunTimes { queue, compute }))
    };
    if inline {
        return timed();
    }
    tokio::task::spawn_blocking(timed)
        .await
        .map_err(|e| RunError::Failed(e.to_string()))?
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("signature", &self.signature)
            .finish()
    }
}

/// Operators named in the graph that tract's ONNX loader does not know.
fn unsupported_operator(
    onnx: &tract_onnx::Onnx,
    proto: &tract_onnx::pb::ModelProto,
) -> Option<(String, String)> {
    let graph = proto.graph.as_ref()?;
    graph
        .node
        .iter()
        .find(|node| !onnx.op_register.0.contains_key(&node.op_type))
        .map(|node| {
            let domain = if node.domain.is_empty() {
                "ai.onnx".to_string()
            } else {
                node.domain.clone()
            };
            (node.op_type.clone(), domain)
        })
}

fn spec_from_fact(name: String, fact: &InferenceFact) -> Result<TensorSpec, LoadError> {
    let dtype = fact
        .datum_type
        .concretize()
        .map(DType::from_datum)
        .ok_or_else(|| LoadError::Invalid(format!("the element type of {name} is not declared")))?
        .ok_or_else(|| {
            LoadError::Invalid(format!("the element type of {name} is not supported"))
        })?;
    if fact.shape.is_open() {
        return Err(LoadError::Invalid(format!(
            "the rank of {name} is not declared"
        )));
    }
    let shape = fact
        .shape
        .dims()
        .map(|d| d.concretize().and_then(|d| d.to_usize().ok()))
        .collect();
    Ok(TensorSpec { name, dtype, shape })
}

/// Loads an ONNX file from memory and prepares it for serving.
///
/// tract reads the file, and the file is untrusted: a panic inside tract is turned into a
/// refusal rather than taking the thread (and, on an async worker, its connections) with it.
pub fn load(bytes: &[u8]) -> Result<LoadedModel, LoadError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| load_unguarded(bytes))).unwrap_or_else(
        |panic| {
            Err(LoadError::Invalid(format!(
                "reading the file failed inside tract ({})",
                panic_text(&panic)
            )))
        },
    )
}

/// The message a panic carried.
fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}

/// What tract assumes of a graph and panics on otherwise (found by `scripts/fuzz`): every graph
/// output is made by a node, is a graph input or an initializer; a `Transpose` permutation is
/// a permutation. (Anything else tract panics on is caught by [`load`].)
fn check_graph(proto: &tract_onnx::pb::ModelProto) -> Result<(), LoadError> {
    let Some(graph) = proto.graph.as_ref() else {
        return Ok(());
    };
    for node in graph.node.iter().filter(|n| n.op_type == "Transpose") {
        if let Some(perm) = node.attribute.iter().find(|a| a.name == "perm") {
            let mut seen = vec![false; perm.ints.len()];
            let ok = perm.ints.iter().all(|&i| {
                usize::try_from(i)
                    .ok()
                    .and_then(|i| seen.get_mut(i))
                    .is_some_and(|s| !std::mem::replace(s, true))
            });
            if !ok {
                return Err(LoadError::Invalid(format!(
                    "Transpose {:?}: perm {:?} is not a permutation",
                    node.name, perm.ints
                )));
            }
        }
    }
    let made = |name: &str| {
        graph
            .node
            .iter()
            .any(|n| n.output.iter().any(|o| o == name))
            || graph.input.iter().any(|i| i.name == name)
            || graph.initializer.iter().any(|t| t.name == name)
    };
    match graph.output.iter().find(|o| !made(&o.name)) {
        Some(o) => Err(LoadError::Invalid(format!(
            "the graph's output {:?} is not made by any node",
            o.name
        ))),
        None => Ok(()),
    }
}

fn load_unguarded(bytes: &[u8]) -> Result<LoadedModel, LoadError> {
    let mut onnx = tract_onnx::onnx();
    ml::register(&mut onnx.op_register);
    let mut proto = onnx
        .proto_model_for_read(&mut std::io::Cursor::new(bytes))
        .map_err(|e| LoadError::NotOnnx(root_cause(&e)))?;
    if proto.graph.as_ref().is_none_or(|g| g.node.is_empty()) {
        return Err(LoadError::NotOnnx("it has no graph".into()));
    }
    let labels = ml::zipmap::unzip(&mut proto);
    let categories = ml::zipmap::categories(&proto);
    if let Some((op, domain)) = unsupported_operator(&onnx, &proto) {
        return Err(LoadError::UnsupportedOperator { op, domain });
    }
    check_graph(&proto)?;
    let model = onnx
        .model_for_proto_model(&proto)
        .map_err(|e| LoadError::Invalid(root_cause(&e)))?;

    let metadata = model
        .properties
        .iter()
        .filter_map(|(k, v)| {
            let key = k
                .strip_prefix("onnx.metadata_props.")
                .or_else(|| k.strip_prefix("onnx."))?;
            let value = v
                .to_plain_array_view::<String>()
                .ok()?
                .iter()
                .next()?
                .clone();
            Some((key.to_string(), value))
        })
        .collect();

    let mut inputs = Vec::new();
    for (ix, outlet) in model.inputs.clone().iter().enumerate() {
        let name = model.node(outlet.node).name.clone();
        let fact = model
            .input_fact(ix)
            .map_err(|e| LoadError::Invalid(root_cause(&e)))?;
        let spec = spec_from_fact(name, fact)?;
        if spec.shape.iter().skip(1).any(Option::is_none) {
            return Err(LoadError::Invalid(format!(
                "input {} has free dimensions besides the batch",
                spec.name
            )));
        }
        let width = spec
            .shape
            .iter()
            .skip(1)
            .try_fold(1usize, |acc, d| acc.checked_mul(d.unwrap_or(1)));
        if width.is_none_or(|w| w > MAX_INPUT_COLUMNS) {
            return Err(LoadError::Invalid(format!(
                "input {} has more than {MAX_INPUT_COLUMNS} values per row",
                spec.name
            )));
        }
        inputs.push(spec);
    }
    // One plan for every batch size, with the batch as the symbol N.
    let batch = model.symbols.sym("N");
    let mut symbolic = model.clone();
    for (ix, spec) in inputs.iter().enumerate() {
        let mut dims: TVec<TDim> = tvec![batch.clone().into()];
        dims.extend(
            spec.shape
                .iter()
                .skip(1)
                .map(|d| TDim::from(d.unwrap_or(1))),
        );
        symbolic
            .set_input_fact(ix, InferenceFact::dt_shape(spec.dtype.datum(), dims))
            .map_err(|e| LoadError::Invalid(root_cause(&e)))?;
    }
    let (typed, fallback) = match symbolic.into_optimized() {
        Ok(typed) => (typed, None),
        Err(e) => {
            tracing::info!(error = %root_cause(&e), "no symbolic batch plan; using one plan per batch size");
            // Prove the graph works at all with batch 1 before accepting it.
            let typed = typed_for_batch(&model, &inputs, 1).map_err(LoadError::Invalid)?;
            (typed, Some(model))
        }
    };
    // Output types are only known once the graph has been analysed.
    let mut outputs = Vec::new();
    for (ix, outlet) in typed.outputs.iter().enumerate() {
        let name = typed
            .outlet_label(*outlet)
            .map(str::to_string)
            .unwrap_or_else(|| typed.node(outlet.node).name.clone());
        let fact = typed
            .output_fact(ix)
            .map_err(|e| LoadError::Invalid(root_cause(&e)))?;
        let dtype = DType::from_datum(fact.datum_type).ok_or_else(|| {
            LoadError::Invalid(format!(
                "the element type of output {name} ({:?}) is not supported",
                fact.datum_type
            ))
        })?;
        let mut shape: Vec<Option<usize>> = fact.shape.iter().map(|d| d.to_usize().ok()).collect();
        if let Some(first) = shape.first_mut() {
            *first = None;
        }
        outputs.push(TensorSpec { name, dtype, shape });
    }
    let plan = typed
        .into_runnable()
        .map_err(|e| LoadError::Invalid(root_cause(&e)))?;
    let (plan, per_batch) = match fallback {
        None => (Some(plan), None),
        Some(model) => (None, Some((model, Mutex::new(HashMap::from([(1, plan)]))))),
    };
    Ok(LoadedModel {
        signature: Signature {
            inputs,
            outputs,
            labels,
            categories,
        },
        metadata,
        plan,
        per_batch,
        // Unknown until measured: the first run goes to the blocking pool.
        recent_micros: AtomicU64::new(INLINE_LIMIT_MICROS + 1),
    })
}

fn plan_for_batch(model: &InferenceModel, inputs: &[TensorSpec], n: usize) -> Result<Plan, String> {
    typed_for_batch(model, inputs, n)?
        .into_runnable()
        .map_err(|e| root_cause(&e))
}

fn typed_for_batch(
    model: &InferenceModel,
    inputs: &[TensorSpec],
    n: usize,
) -> Result<TypedModel, String> {
    let mut fixed = model.clone();
    for (ix, spec) in inputs.iter().enumerate() {
        let mut dims: TVec<usize> = tvec![n];
        dims.extend(spec.shape.iter().skip(1).map(|d| d.unwrap_or(1)));
        fixed
            .set_input_fact(ix, InferenceFact::dt_shape(spec.dtype.datum(), dims))
            .map_err(|e| root_cause(&e))?;
    }
    fixed.into_optimized().map_err(|e| root_cause(&e))
}

fn root_cause(e: &anyhow::Error) -> String {
    e.root_cause().to_string()
}

impl LoadedModel {
    /// Runs a batch. Every input of the signature must be given once, with the declared type and
    /// a shape `[n, …]` matching the declared dimensions.
    ///
    /// A panic inside tract or an operator fails the run instead of unwinding into the caller
    /// (runs of quick models happen on an async worker).
    pub fn run(&self, inputs: Vec<NamedTensor>) -> Result<Vec<NamedTensor>, RunError> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run_unguarded(inputs)))
            .unwrap_or_else(|panic| {
                Err(RunError::Failed(format!(
                    "the model panicked ({})",
                    panic_text(&panic)
                )))
            })
    }

    fn run_unguarded(&self, inputs: Vec<NamedTensor>) -> Result<Vec<NamedTensor>, RunError> {
        let batch = self.check_inputs(&inputs)?;
        self.check_output_budget(batch)?;
        let mut by_name: HashMap<String, NamedTensor> =
            inputs.into_iter().map(|t| (t.name.clone(), t)).collect();
        let mut values: TVec<TValue> = TVec::new();
        for spec in &self.signature.inputs {
            let t = by_name
                .remove(&spec.name)
                .ok_or_else(|| RunError::BadInput(format!("input {} is missing", spec.name)))?;
            let tensor = t.data.into_tensor(&t.shape).map_err(RunError::BadInput)?;
            values.push(tensor.into());
        }
        let plan = self.plan_for(batch)?;
        let started = Instant::now();
        let outputs = plan
            .run(values)
            .map_err(|e| RunError::Failed(root_cause(&e)))?;
        let per_row = started.elapsed().as_micros() as u64 / batch.max(1) as u64;
        let previous = self.recent_micros.load(Ordering::Relaxed);
        self.recent_micros
            .store((previous * 3 + per_row) / 4, Ordering::Relaxed);
        outputs
            .iter()
            .zip(&self.signature.outputs)
            .map(|(value, spec)| {
                let data = TensorData::from_tensor(value).map_err(RunError::Failed)?;
                Ok(NamedTensor {
                    name: spec.name.clone(),
                    shape: value.shape().to_vec(),
                    data,
                })
            })
            .collect()
    }

    fn plan_for(&self, batch: usize) -> Result<Plan, RunError> {
        if let Some(plan) = &self.plan {
            return Ok(plan.clone());
        }
        let Some((model, cache)) = &self.per_batch else {
            return Err(RunError::Failed("no plan".into()));
        };
        let mut cache = cache
            .lock()
            .map_err(|_| RunError::Failed("plan cache poisoned".into()))?;
        if let Some(plan) = cache.get(&batch) {
            return Ok(plan.clone());
        }
        let plan =
            plan_for_batch(model, &self.signature.inputs, batch).map_err(RunError::Failed)?;
        cache.insert(batch, plan.clone());
        Ok(plan)
    }

    /// Refuses a batch whose declared outputs would exceed the per-request output budget.
    fn check_output_budget(&self, batch: usize) -> Result<(), RunError> {
        for spec in &self.signature.outputs {
            let width = spec
                .shape
                .iter()
                .skip(1)
                .try_fold(1usize, |acc, d| acc.checked_mul(d.unwrap_or(1)));
            let total = width.and_then(|w| w.checked_mul(batch));
            if total.is_none_or(|n| n > ml::caps::MAX_OUTPUT_ELEMENTS) {
                return Err(RunError::BadInput(format!(
                    "{batch} rows would make output {} larger than one request may produce",
                    spec.name
                )));
            }
        }
        Ok(())
    }

    /// Checks names, types, shapes and finiteness; returns the batch size.
    fn check_inputs(&self, inputs: &[NamedTensor]) -> Result<usize, RunError> {
        let mut batch = None;
        for t in inputs {
            if !self.signature.inputs.iter().any(|s| s.name == t.name) {
                return Err(RunError::BadInput(format!(
                    "the model has no input called {}",
                    t.name
                )));
            }
        }
        for spec in &self.signature.inputs {
            let t = inputs
                .iter()
                .find(|t| t.name == spec.name)
                .ok_or_else(|| RunError::BadInput(format!("input {} is missing", spec.name)))?;
            if t.data.dtype() != spec.dtype {
                return Err(RunError::BadInput(format!(
                    "input {} must be {}, not {}",
                    spec.name,
                    spec.dtype.v2_name(),
                    t.data.dtype().v2_name()
                )));
            }
            let shape_ok = t.shape.len() == spec.shape.len()
                && t.shape
                    .iter()
                    .zip(&spec.shape)
                    .skip(1)
                    .all(|(given, declared)| declared.is_none_or(|d| d == *given));
            if !shape_ok || t.shape.first().copied().unwrap_or(0) == 0 {
                return Err(RunError::BadInput(format!(
                    "input {} must have shape {}, not {:?}",
                    spec.name,
                    shape_text(&spec.shape),
                    t.shape
                )));
            }
            let n = t.shape[0];
            if t.data.len() != t.shape.iter().product::<usize>() {
                return Err(RunError::BadInput(format!(
                    "input {} has {} values for shape {:?}",
                    spec.name,
                    t.data.len(),
                    t.shape
                )));
            }
            if !t.data.all_finite() {
                return Err(RunError::BadInput(format!(
                    "input {} contains NaN or infinity",
                    spec.name
                )));
            }
            match batch {
                None => batch = Some(n),
                Some(b) if b != n => {
                    return Err(RunError::BadInput(
                        "all inputs must have the same batch size".into(),
                    ))
                }
                _ => {}
            }
        }
        batch.ok_or_else(|| RunError::BadInput("the model has no inputs".into()))
    }
}

/// Runs `model` once on `rows` rows of zeros (empty text for text inputs): for the fuzzers, to
/// reach the operators' evaluation with whatever a file declared.
#[doc(hidden)]
pub fn smoke_run(model: &LoadedModel, rows: usize) -> Result<Vec<NamedTensor>, RunError> {
    let inputs = model
        .signature
        .inputs
        .iter()
        .map(|spec| {
            let n = rows * spec.row_width();
            let data = match spec.dtype {
                DType::F32 => TensorData::F32(vec![0.0; n]),
                DType::F64 => TensorData::F64(vec![0.0; n]),
                DType::I64 => TensorData::I64(vec![0; n]),
                DType::I32 => TensorData::I32(vec![0; n]),
                DType::Bool => TensorData::Bool(vec![false; n]),
                DType::String => TensorData::String(vec![String::new(); n]),
            };
            let mut shape = vec![rows];
            shape.extend(spec.shape.iter().skip(1).map(|d| d.unwrap_or(1)));
            NamedTensor {
                name: spec.name.clone(),
                shape,
                data,
            }
        })
        .collect();
    model.run(inputs)
}

/// `[-1, 4]` style, as the Open Inference Protocol writes shapes.
pub fn shape_text(shape: &[Option<usize>]) -> String {
    let dims: Vec<String> = shape
        .iter()
        .map(|d| d.map_or_else(|| "-1".to_string(), |d| d.to_string()))
        .collect();
    format!("[{}]", dims.join(", "))
}

#[cfg(test)]
mod tests;
