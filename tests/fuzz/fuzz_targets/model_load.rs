//! Model loading with Plinth's ONNX-ML operators registered: any bytes as an ONNX file. What
//! loads is run once on a small batch.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(model) = plinth::inference::load(data) else {
        return;
    };
    let _ = plinth::inference::smoke_run(&model, 2);
});
