//! The audit log: `/admin/audit`, filtered by actor, action and date.

use crate::auth::{PageCtx, StaffOnly};
use crate::error::AppError;
use crate::state::AppState;
use crate::web::paging::{date_field, link, Pager};
use crate::web::render;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use plinth_store as db;
use serde::Deserialize;

/// Rows per page.
const PER_PAGE: i64 = 50;

#[derive(Deserialize, Default, Clone)]
#[serde(default)]
pub struct AuditQuery {
    action: String,
    actor: String,
    from: String,
    to: String,
    page: Option<i64>,
}

pub struct AuditRow {
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
    pub client_ip: String,
    /// For alias moves (by hand or by a rule) and comparisons: the compare page of the two
    /// versions.
    pub compare: Option<String>,
}

/// The compare page an audit entry's detail points at, if it names a model and two versions.
fn compare_link(action: &str, detail: &serde_json::Value) -> Option<String> {
    let (from, to) = match action {
        "alias.moved"
        | "automation.promoted"
        | "automation.rolled_back"
        | "automation.would_promote"
        | "automation.would_roll_back" => ("from", "to"),
        "model.compared" => ("a", "b"),
        _ => return None,
    };
    let model = detail.get("model")?.as_str()?;
    let (a, b) = (detail.get(from)?.as_i64()?, detail.get(to)?.as_i64()?);
    (a != b).then(|| format!("/admin/models/{model}/compare?a={a}&b={b}"))
}

#[derive(Template)]
#[template(path = "admin/audit.html")]
struct AuditPage {
    ctx: PageCtx,
    rows: Vec<AuditRow>,
    actions: Vec<String>,
    action: String,
    actor: String,
    from: String,
    to: String,
    error: Option<String>,
    page: i64,
    prev_link: Option<String>,
    next_link: Option<String>,
}

pub async fn audit_page(
    StaffOnly(ctx, _): StaffOnly,
    state: web::Data<AppState>,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, AppError> {
    let q = query.into_inner();
    let pager = Pager::new(q.page, PER_PAGE);
    let non_empty = |v: &str| Some(v.trim().to_string()).filter(|s| !s.is_empty());
    let filter = date_field("From", &q.from).and_then(|from| {
        Ok(db::audit::Filter {
            action: non_empty(&q.action),
            actor: non_empty(&q.actor),
            from,
            to: date_field("To", &q.to)?,
        })
    });
    let (rows, error, more) = match filter {
        Ok(filter) => {
            let mut rows =
                db::audit::list(&state.pool, &filter, pager.offset(), pager.fetch()).await?;
            let more = pager.cut(&mut rows);
            (rows, None, more)
        }
        Err(e) => (Vec::new(), Some(e), false),
    };
    let (prev_link, next_link) = pager.links(more, |p| {
        link(
            "/admin/audit",
            &[
                ("action", &q.action),
                ("actor", &q.actor),
                ("from", &q.from),
                ("to", &q.to),
                ("page", &p.to_string()),
            ],
        )
    });
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    render(
        &AuditPage {
            rows: rows
                .into_iter()
                .map(|e| AuditRow {
                    compare: compare_link(&e.action, &e.detail.0),
                    at: crate::web::fmt_time(&Some(e.created_at)),
                    actor: e.actor.unwrap_or_else(|| "system".into()),
                    action: e.action,
                    target: e.target.unwrap_or_default(),
                    detail: match &e.detail.0 {
                        serde_json::Value::Object(m) if m.is_empty() => String::new(),
                        other => other.to_string(),
                    },
                    client_ip: e.client_ip.unwrap_or_default(),
                })
                .collect(),
            actions: db::audit::actions(&state.pool).await?,
            prev_link,
            next_link,
            action: q.action,
            actor: q.actor,
            from: q.from,
            to: q.to,
            error,
            page: pager.page,
            ctx,
        },
        status,
    )
}

#[cfg(test)]
mod tests {
    use super::compare_link;
    use serde_json::json;

    #[test]
    fn moves_by_hand_and_by_rule_link_the_versions_they_moved_between() {
        let moved = json!({"model": "iris", "rule": "…", "from": 1, "to": 3, "figures": {}});
        for action in [
            "alias.moved",
            "automation.promoted",
            "automation.rolled_back",
            "automation.would_promote",
        ] {
            assert_eq!(
                compare_link(action, &moved).as_deref(),
                Some("/admin/models/iris/compare?a=1&b=3"),
                "{action}"
            );
        }
        let compared = json!({"model": "iris", "a": 2, "b": 1, "comparison": 7});
        assert_eq!(
            compare_link("model.compared", &compared).as_deref(),
            Some("/admin/models/iris/compare?a=2&b=1")
        );
        // Nothing to compare: a first alias, a rollback with no target, other actions.
        assert_eq!(
            compare_link(
                "alias.moved",
                &json!({"model": "iris", "from": null, "to": 1})
            ),
            None
        );
        assert_eq!(
            compare_link(
                "automation.would_roll_back",
                &json!({"model": "iris", "from": 2, "to": null})
            ),
            None
        );
        assert_eq!(compare_link("login.succeeded", &moved), None);
    }
}
