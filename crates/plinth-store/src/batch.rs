//! The `batch_job`, `batch_chunk` and `batch_error` tables: batch scoring jobs.

use std::time::Duration;

use sqlx::types::Json;
use sqlx::PgPool;
use time::OffsetDateTime;

use super::predictions::{copy_in_on, NewPredictions};

/// A job with the names its pages show.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct JobRow {
    pub id: i64,
    pub model: String,
    pub model_id: i64,
    pub version: i32,
    pub version_id: i64,
    pub user_id: Option<i64>,
    pub username: Option<String>,
    pub token_id: Option<i64>,
    pub state: String,
    pub input_name: String,
    pub input_format: String,
    pub columns: Json<Vec<String>>,
    pub output_url: Option<String>,
    pub total_rows: i64,
    pub rows_done: i64,
    pub rows_failed: i64,
    pub max_errors: i64,
    /// The features whose contributions the results give, when the job was asked for them.
    pub contributions: Option<Json<Vec<String>>>,
    pub message: Option<String>,
    pub created_at: OffsetDateTime,
    pub started_at: Option<OffsetDateTime>,
    pub finished_at: Option<OffsetDateTime>,
}

impl JobRow {
    /// Queued or running (or writing its results out): not over yet.
    pub fn is_open(&self) -> bool {
        matches!(self.state.as_str(), "queued" | "running" | "finishing")
    }
}

const SELECT: &str = "select j.id, m.name as model, j.model_id, v.version, j.version_id, j.user_id,
        u.username, j.token_id, j.state, j.input_name, j.input_format, j.columns, j.output_url,
        j.total_rows, j.rows_done, j.rows_failed, j.max_errors, j.contributions, j.message, j.created_at,
        j.started_at, j.finished_at
    from batch_job j
    join model m on m.id = j.model_id
    join model_version v on v.id = j.version_id
    left join app_user u on u.id = j.user_id";

/// A job about to be created.
pub struct NewJob<'a> {
    pub model_id: i64,
    pub version_id: i64,
    pub user_id: Option<i64>,
    pub token_id: Option<i64>,
    pub input_name: &'a str,
    pub input_format: &'a str,
    pub columns: &'a [String],
    pub output_url: Option<&'a str>,
    pub max_errors: i64,
    pub contributions: Option<&'a [String]>,
}

/// Creates a job (in the submission's transaction, so it is seen with all its chunks or not
/// at all).
pub async fn create(conn: &mut sqlx::PgConnection, job: &NewJob<'_>) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "insert into batch_job (model_id, version_id, user_id, token_id, input_name,
                                input_format, columns, output_url, total_rows, max_errors,
                                contributions)
         values ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $10) returning id",
    )
    .bind(job.model_id)
    .bind(job.version_id)
    .bind(job.user_id)
    .bind(job.token_id)
    .bind(job.input_name)
    .bind(job.input_format)
    .bind(Json(job.columns))
    .bind(job.output_url)
    .bind(job.max_errors)
    .bind(job.contributions.map(Json))
    .fetch_one(conn)
    .await
}

pub async fn add_chunk(
    conn: &mut sqlx::PgConnection,
    job_id: i64,
    seq: i32,
    first_line: i64,
    rows: i32,
    input: &[u8],
) -> sqlx::Result<()> {
    sqlx::query(
        "insert into batch_chunk (job_id, seq, first_line, rows, input) values ($1, $2, $3, $4, $5)",
    )
    .bind(job_id)
    .bind(seq)
    .bind(first_line)
    .bind(rows)
    .bind(input)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn set_total(conn: &mut sqlx::PgConnection, job_id: i64, total: i64) -> sqlx::Result<()> {
    sqlx::query("update batch_job set total_rows = $2 where id = $1")
        .bind(job_id)
        .bind(total)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn get(pool: &PgPool, id: i64) -> sqlx::Result<Option<JobRow>> {
    sqlx::query_as(&format!("{SELECT} where j.id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// The latest jobs, of one user or (staff) everyone's.
pub async fn list(pool: &PgPool, user_id: Option<i64>, limit: i64) -> sqlx::Result<Vec<JobRow>> {
    sqlx::query_as(&format!(
        "{SELECT} where ($1::bigint is null or j.user_id = $1) order by j.id desc limit $2"
    ))
    .bind(user_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// A job's refused rows, in file order.
pub async fn errors(pool: &PgPool, id: i64, limit: i64) -> sqlx::Result<Vec<(i64, String)>> {
    sqlx::query_as("select line, reason from batch_error where job_id = $1 order by line limit $2")
        .bind(id)
        .bind(limit)
        .fetch_all(pool)
        .await
}

/// Cancels a job that is not over; its unscored chunks' rows are let go. False when it was
/// already over.
pub async fn cancel(pool: &PgPool, id: i64, by: &str) -> sqlx::Result<bool> {
    close(pool, id, "cancelled", &format!("Cancelled by {by}.")).await
}

/// Ends an open job as `state` with `message`, letting go of its unscored chunks' rows; false
/// when it was already over.
async fn close(pool: &PgPool, id: i64, state: &str, message: &str) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    let done = sqlx::query(
        "update batch_job set state = $2, finished_at = now(), message = $3
         where id = $1 and state in ('queued', 'running', 'finishing')",
    )
    .bind(id)
    .bind(state)
    .bind(message)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    release_inputs(&mut tx, id).await?;
    tx.commit().await?;
    Ok(true)
}

/// Drops the input of a job's chunks that will not be scored now.
async fn release_inputs(conn: &mut sqlx::PgConnection, id: i64) -> sqlx::Result<()> {
    sqlx::query("update batch_chunk set input = null where job_id = $1 and state <> 'done'")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// A chunk a worker holds.
#[derive(Debug, sqlx::FromRow)]
pub struct Claimed {
    pub job_id: i64,
    pub seq: i32,
    pub first_line: i64,
    pub rows: i32,
    pub input: Vec<u8>,
    pub attempts: i32,
}

/// Claims the oldest open job's next chunk that nobody holds (or whose holder's lease ran
/// out), for `lease`.
pub async fn claim(
    pool: &PgPool,
    instance: &str,
    lease: Duration,
) -> sqlx::Result<Option<Claimed>> {
    let claimed: Option<Claimed> = sqlx::query_as(
        "update batch_chunk c
            set state = 'running', leased_by = $1,
                lease_until = now() + make_interval(secs => $2), attempts = c.attempts + 1
           from (select c2.job_id, c2.seq
                   from batch_chunk c2
                   join batch_job j on j.id = c2.job_id
                  where j.state in ('queued', 'running')
                    and c2.state <> 'done'
                    and (c2.state = 'pending' or c2.lease_until < now())
                  order by c2.job_id, c2.seq
                  limit 1
                    for update of c2 skip locked) next
          where c.job_id = next.job_id and c.seq = next.seq
      returning c.job_id, c.seq, c.first_line, c.rows, coalesce(c.input, ''::bytea) as input,
                c.attempts",
    )
    .bind(instance)
    .bind(lease.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    if let Some(c) = &claimed {
        sqlx::query(
            "update batch_job set state = 'running', started_at = coalesce(started_at, now())
             where id = $1 and state = 'queued'",
        )
        .bind(c.job_id)
        .execute(pool)
        .await?;
    }
    Ok(claimed)
}

/// Extends a held chunk's lease; false when this worker no longer holds it.
pub async fn renew(
    pool: &PgPool,
    job_id: i64,
    seq: i32,
    instance: &str,
    lease: Duration,
) -> sqlx::Result<bool> {
    let renewed = sqlx::query(
        "update batch_chunk set lease_until = now() + make_interval(secs => $4)
         where job_id = $1 and seq = $2 and leased_by = $3 and state = 'running'",
    )
    .bind(job_id)
    .bind(seq)
    .bind(instance)
    .bind(lease.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(renewed.rows_affected() == 1)
}

/// A scored chunk, to commit.
pub struct ChunkResult<'a> {
    pub job_id: i64,
    pub seq: i32,
    pub instance: &'a str,
    pub output: &'a [u8],
    pub rows: i64,
    pub errors: &'a [(i64, String)],
    /// The predictions, a log row each, with their first ids.
    pub predictions: &'a [(i64, &'a NewPredictions)],
}

/// What committing a chunk did.
#[derive(Debug, PartialEq, Eq)]
pub enum Committed {
    /// Stored; the job's state after it.
    Stored { state: String },
    /// Another worker holds the chunk now (this one's lease ran out): nothing stored.
    LeaseLost,
    /// The job was cancelled or stopped meanwhile: nothing stored.
    JobClosed,
}

/// Commits a chunk in one transaction: its results and state, its refused rows, the job's
/// counters (and its end, when this was the last chunk or the error budget is spent) and the
/// predictions. Refused unless this worker still holds the chunk and the job is still open.
pub async fn commit_chunk(pool: &PgPool, r: &ChunkResult<'_>) -> sqlx::Result<Committed> {
    let mut tx = pool.begin().await?;
    let held = sqlx::query(
        "update batch_chunk
            set state = 'done', output = $4, input = null, rows_failed = $5,
                lease_until = null
          where job_id = $1 and seq = $2 and leased_by = $3 and state = 'running'",
    )
    .bind(r.job_id)
    .bind(r.seq)
    .bind(r.instance)
    .bind(r.output)
    .bind(r.errors.len() as i32)
    .execute(&mut *tx)
    .await?;
    if held.rows_affected() == 0 {
        return Ok(Committed::LeaseLost);
    }
    // The job's row lock orders the chunks' commits: what is counted next sees the others.
    let job: Option<(i64, i64, bool)> = sqlx::query_as(
        "update batch_job
            set rows_done = rows_done + $2, rows_failed = rows_failed + $3
          where id = $1 and state in ('queued', 'running')
      returning rows_failed, max_errors, output_url is not null",
    )
    .bind(r.job_id)
    .bind(r.rows)
    .bind(r.errors.len() as i64)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((failed, budget, has_output_url)) = job else {
        return Ok(Committed::JobClosed);
    };
    if !r.errors.is_empty() {
        let (lines, reasons): (Vec<i64>, Vec<String>) = r.errors.iter().cloned().unzip();
        sqlx::query(
            "insert into batch_error (job_id, line, reason)
             select $1, * from unnest($2::bigint[], $3::text[])
             on conflict do nothing",
        )
        .bind(r.job_id)
        .bind(&lines)
        .bind(&reasons)
        .execute(&mut *tx)
        .await?;
    }
    if !r.predictions.is_empty() {
        let started = std::time::Instant::now();
        copy_in_on(&mut tx, r.predictions).await?;
        tracing::debug!(
            copy_ms = started.elapsed().as_secs_f64() * 1e3,
            "chunk predictions copied"
        );
    }
    let remaining: i64 = sqlx::query_scalar(
        "select count(*) from batch_chunk where job_id = $1 and state <> 'done'",
    )
    .bind(r.job_id)
    .fetch_one(&mut *tx)
    .await?;
    let state = if failed > budget {
        sqlx::query(
            "update batch_job set state = 'failed', finished_at = now(), message = $2 where id = $1",
        )
        .bind(r.job_id)
        .bind(format!(
            "Stopped: {failed} rows were refused, more than the error budget of {budget}. \
             The rows scored so far are in the results."
        ))
        .execute(&mut *tx)
        .await?;
        release_inputs(&mut tx, r.job_id).await?;
        "failed"
    } else if remaining == 0 && has_output_url {
        sqlx::query("update batch_job set state = 'finishing' where id = $1")
            .bind(r.job_id)
            .execute(&mut *tx)
            .await?;
        "finishing"
    } else if remaining == 0 {
        sqlx::query("update batch_job set state = 'done', finished_at = now() where id = $1")
            .bind(r.job_id)
            .execute(&mut *tx)
            .await?;
        "done"
    } else {
        "running"
    };
    tx.commit().await?;
    Ok(Committed::Stored {
        state: state.to_string(),
    })
}

/// Claims a job whose chunks are all scored and whose results are to be written to its
/// output URL (nobody doing it, or its writer's lease ran out).
pub async fn claim_finishing(
    pool: &PgPool,
    instance: &str,
    lease: Duration,
) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "update batch_job set leased_by = $1, lease_until = now() + make_interval(secs => $2)
          where id = (select id from batch_job
                       where state = 'finishing' and (lease_until is null or lease_until < now())
                       order by id limit 1 for update skip locked)
      returning id",
    )
    .bind(instance)
    .bind(lease.as_secs_f64())
    .fetch_optional(pool)
    .await
}

/// Extends the lease on writing a job's results out.
pub async fn renew_finishing(
    pool: &PgPool,
    id: i64,
    instance: &str,
    lease: Duration,
) -> sqlx::Result<bool> {
    let renewed = sqlx::query(
        "update batch_job set lease_until = now() + make_interval(secs => $3)
         where id = $1 and leased_by = $2 and state = 'finishing'",
    )
    .bind(id)
    .bind(instance)
    .bind(lease.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(renewed.rows_affected() == 1)
}

/// Ends a job that was writing its results out: `done`, or `failed` with the reason.
pub async fn end_finishing(pool: &PgPool, id: i64, failure: Option<&str>) -> sqlx::Result<()> {
    sqlx::query(
        "update batch_job
            set state = case when $2::text is null then 'done' else 'failed' end,
                message = coalesce($2, message), finished_at = now(), lease_until = null
          where id = $1 and state = 'finishing'",
    )
    .bind(id)
    .bind(failure)
    .execute(pool)
    .await?;
    Ok(())
}

/// The results of chunk `seq`, when it is scored.
pub async fn output(pool: &PgPool, job_id: i64, seq: i32) -> sqlx::Result<Option<Vec<u8>>> {
    let row: Option<Option<Vec<u8>>> = sqlx::query_scalar(
        "select output from batch_chunk where job_id = $1 and seq = $2 and state = 'done'",
    )
    .bind(job_id)
    .bind(seq)
    .fetch_optional(pool)
    .await?;
    Ok(row.flatten())
}

/// How many chunks the job has.
pub async fn chunk_count(pool: &PgPool, job_id: i64) -> sqlx::Result<i32> {
    let n: Option<i32> =
        sqlx::query_scalar("select max(seq) + 1 from batch_chunk where job_id = $1")
            .bind(job_id)
            .fetch_one(pool)
            .await?;
    Ok(n.unwrap_or(0))
}

/// Open jobs' counts, for `/metrics`: (queued or running jobs, rows left).
pub async fn backlog(pool: &PgPool) -> sqlx::Result<(i64, i64)> {
    sqlx::query_as(
        "select count(*), coalesce(sum(total_rows - rows_done), 0)::bigint
         from batch_job where state in ('queued', 'running', 'finishing')",
    )
    .fetch_one(pool)
    .await
}

/// Stops an open job with the reason; its unscored chunks' rows are let go.
pub async fn fail(pool: &PgPool, id: i64, reason: &str) -> sqlx::Result<()> {
    close(pool, id, "failed", reason).await.map(drop)
}
