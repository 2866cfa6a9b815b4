//! Cases from the ONNX-ML operator spec for the preprocessing operators.

use super::categorical::*;
use super::numeric::*;
use super::*;
use crate::ml::Kernel;

fn run(k: &dyn Kernel, input: Tensor) -> Tensor {
    k.eval(tvec![input.into_tvalue()]).unwrap().remove(0)
}

fn floats(t: &Tensor) -> Vec<f32> {
    t.cast_to::<f32>()
        .unwrap()
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

#[test]
fn scaler_subtracts_the_offset_then_multiplies_per_column_or_for_all() {
    let s = Scaler {
        offset: vec![1.0, 10.0],
        scale: vec![2.0, 0.5],
    };
    let out = run(&s, tensor2(&[[3.0f32, 14.0], [1.0, 10.0]]));
    assert_eq!(out.datum_type(), DatumType::F32);
    assert_eq!(floats(&out), vec![4.0, 2.0, 0.0, 0.0]);
    // One coefficient for every column; integer input becomes float.
    let s = Scaler {
        offset: vec![1.0],
        scale: vec![3.0],
    };
    assert_eq!(floats(&run(&s, tensor2(&[[2i64, 4]]))), vec![3.0, 9.0]);
}

#[test]
fn imputer_replaces_nan_or_the_given_marker() {
    let i = Imputer {
        floats: vec![7.0, 8.0],
        ints: vec![],
        replaced_float: f64::NAN,
        replaced_int: 0,
    };
    let out = run(&i, tensor2(&[[f32::NAN, 1.0], [2.0, f32::NAN]]));
    assert_eq!(floats(&out), vec![7.0, 1.0, 2.0, 8.0]);
    let i = Imputer {
        floats: vec![5.0],
        ints: vec![],
        replaced_float: -1.0,
        replaced_int: 0,
    };
    assert_eq!(floats(&run(&i, tensor2(&[[-1.0f32, 3.0]]))), vec![5.0, 3.0]);
    let i = Imputer {
        floats: vec![],
        ints: vec![9],
        replaced_float: 0.0,
        replaced_int: -1,
    };
    let out = run(&i, tensor2(&[[-1i64, 4]]));
    assert_eq!(
        out.to_plain_array_view::<i64>()
            .unwrap()
            .iter()
            .copied()
            .collect::<Vec<_>>(),
        vec![9, 4]
    );
}

#[test]
fn binarizer_is_one_strictly_above_the_threshold() {
    let b = Binarizer { threshold: 1.0 };
    let out = run(&b, tensor2(&[[0.5f64, 1.0, 1.5]]));
    assert_eq!(out.datum_type(), DatumType::F64);
    assert_eq!(floats(&out), vec![0.0, 0.0, 1.0]);
}

#[test]
fn one_hot_encoder_adds_a_dimension_and_zeros_unknown_values() {
    let e = OneHotEncoder {
        keys: Keys::Strings(index(["red".to_string(), "green".into(), "blue".into()])),
        categories: 3,
        zeros: true,
    };
    let out = run(&e, tensor2(&[["blue".to_string()], ["pink".to_string()]]));
    assert_eq!(out.shape(), &[2, 1, 3]);
    assert_eq!(floats(&out), vec![0.0, 0.0, 1.0, 0.0, 0.0, 0.0]);
    let strict = OneHotEncoder { zeros: false, ..e };
    assert!(strict
        .eval(tvec![tensor1(&["pink".to_string()]).into_tvalue()])
        .is_err());
    // Integer categories also take floats holding whole numbers.
    let e = OneHotEncoder {
        keys: Keys::Ints(index([4i64, 8])),
        categories: 2,
        zeros: true,
    };
    assert_eq!(
        floats(&run(&e, tensor1(&[8.0f32, 4.0]))),
        vec![0.0, 1.0, 1.0, 0.0]
    );
}

#[test]
fn label_encoder_maps_keys_and_falls_back_to_the_default() {
    let e = LabelEncoder {
        keys: Keys::Strings(index(["a".to_string(), "b".into()])),
        values: Values::Ints(vec![10, 20], -1),
    };
    let out = run(&e, tensor1(&["b".to_string(), "z".into()]));
    assert_eq!(
        out.to_plain_array_view::<i64>()
            .unwrap()
            .iter()
            .copied()
            .collect::<Vec<_>>(),
        vec![20, -1]
    );
    let e = LabelEncoder {
        keys: Keys::Ints(index([1i64, 2])),
        values: Values::Strings(vec!["one".into(), "two".into()], "_Unused".into()),
    };
    let out = run(&e, tensor1(&[2i64, 3]));
    assert_eq!(
        out.to_plain_array_view::<String>()
            .unwrap()
            .iter()
            .cloned()
            .collect::<Vec<_>>(),
        vec!["two".to_string(), "_Unused".into()]
    );
    let e = LabelEncoder {
        keys: Keys::Floats(index([0.5f64, f64::NAN].map(float_key))),
        values: Values::Floats(vec![1.0, 2.0], -0.0),
    };
    assert_eq!(
        floats(&run(&e, tensor1(&[f32::NAN, 0.5, 3.0]))),
        vec![2.0, 1.0, -0.0]
    );
}
