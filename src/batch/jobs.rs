//! Submitting a batch job and reading its results.
//!
//! A submission hands over a file on local disk (an upload spooled as it arrived, or an object
//! fetched from a URL). It is read chunk by chunk on a blocking thread while the chunks go into
//! Postgres in one transaction with the job: a job exists with all its rows or not at all, and
//! a file whose columns do not fit the model is refused before anything is stored.

use std::path::{Path, PathBuf};

use actix_web::web::Bytes;
use tokio::sync::mpsc;

use super::files::{self, ChannelWriter, ParquetWriter};
use super::{Format, Layout};
use crate::error::AppError;
use crate::registry::Selector;
use crate::serving::{self, Caller};
use crate::state::AppState;
use crate::web::forms::Spooled;
use plinth_store::batch::{self as db, JobRow, NewJob};

/// What a job is asked to do.
pub struct Submission {
    pub model: String,
    pub selector: Selector,
    pub caller: Caller,
    /// The uploaded file's name, or the URL read.
    pub input_name: String,
    pub format: Format,
    pub output_url: Option<String>,
    pub max_errors: Option<i64>,
    /// Whether the results add each feature's contribution (exact SHAP values).
    pub explain: bool,
}

/// Where uploads are spooled.
pub fn spool_dir(state: &AppState) -> PathBuf {
    state.settings.cache_dir.join("uploads")
}

/// Checks a URL a job would read or write against `PLINTH_JOB_URLS`.
pub fn allowed_url(state: &AppState, url: &str) -> Result<(), AppError> {
    let url = url.trim();
    if state.settings.job_urls.is_empty() {
        return Err(AppError::Unprocessable(
            "This server does not read or write object-store URLs for jobs (PLINTH_JOB_URLS is not set); upload the file instead.".into(),
        ));
    }
    if url.contains("/../") || url.ends_with("/..") {
        return Err(AppError::Unprocessable(format!(
            "{url:?} is not a plain object URL."
        )));
    }
    if !state
        .settings
        .job_urls
        .iter()
        .any(|prefix| url.starts_with(prefix.as_str()))
    {
        return Err(AppError::Unprocessable(format!(
            "Jobs may only use URLs under {}; {url:?} is not.",
            state.settings.job_urls.join(", ")
        )));
    }
    crate::registry::artifacts::check_object_url(url).map_err(AppError::Unprocessable)
}

/// A new spool file's name.
async fn new_spooled(state: &AppState) -> Result<Spooled, AppError> {
    Spooled::create_in(&spool_dir(state))
        .await
        .map_err(AppError::internal)
}

/// Fetches the object at `url` into a spooled file.
pub async fn fetch(state: &AppState, url: &str) -> Result<Spooled, AppError> {
    allowed_url(state, url)?;
    let mut file = new_spooled(state).await?;
    file.size =
        crate::registry::artifacts::download_to_file(url, &file.path, state.settings.max_job_bytes)
            .await
            .map_err(AppError::Unprocessable)?;
    Ok(file)
}

/// Writes a request's body (a CSV or Parquet file sent as it is) to a spooled file, refusing
/// more than `PLINTH_MAX_JOB_BYTES`.
pub async fn spool_body(
    state: &AppState,
    req: &actix_web::HttpRequest,
    mut payload: actix_web::web::Payload,
) -> Result<Spooled, AppError> {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    let limit = state.settings.max_job_bytes;
    let too_large = || {
        AppError::PayloadTooLarge(format!(
            "The file is larger than the {} MiB a job accepts (PLINTH_MAX_JOB_BYTES).",
            limit >> 20
        ))
    };
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut spooled = new_spooled(state).await?;
    let mut file = tokio::fs::File::create(&spooled.path)
        .await
        .map_err(AppError::internal)?;
    while let Some(piece) = payload.next().await {
        let piece =
            piece.map_err(|e| AppError::BadRequest(format!("The request body broke off: {e}")))?;
        spooled.size += piece.len() as u64;
        if spooled.size > limit {
            return Err(too_large());
        }
        file.write_all(&piece).await.map_err(AppError::internal)?;
    }
    file.flush().await.map_err(AppError::internal)?;
    Ok(spooled)
}

/// What the reading thread sends.
enum Piece {
    Columns(Vec<String>),
    Chunk(files::Chunk),
    Failed(String),
}

/// Creates the job for a file on disk: its chunks stored, ready for the workers. 422 naming
/// the problem when the file cannot be read or its columns do not fit the card.
pub async fn submit(state: &AppState, sub: Submission, file: &Path) -> Result<JobRow, AppError> {
    let served = serving::served(state, &sub.model, &sub.selector).await?;
    // Refused before the file is read when the model cannot be explained.
    let contributions = if sub.explain {
        match state.registry.explanation_base(&served).await.as_ref() {
            Ok((explainer, _)) => Some(crate::registry::explained::explained_features(
                &served.card,
                &served.loaded,
                explainer,
            )),
            Err(why) => {
                return Err(AppError::Unprocessable(format!(
                    "Version {} of {} cannot explain its predictions, so the job cannot add contributions: {why}",
                    served.version.version, served.model.name
                )))
            }
        }
    } else {
        None
    };
    if let Some(url) = &sub.output_url {
        allowed_url(state, url)?;
    }
    let max_errors = sub.max_errors.unwrap_or(state.settings.job_max_errors);
    if max_errors < 0 {
        return Err(AppError::Unprocessable(
            "max_errors must be 0 or more.".into(),
        ));
    }
    let (tx, mut rx) = mpsc::channel::<Piece>(4);
    let path = file.to_path_buf();
    let (format, chunk_rows) = (sub.format, state.settings.job_chunk_rows);
    let reader = tokio::task::spawn_blocking(move || {
        let mut source = match files::open(&path, format, chunk_rows) {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.blocking_send(Piece::Failed(e));
                return;
            }
        };
        if tx
            .blocking_send(Piece::Columns(source.columns().to_vec()))
            .is_err()
        {
            return;
        }
        loop {
            let piece = match source.next_chunk() {
                Ok(Some(chunk)) => Piece::Chunk(chunk),
                Ok(None) => return,
                Err(e) => Piece::Failed(e),
            };
            let failed = matches!(piece, Piece::Failed(_));
            if tx.blocking_send(piece).is_err() || failed {
                return;
            }
        }
    });
    let columns = match rx.recv().await {
        Some(Piece::Columns(c)) => c,
        Some(Piece::Failed(e)) => return Err(AppError::Unprocessable(e)),
        _ => {
            return Err(AppError::internal(anyhow::anyhow!(
                "the file reader stopped early"
            )))
        }
    };
    // The columns are checked against the card before anything is stored.
    Layout::new(&served.card, &served.loaded, columns.clone(), true)
        .map_err(AppError::Unprocessable)?;
    let mut tx = state.pool.begin().await?;
    let id = db::create(
        &mut tx,
        &NewJob {
            model_id: served.model.id,
            version_id: served.version.id,
            user_id: sub.caller.user_id,
            token_id: sub.caller.token_id,
            input_name: &sub.input_name,
            input_format: sub.format.as_str(),
            columns: &columns,
            output_url: sub.output_url.as_deref(),
            max_errors,
            contributions: contributions.as_deref(),
        },
    )
    .await?;
    let mut total = 0i64;
    let mut seq = 0i32;
    while let Some(piece) = rx.recv().await {
        match piece {
            Piece::Chunk(chunk) => {
                db::add_chunk(
                    &mut tx,
                    id,
                    seq,
                    chunk.first_line,
                    chunk.rows as i32,
                    &chunk.bytes,
                )
                .await?;
                seq += 1;
                total += chunk.rows as i64;
            }
            Piece::Failed(e) => return Err(AppError::Unprocessable(e)),
            Piece::Columns(_) => {}
        }
    }
    reader.await.map_err(AppError::internal)?;
    if total == 0 {
        return Err(AppError::Unprocessable(
            "The file has no rows after the line naming its columns.".into(),
        ));
    }
    db::set_total(&mut tx, id, total).await?;
    tx.commit().await?;
    tracing::info!(job = id, model = %sub.model, rows = total, chunks = seq, "batch job submitted");
    db::get(&state.pool, id)
        .await?
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("the job just stored is gone")))
}

/// Whether `user` may see job `job`: its owner, or staff.
pub fn may_see(job: &JobRow, user: &plinth_store::users::User) -> bool {
    user.is_staff || job.user_id == Some(user.id)
}

/// A job's results as a stream of pieces: CSV (the header, then each scored chunk in order)
/// or Parquet (a row group per chunk). Chunks are read one at a time, so nothing holds the
/// whole file.
pub fn results(
    state: &actix_web::web::Data<AppState>,
    job: &JobRow,
    format: Format,
) -> mpsc::Receiver<Result<Bytes, String>> {
    let (tx, rx) = mpsc::channel::<Result<Bytes, String>>(4);
    let pool = state.pool.clone();
    let state = state.clone();
    let job = job.clone();
    match format {
        Format::Csv => {
            tokio::spawn(async move {
                let result = async {
                    let layout = layout_for(&state.registry, &job).await?;
                    tx.send(Ok(Bytes::from(layout.header_csv())))
                        .await
                        .map_err(|_| String::new())?;
                    let chunks = db::chunk_count(&pool, job.id)
                        .await
                        .map_err(|e| e.to_string())?;
                    for seq in 0..chunks {
                        if let Some(out) = db::output(&pool, job.id, seq)
                            .await
                            .map_err(|e| e.to_string())?
                        {
                            tx.send(Ok(Bytes::from(out)))
                                .await
                                .map_err(|_| String::new())?;
                        }
                    }
                    Ok::<(), String>(())
                }
                .await;
                if let Err(e) = result {
                    if !e.is_empty() {
                        let _ = tx.send(Err(e)).await;
                    }
                }
            });
        }
        Format::Parquet => {
            let handle = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || {
                let failed = tx.clone();
                let result = (|| {
                    let (layout, card) = handle.block_on(async {
                        let layout = layout_for(&state.registry, &job).await?;
                        let card = state
                            .registry
                            .card_by_version_id(job.version_id)
                            .await
                            .map_err(|e| e.to_string())?
                            .ok_or("the job's version is gone")?;
                        Ok::<_, String>((layout, card))
                    })?;
                    let mut writer = ParquetWriter::new(
                        ChannelWriter::new(tx),
                        &layout.header(),
                        &layout.output_kinds(&card),
                    )?;
                    let chunks = handle
                        .block_on(db::chunk_count(&pool, job.id))
                        .map_err(|e| e.to_string())?;
                    for seq in 0..chunks {
                        if let Some(out) = handle
                            .block_on(db::output(&pool, job.id, seq))
                            .map_err(|e| e.to_string())?
                        {
                            writer.write_csv(&out)?;
                        }
                    }
                    writer.finish().map(drop)
                })();
                if let Err(e) = result {
                    let _ = failed.blocking_send(Err(e));
                }
            });
        }
    }
    rx
}

/// The layout a job's results were written in.
async fn layout_for(registry: &crate::registry::Registry, job: &JobRow) -> Result<Layout, String> {
    let served = registry
        .resolve(&job.model, &Selector::Number(job.version))
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{} version {} is gone", job.model, job.version))?;
    job_layout(&served, job)
}

/// The layout of a job's results: the input's columns, the outputs, the contributions asked for.
pub fn job_layout(served: &crate::registry::Served, job: &JobRow) -> Result<Layout, String> {
    Ok(
        Layout::new(&served.card, &served.loaded, job.columns.0.clone(), true)?
            .with_contributions(job.contributions.as_ref().map_or(&[][..], |c| &c.0[..])),
    )
}
