//! `OneHotEncoder` and `LabelEncoder`: categories, as numbers or strings, to indices and back.

use super::super::{built, named, Dims, Kernel, Output};
use std::collections::HashMap;
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

/// The categories of a `OneHotEncoder` or the keys of a `LabelEncoder`.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Keys {
    Ints(HashMap<i64, usize>),
    Strings(HashMap<String, usize>),
    /// Floats compared by bit pattern (NaN keys match NaN).
    Floats(HashMap<u64, usize>),
}

pub(super) fn float_key(v: f64) -> u64 {
    if v.is_nan() {
        f64::NAN.to_bits()
    } else if v == 0.0 {
        0
    } else {
        v.to_bits()
    }
}

impl Keys {
    /// The position of each element of `x` among the keys.
    fn positions(&self, x: &Tensor) -> TractResult<Vec<Option<usize>>> {
        Ok(match self {
            Keys::Strings(map) => {
                ensure!(
                    x.datum_type() == DatumType::String,
                    "this input must hold strings"
                );
                x.try_as_plain_ram()?
                    .as_slice::<String>()?
                    .iter()
                    .map(|s| map.get(s).copied())
                    .collect()
            }
            Keys::Ints(map) => {
                ensure!(
                    x.datum_type() != DatumType::String,
                    "this input must hold numbers"
                );
                let wide = x.cast_to::<i64>()?;
                wide.try_as_plain_ram()?
                    .as_slice::<i64>()?
                    .iter()
                    .map(|v| map.get(v).copied())
                    .collect()
            }
            Keys::Floats(map) => {
                ensure!(
                    x.datum_type() != DatumType::String,
                    "this input must hold numbers"
                );
                let wide = x.cast_to::<f64>()?;
                wide.try_as_plain_ram()?
                    .as_slice::<f64>()?
                    .iter()
                    .map(|v| map.get(&float_key(*v)).copied())
                    .collect()
            }
        })
    }
}

pub(super) fn index<K: std::hash::Hash + Eq>(
    keys: impl IntoIterator<Item = K>,
) -> HashMap<K, usize> {
    let mut map = HashMap::new();
    for (i, k) in keys.into_iter().enumerate() {
        map.entry(k).or_insert(i);
    }
    map
}

/// `OneHotEncoder`: one column per category, 1 where the value is that category.
#[derive(Debug)]
pub struct OneHotEncoder {
    pub(super) keys: Keys,
    pub(super) categories: usize,
    /// Unknown values give a row of zeros (else they are an error).
    pub(super) zeros: bool,
}

pub fn one_hot_encoder(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let ints: Vec<i64> = node.get_attr_opt_vec("cats_int64s")?.unwrap_or_default();
    let strings: Vec<String> = node.get_attr_opt_vec("cats_strings")?.unwrap_or_default();
    let (keys, categories) = match (ints.is_empty(), strings.is_empty()) {
        (false, true) => (Keys::Ints(index(ints.iter().copied())), ints.len()),
        (true, false) => (Keys::Strings(index(strings.iter().cloned())), strings.len()),
        _ => bail!(
            "{}: exactly one of cats_int64s and cats_strings must be given",
            named(node)
        ),
    };
    ensure!(
        categories <= crate::ml::caps::MAX_CATEGORIES,
        "{}: {categories} categories is more than Plinth serves ({})",
        named(node),
        crate::ml::caps::MAX_CATEGORIES
    );
    built(OneHotEncoder {
        keys,
        categories,
        zeros: node.get_attr_opt::<i64>("zeros")?.unwrap_or(1) != 0,
    })
}

impl Kernel for OneHotEncoder {
    fn name(&self) -> &'static str {
        "OneHotEncoder"
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::new(DatumType::F32, Dims::Appended(self.categories))]
    }

    fn eval(&self, inputs: TVec<TValue>) -> TractResult<TVec<Tensor>> {
        let x = &inputs[0];
        let positions = self.keys.positions(x)?;
        let c = self.categories;
        crate::ml::check_output("OneHotEncoder", positions.len(), c)?;
        let mut out = vec![0f32; positions.len() * c];
        for (i, p) in positions.iter().enumerate() {
            match p {
                Some(k) => out[i * c + k] = 1.0,
                None if self.zeros => {}
                None => bail!("OneHotEncoder: a value is not one of the known categories"),
            }
        }
        let mut shape: Vec<usize> = x.shape().to_vec();
        shape.push(c);
        Ok(tvec![
            tract_ndarray::ArrayD::from_shape_vec(shape, out)?.into_tensor()
        ])
    }
}

/// The values a `LabelEncoder` maps to.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Values {
    Ints(Vec<i64>, i64),
    Strings(Vec<String>, String),
    Floats(Vec<f32>, f32),
}

/// `LabelEncoder`: maps each key to its value, anything else to the default.
#[derive(Debug)]
pub struct LabelEncoder {
    pub(super) keys: Keys,
    pub(super) values: Values,
}

pub fn label_encoder(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let default_int = node.get_attr_opt::<i64>("default_int64")?.unwrap_or(-1);
    let default_string = node
        .get_attr_opt::<String>("default_string")?
        .unwrap_or_else(|| "_Unused".to_string());
    let default_float = node.get_attr_opt::<f32>("default_float")?.unwrap_or(-0.0);
    // Opset 1: `classes_strings`, mapping strings to their index or indices to strings.
    if let Some(classes) = node.get_attr_opt_vec::<String>("classes_strings")? {
        let to_strings = node.get_attr_opt::<String>("default_string")?.is_some()
            && node.get_attr_opt::<i64>("default_int64")?.is_none();
        let encoder = if to_strings {
            LabelEncoder {
                keys: Keys::Ints(index(0..classes.len() as i64)),
                values: Values::Strings(classes, default_string),
            }
        } else {
            let n = classes.len() as i64;
            LabelEncoder {
                keys: Keys::Strings(index(classes)),
                values: Values::Ints((0..n).collect(), default_int),
            }
        };
        return built(encoder);
    }
    let key_ints: Option<Vec<i64>> = node.get_attr_opt_vec("keys_int64s")?;
    let key_strings: Option<Vec<String>> = node.get_attr_opt_vec("keys_strings")?;
    let key_floats: Option<Vec<f32>> = node.get_attr_opt_vec("keys_floats")?;
    let (keys, n) = match (key_ints, key_strings, key_floats) {
        (Some(k), None, None) => (Keys::Ints(index(k.iter().copied())), k.len()),
        (None, Some(k), None) => (Keys::Strings(index(k.iter().cloned())), k.len()),
        (None, None, Some(k)) => (
            Keys::Floats(index(k.iter().map(|v| float_key(*v as f64)))),
            k.len(),
        ),
        _ => bail!(
            "{}: exactly one of keys_int64s, keys_strings and keys_floats must be given",
            named(node)
        ),
    };
    let value_ints: Option<Vec<i64>> = node.get_attr_opt_vec("values_int64s")?;
    let value_strings: Option<Vec<String>> = node.get_attr_opt_vec("values_strings")?;
    let value_floats: Option<Vec<f32>> = node.get_attr_opt_vec("values_floats")?;
    let values = match (value_ints, value_strings, value_floats) {
        (Some(v), None, None) => Values::Ints(v, default_int),
        (None, Some(v), None) => Values::Strings(v, default_string),
        (None, None, Some(v)) => Values::Floats(v, default_float),
        _ => bail!(
            "{}: exactly one of values_int64s, values_strings and values_floats must be given",
            named(node)
        ),
    };
    let len = match &values {
        Values::Ints(v, _) => v.len(),
        Values::Strings(v, _) => v.len(),
        Values::Floats(v, _) => v.len(),
    };
    ensure!(len == n, "{}: {n} keys but {len} values", named(node));
    built(LabelEncoder { keys, values })
}

impl Kernel for LabelEncoder {
    fn name(&self) -> &'static str {
        "LabelEncoder"
    }

    fn outputs(&self) -> Vec<Output> {
        let dt = match self.values {
            Values::Ints(..) => DatumType::I64,
            Values::Strings(..) => DatumType::String,
            Values::Floats(..) => DatumType::F32,
        };
        vec![Output::new(dt, Dims::Input)]
    }

    fn eval(&self, inputs: TVec<TValue>) -> TractResult<TVec<Tensor>> {
        let x = &inputs[0];
        let positions = self.keys.positions(x)?;
        let shape = x.shape().to_vec();
        fn out<T: Datum + Clone>(
            shape: Vec<usize>,
            p: &[Option<usize>],
            v: &[T],
            d: &T,
        ) -> TractResult<Tensor> {
            let data: Vec<T> = p
                .iter()
                .map(|p| p.map_or_else(|| d.clone(), |i| v[i].clone()))
                .collect();
            Ok(tract_ndarray::ArrayD::from_shape_vec(shape, data)?.into_tensor())
        }
        Ok(tvec![match &self.values {
            Values::Ints(v, d) => out(shape, &positions, v, d)?,
            Values::Strings(v, d) => out(shape, &positions, v, d)?,
            Values::Floats(v, d) => out(shape, &positions, v, d)?,
        }])
    }
}
