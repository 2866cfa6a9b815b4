//! Two versions of a model compared over both versions' reference rows, as a job the batch
//! workers run (never in a request): how often they give the same label (and the confusion
//! between their labels) or how far apart their values are (the distribution of b − a), and the
//! rows where they disagree most.
//!
//! Rows are read and scored in chunks with the batch jobs' parser and scorer, so each version
//! refuses exactly the rows its form would refuse; a row either version refuses is counted, not
//! compared. The job renews its lease with each chunk's progress; one whose worker died is
//! claimed again and started over.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix_web::web::Data;
use serde_json::Value;

use crate::batch::{files, parse_chunk, score, Format, Layout};
use crate::error::AppError;
use crate::registry::decode::Outcome;
use crate::registry::{Selector, Served};
use crate::state::AppState;
use crate::web::forms::Spooled;
use plinth_store::comparisons::{self as db, ComparisonRow};

mod tally;

use tally::{SourceFigures, Tally};

/// Rows per chunk: each chunk reports progress.
const CHUNK_ROWS: usize = 4096;
/// Rows listed as disagreeing most.
pub const TOP_ROWS: usize = 20;
/// Refusals listed.
const REFUSALS: usize = 10;

/// One source of rows: a version's reference data.
struct Source {
    /// `a` or `b`.
    label: &'static str,
    version: i32,
    file: Spooled,
}

/// One version, ready to score a source's rows.
struct Side {
    served: Served,
    version: i32,
}

/// Reads every source chunk by chunk and scores each chunk with both versions (blocking).
/// `progress` gets the rows read so far after each chunk; `stop` ends the work early.
fn tally(
    a: &Side,
    b: &Side,
    sources: &[(&'static str, i32, PathBuf)],
    progress: &tokio::sync::mpsc::Sender<u64>,
    stop: &AtomicBool,
) -> Result<Tally, String> {
    let mut t = Tally::default();
    let features: std::collections::BTreeSet<&str> = a
        .served
        .card
        .features
        .iter()
        .chain(&b.served.card.features)
        .map(|f| f.name.as_str())
        .collect();
    for (s, &(label, version, ref path)) in sources.iter().enumerate() {
        t.sources.push((label, version, SourceFigures::default()));
        let mut reader = files::open(path, Format::Csv, CHUNK_ROWS)?;
        let columns = reader.columns().to_vec();
        let layout = |side: &Side| {
            Layout::new(
                &side.served.card,
                &side.served.loaded,
                columns.clone(),
                false,
            )
        };
        let (la, lb) = (layout(a), layout(b));
        while let Some(chunk) = reader.next_chunk()? {
            if stop.load(Ordering::Relaxed) {
                return Err("stopped".into());
            }
            t.rows += chunk.rows as u64;
            t.sources[s].2.rows += chunk.rows as u64;
            let run = |side: &Side, layout: &Result<Layout, String>| match layout {
                Ok(layout) => {
                    let mut parsed = parse_chunk(
                        &side.served.card,
                        layout,
                        Format::Csv,
                        &chunk.bytes,
                        chunk.first_line,
                    )?;
                    let scored = score(&side.served.card, &side.served.loaded, &mut parsed);
                    Ok::<_, String>(Some((parsed, scored)))
                }
                Err(_) => Ok(None),
            };
            let (pa, pb) = (run(a, &la)?, run(b, &lb)?);
            match (pa, pb) {
                (Some((parsed_a, scored_a)), Some((parsed_b, scored_b))) => {
                    let mut outcomes_a: Vec<Option<Outcome>> =
                        scored_a.outcomes.into_iter().map(Some).collect();
                    let mut outcomes_b: Vec<Option<Outcome>> =
                        scored_b.outcomes.into_iter().map(Some).collect();
                    for (i, (va, vb)) in parsed_a.verdicts().zip(parsed_b.verdicts()).enumerate() {
                        let line = parsed_a.place(i);
                        match (va, vb) {
                            (Ok(ia), Ok(ib)) => {
                                let (Some(oa), Some(ob)) = (
                                    outcomes_a.get_mut(ia).and_then(Option::take),
                                    outcomes_b.get_mut(ib).and_then(Option::take),
                                ) else {
                                    continue;
                                };
                                if let Some(mut d) = t.compare(s, oa, ob) {
                                    if d.score > 0.0 {
                                        d.source = label;
                                        d.line = line;
                                        if let Some(record) = parsed_a.record(i) {
                                            d.inputs = columns
                                                .iter()
                                                .zip(record.iter())
                                                .filter(|(c, _)| features.contains(c.as_str()))
                                                .map(|(c, v)| {
                                                    (
                                                        c.clone(),
                                                        String::from_utf8_lossy(v)
                                                            .trim()
                                                            .to_string(),
                                                    )
                                                })
                                                .collect();
                                        }
                                        t.keep(d);
                                    }
                                }
                            }
                            (Err(reason), _) => {
                                t.refused_a += 1;
                                t.refuse(label, line, a.version, reason);
                            }
                            (_, Err(reason)) => {
                                t.refused_b += 1;
                                t.refuse(label, line, b.version, reason);
                            }
                        }
                    }
                }
                (None, _) => {
                    t.refused_a += chunk.rows as u64;
                    if let Err(reason) = &la {
                        t.refuse(label, chunk.first_line, a.version, reason);
                    }
                }
                (_, None) => {
                    t.refused_b += chunk.rows as u64;
                    if let Err(reason) = &lb {
                        t.refuse(label, chunk.first_line, b.version, reason);
                    }
                }
            }
            // The receiver is gone only when the job is over.
            let _ = progress.blocking_send(t.rows);
        }
    }
    Ok(t)
}

async fn side(state: &AppState, model: &str, version: i32) -> Result<Side, String> {
    let served = crate::serving::served(state, model, &Selector::Number(version))
        .await
        .map_err(|e| format!("Version {version} cannot be loaded: {e}"))?;
    Ok(Side { served, version })
}

/// Runs comparison `job`; its figures, `Ok(None)` when another worker took it over.
async fn compute(
    state: &Data<AppState>,
    me: &str,
    job: &ComparisonRow,
) -> Result<Option<Value>, String> {
    let a = side(state, &job.model, job.a_version).await?;
    let b = side(state, &job.model, job.b_version).await?;
    let mut sources: Vec<Source> = Vec::new();
    let mut seen = Vec::new();
    let mut total: i64 = 0;
    for (label, s) in [("a", &a), ("b", &b)] {
        let version = &s.served.version;
        let Some(sha) = version.reference_sha256.clone() else {
            continue;
        };
        if seen.contains(&sha) {
            continue;
        }
        let bytes = state
            .registry
            .reference_csv(version)
            .await
            .map_err(|e| {
                format!(
                    "The reference data of version {} cannot be read: {e}",
                    s.version
                )
            })?
            .unwrap_or_default();
        let file = Spooled::create_in(&crate::batch::jobs::spool_dir(state))
            .await
            .map_err(|e| format!("A scratch file cannot be written: {e}"))?;
        tokio::fs::write(&file.path, &bytes)
            .await
            .map_err(|e| format!("A scratch file cannot be written: {e}"))?;
        total += i64::from(version.reference_rows.unwrap_or(0));
        seen.push(sha);
        sources.push(Source {
            label,
            version: s.version,
            file,
        });
    }
    if sources.is_empty() {
        return Err(format!(
            "Neither version {} nor version {} has reference data (reference.csv) to compare them on.",
            job.a_version, job.b_version
        ));
    }
    let lease = state.settings.job_lease;
    if !db::progress(&state.pool, job.id, me, lease, total, 0)
        .await
        .map_err(|e| e.to_string())?
    {
        return Ok(None);
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(4);
    let stop = Arc::new(AtomicBool::new(false));
    let paths: Vec<(&'static str, i32, PathBuf)> = sources
        .iter()
        .map(|s| (s.label, s.version, s.file.path.clone()))
        .collect();
    let worker = {
        let stop = stop.clone();
        tokio::task::spawn_blocking(move || {
            let t = tally(&a, &b, &paths, &tx, &stop);
            t.map(|t| t.result(a.version, b.version))
        })
    };
    let mut lost = false;
    while let Some(rows) = rx.recv().await {
        match db::progress(&state.pool, job.id, me, lease, total, rows as i64).await {
            Ok(true) => {}
            Ok(false) => {
                lost = true;
                stop.store(true, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(comparison = job.id, error = %e, "could not record a comparison's progress")
            }
        }
    }
    let result = worker
        .await
        .map_err(|e| format!("The comparison stopped: {e}"))?;
    drop(sources);
    if lost {
        return Ok(None);
    }
    result.map(Some)
}

/// Runs comparison `id`, claimed by `me`, and records how it ended.
pub async fn run(state: &Data<AppState>, me: &str, id: i64) -> sqlx::Result<()> {
    let Some(job) = db::get(&state.pool, id).await? else {
        return Ok(());
    };
    let started = std::time::Instant::now();
    match compute(state, me, &job).await {
        Ok(Some(result)) => {
            db::finish(&state.pool, id, me, Ok(&result)).await?;
            tracing::info!(comparison = id, model = %job.model, a = job.a_version, b = job.b_version,
                seconds = started.elapsed().as_secs_f64(), "versions compared");
        }
        Ok(None) => {
            tracing::info!(comparison = id, "another worker took the comparison over");
        }
        Err(message) => {
            db::finish(&state.pool, id, me, Err(&message)).await?;
            tracing::warn!(comparison = id, %message, "a comparison failed");
        }
    }
    Ok(())
}

/// Queues a comparison of versions `a` and `b` of `model`; its id and whether it is new (one
/// already queued or running is returned instead).
pub async fn request(
    state: &AppState,
    model: &plinth_store::models::ModelRow,
    a: i32,
    b: i32,
    actor: Option<i64>,
) -> Result<(i64, bool), AppError> {
    if a == b {
        return Err(AppError::Unprocessable(
            "Choose two different versions to compare.".into(),
        ));
    }
    let find = |n: i32| async move {
        plinth_store::models::by_number(&state.pool, &model.name, n)
            .await?
            .map(|(_, v)| v)
            .ok_or_else(|| AppError::NotFound(format!("{} has no version {n}.", model.name)))
    };
    let (va, vb) = (find(a).await?, find(b).await?);
    if va.reference_sha256.is_none() && vb.reference_sha256.is_none() {
        return Err(AppError::Unprocessable(format!(
            "Neither version {a} nor version {b} has reference data (reference.csv) to run them over."
        )));
    }
    let total = if va.reference_sha256 == vb.reference_sha256 {
        i64::from(va.reference_rows.unwrap_or(0))
    } else {
        i64::from(va.reference_rows.unwrap_or(0)) + i64::from(vb.reference_rows.unwrap_or(0))
    };
    Ok(db::request(&state.pool, model.id, va.id, vb.id, total, actor).await?)
}
