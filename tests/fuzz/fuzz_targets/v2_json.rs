//! The Open Inference Protocol's JSON request, decoded against iris's and a text model's
//! signatures: any bytes, no panic, no allocation sized by an unchecked number.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plinth::api::tensors::{decode_inputs, InputRef, Limits};
use plinth::api::v2::InferRequest;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = serde_json::from_slice::<InferRequest>(data) else {
        return;
    };
    let inputs: Vec<InputRef<'_>> = request
        .inputs
        .iter()
        .map(|i| InputRef {
            name: &i.name,
            shape: &i.shape,
            datatype: &i.datatype,
            parameters: &i.parameters,
            data: i.data.as_ref(),
        })
        .collect();
    for signature in plinth::api::tensors::fuzz_signatures() {
        let _ = decode_inputs(&signature, "m", &inputs, &[], Limits { max_rows: 1000 });
    }
});
