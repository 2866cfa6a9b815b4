//! Running a loaded model: inputs checked against the signature and the output budget, the
//! plan for the batch size, inline or on the blocking pool by how long runs take.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tract_onnx::prelude::*;

use super::load::{panic_text, plan_for_batch, root_cause};
use super::tensor::{DType, TensorData};
use super::{ml, shape_text, LoadedModel, NamedTensor, Plan, RunError, INLINE_LIMIT_MICROS};

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

impl LoadedModel {
    /// Runs `inputs` together with other requests' that arrive within the batching window
    /// (see [`batching`](super::batching)). The settings of the first call stay for the life of
    /// this loaded model.
    pub async fn run_batched(
        self: &Arc<Self>,
        settings: super::batching::Settings,
        inputs: Vec<NamedTensor>,
    ) -> Result<(Vec<NamedTensor>, RunTimes), RunError> {
        self.batcher
            .get_or_init(|| super::batching::Batcher::start(Arc::downgrade(self), settings))
            .run(inputs)
            .await
    }

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

    /// Checks names, types, shapes and that no value is infinite (NaN, a missing value, is the
    /// doors' to allow or refuse by the card); returns the batch size.
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
            if !t.data.none_infinite() {
                return Err(RunError::BadInput(format!(
                    "input {} contains infinity",
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
