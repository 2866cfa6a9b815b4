//! The Open Inference Protocol's JSON request, decoded against iris's and a text model's
//! signatures: any bytes, no panic, no allocation sized by an unchecked number.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plinth::api::tensors::{decode_inputs, Limits};
use plinth::api::v2::InferRequest;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = serde_json::from_slice::<InferRequest>(data) else {
        return;
    };
    let inputs = request.input_refs();
    for signature in plinth::api::tensors::fuzz_signatures() {
        let _ = decode_inputs(&signature, "m", &inputs, &[], Limits { max_rows: 1000 });
    }
});
