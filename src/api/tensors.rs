//! Decoding the Open Inference Protocol's input tensors against a model's signature.
//!
//! Every number a client sends (a shape, a `binary_data_size`, a string's length prefix) is
//! untrusted: each is checked, with overflow-checked arithmetic, against the model's declared
//! shape, the configured row limit and the bytes actually received before anything is sized from
//! it. Nothing here allocates more than the request's own size allows.

use serde_json::{Map, Value};

use crate::registry::card::{Card, Feature};
use plinth_inference::{shape_text, DType, NamedTensor, Signature, TensorData, TensorSpec};

/// Why a request's tensors were refused; the message names the input and the field.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// 400: the tensors do not fit the model or do not hold what they declare.
    Invalid(String),
    /// 413: more rows than one request may carry.
    TooLarge(String),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Invalid(m) | DecodeError::TooLarge(m) => f.write_str(m),
        }
    }
}

fn bad(msg: String) -> DecodeError {
    DecodeError::Invalid(msg)
}

/// One input as a request declares it.
pub struct InputRef<'a> {
    pub name: &'a str,
    pub shape: &'a [i64],
    pub datatype: &'a str,
    pub parameters: &'a Map<String, Value>,
    pub data: Option<&'a Value>,
}

/// The most rows one request may carry.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_rows: usize,
}

/// Reads the tensors of a request against the model's signature: every input of the signature,
/// in signature order, with the batch size. Binary data follows the request's input order.
pub fn decode_inputs(
    signature: &Signature,
    model: &str,
    inputs: &[InputRef<'_>],
    binary: &[u8],
    limits: Limits,
) -> Result<(Vec<NamedTensor>, usize), DecodeError> {
    for input in inputs {
        if !signature.inputs.iter().any(|s| s.name == input.name) {
            return Err(bad(format!(
                "unexpected inference input {:?} for model {model}",
                input.name
            )));
        }
    }
    // Where each input's binary data starts: the sizes are checked against the body here, so a
    // huge binary_data_size never becomes an offset past it.
    let mut offsets = Vec::with_capacity(inputs.len());
    let mut at = 0usize;
    for input in inputs {
        offsets.push(at);
        if let Some(size) = input.parameters.get("binary_data_size") {
            let size = binary_size(input.name, size)?;
            at = at
                .checked_add(size)
                .filter(|end| *end <= binary.len())
                .ok_or_else(|| {
                    bad(format!(
                        "input {}: parameters.binary_data_size ({size}) runs past the {} bytes of binary data in the body",
                        input.name,
                        binary.len()
                    ))
                })?;
        }
    }
    let mut tensors = Vec::with_capacity(signature.inputs.len());
    let mut batch = None;
    for spec in &signature.inputs {
        let (ix, input) = inputs
            .iter()
            .enumerate()
            .find(|(_, i)| i.name == spec.name)
            .ok_or_else(|| bad(format!("expected input {:?} for model {model}", spec.name)))?;
        let shape = check_shape(spec, input, limits)?;
        let n = shape[0];
        if batch.is_some_and(|b| b != n) {
            return Err(bad(
                "all inputs must have the same batch size (shape[0])".into()
            ));
        }
        batch = Some(n);
        let rest = binary.get(offsets[ix]..).unwrap_or_default();
        let data = read_data(spec, input, &shape, rest)?;
        tensors.push(NamedTensor {
            name: spec.name.clone(),
            shape,
            data,
        });
    }
    Ok((tensors, batch.unwrap_or(0)))
}

fn binary_size(name: &str, size: &Value) -> Result<usize, DecodeError> {
    size.as_u64()
        .and_then(|s| usize::try_from(s).ok())
        .ok_or_else(|| {
            bad(format!(
                "input {name}: parameters.binary_data_size must be a non-negative integer, not {size}"
            ))
        })
}

/// The request's shape, checked against the model's and the row limit, as sizes.
fn check_shape(
    spec: &TensorSpec,
    input: &InputRef<'_>,
    limits: Limits,
) -> Result<Vec<usize>, DecodeError> {
    if input.datatype != spec.dtype.v2_name() {
        return Err(bad(format!(
            "input {}: datatype {} does not match the model's {}",
            input.name,
            input.datatype,
            spec.dtype.v2_name()
        )));
    }
    let mismatch = || {
        bad(format!(
            "input {}: shape {:?} does not match the model's {}",
            input.name,
            input.shape,
            shape_text(&spec.shape)
        ))
    };
    if input.shape.len() != spec.shape.len() {
        return Err(mismatch());
    }
    let first = *input.shape.first().ok_or_else(mismatch)?;
    if first <= 0 {
        return Err(bad(format!(
            "input {}: shape[0] (the batch) must be at least 1, not {first}",
            input.name
        )));
    }
    // The row limit is checked before the batch is used for anything.
    if u64::try_from(first).map_or(true, |n| n > limits.max_rows as u64) {
        return Err(DecodeError::TooLarge(format!(
            "input {}: shape[0] is {first} rows; one request may carry at most {}",
            input.name, limits.max_rows
        )));
    }
    let fixed_ok = input
        .shape
        .iter()
        .zip(&spec.shape)
        .skip(1)
        .all(|(g, d)| d.is_some_and(|d| u64::try_from(*g).is_ok_and(|g| g == d as u64)));
    if !fixed_ok {
        return Err(mismatch());
    }
    // Every dimension now fits: the batch is at most max_rows, the rest are the model's.
    Ok(input.shape.iter().map(|d| *d as usize).collect())
}

/// Elements in a tensor of `shape`, or an error when the product overflows.
fn elements(name: &str, shape: &[usize]) -> Result<usize, DecodeError> {
    shape
        .iter()
        .try_fold(1usize, |acc, d| acc.checked_mul(*d))
        .ok_or_else(|| bad(format!("input {name}: shape {shape:?} is too large")))
}

fn read_data(
    spec: &TensorSpec,
    input: &InputRef<'_>,
    shape: &[usize],
    binary: &[u8],
) -> Result<TensorData, DecodeError> {
    let count = elements(input.name, shape)?;
    let data = match (input.data, input.parameters.get("binary_data_size")) {
        (Some(values), None) => {
            let flat = flatten(input.name, values, shape, count)?;
            from_json(input.name, spec.dtype, &flat)?
        }
        (None, Some(size)) => {
            let size = binary_size(input.name, size)?;
            let bytes = binary.get(..size).ok_or_else(|| {
                bad(format!(
                    "input {}: the body holds less binary data than parameters.binary_data_size",
                    input.name
                ))
            })?;
            from_binary(input.name, spec.dtype, bytes, count)?
        }
        (Some(_), Some(_)) => {
            return Err(bad(format!(
                "input {}: both data and parameters.binary_data_size given",
                input.name
            )))
        }
        (None, None) => return Err(bad(format!("input {}: no data", input.name))),
    };
    if !data.none_infinite() {
        return Err(bad(format!(
            "input {}: infinity is not a valid input",
            input.name
        )));
    }
    Ok(data)
}

/// The values of `data`, flat or nested, refusing as soon as there are more than `count`.
fn flatten<'v>(
    name: &str,
    value: &'v Value,
    shape: &[usize],
    count: usize,
) -> Result<Vec<&'v Value>, DecodeError> {
    fn walk<'v>(value: &'v Value, out: &mut Vec<&'v Value>, count: usize, depth: usize) -> bool {
        match value {
            Value::Array(items) => {
                depth < 64 && items.iter().all(|v| walk(v, out, count, depth + 1))
            }
            other => {
                out.push(other);
                out.len() <= count
            }
        }
    }
    let mut out = Vec::new();
    if !walk(value, &mut out, count, 0) || out.len() != count {
        let held = if out.len() > count {
            format!("more than {count}")
        } else {
            out.len().to_string()
        };
        return Err(bad(format!(
            "input {name}: {held} values for shape {shape:?}; it needs {count}"
        )));
    }
    Ok(out)
}

/// Decodes `count` little-endian elements of `dtype` from `bytes`.
fn from_binary(
    name: &str,
    dtype: DType,
    bytes: &[u8],
    count: usize,
) -> Result<TensorData, DecodeError> {
    let width = match dtype {
        DType::F32 | DType::I32 => 4,
        DType::F64 | DType::I64 => 8,
        DType::Bool => 1,
        DType::String => 0,
    };
    if width > 0 && count.checked_mul(width) != Some(bytes.len()) {
        return Err(bad(format!(
            "input {name}: {} bytes of binary data for {count} {} elements",
            bytes.len(),
            dtype.v2_name()
        )));
    }
    /// Every `W`-byte chunk, read by `from` (the lengths were checked above).
    fn le<T, const W: usize>(bytes: &[u8], from: fn([u8; W]) -> T) -> Vec<T> {
        bytes
            .chunks_exact(W)
            .map(|c| {
                let mut word = [0u8; W];
                word.copy_from_slice(c);
                from(word)
            })
            .collect()
    }
    Ok(match dtype {
        DType::F32 => TensorData::F32(le(bytes, f32::from_le_bytes)),
        DType::I32 => TensorData::I32(le(bytes, i32::from_le_bytes)),
        DType::F64 => TensorData::F64(le(bytes, f64::from_le_bytes)),
        DType::I64 => TensorData::I64(le(bytes, i64::from_le_bytes)),
        DType::Bool => TensorData::Bool(bytes.iter().map(|b| *b != 0).collect()),
        DType::String => {
            // Each element is a 4-byte length, then that many bytes: at most len/4 elements.
            let mut out = Vec::with_capacity(count.min(bytes.len() / 4));
            let mut rest = bytes;
            while rest.len() >= 4 && out.len() < count {
                let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let Some(s) = rest.get(4..).and_then(|r| r.get(..len)) else {
                    break;
                };
                out.push(String::from_utf8_lossy(s).into_owned());
                rest = &rest[4 + len..];
            }
            if out.len() != count || !rest.is_empty() {
                return Err(bad(format!(
                    "input {name}: binary BYTES data does not hold exactly {count} elements"
                )));
            }
            TensorData::String(out)
        }
    })
}

/// Converts JSON values to `dtype`, naming the first that does not fit.
fn float_or_missing(v: &Value) -> Option<f64> {
    v.as_f64().or_else(|| v.is_null().then_some(f64::NAN))
}

/// Refuses NaN (a missing value, from binary data or a JSON null) wherever the card does not
/// allow the feature to be missing; the message names the feature and the row. `tensors` are in
/// signature order, as `decode_inputs` returns them.
pub fn check_missing(
    card: &Card,
    signature: &Signature,
    tensors: &[NamedTensor],
) -> Result<(), DecodeError> {
    let mut offset = 0;
    for (spec, t) in signature.inputs.iter().zip(tensors) {
        let width = spec.row_width().max(1);
        let feature = |i: usize| card.features.get(offset + i % width);
        if let Some(i) = t
            .data
            .first_nan(|i| feature(i).is_some_and(Feature::allows_missing))
        {
            let what = feature(i).map_or_else(
                || format!("column {}", i % width),
                |f| format!("feature {}", f.name),
            );
            return Err(bad(format!(
                "input {}: row {}: a missing value (NaN or null) for {what}, which the model needs",
                spec.name,
                i / width
            )));
        }
        offset += width;
    }
    Ok(())
}

fn from_json(name: &str, dtype: DType, values: &[&Value]) -> Result<TensorData, DecodeError> {
    let wrong = |v: &Value| {
        bad(format!(
            "input {name}: {v} is not a {} value",
            dtype.v2_name()
        ))
    };
    fn all<T>(
        values: &[&Value],
        f: impl Fn(&Value) -> Option<T>,
        wrong: impl Fn(&Value) -> DecodeError,
    ) -> Result<Vec<T>, DecodeError> {
        values
            .iter()
            .map(|v| f(v).ok_or_else(|| wrong(v)))
            .collect()
    }
    Ok(match dtype {
        // JSON has no NaN: null stands for a missing value (checked against the card later).
        DType::F32 => TensorData::F32(all(
            values,
            |v| float_or_missing(v).map(|x| x as f32),
            wrong,
        )?),
        DType::F64 => TensorData::F64(all(values, float_or_missing, wrong)?),
        DType::I64 => TensorData::I64(all(values, Value::as_i64, wrong)?),
        DType::I32 => TensorData::I32(all(
            values,
            |v| v.as_i64().and_then(|x| i32::try_from(x).ok()),
            wrong,
        )?),
        DType::Bool => TensorData::Bool(all(values, Value::as_bool, wrong)?),
        DType::String => {
            TensorData::String(all(values, |v| v.as_str().map(str::to_string), wrong)?)
        }
    })
}

/// Signatures for the fuzzers and property tests: iris's (four FP32 columns) and a text model's
/// (one BYTES column).
#[doc(hidden)]
pub fn fuzz_signatures() -> [Signature; 2] {
    let one = |name: &str, dtype, width| Signature {
        inputs: vec![TensorSpec {
            name: name.into(),
            dtype,
            shape: vec![None, Some(width)],
        }],
        outputs: vec![],
        labels: None,
        categories: Default::default(),
        missing: Default::default(),
        columns: Default::default(),
    };
    [one("X", DType::F32, 4), one("city", DType::String, 1)]
}

#[cfg(test)]
mod tests;
