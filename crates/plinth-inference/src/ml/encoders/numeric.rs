//! `Scaler`, `Imputer` and `Binarizer`: numbers in, numbers out, column by column.

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

use super::super::{built, named, Dims, Kernel, Output};
use super::{check_lengths, f64s, per_column, width_of};

/// `Scaler`: `(x - offset) * scale`, as floats.
#[derive(Debug)]
pub struct Scaler {
    pub offset: Vec<f64>,
    pub scale: Vec<f64>,
}

pub fn scaler(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let mut offset = f64s(node, "offset")?;
    let mut scale = f64s(node, "scale")?;
    if offset.is_empty() {
        offset.push(0.0);
    }
    if scale.is_empty() {
        scale.push(1.0);
    }
    built(Scaler { offset, scale })
}

impl Kernel for Scaler {
    fn name(&self) -> &'static str {
        "Scaler"
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::new(DatumType::F32, Dims::Input)]
    }

    fn check(&self, input: &TypedFact) -> TractResult<()> {
        check_lengths("Scaler's offset", self.offset.len(), input)?;
        check_lengths("Scaler's scale", self.scale.len(), input)
    }

    fn eval(&self, inputs: TVec<TValue>) -> TractResult<TVec<Tensor>> {
        let x = inputs[0].cast_to::<f64>()?;
        let w = width_of(&x);
        ensure!(
            (self.offset.len() == 1 || self.offset.len() == w)
                && (self.scale.len() == 1 || self.scale.len() == w),
            "Scaler has coefficients for {} columns, not {w}",
            self.offset.len().max(self.scale.len())
        );
        let src = x.try_as_plain_ram()?.as_slice::<f64>()?;
        let data: Vec<f32> = src
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let c = i % w.max(1);
                ((s - per_column(&self.offset, c)) * per_column(&self.scale, c)) as f32
            })
            .collect();
        let out = tract_ndarray::ArrayD::from_shape_vec(x.shape(), data)?.into_tensor();
        Ok(tvec![out])
    }
}

/// `Imputer`: replaces the missing marker (NaN, or a given value) with a value per column.
#[derive(Debug)]
pub struct Imputer {
    pub(super) floats: Vec<f64>,
    pub(super) ints: Vec<i64>,
    pub(super) replaced_float: f64,
    pub(super) replaced_int: i64,
}

pub fn imputer(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let floats = f64s(node, "imputed_value_floats")?;
    let ints: Vec<i64> = node
        .get_attr_opt_vec("imputed_value_int64s")?
        .unwrap_or_default();
    ensure!(
        floats.is_empty() != ints.is_empty(),
        "{}: exactly one of imputed_value_floats and imputed_value_int64s must be given",
        named(node)
    );
    built(Imputer {
        floats,
        ints,
        replaced_float: node
            .get_attr_opt::<f32>("replaced_value_float")?
            .unwrap_or(0.0) as f64,
        replaced_int: node
            .get_attr_opt::<i64>("replaced_value_int64")?
            .unwrap_or(0),
    })
}

impl Imputer {
    fn replace_float(&self, x: f64, column: usize) -> f64 {
        let missing = if self.replaced_float.is_nan() {
            x.is_nan()
        } else {
            x == self.replaced_float
        };
        if missing {
            per_column(&self.floats, column)
        } else {
            x
        }
    }
}

impl Kernel for Imputer {
    fn name(&self) -> &'static str {
        "Imputer"
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output {
            dt: None,
            dims: Dims::Input,
        }]
    }

    fn check(&self, input: &TypedFact) -> TractResult<()> {
        check_lengths(
            "Imputer's values",
            self.floats.len().max(self.ints.len()),
            input,
        )
    }

    fn eval(&self, inputs: TVec<TValue>) -> TractResult<TVec<Tensor>> {
        let x = &inputs[0];
        let w = width_of(x).max(1);
        let n = self.floats.len().max(self.ints.len());
        ensure!(
            n == 1 || n == w,
            "Imputer has values for {n} columns, not {w}"
        );
        let mut out = x.clone().into_tensor();
        match out.datum_type() {
            DatumType::F32 => {
                ensure!(
                    !self.floats.is_empty(),
                    "Imputer has integer values for a float input"
                );
                for (i, v) in out
                    .try_as_plain_ram_mut()?
                    .as_slice_mut::<f32>()?
                    .iter_mut()
                    .enumerate()
                {
                    *v = self.replace_float(*v as f64, i % w) as f32;
                }
            }
            DatumType::F64 => {
                ensure!(
                    !self.floats.is_empty(),
                    "Imputer has integer values for a float input"
                );
                for (i, v) in out
                    .try_as_plain_ram_mut()?
                    .as_slice_mut::<f64>()?
                    .iter_mut()
                    .enumerate()
                {
                    *v = self.replace_float(*v, i % w);
                }
            }
            DatumType::I64 => {
                ensure!(
                    !self.ints.is_empty(),
                    "Imputer has float values for an integer input"
                );
                for (i, v) in out
                    .try_as_plain_ram_mut()?
                    .as_slice_mut::<i64>()?
                    .iter_mut()
                    .enumerate()
                {
                    if *v == self.replaced_int {
                        *v = if self.ints.len() == 1 {
                            self.ints[0]
                        } else {
                            self.ints[i % w]
                        };
                    }
                }
            }
            other => bail!("Imputer does not take {other:?}"),
        }
        Ok(tvec![out])
    }
}

/// `Binarizer`: 1 where the value is above the threshold, else 0, in the input's type.
#[derive(Debug)]
pub struct Binarizer {
    pub(super) threshold: f64,
}

pub fn binarizer(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    built(Binarizer {
        threshold: node.get_attr_opt::<f32>("threshold")?.unwrap_or(0.0) as f64,
    })
}

impl Kernel for Binarizer {
    fn name(&self) -> &'static str {
        "Binarizer"
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output {
            dt: None,
            dims: Dims::Input,
        }]
    }

    fn eval(&self, inputs: TVec<TValue>) -> TractResult<TVec<Tensor>> {
        let x = &inputs[0];
        let dt = x.datum_type();
        let wide = x.cast_to::<f64>()?;
        let values: Vec<f64> = wide
            .try_as_plain_ram()?
            .as_slice::<f64>()?
            .iter()
            .map(|v| if *v > self.threshold { 1.0 } else { 0.0 })
            .collect();
        let out = tract_ndarray::ArrayD::from_shape_vec(x.shape(), values)?.into_tensor();
        Ok(tvec![out.cast_to_dt(dt)?.into_owned()])
    }
}
