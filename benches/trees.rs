//! Times Plinth's in-process inference (`LoadedModel::run`: input checks, tensor conversion,
//! the tract plan with Plinth's tree operators, output conversion) on one model and batch size,
//! with the rows of a zoo fixture repeated up to the batch. Prints one JSON line. Driven by
//! `scripts/bench-trees`, which times onnxruntime on the same rows in the same run.
//!
//! With a fifth argument, a shap fixture (`tests/fixtures/zoo/shap/<model>.json`), it also times
//! the explanation of each of the batch's rows (TreeSHAP, with covers counted on the fixture's
//! reference rows, the additivity check included) and prints its mean time per row.
//!
//! Usage: plinth-trees <model.onnx> <fixture.json> <batch> <seconds> [<shap.json>]

use std::time::{Duration, Instant};

use plinth_inference::{load, NamedTensor, TensorData};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (model, fixture, batch, seconds, shap) =
        match args.as_slice() {
            [_, m, f, b, s] => (m, f, b, s, None),
            [_, m, f, b, s, shap] => (m, f, b, s, Some(shap)),
            _ => return Err(
                "usage: plinth-trees <model.onnx> <fixture.json> <batch> <seconds> [<shap.json>]"
                    .into(),
            ),
        };
    let batch: usize = batch.parse()?;
    let seconds: f64 = seconds.parse()?;
    let model_path = model.as_str();
    let model = load(&std::fs::read(model_path)?)?;
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture)?)?;
    let (name, input) = json["inputs"]
        .as_object()
        .and_then(|m| m.iter().next())
        .ok_or("the fixture has no input")?;
    let width = input["shape"][1].as_u64().ok_or("no width")? as usize;
    let rows: Vec<f32> = input["data"]
        .as_array()
        .ok_or("no data")?
        .iter()
        .map(|v| v.as_f64().unwrap_or(0.0) as f32)
        .collect();
    let data: Vec<f32> = rows.iter().copied().cycle().take(batch * width).collect();
    let inputs = || {
        vec![NamedTensor {
            name: name.clone(),
            shape: vec![batch, width],
            data: TensorData::F32(data.clone()),
        }]
    };
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(300) {
        model.run(inputs())?;
    }
    let mut times = Vec::new();
    let started = Instant::now();
    while started.elapsed().as_secs_f64() < seconds {
        let input = inputs();
        let t = Instant::now();
        let out = model.run(input)?;
        times.push(t.elapsed());
        std::hint::black_box(out);
    }
    times.sort();
    let mean = times.iter().sum::<Duration>().as_secs_f64() / times.len() as f64;
    let p50 = times[times.len() / 2].as_secs_f64();
    let explain_us = match shap {
        Some(path) => explain_per_row(model_path, path, &data, batch, width, seconds)?,
        None => f64::NAN,
    };
    println!(
        "{{\"calls\": {}, \"mean_us\": {:.3}, \"p50_us\": {:.3}, \"explain_us_per_row\": {}}}",
        times.len(),
        mean * 1e6,
        p50 * 1e6,
        if explain_us.is_nan() {
            "null".to_string()
        } else {
            format!("{explain_us:.3}")
        }
    );
    Ok(())
}

/// Mean microseconds to explain one row, over the batch's rows, for `seconds`.
fn explain_per_row(
    model_file: &str,
    shap: &str,
    data: &[f32],
    batch: usize,
    width: usize,
    seconds: f64,
) -> Result<f64, Box<dyn std::error::Error>> {
    let explainer = plinth_inference::explain::Explainer::from_onnx(&std::fs::read(model_file)?)?;
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(shap)?)?;
    let reference: Vec<f32> = json["reference"]["data"]
        .as_array()
        .ok_or("no reference rows")?
        .iter()
        .map(|v| v.as_f64().map_or(f32::NAN, |x| x as f32))
        .collect();
    let covers = explainer.covers(&reference, reference.len() / width, width)?;
    let (mut rows, started) = (0usize, Instant::now());
    while started.elapsed().as_secs_f64() < seconds {
        for row in data.chunks_exact(width).take(batch) {
            std::hint::black_box(explainer.explain(&covers, row)?);
            rows += 1;
        }
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / rows.max(1) as f64)
}
