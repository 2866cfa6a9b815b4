//! The `audit_event` table.

use sqlx::PgPool;
use time::{Date, OffsetDateTime};

/// One thing worth remembering: who did what to what, from where.
#[derive(Clone, Debug, Default)]
pub struct NewEvent<'a> {
    pub actor_id: Option<i64>,
    pub actor: Option<&'a str>,
    pub action: &'a str,
    pub target: Option<String>,
    pub detail: serde_json::Value,
    pub client_ip: Option<&'a str>,
}

pub async fn record(pool: &PgPool, event: NewEvent<'_>) -> sqlx::Result<()> {
    let detail = if event.detail.is_null() {
        serde_json::json!({})
    } else {
        event.detail
    };
    sqlx::query(
        "insert into audit_event (actor_id, actor, action, target, detail, client_ip)
         values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(event.actor_id)
    .bind(event.actor)
    .bind(event.action)
    .bind(event.target)
    .bind(detail)
    .bind(event.client_ip)
    .execute(pool)
    .await?;
    Ok(())
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct EventRow {
    pub id: i64,
    pub actor: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub detail: sqlx::types::Json<serde_json::Value>,
    pub client_ip: Option<String>,
    pub created_at: OffsetDateTime,
}

#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Actions starting with this (`login` matches `login.failed`).
    pub action: Option<String>,
    pub actor: Option<String>,
    pub from: Option<Date>,
    pub to: Option<Date>,
}

pub async fn list(
    pool: &PgPool,
    filter: &Filter,
    offset: i64,
    limit: i64,
) -> sqlx::Result<Vec<EventRow>> {
    sqlx::query_as(
        "select id, actor, action, target, detail, client_ip, created_at from audit_event
         where ($1::text is null or action like $1 || '%')
           and ($2::text is null or lower(actor) = lower($2))
           and ($3::date is null or created_at >= $3::date::timestamptz)
           and ($4::date is null or created_at < ($4::date + 1)::timestamptz)
         order by created_at desc, id desc offset $5 limit $6",
    )
    .bind(filter.action.as_deref())
    .bind(filter.actor.as_deref())
    .bind(filter.from)
    .bind(filter.to)
    .bind(offset)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The actions recorded so far, for the filter's select.
pub async fn actions(pool: &PgPool) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("select distinct action from audit_event order by action")
        .fetch_all(pool)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn events_are_listed_newest_first_and_filtered(pool: PgPool) -> sqlx::Result<()> {
        for (action, actor) in [
            ("login.failed", "eve"),
            ("login.succeeded", "ada"),
            ("token.created", "ada"),
        ] {
            record(
                &pool,
                NewEvent {
                    actor: Some(actor),
                    action,
                    ..Default::default()
                },
            )
            .await?;
        }
        let all = list(&pool, &Filter::default(), 0, 10).await?;
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].action, "token.created");
        let logins = list(
            &pool,
            &Filter {
                action: Some("login".into()),
                ..Default::default()
            },
            0,
            10,
        )
        .await?;
        assert_eq!(logins.len(), 2);
        let ada = list(
            &pool,
            &Filter {
                actor: Some("ADA".into()),
                ..Default::default()
            },
            0,
            10,
        )
        .await?;
        assert_eq!(ada.len(), 2);
        assert_eq!(actions(&pool).await?.len(), 3);
        Ok(())
    }
}
