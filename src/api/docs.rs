//! The OpenAPI document, generated from the handlers and types above, and a readable reference
//! rendered from it on the server (no CDN, no script).

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use askama::Template;
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{kserve, v1, v2};
use crate::auth::PageCtx;
use crate::error::AppError;

struct BearerAuth;

/// Every operation can answer 400: any address or query Plinth cannot read (a NUL byte, a
/// malformed number) is refused before the handler runs.
struct BadRequestEverywhere;

impl Modify for BadRequestEverywhere {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let response = ResponseBuilder::new()
            .description("The request cannot be read")
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build();
        for item in openapi.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                op.responses
                    .responses
                    .entry("400".to_string())
                    .or_insert_with(|| response.clone().into());
            }
        }
    }
}

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API token from /accounts/tokens"))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Plinth", description = "Predictions from ONNX models: Plinth's JSON v1, the Open Inference Protocol (V2) and KServe V1. Every prediction is stored before it is returned."),
    paths(
        v1::models::list_models, v1::models::get_model, v1::predict::predict,
        v1::predictions::list_predictions, v1::predictions::get_prediction,
        v1::predictions::record_feedback, v1::registry::publish_version, v1::registry::set_alias, v1::registry::traffic, v1::registry::set_canary, v1::registry::end_canary, v1::registry::shadows, v1::registry::start_shadow, v1::registry::stop_shadow,
        v1::automation::rules, v1::automation::set_rule, v1::automation::remove_rule,
        v1::automation::list_webhooks, v1::automation::create_webhook, v1::automation::delete_webhook,
        v1::automation::deliveries,
        v1::datasets::list_datasets, v1::datasets::add_dataset, v1::datasets::get_dataset,
        v1::datasets::get_dataset_version, v1::datasets::dataset_diff, v1::datasets::links::link_dataset,
        v1::datasets::comparisons::compare_versions, v1::datasets::comparisons::get_comparison,
        v1::jobs::submit, v1::jobs::list, v1::jobs::get, v1::jobs::cancel, v1::jobs::results::results,
        v1::jobs::results::errors,
        v2::server_metadata, v2::live, v2::ready, v2::model_metadata, v2::version_metadata,
        v2::model_ready, v2::version_ready, v2::infer, v2::version_infer,
        kserve::model_status, kserve::predict,
    ),
    components(schemas(v1::ErrorBody)),
    modifiers(&BearerAuth, &BadRequestEverywhere)
)]
pub struct ApiDoc;

pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}

pub struct Operation {
    pub method: String,
    pub path: String,
    pub anchor: String,
    pub summary: String,
    pub description: String,
    pub params: Vec<(String, String, bool, String)>,
    pub body: String,
    pub responses: Vec<(String, String, String)>,
    pub secured: bool,
}

pub struct Schema {
    pub name: String,
    pub json: String,
}

#[derive(Template)]
#[template(path = "api/docs.html")]
struct DocsPage {
    ctx: PageCtx,
    groups: Vec<(String, Vec<Operation>)>,
    schemas: Vec<Schema>,
}

fn schema_name(v: &Value) -> String {
    if let Some(r) = v.get("$ref").and_then(Value::as_str) {
        return r.rsplit('/').next().unwrap_or(r).to_string();
    }
    if let Some(items) = v.get("items") {
        return format!("[{}]", schema_name(items));
    }
    v.get("type")
        .map(|t| t.to_string().replace('"', ""))
        .unwrap_or_default()
}

/// The API reference, for people.
pub async fn docs_page(ctx: PageCtx) -> Result<HttpResponse, AppError> {
    let doc = serde_json::to_value(ApiDoc::openapi()).map_err(AppError::internal)?;
    let mut groups: Vec<(String, Vec<Operation>)> = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in item.as_object().into_iter().flatten() {
            let tag = op["tags"][0].as_str().unwrap_or("other").to_string();
            let mut lines = op["summary"]
                .as_str()
                .or(op["description"].as_str())
                .unwrap_or("")
                .lines();
            let summary = lines.next().unwrap_or("").to_string();
            let description = op["description"].as_str().unwrap_or("").to_string();
            let params = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    (
                        p["name"].as_str().unwrap_or("").to_string(),
                        p["in"].as_str().unwrap_or("").to_string(),
                        p["required"].as_bool().unwrap_or(false),
                        p["description"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect();
            let body = op["requestBody"]["content"]
                .as_object()
                .and_then(|c| c.iter().next())
                .map(|(ct, media)| {
                    format!("{ct} {}", schema_name(&media["schema"]))
                        .trim()
                        .to_string()
                })
                .unwrap_or_default();
            let responses = op["responses"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(code, r)| {
                    let schema = r["content"]["application/json"]["schema"].clone();
                    (
                        code.clone(),
                        r["description"].as_str().unwrap_or("").to_string(),
                        schema_name(&schema),
                    )
                })
                .collect();
            let operation = Operation {
                anchor: format!("{method}-{}", path.replace(['/', '{', '}', ':'], "-")),
                method: method.to_uppercase(),
                path: path.clone(),
                summary,
                description: if description == op["summary"].as_str().unwrap_or("") {
                    String::new()
                } else {
                    description
                },
                params,
                body,
                responses,
                secured: op.get("security").is_some(),
            };
            match groups.iter_mut().find(|(t, _)| *t == tag) {
                Some((_, ops)) => ops.push(operation),
                None => groups.push((tag, vec![operation])),
            }
        }
    }
    let schemas = doc["components"]["schemas"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, s)| Schema {
            name: name.clone(),
            json: serde_json::to_string_pretty(s).unwrap_or_default(),
        })
        .collect();
    crate::web::render(
        &DocsPage {
            ctx,
            groups,
            schemas,
        },
        StatusCode::OK,
    )
}
