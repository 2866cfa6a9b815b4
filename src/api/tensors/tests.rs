use proptest::prelude::*;
use serde_json::json;

use super::*;

fn iris() -> Signature {
    let [iris, _] = fuzz_signatures();
    iris
}

fn text() -> Signature {
    let [_, text] = fuzz_signatures();
    text
}

const LIMITS: Limits = Limits { max_rows: 1000 };

fn decode(
    signature: &Signature,
    name: &str,
    shape: &[i64],
    datatype: &str,
    parameters: &Map<String, Value>,
    data: Option<&Value>,
    binary: &[u8],
) -> Result<(Vec<NamedTensor>, usize), DecodeError> {
    let input = InputRef {
        name,
        shape,
        datatype,
        parameters,
        data,
    };
    decode_inputs(signature, "m", &[input], binary, LIMITS)
}

fn binary_params(size: u64) -> Map<String, Value> {
    let mut p = Map::new();
    p.insert("binary_data_size".into(), size.into());
    p
}

#[test]
fn a_huge_declared_batch_is_refused_before_anything_is_sized_from_it() {
    let data = json!([1]);
    for first in [10_000_000_000_000i64, 1 << 59, i64::MAX, 1001] {
        let err = decode(
            &iris(),
            "X",
            &[first, 4],
            "FP32",
            &Map::new(),
            Some(&data),
            &[],
        )
        .unwrap_err();
        assert!(
            matches!(&err, DecodeError::TooLarge(m) if m.contains("shape[0]")),
            "{err:?}"
        );
    }
    let err = decode(&iris(), "X", &[0, 4], "FP32", &Map::new(), Some(&data), &[]).unwrap_err();
    assert!(err.to_string().contains("shape[0]"), "{err}");
    let err = decode(
        &iris(),
        "X",
        &[1, -4],
        "FP32",
        &Map::new(),
        Some(&data),
        &[],
    )
    .unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
}

#[test]
fn a_huge_binary_data_size_is_checked_against_the_body() {
    let err = decode(
        &iris(),
        "X",
        &[1, 4],
        "FP32",
        &binary_params(u64::MAX),
        None,
        &[0; 16],
    )
    .unwrap_err();
    assert!(err.to_string().contains("binary_data_size"), "{err}");
    let err = decode(
        &iris(),
        "X",
        &[1, 4],
        "FP32",
        &binary_params(17),
        None,
        &[0; 16],
    )
    .unwrap_err();
    assert!(err.to_string().contains("binary_data_size"), "{err}");
    let (tensors, n) = decode(
        &iris(),
        "X",
        &[1, 4],
        "FP32",
        &binary_params(16),
        None,
        &[0; 16],
    )
    .unwrap();
    assert_eq!((tensors[0].data.len(), n), (4, 1));
}

#[test]
fn binary_strings_with_lying_lengths_are_refused() {
    let mut body = Vec::new();
    body.extend(u32::MAX.to_le_bytes());
    body.extend(b"Lyon");
    let err = decode(
        &text(),
        "city",
        &[1, 1],
        "BYTES",
        &binary_params(8),
        None,
        &body,
    )
    .unwrap_err();
    assert!(err.to_string().contains("BYTES"), "{err}");
    let mut body = Vec::new();
    body.extend(4u32.to_le_bytes());
    body.extend(b"Lyon");
    let (tensors, _) = decode(
        &text(),
        "city",
        &[1, 1],
        "BYTES",
        &binary_params(8),
        None,
        &body,
    )
    .unwrap();
    assert_eq!(tensors[0].data, TensorData::String(vec!["Lyon".into()]));
}

#[test]
fn too_many_or_too_few_json_values_are_named() {
    let err = decode(
        &iris(),
        "X",
        &[1, 4],
        "FP32",
        &Map::new(),
        Some(&json!([1, 2, 3, 4, 5])),
        &[],
    )
    .unwrap_err();
    assert!(err.to_string().contains("more than 4"), "{err}");
    let err = decode(
        &iris(),
        "X",
        &[2, 4],
        "FP32",
        &Map::new(),
        Some(&json!([[1, 2, 3, 4]])),
        &[],
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("4 values for shape [2, 4]; it needs 8"),
        "{err}"
    );
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        any::<i64>().prop_map(Value::from),
        prop::collection::vec(b'a'..=b'z', 0..4)
            .prop_map(|b| Value::from(String::from_utf8_lossy(&b).into_owned())),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop::collection::vec(inner, 0..8).prop_map(Value::from)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Whatever the shape, sizes, data and body, decoding answers without panicking, and what it
    /// accepts holds exactly the declared number of elements.
    #[test]
    fn decoding_never_panics_and_accepts_only_consistent_tensors(
        shape in prop::collection::vec(prop_oneof![any::<i64>(), -2i64..6], 0..4),
        size in prop::option::of(prop_oneof![any::<u64>(), 0u64..64]),
        data in prop::option::of(any_json()),
        binary in prop::collection::vec(any::<u8>(), 0..64),
        string_model in any::<bool>(),
    ) {
        let (signature, name, datatype) = if string_model {
            (text(), "city", "BYTES")
        } else {
            (iris(), "X", "FP32")
        };
        let params = size.map(binary_params).unwrap_or_default();
        if let Ok((tensors, n)) = decode(&signature, name, &shape, datatype, &params, data.as_ref(), &binary) {
            let t = &tensors[0];
            prop_assert_eq!(t.data.len(), t.shape.iter().product::<usize>());
            prop_assert!((1..=LIMITS.max_rows).contains(&n));
        }
    }

    /// Rows sent as binary or as JSON come back as the same numbers.
    #[test]
    fn binary_and_json_rows_decode_to_the_same_values(
        rows in prop::collection::vec(prop::array::uniform4(-1e6f32..1e6), 1..20),
    ) {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let bytes: Vec<u8> = flat.iter().flat_map(|x| x.to_le_bytes()).collect();
        let shape = [rows.len() as i64, 4];
        let (binary, _) = decode(&iris(), "X", &shape, "FP32", &binary_params(bytes.len() as u64), None, &bytes).unwrap();
        let data = json!(rows);
        let (json, n) = decode(&iris(), "X", &shape, "FP32", &Map::new(), Some(&data), &[]).unwrap();
        prop_assert_eq!(n, rows.len());
        prop_assert_eq!(&binary[0].data, &TensorData::F32(flat));
        prop_assert_eq!(&binary[0].data, &json[0].data);
    }
}
