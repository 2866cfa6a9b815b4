use super::*;

fn card() -> Card {
    Card::parse(&std::fs::read_to_string("models/iris/1/card.toml").unwrap()).unwrap()
}

#[test]
fn text_categories_count_as_their_choice_on_both_sides() {
    let card = Card::parse(&std::fs::read_to_string("tests/fixtures/renewals.card.toml").unwrap())
        .unwrap();
    let reference = reference_columns(b"age,city\n40,Oslo\n50,Turin\n60,Atlantis\n", &card);
    assert_eq!(reference["age"], vec![40.0, 50.0, 60.0]);
    assert_eq!(reference["city"], vec![1.0, 3.0], "unknown text is skipped");
    let current = current_columns(
        &card,
        &[
            json!({"age": 41, "city": "Lyon"}),
            json!({"age": 42, "city": "Oslo"}),
        ],
    );
    assert_eq!(current["city"], vec![0.0, 1.0]);
}

/// Missing values count as a category of their own: the same numbers with a third of them
/// missing drift on the missing share alone; the same share on both sides does not.
#[test]
fn the_share_of_missing_values_is_compared_beside_the_numbers() {
    let mut card = card();
    card.features[0].missing = crate::registry::card::Missing::Allowed;
    let name = card.features[0].name.clone();
    let mut csv = format!("{name},note\n");
    for i in 0..300 {
        if i % 10 == 0 {
            csv.push_str(",gap\n");
        } else {
            csv.push_str(&format!("{},-\n", 4.0 + (i % 37) as f64 / 10.0));
        }
    }
    let reference = reference_columns(csv.as_bytes(), &card);
    assert_eq!(reference[&name].iter().filter(|v| v.is_nan()).count(), 30);
    let window = |every: usize| -> Vec<Value> {
        (0..300)
            .map(|i| {
                if i % every == 0 {
                    json!({ name.as_str(): null })
                } else {
                    json!({ name.as_str(): 4.0 + (i % 37) as f64 / 10.0 })
                }
            })
            .collect()
    };
    let same = compare(&card, &reference, &current_columns(&card, &window(10)));
    let moved = compare(&card, &reference, &current_columns(&card, &window(3)));
    assert!(!same[0].drifted, "{:?}", same[0]);
    assert!(moved[0].drifted, "{:?}", moved[0]);
    assert!(
        moved[0].method.contains("missing share"),
        "{}",
        moved[0].method
    );
    let shares = moved[0].histogram["missing"].as_array().unwrap();
    assert!((shares[0].as_f64().unwrap() - 0.1).abs() < 1e-9);
    assert!((shares[1].as_f64().unwrap() - 100.0 / 300.0).abs() < 1e-9);
    // The bars and the missing share make up every row.
    let bars: f64 = moved[0].histogram["current"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .sum();
    assert!((bars + shares[1].as_f64().unwrap() - 1.0).abs() < 1e-9);
    // A feature that may not be missing skips a gap, as before.
    let strict = current_columns(&self::card(), &window(3));
    assert!(strict[&name].iter().all(|v| !v.is_nan()));
}

/// A deterministic pseudo-random stream (xorshift), so the windows are fixed.
fn noise(seed: u64, n: usize) -> Vec<f64> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 10_000) as f64 / 10_000.0
        })
        .collect()
}

fn window(
    reference: &BTreeMap<String, Vec<f64>>,
    seed: u64,
    n: usize,
    shift: f64,
) -> BTreeMap<String, Vec<f64>> {
    reference
        .iter()
        .map(|(k, v)| {
            let picks = noise(seed + k.len() as u64, n);
            let col = picks
                .iter()
                .map(|p| v[(p * v.len() as f64) as usize % v.len()] + shift)
                .collect();
            (k.clone(), col)
        })
        .collect()
}

#[test]
fn a_shifted_window_drifts_and_an_unshifted_one_does_not() {
    let card = card();
    let csv = std::fs::read("models/iris/1/reference.csv").unwrap();
    let reference = reference_columns(&csv, &card);
    assert_eq!(reference["sepal_length"].len(), 105);

    let quiet = compare(&card, &reference, &window(&reference, 7, 200, 0.0));
    assert_eq!(quiet.len(), 4);
    assert!(!dataset_drifted(&quiet), "{quiet:#?}");
    assert!(quiet.iter().all(|f| f.method == "Kolmogorov-Smirnov"));

    let shifted = compare(&card, &reference, &window(&reference, 7, 200, 0.8));
    assert!(dataset_drifted(&shifted), "{shifted:#?}");
    assert!(shifted.iter().all(|f| f.drifted && f.psi > 0.1));
}
