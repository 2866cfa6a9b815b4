//! The floor: the least work one JSON prediction can cost on this stack. actix-web and tract
//! serving one ONNX model at `POST /predict` (the peers' body, `{"inputs": [[f1, f2, …], …]}`),
//! with no authentication, no checks, no logging and no storage. `scripts/bench` measures Plinth
//! against it; it is not part of Plinth.
//!
//! Build: `cargo build --release --features floor --bin plinth-floor`
//! Run:   `plinth-floor MODEL.onnx 127.0.0.1:9101`

use std::sync::Arc;

use actix_web::{web, App, HttpResponse, HttpServer};
use serde::Deserialize;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

type Plan = Arc<TypedRunnableModel>;

#[derive(Deserialize)]
struct Req {
    inputs: Vec<Vec<f32>>,
}

fn load(path: &str) -> TractResult<(Plan, usize)> {
    let mut model = tract_onnx::onnx().model_for_path(path)?;
    let fact = model.input_fact(0)?.clone();
    let width = fact
        .shape
        .dims()
        .nth(1)
        .and_then(|d| d.concretize())
        .and_then(|d| d.to_i64().ok())
        .unwrap_or(1) as usize;
    let n = model.symbols.sym("N");
    model.set_input_fact(0, f32::fact([n.into(), TDim::from(width)]).into())?;
    Ok((model.into_optimized()?.into_runnable()?, width))
}

async fn predict(plan: web::Data<(Plan, usize)>, req: web::Json<Req>) -> HttpResponse {
    let (plan, width) = (&plan.0, plan.1);
    let rows = req.inputs.len();
    let flat: Vec<f32> = req.inputs.iter().flatten().copied().collect();
    let Ok(input) = tract_ndarray::Array2::from_shape_vec((rows, width), flat) else {
        return HttpResponse::BadRequest().finish();
    };
    let Ok(outputs) = plan.run(tvec!(Tensor::from(input).into())) else {
        return HttpResponse::BadRequest().finish();
    };
    let mut body = serde_json::Map::new();
    if let Some(first) = outputs.first() {
        let predictions = match first.to_plain_array_view::<i64>() {
            Ok(view) => serde_json::json!(view.iter().collect::<Vec<_>>()),
            Err(_) => match first.to_plain_array_view::<f32>() {
                Ok(view) => serde_json::json!(view.iter().collect::<Vec<_>>()),
                Err(_) => serde_json::Value::Null,
            },
        };
        body.insert("predictions".into(), predictions);
    }
    if let Some(probs) = outputs
        .get(1)
        .and_then(|t| t.to_plain_array_view::<f32>().ok())
    {
        let rows: Vec<Vec<f32>> = probs
            .outer_iter()
            .map(|r| r.iter().copied().collect())
            .collect();
        body.insert("probabilities".into(), serde_json::json!(rows));
    }
    HttpResponse::Ok().json(body)
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let model = args
        .next()
        .unwrap_or_else(|| "models/iris/1/model.onnx".into());
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9101".into());
    let plan = load(&model).map_err(|e| std::io::Error::other(format!("{model}: {e}")))?;
    let data = web::Data::new(plan);
    HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/predict", web::post().to(predict))
    })
    .bind(addr)?
    .run()
    .await
}
