//! The Open Inference Protocol (KServe V2), as Triton, KServe and MLServer speak it, including
//! the binary tensor extension tritonclient uses by default.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use super::check_rows;
use super::tensors::{check_missing, decode_inputs, DecodeError, InputRef, Limits};
use super::v1::ErrorBody;
use crate::auth::InferenceCaller;
use crate::error::AppError;
use crate::registry::{signature_of, Selector, Served};
use crate::serving;
use crate::state::AppState;
use plinth_inference::{NamedTensor, TensorData, TensorSpec};
use plinth_store as db;

const HEADER_LENGTH: &str = "inference-header-content-length";

/// Server metadata.
#[utoipa::path(
    get,
    path = "/v2",
    tag = "v2", responses((status = 200, description = "Name, version, extensions")))]
pub async fn server_metadata() -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "name": "plinth",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data"],
    }))
}

/// The server answers.
#[utoipa::path(
    get,
    path = "/v2/health/live",
    tag = "v2", responses((status = 200, description = "Live")))]
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "live": true }))
}

/// The server can serve: the database answers.
#[utoipa::path(
    get,
    path = "/v2/health/ready",
    tag = "v2", responses((status = 200, description = "Ready"), (status = 503, description = "Not ready", body = ErrorBody)))]
pub async fn ready(state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    db::ping(&state.pool)
        .await
        .map_err(|_| AppError::Unavailable("The database is unreachable.".into()))?;
    Ok(HttpResponse::Ok().json(json!({ "ready": true })))
}

#[derive(Serialize, ToSchema)]
pub struct TensorMetadata {
    pub name: String,
    /// FP32, FP64, INT64, INT32, BOOL or BYTES.
    pub datatype: String,
    /// `-1` for the batch dimension.
    pub shape: Vec<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct ModelMetadata {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: String,
    pub inputs: Vec<TensorMetadata>,
    pub outputs: Vec<TensorMetadata>,
}

fn tensor_metadata(spec: &TensorSpec) -> TensorMetadata {
    TensorMetadata {
        name: spec.name.clone(),
        datatype: spec.dtype.v2_name().to_string(),
        shape: spec
            .shape
            .iter()
            .map(|d| d.map_or(-1, |d| d as i64))
            .collect(),
    }
}

fn parse_version(v: &str) -> Result<Selector, AppError> {
    v.parse::<i32>()
        .map(Selector::Number)
        .map_err(|_| AppError::BadRequest(format!("{v:?} is not a version number.")))
}

async fn metadata(
    state: &AppState,
    name: &str,
    selector: Selector,
) -> Result<HttpResponse, AppError> {
    let served = crate::serving::served(state, name, &selector).await?;
    let versions = db::models::versions(&state.pool, served.model.id).await?;
    let signature =
        signature_of(&served.version).unwrap_or_else(|| served.loaded.signature.clone());
    Ok(HttpResponse::Ok().json(ModelMetadata {
        name: served.model.name.clone(),
        versions: versions
            .iter()
            .rev()
            .map(|v| v.version.to_string())
            .collect(),
        platform: "onnx_onnxv1".into(),
        inputs: signature.inputs.iter().map(tensor_metadata).collect(),
        outputs: signature.outputs.iter().map(tensor_metadata).collect(),
    }))
}

/// Model metadata for the version `production` serves.
#[utoipa::path(
    get,
    path = "/v2/models/{name}",
    tag = "v2",
    params(("name" = String, Path, description = "Model name", example = "iris")),
    responses((status = 200, description = "Metadata", body = ModelMetadata), (status = 401, description = "No valid token", body = ErrorBody), (status = 404, description = "No such model", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn model_metadata(
    _c: InferenceCaller,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    metadata(&state, &name, Selector::default()).await
}

/// Metadata of one version.
#[utoipa::path(
    get,
    path = "/v2/models/{name}/versions/{version}",
    tag = "v2",
    params(("name" = String, Path, description = "Model name", example = "iris"), ("version" = String, Path, description = "Version number", example = "1")),
    responses((status = 200, description = "Metadata", body = ModelMetadata), (status = 400, description = "Not a version number", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 404, description = "No such model or version", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn version_metadata(
    _c: InferenceCaller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    let (name, version) = path.into_inner();
    metadata(&state, &name, parse_version(&version)?).await
}

/// The model is loaded and can answer.
#[utoipa::path(
    get,
    path = "/v2/models/{name}/ready",
    tag = "v2",
    params(("name" = String, Path, description = "Model name", example = "iris")),
    responses((status = 200, description = "Ready"), (status = 401, description = "No valid token", body = ErrorBody), (status = 404, description = "No such model", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn model_ready(
    _c: InferenceCaller,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    crate::serving::served(&state, &name, &Selector::default()).await?;
    Ok(HttpResponse::Ok().json(json!({ "name": *name, "ready": true })))
}

/// One version is loaded and can answer.
#[utoipa::path(
    get,
    path = "/v2/models/{name}/versions/{version}/ready",
    tag = "v2",
    params(("name" = String, Path, description = "Model name", example = "iris"), ("version" = String, Path, description = "Version number", example = "1")),
    responses((status = 200, description = "Ready"), (status = 400, description = "Not a version number", body = ErrorBody), (status = 401, description = "No valid token", body = ErrorBody), (status = 404, description = "No such model or version", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn version_ready(
    _c: InferenceCaller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    let (name, version) = path.into_inner();
    crate::serving::served(&state, &name, &parse_version(&version)?).await?;
    Ok(HttpResponse::Ok().json(json!({ "name": name, "ready": true })))
}

#[derive(Deserialize, ToSchema)]
pub struct InferInput {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub parameters: Map<String, Value>,
    /// Row-major values, flat or nested. Absent when the tensor is sent as binary data.
    #[serde(default)]
    #[schema(value_type = Vec<serde_json::Value>)]
    pub data: Option<Value>,
}

#[derive(Deserialize, ToSchema)]
pub struct InferOutputRequest {
    pub name: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub parameters: Map<String, Value>,
}

#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"id": "1", "inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}))]
pub struct InferRequest {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub parameters: Map<String, Value>,
    pub inputs: Vec<InferInput>,
    /// Which outputs to return; all when absent.
    #[serde(default)]
    pub outputs: Option<Vec<InferOutputRequest>>,
}

impl InferRequest {
    /// The inputs as the tensor decoder reads them.
    pub fn input_refs(&self) -> Vec<InputRef<'_>> {
        self.inputs
            .iter()
            .map(|i| InputRef {
                name: &i.name,
                shape: &i.shape,
                datatype: &i.datatype,
                parameters: &i.parameters,
                data: i.data.as_ref(),
            })
            .collect()
    }
}

#[derive(Serialize, ToSchema)]
pub struct InferOutput {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<usize>,
    #[serde(skip_serializing_if = "Map::is_empty")]
    #[schema(value_type = Object)]
    pub parameters: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Vec<serde_json::Value>)]
    pub data: Option<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub outputs: Vec<InferOutput>,
}

fn bad(msg: String) -> AppError {
    AppError::BadRequest(msg)
}

fn to_binary(data: &TensorData) -> Vec<u8> {
    match data {
        TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::Bool(v) => v.iter().map(|b| u8::from(*b)).collect(),
        TensorData::String(v) => v
            .iter()
            .flat_map(|s| (s.len() as u32).to_le_bytes().into_iter().chain(s.bytes()))
            .collect(),
    }
}

fn to_json(data: &TensorData) -> Value {
    (0..data.len())
        .map(|i| data.get_json(i))
        .collect::<Vec<_>>()
        .into()
}

/// Reads the tensors of a request against the model's signature and the row limit.
fn read_inputs(
    state: &AppState,
    served: &Served,
    request: &InferRequest,
    binary: &[u8],
) -> Result<(Vec<NamedTensor>, usize), AppError> {
    let inputs = request.input_refs();
    let limits = Limits {
        max_rows: state.settings.max_batch_rows,
    };
    decode_inputs(
        &served.loaded.signature,
        &served.model.name,
        &inputs,
        binary,
        limits,
    )
    .and_then(|(tensors, n)| {
        check_missing(&served.card, &served.loaded.signature, &tensors)?;
        Ok((tensors, n))
    })
    .map_err(|e| match e {
        DecodeError::Invalid(m) => AppError::BadRequest(m),
        DecodeError::TooLarge(m) => AppError::PayloadTooLarge(m),
    })
}

async fn run_infer(
    req: HttpRequest,
    body: web::Bytes,
    caller: serving::Caller,
    state: &AppState,
    name: &str,
    selector: Selector,
) -> Result<HttpResponse, AppError> {
    // The binary extension: a JSON header of the given length, then raw tensor bytes.
    let json_len = match req.headers().get(HEADER_LENGTH) {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .filter(|n| *n <= body.len())
            .ok_or_else(|| {
                bad("Inference-Header-Content-Length is not a length within the body".into())
            })?,
        None => body.len(),
    };
    let (head, binary) = body.split_at(json_len);
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.is_empty()
        && !content_type.starts_with("application/json")
        && !content_type.starts_with("application/octet-stream")
    {
        return Err(AppError::UnsupportedMediaType(format!(
            "Send application/json, not {content_type}."
        )));
    }
    let request: InferRequest = serde_json::from_slice(head)
        .map_err(|e| bad(format!("The inference request is not valid: {e}")))?;
    let served = crate::serving::routed(state, name, &selector, caller).await?;
    let signature = &served.loaded.signature;
    if let Some(outputs) = &request.outputs {
        if let Some(unknown) = outputs
            .iter()
            .find(|o| !signature.outputs.iter().any(|s| s.name == o.name))
        {
            return Err(bad(format!(
                "unexpected inference output {:?} for model {}",
                unknown.name, served.model.name
            )));
        }
    }
    let (tensors, batch) = read_inputs(state, &served, &request, binary).inspect_err(|_| {
        serving::rejected(state, &served, "v2");
    })?;
    check_rows(state, batch)?;
    let answer = serving::predict(
        state,
        &served,
        serving::Batch::from_tensors(&served.card, tensors),
        caller,
        "v2",
    )
    .await?;

    let all_binary = request
        .parameters
        .get("binary_data_output")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut outputs = Vec::new();
    let mut tail: Vec<u8> = Vec::new();
    for tensor in answer.outputs {
        let wanted = match &request.outputs {
            None => Some(all_binary),
            Some(list) => list.iter().find(|o| o.name == tensor.name).map(|o| {
                o.parameters
                    .get("binary_data")
                    .and_then(Value::as_bool)
                    .unwrap_or(all_binary)
            }),
        };
        let Some(as_binary) = wanted else { continue };
        let NamedTensor { name, shape, data } = tensor;
        let datatype = data.dtype().v2_name().to_string();
        if as_binary {
            let bytes = to_binary(&data);
            let mut parameters = Map::new();
            parameters.insert("binary_data_size".into(), bytes.len().into());
            tail.extend(bytes);
            outputs.push(InferOutput {
                name,
                datatype,
                shape,
                parameters,
                data: None,
            });
        } else {
            outputs.push(InferOutput {
                name,
                datatype,
                shape,
                parameters: Map::new(),
                data: Some(to_json(&data)),
            });
        }
    }
    let response = InferResponse {
        model_name: served.model.name.clone(),
        model_version: served.version.version.to_string(),
        id: request.id,
        outputs,
    };
    let json = serde_json::to_vec(&response).map_err(AppError::internal)?;
    if tail.is_empty() {
        return Ok(HttpResponse::Ok()
            .content_type("application/json")
            .body(json));
    }
    let length = json.len();
    let mut body = json;
    body.extend(tail);
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header((HEADER_LENGTH, HeaderValue::from(length)))
        .body(body))
}

/// Inference on the version `production` serves. JSON tensors, or the binary extension
/// (`Inference-Header-Content-Length`).
#[utoipa::path(
    post,
    path = "/v2/models/{name}/infer",
    tag = "v2",
    params(("name" = String, Path, description = "Model name", example = "iris")),
    request_body = InferRequest,
    responses(
        (status = 200, description = "Outputs", body = InferResponse),
        (status = 400, description = "The request does not fit the model", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such model", body = ErrorBody),
        (status = 413, description = "Too many rows or too large a body", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 503, description = "The prediction could not be stored", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn infer(
    req: HttpRequest,
    body: web::Bytes,
    inference_caller: InferenceCaller,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let InferenceCaller(caller, _) = inference_caller;
    run_infer(req, body, caller, &state, &name, Selector::default()).await
}

/// Inference on one version.
#[utoipa::path(
    post,
    path = "/v2/models/{name}/versions/{version}/infer",
    tag = "v2",
    params(("name" = String, Path, description = "Model name", example = "iris"), ("version" = String, Path, description = "Version number", example = "1")),
    request_body = InferRequest,
    responses(
        (status = 200, description = "Outputs", body = InferResponse),
        (status = 400, description = "The request does not fit the model", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such model or version", body = ErrorBody),
        (status = 413, description = "Too many rows or too large a body", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 503, description = "The prediction could not be stored", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn version_infer(
    req: HttpRequest,
    body: web::Bytes,
    inference_caller: InferenceCaller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    let InferenceCaller(caller, _) = inference_caller;
    let (name, version) = path.into_inner();
    let selector = parse_version(&version)?;
    run_infer(req, body, caller, &state, &name, selector).await
}
