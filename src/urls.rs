//! The URL table: every path Plinth answers, its methods and its handler, in the order the
//! router tries them. Nothing is routed anywhere else.
//!
//! One `resource` per path holds all its methods, so a known path asked with another method
//! answers 405, not 404. Paths with a parameter match one segment (`[^/]+`), so the order only
//! matters where a segment has a suffix: KServe's `{name}:predict` comes before `{name}`. A
//! scope answers every path under its prefix, so no page may share a scope's prefix.
//! Handlers live in `routes/<area>/` (pages, mirroring `templates/<area>/`) and `api/` (JSON).

use actix_web::web::{delete, get, post, put, resource, scope, ServiceConfig};

use crate::api::{contracts, docs, kserve, v1, v2};
use crate::config::{Platform, Settings};
use crate::routes::{accounts, admin, assets, history, jobs, models, ops};

/// The ML platform's own routes, when Plinth runs on one (before [`configure`], so a platform's
/// configured path wins): Vertex AI's `AIP_HEALTH_ROUTE` and `AIP_PREDICT_ROUTE`, Azure ML's
/// `/score`, SageMaker's `/execution-parameters`.
pub fn platform(cfg: &mut ServiceConfig, settings: &Settings) {
    match settings.platform {
        Some(Platform::Vertex) => {
            let (health, predict) = &settings.vertex_routes;
            cfg.service(resource(health.as_str()).route(get().to(contracts::ping)))
                .service(resource(predict.as_str()).route(post().to(contracts::vertex_predict)));
        }
        Some(Platform::AzureMl) => {
            cfg.service(resource("/score").route(post().to(contracts::azureml_score)));
        }
        Some(Platform::SageMaker) => {
            cfg.service(
                resource("/execution-parameters").route(get().to(contracts::execution_parameters)),
            );
        }
        None => {}
    }
}

/// The main listener.
pub fn configure(cfg: &mut ServiceConfig) {
    cfg
        // Operations: probes for the orchestrator, Prometheus metrics for staff tokens.
        .service(resource("/healthz").route(get().to(ops::healthz)))
        .service(resource("/readyz").route(get().to(ops::readyz)))
        .service(resource("/metrics").route(get().to(ops::metrics)))
        // MLflow's scoring protocol (and SageMaker's, which shares it): see `api::contracts`.
        .service(resource("/invocations").route(post().to(contracts::invocations)))
        .service(resource("/ping").route(get().to(contracts::ping)))
        .service(resource("/health").route(get().to(contracts::ping)))
        .service(resource("/version").route(get().to(contracts::version)))
        // Plinth's own JSON API and its documentation.
        .service(
            scope("/api")
                .service(resource("/v1/models").route(get().to(v1::models::list_models)))
                .service(resource("/v1/models/{name}").route(get().to(v1::models::get_model)))
                .service(
                    resource("/v1/models/{name}/predict").route(post().to(v1::predict::predict)),
                )
                .service(resource("/v1/models/{name}/jobs").route(post().to(v1::jobs::submit)))
                .service(resource("/v1/jobs").route(get().to(v1::jobs::list)))
                .service(resource("/v1/jobs/{id}").route(get().to(v1::jobs::get)))
                .service(resource("/v1/jobs/{id}/cancel").route(post().to(v1::jobs::cancel)))
                .service(resource("/v1/jobs/{id}/results").route(get().to(v1::jobs::results)))
                .service(resource("/v1/jobs/{id}/errors").route(get().to(v1::jobs::errors)))
                .service(
                    resource("/v1/models/{name}/versions")
                        .route(post().to(v1::registry::publish_version)),
                )
                .service(
                    resource("/v1/models/{name}/aliases/{alias}")
                        .route(put().to(v1::registry::set_alias)),
                )
                .service(
                    resource("/v1/models/{name}/traffic")
                        .route(get().to(v1::registry::traffic))
                        .route(put().to(v1::registry::set_canary))
                        .route(delete().to(v1::registry::end_canary)),
                )
                .service(
                    resource("/v1/models/{name}/shadows").route(get().to(v1::registry::shadows)),
                )
                .service(
                    resource("/v1/models/{name}/shadows/{version}")
                        .route(put().to(v1::registry::start_shadow))
                        .route(delete().to(v1::registry::stop_shadow)),
                )
                .service(resource("/v1/models/{name}/rules").route(get().to(v1::automation::rules)))
                .service(
                    resource("/v1/models/{name}/rules/{kind}")
                        .route(put().to(v1::automation::set_rule))
                        .route(delete().to(v1::automation::remove_rule)),
                )
                .service(
                    resource("/v1/webhooks")
                        .route(get().to(v1::automation::list_webhooks))
                        .route(post().to(v1::automation::create_webhook)),
                )
                .service(
                    resource("/v1/webhooks/{id}")
                        .route(delete().to(v1::automation::delete_webhook)),
                )
                .service(
                    resource("/v1/webhooks/{id}/deliveries")
                        .route(get().to(v1::automation::deliveries)),
                )
                .service(
                    resource("/v1/datasets")
                        .route(get().to(v1::datasets::list_datasets))
                        .route(post().to(v1::datasets::add_dataset)),
                )
                .service(resource("/v1/datasets/{name}").route(get().to(v1::datasets::get_dataset)))
                .service(
                    resource("/v1/datasets/{name}/diff")
                        .route(get().to(v1::datasets::dataset_diff)),
                )
                .service(
                    resource("/v1/datasets/{name}/versions/{version}")
                        .route(get().to(v1::datasets::get_dataset_version)),
                )
                .service(
                    resource("/v1/models/{name}/versions/{version}/datasets")
                        .route(post().to(v1::datasets::link_dataset)),
                )
                .service(
                    resource("/v1/models/{name}/comparisons")
                        .route(post().to(v1::datasets::compare_versions)),
                )
                .service(
                    resource("/v1/models/{name}/comparisons/{id}")
                        .route(get().to(v1::datasets::get_comparison)),
                )
                .service(
                    resource("/v1/predictions").route(get().to(v1::predictions::list_predictions)),
                )
                .service(
                    resource("/v1/predictions/{id}")
                        .route(get().to(v1::predictions::get_prediction)),
                )
                .service(
                    resource("/v1/predictions/{id}/feedback")
                        .route(post().to(v1::predictions::record_feedback)),
                )
                .service(resource("/openapi.json").route(get().to(docs::openapi_json)))
                .service(resource("/docs").route(get().to(docs::docs_page))),
        )
        // The Open Inference Protocol (V2), as Triton, KServe and MLServer speak it.
        .service(
            scope("/v2")
                .service(resource("").route(get().to(v2::server_metadata)))
                .service(resource("/health/live").route(get().to(v2::live)))
                .service(resource("/health/ready").route(get().to(v2::ready)))
                .service(resource("/models/{name}").route(get().to(v2::model_metadata)))
                .service(resource("/models/{name}/ready").route(get().to(v2::model_ready)))
                .service(resource("/models/{name}/infer").route(post().to(v2::infer)))
                .service(
                    resource("/models/{name}/versions/{version}")
                        .route(get().to(v2::version_metadata)),
                )
                .service(
                    resource("/models/{name}/versions/{version}/ready")
                        .route(get().to(v2::version_ready)),
                )
                .service(
                    resource("/models/{name}/versions/{version}/infer")
                        .route(post().to(v2::version_infer)),
                ),
        )
        // KServe's V1 protocol. `{name}:predict` first: `{name}` alone would match it too.
        .service(
            scope("/v1")
                .service(resource("/models/{name}:predict").route(post().to(kserve::predict)))
                .service(resource("/models/{name}").route(get().to(kserve::model_status))),
        )
        // Assets compiled into the binary.
        .service(resource("/static/{name}").route(get().to(assets::static_file)))
        .service(resource("/favicon.ico").route(get().to(assets::favicon)))
        // The pages: catalogue, a model's form and result, the history.
        .service(resource("/").route(get().to(models::catalogue::catalogue)))
        .service(
            resource("/models/{name}")
                .route(get().to(models::form::model_page))
                .route(post().to(models::form::predict)),
        )
        .service(resource("/models/{name}/batch").route(get().to(jobs::batch_page)))
        .service(resource("/models/{name}/jobs").route(post().to(jobs::submit)))
        .service(resource("/predictions/{id}").route(get().to(models::result::prediction_page)))
        // Batch jobs.
        .service(resource("/jobs").route(get().to(jobs::jobs_page)))
        .service(resource("/jobs/{id}").route(get().to(jobs::job_page)))
        .service(resource("/jobs/{id}/progress").route(get().to(jobs::progress)))
        .service(resource("/jobs/{id}/cancel").route(post().to(jobs::cancel)))
        .service(resource("/jobs/{id}/results.csv").route(get().to(jobs::results_csv)))
        .service(resource("/jobs/{id}/results.parquet").route(get().to(jobs::results_parquet)))
        .service(resource("/history").route(get().to(history::history_page)))
        .service(resource("/history.csv").route(get().to(history::export::history_csv)))
        // Accounts.
        .service(
            scope("/accounts")
                .service(
                    resource("/login")
                        .route(get().to(accounts::login::login_form))
                        .route(post().to(accounts::login::login)),
                )
                .service(
                    resource("/logout")
                        .route(get().to(accounts::login::logout_form))
                        .route(post().to(accounts::login::logout)),
                )
                .service(
                    resource("/signup")
                        .route(get().to(accounts::signup::signup_form))
                        .route(post().to(accounts::signup::signup)),
                )
                .service(
                    resource("/password")
                        .route(get().to(accounts::password::password_form))
                        .route(post().to(accounts::password::change_password)),
                )
                .service(
                    resource("/tokens")
                        .route(get().to(accounts::tokens::tokens_page))
                        .route(post().to(accounts::tokens::create_token)),
                )
                .service(
                    resource("/tokens/{id}/revoke")
                        .route(post().to(accounts::tokens::revoke_token)),
                ),
        )
        // The back office, staff only.
        .service(
            scope("/admin")
                .service(resource("").route(get().to(admin::admin_index)))
                .service(
                    resource("/models")
                        .route(get().to(admin::models::models_index))
                        .route(post().to(admin::models::create_model)),
                )
                .service(resource("/models/{name}").route(get().to(admin::models::model_admin)))
                .service(
                    resource("/models/{name}/versions")
                        .route(post().to(admin::models::upload_version)),
                )
                .service(
                    resource("/models/{name}/aliases").route(post().to(admin::models::set_alias)),
                )
                .service(
                    resource("/models/{name}/rollback").route(post().to(admin::models::rollback)),
                )
                .service(
                    resource("/models/{name}/canary").route(post().to(admin::models::set_canary)),
                )
                .service(
                    resource("/models/{name}/canary/end")
                        .route(post().to(admin::models::end_canary)),
                )
                .service(
                    resource("/models/{name}/shadows")
                        .route(post().to(admin::models::start_shadow)),
                )
                .service(
                    resource("/models/{name}/shadows/{version}/stop")
                        .route(post().to(admin::models::stop_shadow)),
                )
                .service(
                    resource("/models/{name}/rules/{kind}")
                        .route(post().to(admin::automation::set_rule)),
                )
                .service(
                    resource("/models/{name}/rules/{kind}/remove")
                        .route(post().to(admin::automation::remove_rule)),
                )
                .service(
                    resource("/webhooks")
                        .route(get().to(admin::automation::webhooks_page))
                        .route(post().to(admin::automation::create_webhook)),
                )
                .service(
                    resource("/webhooks/{id}/remove")
                        .route(post().to(admin::automation::remove_webhook)),
                )
                .service(
                    resource("/webhooks/{id}/test")
                        .route(post().to(admin::automation::test_webhook)),
                )
                .service(
                    resource("/models/{name}/streams")
                        .route(post().to(admin::models::create_stream)),
                )
                .service(
                    resource("/streams/{id}/state")
                        .route(post().to(admin::models::set_stream_state)),
                )
                .service(
                    resource("/models/{name}/compare")
                        .route(get().to(admin::compare::compare_page))
                        .route(post().to(admin::compare::run_comparison)),
                )
                .service(
                    resource("/models/{name}/datasets")
                        .route(post().to(admin::models::link_dataset)),
                )
                .service(
                    resource("/datasets")
                        .route(get().to(admin::datasets::datasets_index))
                        .route(post().to(admin::datasets::add_dataset)),
                )
                .service(
                    resource("/datasets/{name}").route(get().to(admin::datasets::dataset_admin)),
                )
                .service(
                    resource("/datasets/{name}/diff")
                        .route(get().to(admin::datasets::dataset_diff)),
                )
                .service(
                    resource("/datasets/{name}/versions/{version}")
                        .route(get().to(admin::datasets::dataset_version)),
                )
                .service(
                    resource("/models/{name}/drift")
                        .route(get().to(admin::drift::drift_page))
                        .route(post().to(admin::drift::run_now)),
                )
                .service(resource("/users").route(get().to(admin::users::users_page)))
                .service(resource("/users/{id}").route(get().to(admin::users::user_page)))
                .service(resource("/users/{id}/staff").route(post().to(admin::users::set_staff)))
                .service(resource("/users/{id}/active").route(post().to(admin::users::set_active)))
                .service(
                    resource("/users/{id}/password")
                        .route(post().to(admin::users::set_temporary_password)),
                )
                .service(
                    resource("/users/{id}/sessions/end")
                        .route(post().to(admin::users::end_sessions)),
                )
                .service(resource("/audit").route(get().to(admin::audit::audit_page)))
                .service(
                    resource("/predictions").route(get().to(admin::predictions::admin_predictions)),
                )
                .service(
                    resource("/predictions.csv")
                        .route(get().to(admin::predictions::admin_predictions_csv)),
                ),
        );
}

/// The separate metrics listener (`PLINTH_METRICS_ADDR`, a private address): `/metrics` only,
/// without a token.
pub fn metrics_listener(cfg: &mut ServiceConfig) {
    cfg.service(resource("/metrics").route(get().to(ops::open_metrics)));
}
