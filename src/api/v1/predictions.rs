//! The caller's stored predictions: list, one, and feedback on one.

use super::{rfc3339, ErrorBody};
use crate::api::json_body;
use crate::auth::ApiUser;
use crate::error::AppError;
use crate::registry::card::Task;
use crate::state::AppState;
use crate::web::paging::{date_field, Pager};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use plinth_store as db;
use plinth_store::predictions::{Filter, PredictionRow};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

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
    user: &plinth_store::users::User,
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
    let replaced = db::feedback::upsert(&state.pool, p.id, label.as_deref(), value, Some(user.id))
        .await?
        .ok_or_else(|| AppError::NotFound(format!("There is no prediction {}.", p.id)))?;
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
