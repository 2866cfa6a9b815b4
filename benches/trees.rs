//! Times Plinth's in-process inference (`LoadedModel::run`: input checks, tensor conversion,
//! the tract plan with Plinth's tree operators, output conversion) on one model and batch size,
//! with the rows of a zoo fixture repeated up to the batch. Prints one JSON line. Driven by
//! `scripts/bench-trees`, which times onnxruntime on the same rows in the same run.
//!
//! Usage: plinth-trees <model.onnx> <fixture.json> <batch> <seconds>

use std::time::{Duration, Instant};

use plinth::inference::{load, NamedTensor, TensorData};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, model, fixture, batch, seconds] = args.as_slice() else {
        return Err("usage: plinth-trees <model.onnx> <fixture.json> <batch> <seconds>".into());
    };
    let batch: usize = batch.parse()?;
    let seconds: f64 = seconds.parse()?;
    let model = load(&std::fs::read(model)?)?;
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
    println!(
        "{{\"calls\": {}, \"mean_us\": {:.3}, \"p50_us\": {:.3}}}",
        times.len(),
        mean * 1e6,
        p50 * 1e6
    );
    Ok(())
}
