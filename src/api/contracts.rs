//! The serving contracts of the ML platforms, on the same models, log and metrics as the rest:
//!
//! - MLflow's scoring protocol (`mlflow models serve`, and MLflow's own SageMaker and Azure
//!   deployments): `POST /invocations` with `dataframe_split`, `dataframe_records`,
//!   `instances` or `inputs` JSON, or `text/csv`; `{"predictions": [...]}` back; `GET /ping`,
//!   `/health`, `/version`. Always on.
//! - Amazon SageMaker (bring your own container): the same `/invocations` and `/ping`, CSV rows
//!   as Batch Transform sends them, the answer in the format `Accept` asks for, and
//!   `GET /execution-parameters`. On when SageMaker's variables are present.
//! - Vertex AI custom containers: `{"instances": [...], "parameters": {...}}` at
//!   `AIP_PREDICT_ROUTE`, health at `AIP_HEALTH_ROUTE`. On when Vertex's variables are present.
//! - Azure Machine Learning online endpoints: `POST /score` with `input_data` (split or
//!   records) or `data`, a JSON array back. On when `AZUREML_MODEL_DIR` is present.
//!
//! They serve one model: `PLINTH_DEFAULT_MODEL`, or the only one there is, at its `production`
//! alias. Each answers its errors in its platform's shape, with a 4xx status naming what is
//! wrong.

use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};

use crate::api::check_rows;
use crate::api::v1::row_from_json;
use crate::auth::bearer::InferenceCaller;
use crate::config::Platform;
use crate::error::AppError;
use crate::registry::card::{Card, FeatureKind};
use crate::registry::Selector;
use crate::serving;
use crate::state::AppState;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Contract {
    Mlflow,
    SageMaker,
    Vertex,
    AzureMl,
}

impl Contract {
    fn source(self) -> &'static str {
        match self {
            Contract::Mlflow => "mlflow",
            Contract::SageMaker => Platform::SageMaker.source(),
            Contract::Vertex => Platform::Vertex.source(),
            Contract::AzureMl => Platform::AzureMl.source(),
        }
    }

    /// An error in the platform's shape: MLflow's `{"error_code", "message"}` (which SageMaker
    /// passes on to the caller as the container's answer), `{"error"}` for Vertex and Azure ML.
    fn error(self, status: StatusCode, message: &str) -> HttpResponse {
        let body = match self {
            Contract::Mlflow | Contract::SageMaker => {
                let code = match status.as_u16() {
                    401 => "UNAUTHENTICATED",
                    403 => "PERMISSION_DENIED",
                    404 => "RESOURCE_DOES_NOT_EXIST",
                    429 => "REQUEST_LIMIT_EXCEEDED",
                    503 => "TEMPORARILY_UNAVAILABLE",
                    s if s >= 500 => "INTERNAL_ERROR",
                    _ => "BAD_REQUEST",
                };
                json!({"error_code": code, "message": message})
            }
            Contract::Vertex | Contract::AzureMl => json!({"error": message}),
        };
        HttpResponse::build(status).json(body)
    }

    fn app_error(self, e: &AppError) -> HttpResponse {
        use actix_web::ResponseError;
        self.error(e.status_code(), &e.public_message())
    }
}

/// `POST /invocations`: MLflow's scoring protocol, or SageMaker's when it runs Plinth.
pub async fn invocations(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    let contract = if state.settings.platform == Some(Platform::SageMaker) {
        Contract::SageMaker
    } else {
        Contract::Mlflow
    };
    score(contract, &req, &body, &state).await
}

/// Vertex AI's predict route (`AIP_PREDICT_ROUTE`).
pub async fn vertex_predict(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    score(Contract::Vertex, &req, &body, &state).await
}

/// Azure Machine Learning's scoring route, `POST /score`.
pub async fn azureml_score(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    score(Contract::AzureMl, &req, &body, &state).await
}

/// `GET /ping` (SageMaker, MLflow), `/health` (MLflow) and Vertex's health route: 200 when the
/// database answers and the served versions are loaded; 503 with the reason otherwise.
pub async fn ping(state: web::Data<AppState>) -> HttpResponse {
    let ready = crate::routes::ops::readyz(state).await;
    if ready.status().is_success() {
        HttpResponse::Ok().content_type("text/plain").body("\n")
    } else {
        ready
    }
}

/// `GET /version`, as MLflow's scoring server has it: the server's version.
pub async fn version() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain")
        .body(concat!("plinth ", env!("CARGO_PKG_VERSION")))
}

/// `GET /execution-parameters`: what SageMaker Batch Transform should send.
pub async fn execution_parameters(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "MaxConcurrentTransforms": state.settings.workers,
        "BatchStrategy": "MULTI_RECORD",
        "MaxPayloadInMB": (state.settings.max_body_bytes >> 20).max(1),
    }))
}

async fn score(
    contract: Contract,
    req: &HttpRequest,
    body: &[u8],
    state: &AppState,
) -> HttpResponse {
    let caller = match InferenceCaller::extract(req).await {
        Ok(InferenceCaller(caller, _)) => caller,
        Err(e) => {
            let status = e.as_response_error().status_code();
            return contract.error(
                status,
                "A valid API token is required (Authorization: Bearer …).",
            );
        }
    };
    let name = match model_name(state).await {
        Ok(name) => name,
        Err(e) => return contract.app_error(&e),
    };
    let served = match serving::routed(state, &name, &Selector::default(), caller).await {
        Ok(served) => served,
        Err(e) => return contract.app_error(&e),
    };
    let rows = match rows_of(contract, req, body, &served.card) {
        Ok(rows) => rows,
        Err(message) => {
            serving::rejected(state, &served, contract.source());
            return contract.error(StatusCode::BAD_REQUEST, &message);
        }
    };
    // SageMaker Batch Transform fills each request up to MaxPayloadInMB (the body limit), which
    // for narrow rows is far more than PLINTH_MAX_BATCH_ROWS: there the body limit is the bound.
    if contract != Contract::SageMaker {
        if let Err(e) = check_rows(state, rows.len()) {
            return contract.app_error(&e);
        }
    }
    let answer =
        match serving::predict_rows(state, &served, &rows, &[], caller, contract.source()).await {
            Ok(answer) => answer,
            Err(e) => return contract.app_error(&e),
        };
    let predictions: Vec<Value> = answer
        .outcomes
        .iter()
        .map(|o| match (&o.label, o.value) {
            (Some(label), _) => Value::String(label.clone()),
            (None, Some(v)) => json!(v),
            (None, None) => Value::Null,
        })
        .collect();
    // The contracts' bodies have no place for it: which version answered (a canary's candidate
    // or production) goes in a header.
    let mut ok = HttpResponse::Ok();
    ok.insert_header((serving::VERSION_HEADER, served.version.version.to_string()));
    match contract {
        Contract::AzureMl => ok.json(predictions),
        Contract::SageMaker | Contract::Mlflow if wants_csv(req) => {
            let mut text = String::new();
            for p in &predictions {
                match p {
                    Value::String(s) => text.push_str(&csv_field(s)),
                    other => text.push_str(&other.to_string()),
                }
                text.push('\n');
            }
            ok.content_type("text/csv").body(text)
        }
        _ => ok.json(json!({"predictions": predictions})),
    }
}

/// The model these contracts serve.
async fn model_name(state: &AppState) -> Result<String, AppError> {
    if let Some(name) = &state.settings.default_model {
        return Ok(name.clone());
    }
    // Every request asks, so only as much as the answer needs: a name per model, up to a few.
    let names = crate::db::models::model_names(&state.pool, 6).await?;
    match names.as_slice() {
        [only] => Ok(only.clone()),
        [] => Err(AppError::Unavailable("No model is registered yet.".into())),
        many => Err(AppError::NotFound(format!(
            "Several models are registered ({}{}); set PLINTH_DEFAULT_MODEL to the one to serve here.",
            many[..many.len().min(5)].join(", "),
            if many.len() > 5 { ", …" } else { "" }
        ))),
    }
}

fn wants_csv(req: &HttpRequest) -> bool {
    req.headers()
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().starts_with("text/csv")))
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The rows a request carries, checked against the card.
fn rows_of(
    contract: Contract,
    req: &HttpRequest,
    body: &[u8],
    card: &Card,
) -> Result<Vec<Vec<f64>>, String> {
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let objects = match content_type.as_str() {
        "text/csv" | "application/csv" if contract != Contract::Vertex => csv_rows(body, card)?,
        "application/json" | "" => {
            let value: Value = serde_json::from_slice(body)
                .map_err(|e| format!("The body is not valid JSON: {e}."))?;
            json_rows(contract, value, card)?
        }
        other => {
            let accepted = if contract == Contract::Vertex {
                "application/json"
            } else {
                "application/json or text/csv"
            };
            return Err(format!(
                "Content type {other:?} is not accepted here; send {accepted}."
            ));
        }
    };
    if objects.is_empty() {
        return Err("Send at least one row.".into());
    }
    objects
        .iter()
        .enumerate()
        .map(|(i, row)| row_from_json(card, row, Some(i)))
        .collect()
}

/// CSV rows without a header, the card's features in order (SageMaker Batch Transform, MLflow).
fn csv_rows(body: &[u8], card: &Card) -> Result<Vec<Value>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(body);
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| format!("row {i}: not valid CSV: {e}"))?;
        if record.iter().all(str::is_empty) {
            continue;
        }
        let values: Vec<Value> = record
            .iter()
            .map(|v| Value::String(v.to_string()))
            .collect();
        rows.push(positional(card, &values, i)?);
    }
    Ok(rows)
}

/// A row given as a list of values in the card's feature order, as named features.
fn positional(card: &Card, values: &[Value], i: usize) -> Result<Value, String> {
    if values.len() != card.features.len() {
        return Err(format!(
            "row {i}: expected {} values ({}), got {}",
            card.features.len(),
            feature_names(card),
            values.len()
        ));
    }
    let mut map = Map::new();
    for (f, v) in card.features.iter().zip(values) {
        map.insert(f.name.clone(), typed(f.kind, v));
    }
    Ok(Value::Object(map))
}

/// CSV cells and loosely typed JSON: numbers given as text become numbers, `true`/`false`
/// booleans; category choices stay text.
fn typed(kind: FeatureKind, v: &Value) -> Value {
    let Value::String(s) = v else {
        return v.clone();
    };
    match kind {
        FeatureKind::Category => v.clone(),
        FeatureKind::Boolean if s.eq_ignore_ascii_case("true") => Value::Bool(true),
        FeatureKind::Boolean if s.eq_ignore_ascii_case("false") => Value::Bool(false),
        _ => s
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or_else(|| v.clone(), Value::Number),
    }
}

fn feature_names(card: &Card) -> String {
    card.features
        .iter()
        .map(|f| f.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn json_rows(contract: Contract, value: Value, card: &Card) -> Result<Vec<Value>, String> {
    let Value::Object(mut top) = value else {
        return Err(match contract {
            Contract::Vertex => "Send a JSON object: {\"instances\": [...]}.".into(),
            Contract::AzureMl => "Send a JSON object: {\"input_data\": ...} or {\"data\": [...]}.".into(),
            _ => "Send a JSON object with one of dataframe_split, dataframe_records, instances or inputs.".into(),
        });
    };
    let (formats, extras): (&[&str], &[&str]) = match contract {
        Contract::Vertex => (&["instances"], &["parameters"]),
        Contract::AzureMl => (
            &[
                "input_data",
                "data",
                "dataframe_split",
                "dataframe_records",
                "instances",
                "inputs",
            ],
            &["params", "parameters"],
        ),
        _ => (
            &[
                "dataframe_split",
                "dataframe_records",
                "instances",
                "inputs",
            ],
            &["params"],
        ),
    };
    if let Some(unknown) = top
        .keys()
        .find(|k| !formats.contains(&k.as_str()) && !extras.contains(&k.as_str()))
    {
        return Err(format!(
            "Unknown field {unknown:?}; expected one of {}.",
            formats.join(", ")
        ));
    }
    let given: Vec<&str> = formats
        .iter()
        .copied()
        .filter(|f| top.contains_key(*f))
        .collect();
    let format = match given.as_slice() {
        [one] => *one,
        [] => return Err(format!("Expected one of {}.", formats.join(", "))),
        many => return Err(format!("Give one of {}, not several.", many.join(", "))),
    };
    let data = top.remove(format).unwrap_or(Value::Null);
    match format {
        "dataframe_split" => split_rows(data, card),
        "dataframe_records" => records(data, card, format),
        "input_data" => match data {
            Value::Object(_) => split_rows(data, card),
            other => records(other, card, format),
        },
        // instances, inputs, data: rows as objects or as lists in feature order, or (inputs)
        // one list per feature.
        _ => match data {
            Value::Object(columns) if format == "inputs" => column_rows(columns),
            other => records(other, card, format),
        },
    }
}

/// `{"columns": [...], "data": [[...]], "index": [...]}`, pandas' split orientation.
fn split_rows(data: Value, card: &Card) -> Result<Vec<Value>, String> {
    let Value::Object(mut split) = data else {
        return Err("dataframe_split must be an object with columns and data.".into());
    };
    if let Some(unknown) = split
        .keys()
        .find(|k| !["columns", "data", "index"].contains(&k.as_str()))
    {
        return Err(format!(
            "dataframe_split: unknown field {unknown:?} (columns, data, index)."
        ));
    }
    let rows = match split.remove("data") {
        Some(Value::Array(rows)) => rows,
        _ => return Err("dataframe_split: data must be a list of rows.".into()),
    };
    let columns = match split.remove("columns") {
        None => None,
        Some(Value::Array(cols)) => Some(
            cols.iter()
                .map(|c| {
                    c.as_str()
                        .map(str::to_string)
                        .ok_or("dataframe_split: columns must be names.")
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => return Err("dataframe_split: columns must be a list of names.".into()),
    };
    rows.into_iter()
        .enumerate()
        .map(|(i, row)| {
            let Value::Array(values) = row else {
                return Err(format!("row {i}: each row of data must be a list"));
            };
            match &columns {
                None => positional(card, &values, i),
                Some(cols) => {
                    if cols.len() != values.len() {
                        return Err(format!(
                            "row {i}: {} columns but {} values",
                            cols.len(),
                            values.len()
                        ));
                    }
                    let kinds = |name: &str| {
                        card.features
                            .iter()
                            .find(|f| f.name == name)
                            .map_or(FeatureKind::Number, |f| f.kind)
                    };
                    Ok(Value::Object(
                        cols.iter()
                            .zip(&values)
                            .map(|(c, v)| (c.clone(), typed(kinds(c), v)))
                            .collect(),
                    ))
                }
            }
        })
        .collect()
}

/// A list of rows, each an object of named features or a list in the card's feature order.
fn records(data: Value, card: &Card, format: &str) -> Result<Vec<Value>, String> {
    let Value::Array(rows) = data else {
        return Err(format!("{format} must be a list of rows."));
    };
    rows.into_iter()
        .enumerate()
        .map(|(i, row)| match row {
            Value::Object(_) => Ok(row),
            Value::Array(values) => positional(card, &values, i),
            other => Err(format!(
                "row {i}: expected an object of named features or a list of {} values, got {other}",
                card.features.len()
            )),
        })
        .collect()
}

/// `{"feature": [v0, v1, ...], ...}`: MLflow's column-oriented `inputs`.
fn column_rows(columns: Map<String, Value>) -> Result<Vec<Value>, String> {
    let mut lists = Vec::new();
    for (name, values) in &columns {
        let Value::Array(values) = values else {
            return Err(format!("inputs.{name} must be a list of values."));
        };
        lists.push((name, values));
    }
    let n = lists.first().map_or(0, |(_, v)| v.len());
    if let Some((name, v)) = lists.iter().find(|(_, v)| v.len() != n) {
        return Err(format!(
            "inputs.{name} has {} values where the others have {n}.",
            v.len()
        ));
    }
    Ok((0..n)
        .map(|i| {
            Value::Object(
                lists
                    .iter()
                    .map(|(name, values)| ((*name).clone(), values[i].clone()))
                    .collect(),
            )
        })
        .collect())
}
