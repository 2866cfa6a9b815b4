//! The ONNX-ML preprocessing operators scikit-learn pipelines export: `Scaler`, `Imputer`,
//! `Binarizer`, `OneHotEncoder` and `LabelEncoder`.

mod categorical;
mod numeric;

pub use categorical::{label_encoder, one_hot_encoder};
pub use numeric::{binarizer, imputer, scaler};

use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

/// Per column, or one value for every column.
fn per_column(values: &[f64], column: usize) -> f64 {
    if values.len() == 1 {
        values[0]
    } else {
        values[column]
    }
}

fn width_of(t: &Tensor) -> usize {
    match t.shape() {
        [] => 1,
        [w] => *w,
        [_, rest @ ..] => rest.iter().product(),
    }
}

fn f64s(node: &NodeProto, name: &str) -> TractResult<Vec<f64>> {
    Ok(node
        .get_attr_opt_vec::<f32>(name)?
        .unwrap_or_default()
        .into_iter()
        .map(f64::from)
        .collect())
}

fn check_lengths(name: &str, len: usize, input: &TypedFact) -> TractResult<()> {
    if len > 1 && input.rank() >= 2 {
        if let Ok(w) = input.shape[input.rank() - 1].to_usize() {
            ensure!(
                len == w,
                "{name} has {len} values for {w} columns (it needs one, or one per column)"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
