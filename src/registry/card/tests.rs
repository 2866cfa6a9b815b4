//! Cards parsed, derived from a signature, and checked against it.

use super::*;
use plinth_inference::TensorSpec;

fn iris_signature() -> Signature {
    Signature {
        inputs: vec![TensorSpec {
            name: "X".into(),
            dtype: DType::F32,
            shape: vec![None, Some(4)],
        }],
        outputs: vec![
            TensorSpec {
                name: "label".into(),
                dtype: DType::I64,
                shape: vec![None],
            },
            TensorSpec {
                name: "probabilities".into(),
                dtype: DType::F32,
                shape: vec![None, Some(3)],
            },
        ],
        labels: None,
        categories: Default::default(),
        missing: Default::default(),
        columns: Default::default(),
    }
}

fn shipped(name: &str) -> Card {
    Card::parse(&std::fs::read_to_string(format!("models/{name}/1/card.toml")).unwrap()).unwrap()
}

#[test]
fn the_shipped_iris_card_matches_its_signature() {
    let card = shipped("iris");
    assert_eq!(card.features.len(), 4);
    assert_eq!(card.features[0].unit.as_deref(), Some("cm"));
    assert_eq!(card.label_name(2), "virginica");
    card.check_against(&iris_signature()).unwrap();
}

#[test]
fn a_card_with_the_wrong_feature_count_is_refused() {
    let mut card = shipped("iris");
    card.features.pop();
    let err = card.check_against(&iris_signature()).unwrap_err();
    assert_eq!(
        err,
        "The card lists 3 features but the model's input X takes 4 columns."
    );
}

#[test]
fn a_card_with_the_wrong_label_count_is_refused() {
    let mut card = shipped("iris");
    card.labels = Some(vec!["a".into(), "b".into()]);
    assert!(card
        .check_against(&iris_signature())
        .unwrap_err()
        .contains("2 labels"));
}

#[test]
fn unknown_card_fields_are_named() {
    let err = Card::parse("title = \"x\"\ncolour = \"red\"\n").unwrap_err();
    assert!(err.contains("colour"), "{err}");
}

#[test]
fn without_a_card_the_signature_gives_the_form() {
    let card = Card::derived("mystery", &iris_signature());
    assert_eq!(card.features.len(), 4);
    assert_eq!(card.task, Task::Classification);
    assert_eq!(card.label_name(1), "1");
    card.check_against(&iris_signature()).unwrap();
}

#[test]
fn values_are_checked_against_type_and_bounds() {
    let card = shipped("iris");
    let f = &card.features[0];
    assert_eq!(f.check(5.0), Ok(5.0));
    assert!(f.check(f64::NAN).unwrap_err().contains("finite"));
    assert!(f.check(100.0).unwrap_err().contains("between 4.3 and 7.9"));
    let int = Feature {
        kind: FeatureKind::Integer,
        min: None,
        max: None,
        ..f.clone()
    };
    assert!(int.check(1.5).is_err());
}

#[test]
fn the_example_row_fills_the_form() {
    assert_eq!(shipped("iris").example_row(), vec![5.1, 3.5, 1.4, 0.2]);
    let digits = shipped("digits");
    assert_eq!(digits.example_row().len(), 64);
}
