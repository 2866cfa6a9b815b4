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
use serde_json::{json, Value};

use crate::api::check_rows;
use crate::auth::bearer::InferenceCaller;
use crate::config::Platform;
use crate::error::AppError;
use crate::registry::Selector;
use crate::serving;
use crate::state::AppState;

mod rows;

use rows::{csv_field, rows_of, wants_csv};

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
    let names = plinth_store::models::model_names(&state.pool, 6).await?;
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
