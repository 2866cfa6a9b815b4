//! Loading an ONNX file: the graph checked before tract builds anything, Plinth's operators
//! registered, the signature read, one plan with a symbolic batch size (or one per size), all
//! under a guard that turns a panic inside tract into an error.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;
use tract_onnx::tract_hir::internal::DimLike;

use crate::tensor::DType;

use super::{
    ml, LoadError, LoadedModel, Plan, Signature, TensorSpec, INLINE_LIMIT_MICROS, MAX_INPUT_COLUMNS,
};

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
pub(super) fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
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
    ml::text::fuse_tokenizers(&mut proto);
    let columns = ml::maps::densify(&mut proto, MAX_INPUT_COLUMNS).map_err(LoadError::Invalid)?;
    let categories = ml::zipmap::categories(&proto);
    let missing = ml::zipmap::missing_columns(&proto);
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
            missing,
            columns,
        },
        metadata,
        plan,
        per_batch,
        // Unknown until measured: the first run goes to the blocking pool.
        recent_micros: AtomicU64::new(INLINE_LIMIT_MICROS + 1),
        batcher: std::sync::OnceLock::new(),
    })
}

pub(super) fn plan_for_batch(
    model: &InferenceModel,
    inputs: &[TensorSpec],
    n: usize,
) -> Result<Plan, String> {
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

pub(super) fn root_cause(e: &anyhow::Error) -> String {
    e.root_cause().to_string()
}
