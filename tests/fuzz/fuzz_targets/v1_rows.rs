//! JSON v1's rows of named features, read against the shipped cards (numbers with bounds,
//! categories, booleans).
#![no_main]

use libfuzzer_sys::fuzz_target;
use plinth::registry::card::Card;

const CARDS: [&str; 3] = [
    include_str!("../../../models/iris/1/card.toml"),
    include_str!("../../../models/diabetes/1/card.toml"),
    include_str!("../../fixtures/renewals.card.toml"),
];

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    for text in CARDS {
        let Ok(card) = Card::parse(text) else {
            continue;
        };
        match &value {
            serde_json::Value::Array(rows) => {
                for (i, row) in rows.iter().enumerate() {
                    let _ = plinth::api::v1::row_from_json(&card, row, Some(i));
                }
            }
            one => {
                let _ = plinth::api::v1::row_from_json(&card, one, None);
            }
        }
    }
});
