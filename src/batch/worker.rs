//! The batch workers: each instance runs `PLINTH_JOB_WORKERS` of them. A worker claims a chunk
//! of any open job, scores it on the blocking pool while renewing its lease, and commits the
//! results, the predictions and the job's progress in one transaction. Jobs that write their
//! results to a URL are finished by whichever worker claims them once every chunk is scored.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix_web::web::Data;
use tracing::Instrument;

use super::{explain_scored, parse_chunk, score, write_output, Format};
use crate::monitoring::metrics::Stage;
use crate::registry::{Selector, ServeError};
use crate::state::AppState;
use plinth_store::batch::{self as db, ChunkResult, Claimed, Committed};
use plinth_store::predictions::{self, NewPredictions, ID_BLOCK};

/// Starts the workers; they stop claiming work once the instance drains.
pub fn start(state: &Data<AppState>, instance: &str) -> Vec<tokio::task::JoinHandle<()>> {
    (0..state.settings.job_workers)
        .map(|i| tokio::spawn(run(state.clone(), format!("{instance}/{i}"))))
        .collect()
}

async fn run(state: Data<AppState>, me: String) {
    loop {
        if state.draining.load(Ordering::SeqCst) {
            return;
        }
        match step(&state, &me).await {
            Ok(true) => {}
            Ok(false) => {
                // Idle: look again soon (a little jitter so instances do not poll in step).
                let jitter = rand::random::<u64>() % 200;
                tokio::time::sleep(Duration::from_millis(400 + jitter)).await;
            }
            Err(e) => {
                tracing::warn!(worker = %me, error = %e, "a batch worker could not reach the database");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// Does one piece of work if there is one; false when there was none.
async fn step(state: &Data<AppState>, me: &str) -> sqlx::Result<bool> {
    let lease = state.settings.job_lease;
    if let Some(chunk) = db::claim(&state.pool, me, lease).await? {
        let (job, seq) = (chunk.job_id, chunk.seq);
        let span = tracing::info_span!("batch.chunk", job, seq, rows = chunk.rows);
        if let Err(e) = score_chunk(state, me, chunk).instrument(span).await {
            tracing::warn!(job, seq, error = %e, "a batch chunk could not be committed; it will be claimed again");
        }
        return Ok(true);
    }
    if let Some(id) = db::claim_finishing(&state.pool, me, lease).await? {
        write_out(state, me, id).await?;
        return Ok(true);
    }
    // Two model versions compared over their reference rows (the compare page's job).
    if let Some(id) = plinth_store::comparisons::claim(&state.pool, me, lease).await? {
        crate::datasets::compare::run(state, me, id).await?;
        return Ok(true);
    }
    Ok(false)
}

/// Renews a lease every third of its length until dropped.
struct Renewal(tokio::task::JoinHandle<()>);

impl Drop for Renewal {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn renew_chunk(state: &Data<AppState>, me: &str, job: i64, seq: i32) -> Renewal {
    let (pool, me, lease) = (state.pool.clone(), me.to_string(), state.settings.job_lease);
    Renewal(tokio::spawn(async move {
        loop {
            tokio::time::sleep(lease / 3).await;
            match db::renew(&pool, job, seq, &me, lease).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => tracing::warn!(job, seq, error = %e, "could not renew a chunk's lease"),
            }
        }
    }))
}

async fn score_chunk(state: &Data<AppState>, me: &str, chunk: Claimed) -> sqlx::Result<()> {
    let pool = &state.pool;
    let Some(job) = db::get(pool, chunk.job_id).await? else {
        return Ok(());
    };
    let served = match state
        .registry
        .resolve(&job.model, &Selector::Number(job.version))
        .await
    {
        Ok(Some(served)) => served,
        Ok(None) => {
            return fail(
                state,
                job.id,
                "The model version this job was scoring is gone.",
            )
            .await
        }
        Err(ServeError::Unavailable(reason)) => {
            return fail(
                state,
                job.id,
                &format!("The model could not be loaded: {reason}"),
            )
            .await
        }
        Err(ServeError::Database(e)) => return Err(e),
    };
    let layout = match super::jobs::job_layout(&served, &job) {
        Ok(layout) => layout,
        Err(e) => return fail(state, job.id, &e).await,
    };
    let explanation = if job.contributions.is_some() {
        let base = state.registry.explanation_base(&served).await;
        if let Err(why) = base.as_ref() {
            let why = format!("The contributions cannot be computed: {why}");
            return fail(state, job.id, &why).await;
        }
        Some(base)
    } else {
        None
    };
    let format = Format::parse(&job.input_format).unwrap_or(Format::Csv);
    let _renewal = renew_chunk(state, me, chunk.job_id, chunk.seq);
    // Enough ids for every row; a refused row's ids are simply never used.
    let blocks =
        predictions::reserve_id_blocks(pool, (chunk.rows as i64 + ID_BLOCK - 1) / ID_BLOCK).await?;
    let (model_id, version_id) = (job.model_id, job.version_id);
    let work_served = served.clone();
    let work = move || {
        let (card, loaded) = (&work_served.card, &work_served.loaded);
        let mut parsed = parse_chunk(card, &layout, format, &chunk.input, chunk.first_line)
            .map_err(|e| format!("A chunk could not be read: {e}"))?;
        let started = Instant::now();
        let mut scored = score(card, loaded, &mut parsed);
        if let Some(Ok(explanation)) = explanation.as_ref().map(|b| b.as_ref()) {
            explain_scored(card, loaded, explanation, &parsed, &mut scored)
                .map_err(|e| format!("The contributions could not be computed: {e}"))?;
        }
        let compute = started.elapsed();
        let ids: Vec<i64> = (0..scored.len())
            .map(|k| {
                blocks.get(k / ID_BLOCK as usize).copied().unwrap_or(0) + (k as i64 % ID_BLOCK)
            })
            .collect();
        let output = write_output(&layout, &parsed, &scored, Some(&ids));
        let n = scored.len();
        let latency_us = (compute.as_micros() / n.max(1) as u128).min(i32::MAX as u128) as i32;
        let outputs = crate::registry::encode::stored_outputs(card, &scored.outcomes);
        let parts = if n == 0 {
            Vec::new()
        } else {
            crate::prediction_log::split(
                NewPredictions {
                    model_id,
                    version_id,
                    user_id: None,
                    token_id: None,
                    source: "batch",
                    latency_us,
                    n,
                    inputs: scored.stored,
                    outputs,
                    shadow_of: None,
                },
                ID_BLOCK as usize,
            )
        };
        let firsts: Vec<i64> = (0..parts.len())
            .map(|i| blocks.get(i).copied().unwrap_or(0))
            .collect();
        Ok::<_, String>((output, parsed.errors(), parts, firsts, n, compute))
    };
    let phase = Instant::now();
    let done = match tokio::task::spawn_blocking(work).await {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => return fail(state, job.id, &e).await,
        Err(e) => {
            return fail(state, job.id, &format!("Scoring a chunk failed: {e}")).await;
        }
    };
    let (output, errors, parts, firsts, n, compute) = done;
    let worked = phase.elapsed();
    let predictions: Vec<(i64, &NewPredictions)> = firsts.iter().copied().zip(&parts).collect();
    let committed = db::commit_chunk(
        pool,
        &ChunkResult {
            job_id: chunk.job_id,
            seq: chunk.seq,
            instance: me,
            output: &output,
            rows: chunk.rows as i64,
            errors: &errors,
            predictions: &predictions,
        },
    )
    .await?;
    tracing::debug!(
        job = job.id,
        seq = chunk.seq,
        work_ms = worked.as_secs_f64() * 1e3,
        model_ms = compute.as_secs_f64() * 1e3,
        commit_ms = (phase.elapsed() - worked).as_secs_f64() * 1e3,
        "chunk scored"
    );
    match committed {
        Committed::Stored { state: job_state } => {
            let series = state.metrics.version(version_id, &job.model, job.version);
            series.latency(Stage::Compute, compute);
            series.success(n);
            state.metrics.batch_rows(&job.model, n, errors.len());
            if job_state != "running" {
                tracing::info!(job = job.id, state = %job_state, "batch job ended");
            }
            if job_state == "failed" {
                alert_failed(state, job.id).await;
            }
        }
        Committed::LeaseLost => {
            tracing::warn!(
                job = job.id,
                seq = chunk.seq,
                "a chunk's lease ran out before its commit; another worker scores it"
            );
        }
        Committed::JobClosed => {}
    }
    Ok(())
}

/// Stops a job with the reason.
async fn fail(state: &Data<AppState>, id: i64, reason: &str) -> sqlx::Result<()> {
    tracing::warn!(job = id, reason, "batch job failed");
    db::fail(&state.pool, id, reason).await?;
    alert_failed(state, id).await;
    Ok(())
}

/// Tells the webhooks that job `id` failed, with its message.
async fn alert_failed(state: &AppState, id: i64) {
    let Ok(Some(job)) = db::get(&state.pool, id).await else {
        return;
    };
    let model_id = match plinth_store::models::find_model(&state.pool, &job.model).await {
        Ok(Some(m)) => m.id,
        _ => return,
    };
    let message = job.message.clone().unwrap_or_default();
    crate::automation::webhooks::alert(
        &state.pool,
        "job.failed",
        Some((model_id, &job.model)),
        format!("{}: batch job {} failed. {message}", job.model, job.id),
        serde_json::json!({"job": job.id, "version": job.version, "message": message}),
    )
    .await;
}

/// Writes a finished job's results to its output URL, then ends it.
async fn write_out(state: &Data<AppState>, me: &str, id: i64) -> sqlx::Result<()> {
    let Some(job) = db::get(&state.pool, id).await? else {
        return Ok(());
    };
    let Some(url) = job.output_url.clone() else {
        return db::end_finishing(&state.pool, id, None).await;
    };
    let (pool, owner, lease) = (state.pool.clone(), me.to_string(), state.settings.job_lease);
    let _renewal = Renewal(tokio::spawn(async move {
        loop {
            tokio::time::sleep(lease / 3).await;
            if !matches!(
                db::renew_finishing(&pool, id, &owner, lease).await,
                Ok(true)
            ) {
                return;
            }
        }
    }));
    let format = Format::from_name(&url);
    let pieces = super::jobs::results(state, &job, format);
    let written = crate::registry::artifacts::upload_stream(&url, pieces).await;
    match &written {
        Ok(bytes) => tracing::info!(job = id, url = %url, bytes, "batch results written"),
        Err(e) => {
            tracing::warn!(job = id, url = %url, error = %e, "batch results could not be written")
        }
    }
    let failure = written
        .err()
        .map(|e| format!("Every row was scored, but the results could not be written to {url}: {e} They can still be downloaded here."));
    db::end_finishing(&state.pool, id, failure.as_deref()).await?;
    if failure.is_some() {
        alert_failed(state, id).await;
    }
    Ok(())
}
