//! Element types and tensor data, converted to and from tract's tensors.

use serde::{Deserialize, Serialize};
use tract_onnx::prelude::*;

/// Element types Plinth passes to and from models.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    F64,
    I64,
    I32,
    Bool,
    String,
}

impl DType {
    pub(super) fn from_datum(dt: DatumType) -> Option<DType> {
        Some(match dt {
            DatumType::F32 => DType::F32,
            DatumType::F64 => DType::F64,
            // tract sometimes carries integer outputs as symbolic dimensions.
            DatumType::I64 | DatumType::TDim => DType::I64,
            DatumType::I32 => DType::I32,
            DatumType::Bool => DType::Bool,
            DatumType::String => DType::String,
            _ => return None,
        })
    }

    pub(super) fn datum(self) -> DatumType {
        match self {
            DType::F32 => DatumType::F32,
            DType::F64 => DatumType::F64,
            DType::I64 => DatumType::I64,
            DType::I32 => DatumType::I32,
            DType::Bool => DatumType::Bool,
            DType::String => DatumType::String,
        }
    }

    /// The Open Inference Protocol's name for the type.
    pub fn v2_name(self) -> &'static str {
        match self {
            DType::F32 => "FP32",
            DType::F64 => "FP64",
            DType::I64 => "INT64",
            DType::I32 => "INT32",
            DType::Bool => "BOOL",
            DType::String => "BYTES",
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64)
    }
}

/// The flat, row-major contents of a tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    Bool(Vec<bool>),
    String(Vec<String>),
}

impl TensorData {
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::F64(_) => DType::F64,
            TensorData::I64(_) => DType::I64,
            TensorData::I32(_) => DType::I32,
            TensorData::Bool(_) => DType::Bool,
            TensorData::String(_) => DType::String,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::F64(v) => v.len(),
            TensorData::I64(v) => v.len(),
            TensorData::I32(v) => v.len(),
            TensorData::Bool(v) => v.len(),
            TensorData::String(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when no value is infinite. NaN is a missing value: the doors let it through only
    /// for the features a card allows to be missing.
    pub fn none_infinite(&self) -> bool {
        match self {
            TensorData::F32(v) => !v.iter().any(|x| x.is_infinite()),
            TensorData::F64(v) => !v.iter().any(|x| x.is_infinite()),
            _ => true,
        }
    }

    /// The position of the first NaN that `allowed` refuses (by position), for float data.
    pub fn first_nan(&self, mut allowed: impl FnMut(usize) -> bool) -> Option<usize> {
        match self {
            TensorData::F32(v) => v
                .iter()
                .enumerate()
                .position(|(i, x)| x.is_nan() && !allowed(i)),
            TensorData::F64(v) => v
                .iter()
                .enumerate()
                .position(|(i, x)| x.is_nan() && !allowed(i)),
            _ => None,
        }
    }

    /// Element `i` as a float, for numeric types.
    pub fn get_f64(&self, i: usize) -> Option<f64> {
        match self {
            TensorData::F32(v) => v.get(i).map(|x| *x as f64),
            TensorData::F64(v) => v.get(i).copied(),
            TensorData::I64(v) => v.get(i).map(|x| *x as f64),
            TensorData::I32(v) => v.get(i).map(|x| *x as f64),
            TensorData::Bool(v) => v.get(i).map(|x| f64::from(u8::from(*x))),
            TensorData::String(_) => None,
        }
    }

    /// Element `i` as JSON.
    pub fn get_json(&self, i: usize) -> serde_json::Value {
        match self {
            TensorData::String(v) => v
                .get(i)
                .map_or(serde_json::Value::Null, |s| s.clone().into()),
            TensorData::Bool(v) => v.get(i).map_or(serde_json::Value::Null, |b| (*b).into()),
            TensorData::I64(v) => v.get(i).map_or(serde_json::Value::Null, |x| (*x).into()),
            TensorData::I32(v) => v.get(i).map_or(serde_json::Value::Null, |x| (*x).into()),
            _ => self
                .get_f64(i)
                .and_then(serde_json::Number::from_f64)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
        }
    }

    pub(super) fn into_tensor(self, shape: &[usize]) -> Result<Tensor, String> {
        fn build<T: Datum>(shape: &[usize], v: Vec<T>) -> Result<Tensor, String> {
            tract_ndarray::ArrayD::from_shape_vec(tract_ndarray::IxDyn(shape), v)
                .map(IntoTensor::into_tensor)
                .map_err(|e| e.to_string())
        }
        match self {
            TensorData::F32(v) => build(shape, v),
            TensorData::F64(v) => build(shape, v),
            TensorData::I64(v) => build(shape, v),
            TensorData::I32(v) => build(shape, v),
            TensorData::Bool(v) => build(shape, v),
            TensorData::String(v) => build(shape, v),
        }
    }

    pub(super) fn from_tensor(t: &Tensor) -> Result<TensorData, String> {
        fn flat<T: Datum + Clone>(t: &Tensor) -> Result<Vec<T>, String> {
            t.to_plain_array_view::<T>()
                .map(|a| a.iter().cloned().collect())
                .map_err(|e| e.to_string())
        }
        Ok(match t.datum_type() {
            DatumType::F32 => TensorData::F32(flat(t)?),
            DatumType::F64 => TensorData::F64(flat(t)?),
            DatumType::I64 => TensorData::I64(flat(t)?),
            DatumType::I32 => TensorData::I32(flat(t)?),
            DatumType::Bool => TensorData::Bool(flat(t)?),
            DatumType::String => TensorData::String(flat(t)?),
            DatumType::TDim => {
                let cast = t.cast_to::<i64>().map_err(|e| format!("TDim: {e}"))?;
                TensorData::I64(flat(&cast)?)
            }
            other => {
                let cast = t.cast_to::<f32>().map_err(|e| format!("{other:?}: {e}"))?;
                TensorData::F32(flat(&cast)?)
            }
        })
    }
}
