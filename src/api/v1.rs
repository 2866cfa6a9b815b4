//! Plinth's own JSON API: models, predictions by named feature, history, feedback, and the
//! staff endpoints a CI pipeline uses to publish and promote a model.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use utoipa::{IntoParams, ToSchema};

use super::{check_rows, json_body};
use crate::auth::{ApiStaff, ApiUser, InferenceCaller};
use crate::db;
use crate::db::predictions::{Filter, PredictionRow};
use crate::error::AppError;
use crate::registry::card::{Card, FeatureKind, Task};
use crate::registry::decode::Outcome;
use crate::registry::{ImportError, Imported, Selector, Upload};
use crate::serving;
use crate::state::AppState;
use crate::web::forms::read_unchecked;
use crate::web::paging::{date_field, Pager};

/// The body of every error response.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// What is wrong, in a sentence.
    pub error: String,
    /// Quote it when asking about the request; it is in the server's log line too.
    pub request_id: String,
}

#[derive(Serialize, ToSchema)]
pub struct ModelSummary {
    pub name: String,
    pub title: String,
    /// `classification` or `regression`.
    pub task: String,
    /// The version `production` points at.
    pub production_version: Option<i32>,
    pub versions: i64,
}

/// All models with their serving version.
#[utoipa::path(
    get,
    path = "/api/v1/models",
    tag = "v1",
    responses(
        (status = 200, description = "Every model", body = [ModelSummary]),
        (status = 401, description = "No valid token", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_models(
    _caller: InferenceCaller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let models: Vec<ModelSummary> = db::models::catalogue(&state.pool)
        .await?
        .into_iter()
        .map(|row| {
            let card: Card = Card::from_stored(row.card.as_ref().map(|c| &c.0));
            ModelSummary {
                title: card.display_title(&row.name).to_string(),
                task: card.task.as_str().to_string(),
                name: row.name,
                production_version: row.version,
                versions: row.versions,
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(models))
}

#[derive(Serialize, ToSchema)]
pub struct VersionInfo {
    pub version: i32,
    pub sha256: String,
    pub size_bytes: i64,
    /// RFC 3339.
    pub created_at: String,
    pub source: String,
    pub aliases: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ModelDetail {
    pub name: String,
    pub title: String,
    pub description: String,
    pub task: String,
    /// The card of the production version (features, labels, bounds, training lineage).
    #[schema(value_type = Object)]
    pub card: Value,
    /// The ONNX signature: inputs and outputs with element types and shapes.
    #[schema(value_type = Object)]
    pub signature: Value,
    pub versions: Vec<VersionInfo>,
    /// Alias name → version number.
    pub aliases: BTreeMap<String, i32>,
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

async fn model_or_404(state: &AppState, name: &str) -> Result<db::models::ModelRow, AppError> {
    db::models::find_model(&state.pool, name)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("There is no model called {name}.")))
}

/// One model: card, signature, versions and aliases.
#[utoipa::path(
    get,
    path = "/api/v1/models/{name}",
    tag = "v1",
    params(("name" = String, Path, description = "Model name", example = "iris")),
    responses(
        (status = 200, description = "The model", body = ModelDetail),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such model", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_model(
    _caller: InferenceCaller,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let model = model_or_404(&state, &name).await?;
    let versions = db::models::versions(&state.pool, model.id).await?;
    let aliases: BTreeMap<String, i32> = db::models::aliases(&state.pool, model.id)
        .await?
        .into_iter()
        .collect();
    let serving = aliases
        .get(crate::registry::PRODUCTION)
        .and_then(|n| versions.iter().find(|v| v.version == *n))
        .or_else(|| versions.first());
    let card: Card = serving.map(crate::registry::card_of).unwrap_or_default();
    let detail = ModelDetail {
        title: card.display_title(&model.name).to_string(),
        description: card.description.clone(),
        task: card.task.as_str().to_string(),
        card: serving.map_or(Value::Null, |v| v.card.0.clone()),
        signature: serving.map_or(Value::Null, |v| v.signature.0.clone()),
        versions: versions
            .iter()
            .map(|v| VersionInfo {
                version: v.version,
                sha256: v.sha256.clone(),
                size_bytes: v.size_bytes,
                created_at: rfc3339(v.created_at),
                source: v.source.clone(),
                aliases: aliases
                    .iter()
                    .filter(|(_, n)| **n == v.version)
                    .map(|(a, _)| a.clone())
                    .collect(),
            })
            .collect(),
        aliases,
        name: model.name,
    };
    Ok(HttpResponse::Ok().json(detail))
}

/// Which version answers: `?version=N` or `?alias=NAME`, `production` by default.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VersionQuery {
    /// A version number.
    pub version: Option<i32>,
    /// An alias such as `staging`.
    pub alias: Option<String>,
}

impl VersionQuery {
    pub fn selector(&self) -> Result<Selector, AppError> {
        match (&self.version, &self.alias) {
            (Some(_), Some(_)) => Err(AppError::BadRequest(
                "Give version or alias, not both.".into(),
            )),
            (Some(n), None) => Ok(Selector::Number(*n)),
            (None, Some(a)) => Ok(Selector::Alias(a.clone())),
            (None, None) => Ok(Selector::default()),
        }
    }
}

/// Named features: one object, or a list of them (a batch).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    /// `{"sepal_length": 5.1, …}` or `[{…}, {…}]`.
    #[schema(value_type = Object, example = json!({"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}))]
    pub inputs: Value,
}

#[derive(Serialize, ToSchema)]
pub struct PredictionOut {
    /// The stored prediction, for `/api/v1/predictions/{id}` and feedback.
    pub id: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Class probability by label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probabilities: Option<BTreeMap<String, f64>>,
}

impl PredictionOut {
    fn new(id: i64, o: &Outcome) -> Self {
        PredictionOut {
            id,
            label: o.label.clone(),
            value: o.value,
            probabilities: (!o.probabilities.is_empty())
                .then(|| o.probabilities.iter().cloned().collect()),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct PredictResponse {
    pub model: String,
    pub version: i32,
    /// One per input row, in order.
    pub predictions: Vec<PredictionOut>,
}

/// Converts one JSON row of named features into the model's input row.
pub fn row_from_json(card: &Card, value: &Value, index: Option<usize>) -> Result<Vec<f64>, String> {
    let at = index.map_or_else(String::new, |i| format!("row {i}: "));
    let Value::Object(map) = value else {
        return Err(format!("{at}each row must be an object of named features"));
    };
    if let Some(unknown) = map
        .keys()
        .find(|k| !card.features.iter().any(|f| &f.name == *k))
    {
        return Err(format!("{at}unknown feature {unknown:?}"));
    }
    let mut row = Vec::with_capacity(card.features.len());
    for f in &card.features {
        let v = match map.get(&f.name) {
            None | Some(Value::Null) => return Err(format!("{at}missing feature {:?}", f.name)),
            Some(Value::Number(n)) => n
                .as_f64()
                .ok_or_else(|| format!("{at}{}: not a number", f.name))?,
            Some(Value::Bool(b)) if f.kind == FeatureKind::Boolean => f64::from(u8::from(*b)),
            Some(Value::String(s)) if f.kind == FeatureKind::Category => f
                .choice_index(s)
                .map(|i| i as f64)
                .ok_or_else(|| format!("{at}{}: {s:?} is not one of the choices", f.name))?,
            Some(other) => return Err(format!("{at}{}: expected a number, got {other}", f.name)),
        };
        row.push(f.check(v).map_err(|e| format!("{at}{}: {e}", f.name))?);
    }
    Ok(row)
}

/// Predicts from named features.
#[utoipa::path(
    post,
    path = "/api/v1/models/{name}/predict",
    tag = "v1",
    params(("name" = String, Path, description = "Model name", example = "iris"), VersionQuery),
    request_body = PredictRequest,
    responses(
        (status = 200, description = "One prediction per row, stored", body = PredictResponse),
        (status = 400, description = "Invalid JSON or query", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such model or version", body = ErrorBody),
        (status = 413, description = "Too many rows or too large a body", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "A feature is missing, unknown, or not valid", body = ErrorBody),
        (status = 503, description = "The prediction could not be stored", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn predict(
    req: HttpRequest,
    body: web::Bytes,
    inference_caller: InferenceCaller,
    state: web::Data<AppState>,
    name: web::Path<String>,
    query: web::Query<VersionQuery>,
) -> Result<HttpResponse, AppError> {
    let InferenceCaller(caller, _) = inference_caller;
    let request: PredictRequest = json_body(&req, &body)?;
    let served = crate::serving::served(&state, &name, &query.selector()?).await?;
    let rows: Vec<Vec<f64>> = match &request.inputs {
        Value::Array(items) => {
            check_rows(&state, items.len())?;
            items
                .iter()
                .enumerate()
                .map(|(i, item)| row_from_json(&served.card, item, Some(i)))
                .collect::<Result<_, _>>()
                .map_err(|e| {
                    serving::rejected(&state, &served, "api");
                    AppError::Unprocessable(e)
                })?
        }
        one => vec![row_from_json(&served.card, one, None).map_err(|e| {
            serving::rejected(&state, &served, "api");
            AppError::Unprocessable(e)
        })?],
    };
    let answer = serving::predict_rows(&state, &served, &rows, caller, "api").await?;
    let response = PredictResponse {
        model: served.model.name.clone(),
        version: served.version.version,
        predictions: answer
            .ids
            .iter()
            .zip(&answer.outcomes)
            .map(|(id, o)| PredictionOut::new(*id, o))
            .collect(),
    };
    Ok(HttpResponse::Ok().json(response))
}

#[derive(Serialize, ToSchema)]
pub struct FeedbackOut {
    pub label: Option<String>,
    pub value: Option<f64>,
}

#[derive(Serialize, ToSchema)]
pub struct PredictionRecord {
    pub id: i64,
    pub model: String,
    pub version: i32,
    /// `form`, `api`, `v1` or `v2`.
    pub source: String,
    /// RFC 3339.
    pub created_at: String,
    #[schema(value_type = Object)]
    pub inputs: Value,
    #[schema(value_type = Object)]
    pub outputs: Value,
    pub latency_ms: f64,
    pub user: Option<String>,
}

impl From<&PredictionRow> for PredictionRecord {
    fn from(p: &PredictionRow) -> Self {
        PredictionRecord {
            id: p.id,
            model: p.model.clone(),
            version: p.version,
            source: p.source.clone(),
            created_at: rfc3339(p.created_at),
            inputs: p.inputs.0.clone(),
            outputs: p.outputs.0.clone(),
            latency_ms: p.latency_us as f64 / 1000.0,
            user: p.username.clone(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct PredictionList {
    pub items: Vec<PredictionRecord>,
    pub page: i64,
    pub per_page: i64,
    /// The next page's number, when there is one.
    pub next_page: Option<i64>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this model's predictions.
    pub model: Option<String>,
    /// From this date (YYYY-MM-DD, UTC), inclusive.
    pub from: Option<String>,
    /// To this date (YYYY-MM-DD, UTC), inclusive.
    pub to: Option<String>,
    /// Page number, from 1.
    pub page: Option<i64>,
    /// Rows per page, 1 to 500 (default 50).
    pub per_page: Option<i64>,
}

fn parse_date(label: &str, v: &Option<String>) -> Result<Option<time::Date>, AppError> {
    let v = v.as_deref().unwrap_or_default();
    date_field(label, v).map_err(|_| {
        AppError::BadRequest(format!(
            "{label}: expected a date as YYYY-MM-DD, got {:?}.",
            v.trim()
        ))
    })
}

/// The caller's predictions, newest first (staff tokens see everyone's).
#[utoipa::path(
    get,
    path = "/api/v1/predictions",
    tag = "v1",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of predictions", body = PredictionList),
        (status = 400, description = "A filter cannot be read", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_predictions(
    api_user: ApiUser,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, AppError> {
    let ApiUser(_, user) = api_user;
    let page = query.page.unwrap_or(1);
    let per_page = query.per_page.unwrap_or(50);
    if !(1..=1_000_000).contains(&page) || !(1..=500).contains(&per_page) {
        return Err(AppError::BadRequest(
            "page is 1 to 1000000; per_page is 1 to 500.".into(),
        ));
    }
    let filter = Filter {
        user_id: (!user.is_staff).then_some(user.id),
        username: None,
        model: query.model.clone().filter(|m| !m.is_empty()),
        from: parse_date("from", &query.from)?,
        to: parse_date("to", &query.to)?,
    };
    let pager = Pager { page, per_page };
    let mut rows =
        db::predictions::list(&state.pool, &filter, pager.offset(), pager.fetch()).await?;
    let more = pager.cut(&mut rows);
    Ok(HttpResponse::Ok().json(PredictionList {
        items: rows.iter().map(PredictionRecord::from).collect(),
        page,
        per_page,
        next_page: more.then_some(page + 1),
    }))
}

async fn own_prediction(
    state: &AppState,
    user: &crate::db::users::User,
    id: i64,
) -> Result<PredictionRow, AppError> {
    db::predictions::find(&state.pool, id)
        .await?
        .filter(|p| user.is_staff || p.user_id == Some(user.id))
        .ok_or_else(|| AppError::NotFound(format!("You have no prediction {id}.")))
}

#[derive(Serialize, ToSchema)]
pub struct PredictionDetail {
    #[serde(flatten)]
    pub prediction: PredictionRecord,
    pub feedback: Option<FeedbackOut>,
}

/// One of the caller's predictions, with its feedback.
#[utoipa::path(
    get,
    path = "/api/v1/predictions/{id}",
    tag = "v1",
    params(("id" = i64, Path, description = "Prediction id")),
    responses(
        (status = 200, description = "The prediction", body = PredictionDetail),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "Not one of yours", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_prediction(
    api_user: ApiUser,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    let ApiUser(_, user) = api_user;
    let p = own_prediction(&state, &user, *id).await?;
    let given = db::feedback::find(&state.pool, p.id)
        .await?
        .map(|(label, value)| FeedbackOut { label, value });
    Ok(HttpResponse::Ok().json(PredictionDetail {
        prediction: PredictionRecord::from(&p),
        feedback: given,
    }))
}

/// The true outcome: `label` for a classifier, `value` for a regressor.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedbackRequest {
    pub label: Option<String>,
    pub value: Option<f64>,
}

#[derive(Serialize, ToSchema)]
pub struct FeedbackResponse {
    pub prediction_id: i64,
    pub label: Option<String>,
    pub value: Option<f64>,
    /// True when this replaced earlier feedback.
    pub replaced: bool,
}

/// Records the true label or value of a prediction; a second call replaces the first.
#[utoipa::path(
    post,
    path = "/api/v1/predictions/{id}/feedback",
    tag = "v1",
    params(("id" = i64, Path, description = "Prediction id")),
    request_body = FeedbackRequest,
    responses(
        (status = 201, description = "Recorded", body = FeedbackResponse),
        (status = 200, description = "Replaced earlier feedback", body = FeedbackResponse),
        (status = 400, description = "Invalid JSON", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "Not one of yours", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Not a label or value this model gives", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn record_feedback(
    req: HttpRequest,
    body: web::Bytes,
    api_user: ApiUser,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    let ApiUser(_, user) = api_user;
    let request: FeedbackRequest = json_body(&req, &body)?;
    let p = own_prediction(&state, &user, *id).await?;
    let version = db::models::version_by_id(&state.pool, p.version_id)
        .await?
        .ok_or_else(|| AppError::NotFound("The prediction's model version is gone.".into()))?;
    let card = crate::registry::card_of(&version);
    let (label, value) = match (card.task, request.label, request.value) {
        (Task::Classification, Some(label), None)
            if !label.contains('\0') && label.len() <= 1000 =>
        {
            if let Some(labels) = &card.labels {
                if !labels.contains(&label) {
                    return Err(AppError::Unprocessable(format!(
                        "{label:?} is not one of the model's labels: {}.",
                        labels.join(", ")
                    )));
                }
            }
            (Some(label), None)
        }
        (Task::Regression, None, Some(value)) if value.is_finite() => (None, Some(value)),
        (Task::Classification, _, _) => {
            return Err(AppError::Unprocessable(
                "Send {\"label\": …} for a classifier.".into(),
            ))
        }
        (Task::Regression, _, _) => {
            return Err(AppError::Unprocessable(
                "Send {\"value\": <finite number>} for a regressor.".into(),
            ))
        }
    };
    let replaced =
        db::feedback::upsert(&state.pool, p.id, label.as_deref(), value, Some(user.id)).await?;
    let status = if replaced {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(HttpResponse::build(status).json(FeedbackResponse {
        prediction_id: p.id,
        label,
        value,
        replaced,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct PublishResponse {
    pub model: String,
    pub version: i32,
    /// False when the same file was already this model's version.
    pub created: bool,
}

/// Staff: publishes a new version (multipart: `model`, optional `card` and `reference`).
/// Creates the model when it does not exist; its first version goes to production.
#[utoipa::path(
    post,
    path = "/api/v1/models/{name}/versions",
    tag = "v1 registry",
    params(("name" = String, Path, description = "Model name", example = "iris")),
    request_body(content_type = "multipart/form-data", description = "Fields: model (ONNX file), card (card.toml), reference (reference.csv)"),
    responses(
        (status = 201, description = "Stored as a new version", body = PublishResponse),
        (status = 200, description = "The same file was already a version", body = PublishResponse),
        (status = 400, description = "The upload cannot be read", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not a staff token", body = ErrorBody),
        (status = 413, description = "Over the upload limit", body = ErrorBody),
        (status = 415, description = "Not multipart/form-data", body = ErrorBody),
        (status = 422, description = "Not a model Plinth can serve, or a card that does not fit", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn publish_version(
    req: HttpRequest,
    payload: web::Payload,
    api_staff: ApiStaff,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let ApiStaff(caller, staff) = api_staff;
    if req.content_type() != "multipart/form-data" {
        return Err(AppError::UnsupportedMediaType(
            "Send the files as multipart/form-data: model, and optionally card and reference."
                .into(),
        ));
    }
    let form = read_unchecked(&req, payload, state.settings.max_upload_bytes).await?;
    let onnx = form
        .file("model")
        .ok_or_else(|| {
            AppError::Unprocessable("The multipart field model (the ONNX file) is missing.".into())
        })?
        .to_vec();
    let card = match form.file("card") {
        Some(b) => Some(
            String::from_utf8(b.to_vec())
                .map_err(|_| AppError::Unprocessable("card is not UTF-8 text.".into()))?,
        ),
        None => None,
    };
    let upload = Upload {
        model: name.into_inner(),
        onnx,
        card,
        reference_csv: form.file("reference").map(<[u8]>::to_vec),
        source: "api",
        actor: caller.user_id,
    };
    let result = state.registry.import(upload).await;
    if let Ok(Imported::New { model, version }) = &result {
        crate::audit::record(
            &state.pool,
            Some(&req),
            Some(&staff),
            "model.version_uploaded",
            format!("{model} v{version}"),
            serde_json::json!({"via": "api"}),
        )
        .await?;
    }
    match result {
        Ok(Imported::New { model, version }) => Ok(HttpResponse::Created().json(PublishResponse {
            model,
            version,
            created: true,
        })),
        Ok(Imported::AlreadyThere { model, version }) => {
            Ok(HttpResponse::Ok().json(PublishResponse {
                model,
                version,
                created: false,
            }))
        }
        Err(ImportError::Invalid(e)) => Err(AppError::Unprocessable(e)),
        Err(e) => Err(AppError::internal(e)),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AliasRequest {
    /// The version the alias should point at.
    pub version: i32,
}

#[derive(Serialize, ToSchema)]
pub struct AliasResponse {
    pub model: String,
    pub alias: String,
    pub version: i32,
}

/// Staff: points an alias (such as `production`) at a version; it serves at once.
#[utoipa::path(
    put,
    path = "/api/v1/models/{name}/aliases/{alias}",
    tag = "v1 registry",
    params(("name" = String, Path, description = "Model name", example = "iris"), ("alias" = String, Path, description = "Alias name")),
    request_body = AliasRequest,
    responses(
        (status = 200, description = "Moved", body = AliasResponse),
        (status = 400, description = "Invalid JSON", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not a staff token", body = ErrorBody),
        (status = 404, description = "No such model", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "No such version, or a bad alias name", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn set_alias(
    req: HttpRequest,
    body: web::Bytes,
    api_staff: ApiStaff,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    let ApiStaff(caller, staff) = api_staff;
    let (name, alias) = path.into_inner();
    let request: AliasRequest = json_body(&req, &body)?;
    let model = model_or_404(&state, &name).await?;
    match state
        .registry
        .move_alias(&model, &alias, request.version, caller.user_id)
        .await
    {
        Ok(previous) => {
            crate::audit::alias_moved(
                &state.pool,
                &req,
                &staff,
                &model.name,
                &alias,
                previous,
                request.version,
            )
            .await?;
            Ok(HttpResponse::Ok().json(AliasResponse {
                model: model.name,
                alias,
                version: request.version,
            }))
        }
        Err(ImportError::Invalid(e)) => Err(AppError::Unprocessable(e)),
        Err(e) => Err(AppError::internal(e)),
    }
}
