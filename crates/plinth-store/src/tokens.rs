//! The `api_token` table.

use sqlx::PgPool;
use time::OffsetDateTime;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct TokenRow {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    pub prefix: String,
    pub created_at: OffsetDateTime,
    pub last_used_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
}

const COLUMNS: &str = "id, user_id, name, prefix, created_at, last_used_at, revoked_at";

pub async fn create(
    pool: &PgPool,
    user_id: i64,
    name: &str,
    prefix: &str,
    token_hash: &str,
) -> sqlx::Result<TokenRow> {
    let sql = format!(
        "insert into api_token (user_id, name, prefix, token_hash) values ($1, $2, $3, $4) returning {COLUMNS}"
    );
    sqlx::query_as(&sql)
        .bind(user_id)
        .bind(name)
        .bind(prefix)
        .bind(token_hash)
        .fetch_one(pool)
        .await
}

pub async fn for_user(pool: &PgPool, user_id: i64) -> sqlx::Result<Vec<TokenRow>> {
    let sql = format!(
        "select {COLUMNS} from api_token where user_id = $1 order by revoked_at is not null, created_at desc"
    );
    sqlx::query_as(&sql).bind(user_id).fetch_all(pool).await
}

/// Revokes a token of `user_id`; false when there is no such live token.
pub async fn revoke(pool: &PgPool, user_id: i64, id: i64) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "update api_token set revoked_at = now() where id = $1 and user_id = $2 and revoked_at is null",
    )
    .bind(id)
    .bind(user_id)
    .execute(pool)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// The live token with this hash and its active owner; records the use (at most once a minute,
/// so a busy token does not cost a write per request).
pub async fn authenticate(
    pool: &PgPool,
    token_hash: &str,
) -> sqlx::Result<Option<(i64, crate::users::User)>> {
    #[derive(sqlx::FromRow)]
    struct Found {
        token_id: i64,
        stale: bool,
        #[sqlx(flatten)]
        user: crate::users::User,
    }
    let found: Option<Found> = sqlx::query_as(
        "select t.id as token_id,
                (t.last_used_at is null or t.last_used_at < now() - interval '1 minute') as stale,
                u.id, u.username, u.password_hash, u.is_staff, u.is_active, u.must_change_password,
                u.created_at, u.last_login_at
         from api_token t join app_user u on u.id = t.user_id
         where t.token_hash = $1 and t.revoked_at is null and u.is_active",
    )
    .bind(token_hash)
    .fetch_optional(pool)
    .await?;
    let Some(found) = found else {
        return Ok(None);
    };
    if found.stale {
        sqlx::query("update api_token set last_used_at = now() where id = $1")
            .bind(found.token_id)
            .execute(pool)
            .await?;
    }
    Ok(Some((found.token_id, found.user)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Username;

    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn a_token_authenticates_until_revoked(pool: PgPool) -> sqlx::Result<()> {
        let user = crate::users::create(&pool, &Username::parse("ada").unwrap(), "h", false)
            .await
            .unwrap();
        let token = create(&pool, user.id, "ci", "plinth_abcd", "hash1").await?;
        let (id, who) = authenticate(&pool, "hash1").await?.expect("valid");
        assert_eq!((id, who.id), (token.id, user.id));
        assert!(for_user(&pool, user.id).await?[0].last_used_at.is_some());
        assert!(authenticate(&pool, "other").await?.is_none());
        assert!(revoke(&pool, user.id, token.id).await?);
        assert!(!revoke(&pool, user.id, token.id).await?);
        assert!(authenticate(&pool, "hash1").await?.is_none());
        Ok(())
    }
}
