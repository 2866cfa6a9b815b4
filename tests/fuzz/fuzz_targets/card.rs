//! The model card (TOML), parsed and checked against iris's and a text model's signatures.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plinth::registry::card::Card;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(card) = Card::parse(text) else { return };
    for signature in plinth::api::tensors::fuzz_signatures() {
        if card.check_against(&signature).is_ok() {
            let _ = card.example_row();
            let _ = plinth::routes::models::form::markdown(&card.description);
        }
    }
});
