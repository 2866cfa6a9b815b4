//! The prediction log's maintenance job: partitions for the days ahead, rows that arrived in a
//! default partition moved into their day's, and retention (`PLINTH_RETENTION_DAYS`) by dropping
//! whole days.
//!
//! Every instance schedules the job; a Postgres advisory lock lets one run at a time, and the
//! time of the last run (in `prediction_log_state`) keeps the others from running it again
//! within the same interval.

use std::time::Duration;

use sqlx::PgPool;
use time::{Date, OffsetDateTime};

/// The advisory lock's key ("plinth-m").
const LOCK: i64 = 0x706c_696e_7468_2d6d;

/// The tables partitioned by day.
const TABLES: [&str; 2] = ["prediction", "prediction_failure"];

/// What the job is asked to do.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Drop the days before `today - retention_days`; keep everything when `None`.
    pub retention_days: Option<u32>,
    /// Partitions are made this many days ahead of today.
    pub days_ahead: u32,
    /// Another run within this interval of the last one (by any instance) does nothing.
    pub interval: Duration,
}

/// What a run did.
#[derive(Clone, Debug, PartialEq)]
pub enum Run {
    /// Another instance is running the job now.
    Busy,
    /// The job ran less than an interval ago.
    Recent,
    Done {
        /// Partitions made (ahead, or for rows waiting in a default partition).
        created: i32,
        /// Partitions dropped by retention.
        dropped: Vec<String>,
    },
}

/// Runs the job once, unless another instance is running it or ran it within the interval.
pub async fn run(pool: &PgPool, policy: &Policy, instance: &str) -> sqlx::Result<Run> {
    let mut tx = pool.begin().await?;
    let locked: bool = sqlx::query_scalar("select pg_try_advisory_xact_lock($1)")
        .bind(LOCK)
        .fetch_one(&mut *tx)
        .await?;
    if !locked {
        return Ok(Run::Busy);
    }
    let recent: bool = sqlx::query_scalar(
        "select coalesce(last_run_at > now() - make_interval(secs => $1), false)
         from prediction_log_state",
    )
    .bind(policy.interval.as_secs_f64() * 0.9)
    .fetch_one(&mut *tx)
    .await?;
    if recent {
        return Ok(Run::Recent);
    }
    let today: Date = sqlx::query_scalar("select (now() at time zone 'UTC')::date")
        .fetch_one(&mut *tx)
        .await?;
    let mut created = 0;
    let mut dropped = Vec::new();
    for table in TABLES {
        created += sqlx::query_scalar::<_, i32>("select plinth_partition_waiting($1)")
            .bind(table)
            .fetch_one(&mut *tx)
            .await?;
        let made: i64 = sqlx::query_scalar(
            "select count(*) filter (where plinth_partition_day($1, $2::date + d))
             from generate_series(0, $3) d",
        )
        .bind(table)
        .bind(today)
        .bind(policy.days_ahead as i32)
        .fetch_one(&mut *tx)
        .await?;
        created += made as i32;
        if let Some(days) = policy.retention_days {
            let cutoff = today - time::Duration::days(days.into());
            let old: Vec<String> = sqlx::query_scalar(
                "select plinth_partition_name($1, d) from plinth_partition_days($1) d where d < $2",
            )
            .bind(table)
            .bind(cutoff)
            .fetch_all(&mut *tx)
            .await?;
            for name in old {
                // The name is ours (`<table>_pYYYYMMDD`), quoted all the same.
                sqlx::query(&format!("drop table \"{}\"", name.replace('"', "\"\"")))
                    .execute(&mut *tx)
                    .await?;
                dropped.push(name);
            }
        }
    }
    let cutoff = policy
        .retention_days
        .map(|days| today - time::Duration::days(days.into()));
    sqlx::query(
        "update prediction_log_state
         set last_run_at = now(), last_run_by = $1, retention_days = $2,
             retained_from = case when $3 then greatest(retained_from, ($4::date)::timestamp at time zone 'UTC')
                                  else retained_from end",
    )
    .bind(instance)
    .bind(policy.retention_days.map(|d| d as i32))
    .bind(!dropped.is_empty())
    .bind(cutoff)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Run::Done { created, dropped })
}

/// Since when predictions are kept, when retention has dropped any; and the retention in days.
pub async fn retained_from(pool: &PgPool) -> sqlx::Result<(Option<OffsetDateTime>, Option<i32>)> {
    sqlx::query_as("select retained_from, retention_days from prediction_log_state")
        .fetch_optional(pool)
        .await
        .map(|r| r.unwrap_or((None, None)))
}

/// Runs the job now and then every `policy.interval`, until the task is aborted.
pub async fn schedule(pool: PgPool, policy: Policy, instance: String) {
    let mut ticks = tokio::time::interval(policy.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match run(&pool, &policy, &instance).await {
            Ok(Run::Done { created, dropped }) => {
                tracing::info!(
                    created,
                    dropped = dropped.len(),
                    "prediction log maintained"
                )
            }
            Ok(other) => tracing::debug!(?other, "prediction log maintenance skipped"),
            Err(e) => tracing::warn!(error = %e, "prediction log maintenance failed"),
        }
    }
}
