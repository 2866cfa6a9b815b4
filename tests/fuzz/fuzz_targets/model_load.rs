//! Model loading with Plinth's ONNX-ML operators registered: any bytes as an ONNX file. What
//! loads is run once on a small batch.
//!
//! Plinth's contract is that loading and running never take the process down: a panic inside
//! tract (third-party code reading an untrusted file) is caught by `inference::load` and
//! `LoadedModel::run` and becomes a refusal. So a panic raised in a dependency's source (tract's,
//! or the standard library's when tract calls it, such as a sort given NaN) unwinds to that guard
//! here too; a panic located in Plinth's own source (its operators: indexing, overflow and
//! `unwrap` report the caller's line) aborts and is reported as a crash, as does one the guard
//! misses.
#![no_main]

use libfuzzer_sys::fuzz_target;

fn panic_policy() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_dependency = info.location().is_some_and(|l| {
                l.file().contains("/.cargo/registry/") || l.file().starts_with("/rustc/")
            });
            if !in_dependency {
                abort(info);
            }
        }));
    });
}

fuzz_target!(|data: &[u8]| {
    panic_policy();
    let Ok(model) = plinth_inference::load(data) else {
        return;
    };
    let _ = plinth_inference::smoke_run(&model, 2);
});
