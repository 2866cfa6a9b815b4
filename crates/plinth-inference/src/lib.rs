//! The only module that knows tract: loading ONNX files, their signature, running them.
//!
//! A [`LoadedModel`] holds one optimised plan with a symbolic batch dimension `N`, shared by every
//! worker (`run` takes `&self`). Graphs whose shapes cannot stay symbolic fall back to one plan
//! per batch size, built on first use. Inputs are checked against the signature before tract
//! sees them: given too few columns, some ONNX-ML operators read out of bounds instead of failing.

pub mod batching;
pub mod explain;
mod load;
pub mod ml;
mod run;
mod tensor;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tract_onnx::prelude::*;

pub use load::load;
pub use run::{run_async, smoke_run, RunTimes};
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
    /// For float inputs, the columns the graph itself handles when missing (input name →
    /// columns): see `ml::zipmap::missing_columns`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub missing: BTreeMap<String, Vec<usize>>,
    /// For inputs that were maps (`DictVectorizer`, `CastMap`: see `ml::maps`), the keys their
    /// columns stand for (input name → keys); an absent key is 0.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub columns: BTreeMap<String, Vec<String>>,
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
    /// The dynamic batching queue, started by the first batched run.
    batcher: std::sync::OnceLock<batching::Batcher>,
}

/// Runs taking longer than this go to the blocking pool, off the async workers. A model is
/// loaded believing it is slow, until its first run says otherwise.
const INLINE_LIMIT_MICROS: u64 = 300;

/// The most values one input row may have (a form field or a card feature each).
pub const MAX_INPUT_COLUMNS: usize = 65_536;

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("signature", &self.signature)
            .finish()
    }
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

/// The tests read the repository's fixtures (`models/`, `tests/fixtures/`) by paths relative to
/// its root, which is two levels above this crate: cargo runs a crate's tests in the crate's own
/// directory.
#[cfg(test)]
#[ctor::ctor(unsafe)]
fn tests_run_at_the_repository_root() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    std::env::set_current_dir(root).expect("the repository root");
}
