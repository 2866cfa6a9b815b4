//! The binary tensor extension: a JSON header of a length the first two bytes give, then raw
//! tensor bytes. Lengths, sizes and string prefixes all come from the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plinth::api::tensors::{decode_inputs, Limits};
use plinth::api::v2::InferRequest;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let header_len = (u16::from_le_bytes([data[0], data[1]]) as usize).min(data.len() - 2);
    let (head, binary) = data[2..].split_at(header_len);
    let Ok(request) = serde_json::from_slice::<InferRequest>(head) else {
        return;
    };
    let inputs = request.input_refs();
    for signature in plinth::api::tensors::fuzz_signatures() {
        let _ = decode_inputs(&signature, "m", &inputs, binary, Limits { max_rows: 1000 });
    }
});
