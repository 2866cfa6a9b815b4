//! A model's Kafka streams on its admin page: define one (its topics checked against the brokers), pause, resume or delete it.

use actix_web::{web, HttpRequest, HttpResponse};

use super::{model_admin_page, posted};
use crate::auth::context::flash;
use crate::auth::StaffOnly;
use crate::error::AppError;
use crate::registry::PRODUCTION;
use crate::state::AppState;
use crate::web::forms::read_form;
use crate::web::see_other;
use plinth_store as db;

/// A Kafka stream as the model's admin page shows it.
pub struct StreamView {
    pub id: i64,
    pub input_topic: String,
    pub output_topic: String,
    pub dead_letter_topic: String,
    pub group_id: String,
    pub alias: String,
    pub state: String,
    pub records: i64,
    pub dead_letters: i64,
    pub lag: String,
    /// Why it is not flowing and since when, as the last instance to meet it said.
    pub error: Option<(String, String)>,
}

/// A topic name as Kafka allows it: letters, digits, `.`, `_`, `-`, at most 249.
pub(super) fn check_topic(field: &str, topic: &str) -> Result<(), String> {
    let ok = !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "The {field} topic must be 1 to 249 letters, digits, dots, underscores or hyphens."
        ))
    }
}

/// Adds a Kafka stream to a model: every instance with a broker starts consuming it.
pub async fn create_stream(
    req: HttpRequest,
    payload: web::Payload,
    StaffOnly(ctx, user): StaffOnly,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let (form, model) = posted(&req, payload, &state, &name).await?;
    let input = form.field("input_topic").trim().to_string();
    let output = form.field("output_topic").trim().to_string();
    let dead = match form.field("dead_letter_topic").trim() {
        "" => format!("{input}.dead-letters"),
        t => t.to_string(),
    };
    let group = match form.field("group_id").trim() {
        "" => format!("plinth-{}", model.name),
        g => g.to_string(),
    };
    let alias = match form.field("alias").trim() {
        "" => PRODUCTION.to_string(),
        a => a.to_string(),
    };
    let checked = check_topic("input", &input)
        .and_then(|()| check_topic("output", &output))
        .and_then(|()| check_topic("dead-letter", &dead))
        .and_then(|()| {
            if input == output || input == dead {
                Err("The output and dead-letter topics must differ from the input topic.".into())
            } else if group.is_empty() || group.len() > 249 {
                Err("The consumer group must be 1 to 249 characters.".into())
            } else {
                Ok(())
            }
        });
    if let Err(e) = checked {
        return model_admin_page(ctx, &state, &model, Some(e)).await;
    }
    let Some(id) = db::streams::create(
        &state.pool,
        model.id,
        (&input, &output, &dead),
        &group,
        &alias,
        user.id,
    )
    .await?
    else {
        return model_admin_page(
            ctx,
            &state,
            &model,
            Some(format!("{} already reads the topic {input}.", model.name)),
        )
        .await;
    };
    crate::audit::record(
        &state.pool,
        Some(&req),
        Some(&user),
        "stream.create",
        Some(model.name.clone()),
        serde_json::json!({"stream": id, "input_topic": input, "output_topic": output,
                           "dead_letter_topic": dead, "group_id": group, "alias": alias}),
    )
    .await?;
    if let Some(session) = ctx.session() {
        flash(
            session,
            "success",
            format!("The stream from {input} to {output} is running."),
        );
    }
    Ok(see_other(&format!("/admin/models/{}", model.name)))
}

/// Pauses or resumes a stream (`state=paused|running`), recorded in the audit log.
pub async fn set_stream_state(
    req: HttpRequest,
    payload: web::Payload,
    StaffOnly(ctx, user): StaffOnly,
    state: web::Data<AppState>,
    id: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    let form = read_form(&req, payload, state.settings.max_body_bytes).await?;
    let wanted = match form.field("state") {
        "paused" => "paused",
        "running" => "running",
        other => {
            return Err(AppError::BadRequest(format!(
                "state must be paused or running, not {other:?}."
            )))
        }
    };
    let stream = db::streams::get(&state.pool, *id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("There is no stream {id}.")))?;
    db::streams::set_state(&state.pool, stream.id, wanted).await?;
    crate::audit::record(
        &state.pool,
        Some(&req),
        Some(&user),
        if wanted == "paused" {
            "stream.pause"
        } else {
            "stream.resume"
        },
        Some(stream.model.clone()),
        serde_json::json!({"stream": stream.id, "input_topic": stream.input_topic,
                           "from": stream.state, "to": wanted}),
    )
    .await?;
    if let Some(session) = ctx.session() {
        flash(
            session,
            "success",
            format!(
                "The stream from {} is {}.",
                stream.input_topic,
                if wanted == "paused" {
                    "paused"
                } else {
                    "running again"
                }
            ),
        );
    }
    Ok(see_other(&format!("/admin/models/{}", stream.model)))
}
