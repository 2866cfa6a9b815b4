//! The `app_user` table.

use sqlx::PgPool;
use time::OffsetDateTime;

use crate::domain::Username;

/// An account.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct User {
    pub id: i64,
    pub username: String,
    #[sqlx(default)]
    pub password_hash: String,
    pub is_staff: bool,
    pub is_active: bool,
    pub must_change_password: bool,
    pub created_at: OffsetDateTime,
    pub last_login_at: Option<OffsetDateTime>,
}

const COLUMNS: &str = "id, username, password_hash, is_staff, is_active, must_change_password, created_at, last_login_at";

/// Why an insert did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CreateUserError {
    #[error("A user with that username already exists.")]
    UsernameTaken,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

pub async fn create(
    pool: &PgPool,
    username: &Username,
    password_hash: &str,
    is_staff: bool,
) -> Result<User, CreateUserError> {
    let sql = format!(
        "insert into app_user (username, password_hash, is_staff) values ($1, $2, $3) returning {COLUMNS}"
    );
    sqlx::query_as::<_, User>(&sql)
        .bind(username.as_str())
        .bind(password_hash)
        .bind(is_staff)
        .fetch_one(pool)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => CreateUserError::UsernameTaken,
            _ => CreateUserError::Database(e),
        })
}

pub async fn find_by_id(pool: &PgPool, id: i64) -> sqlx::Result<Option<User>> {
    let sql = format!("select {COLUMNS} from app_user where id = $1");
    sqlx::query_as::<_, User>(&sql)
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Looks a username up without regard to case.
pub async fn find_by_username(pool: &PgPool, username: &str) -> sqlx::Result<Option<User>> {
    let sql = format!("select {COLUMNS} from app_user where lower(username) = lower($1)");
    sqlx::query_as::<_, User>(&sql)
        .bind(username.trim())
        .fetch_optional(pool)
        .await
}

pub async fn any_staff(pool: &PgPool) -> sqlx::Result<bool> {
    sqlx::query_scalar("select exists (select 1 from app_user where is_staff and is_active)")
        .fetch_one(pool)
        .await
}

pub async fn record_login(pool: &PgPool, id: i64) -> sqlx::Result<()> {
    sqlx::query("update app_user set last_login_at = now() where id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Sets a new password hash and ends every session of the user; `must_change` asks for another
/// change at next login (a temporary password set by staff).
pub async fn set_password(
    pool: &PgPool,
    id: i64,
    password_hash: &str,
    must_change: bool,
) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("update app_user set password_hash = $2, must_change_password = $3 where id = $1")
        .bind(id)
        .bind(password_hash)
        .bind(must_change)
        .execute(&mut *tx)
        .await?;
    sqlx::query("delete from session where user_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Enables or disables an account. Disabling ends every session at once.
pub async fn set_active(pool: &PgPool, id: i64, active: bool) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("update app_user set is_active = $2 where id = $1")
        .bind(id)
        .bind(active)
        .execute(&mut *tx)
        .await?;
    if !active {
        sqlx::query("delete from session where user_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Grants or withdraws staff rights.
pub async fn set_staff(pool: &PgPool, id: i64, staff: bool) -> sqlx::Result<()> {
    sqlx::query("update app_user set is_staff = $2 where id = $1")
        .bind(id)
        .bind(staff)
        .execute(pool)
        .await?;
    Ok(())
}

/// A row of the users list.
#[derive(Debug, sqlx::FromRow)]
pub struct UserListRow {
    pub id: i64,
    pub username: String,
    pub is_staff: bool,
    pub is_active: bool,
    pub created_at: OffsetDateTime,
    pub last_login_at: Option<OffsetDateTime>,
    pub sessions: i64,
    pub predictions: i64,
}

/// Users whose name contains `query` (all when empty), by name.
pub async fn search(
    pool: &PgPool,
    query: &str,
    offset: i64,
    limit: i64,
) -> sqlx::Result<Vec<UserListRow>> {
    sqlx::query_as(
        "select u.id, u.username, u.is_staff, u.is_active, u.created_at, u.last_login_at,
                (select count(*) from session s where s.user_id = u.id and s.expires_at > now()) as sessions,
                (select coalesce(sum(p.n), 0)::bigint from prediction p where p.user_id = u.id) as predictions
         from app_user u
         where $1 = '' or strpos(lower(u.username), lower($1)) > 0
         order by lower(u.username) offset $2 limit $3",
    )
    .bind(query.trim())
    .bind(offset)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Head counts for the admin page.
#[derive(Debug, sqlx::FromRow)]
pub struct UserCounts {
    pub total: i64,
    pub staff: i64,
    pub disabled: i64,
}

pub async fn counts(pool: &PgPool) -> sqlx::Result<UserCounts> {
    sqlx::query_as::<_, UserCounts>(
        "select count(*) as total,
                count(*) filter (where is_staff) as staff,
                count(*) filter (where not is_active) as disabled
         from app_user",
    )
    .fetch_one(pool)
    .await
}

/// The most recently signed-in users.
pub async fn recent_logins(pool: &PgPool, limit: i64) -> sqlx::Result<Vec<User>> {
    let sql = format!(
        "select {COLUMNS} from app_user where last_login_at is not null
         order by last_login_at desc limit $1"
    );
    sqlx::query_as::<_, User>(&sql)
        .bind(limit)
        .fetch_all(pool)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn usernames_are_unique_regardless_of_case(pool: PgPool) -> sqlx::Result<()> {
        let ada = Username::parse("Ada").unwrap();
        let user = create(&pool, &ada, "hash", false).await.unwrap();
        let again = Username::parse("ada").unwrap();
        assert!(matches!(
            create(&pool, &again, "hash", false).await,
            Err(CreateUserError::UsernameTaken)
        ));
        let found = find_by_username(&pool, "ADA").await?.expect("found");
        assert_eq!(found.id, user.id);
        assert_eq!(find_by_id(&pool, user.id).await?.unwrap().username, "Ada");
        assert!(!any_staff(&pool).await?);
        Ok(())
    }

    #[sqlx::test(migrator = "crate::MIGRATOR")]
    async fn disabling_and_password_changes_end_sessions(pool: PgPool) -> sqlx::Result<()> {
        let user = create(&pool, &Username::parse("grace").unwrap(), "h", true)
            .await
            .unwrap();
        let state = serde_json::json!({});
        crate::sessions::insert(&pool, "a", Some(user.id), &state, 60.0, None).await?;
        set_active(&pool, user.id, false).await?;
        assert!(!find_by_id(&pool, user.id).await?.unwrap().is_active);
        assert_eq!(crate::sessions::count_signed_in(&pool).await?, 0);

        crate::sessions::insert(&pool, "b", Some(user.id), &state, 60.0, None).await?;
        set_password(&pool, user.id, "h2", true).await?;
        let user = find_by_id(&pool, user.id).await?.unwrap();
        assert_eq!(user.password_hash, "h2");
        assert!(user.must_change_password);
        assert_eq!(crate::sessions::count_signed_in(&pool).await?, 0);

        record_login(&pool, user.id).await?;
        assert_eq!(recent_logins(&pool, 5).await?.len(), 1);
        let counts = counts(&pool).await?;
        assert_eq!((counts.total, counts.staff, counts.disabled), (1, 1, 1));
        Ok(())
    }
}
