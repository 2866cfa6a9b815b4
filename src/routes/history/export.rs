//! The history as CSV (`/history.csv`, `/admin/predictions.csv`): streamed page by page. Each
//! row has its inputs and outputs as JSON, then one column per feature of the models exported,
//! where a missing value is an empty cell.

use std::borrow::Cow;

use super::{result_of, HistoryQuery};
use crate::auth::LoggedIn;
use crate::error::AppError;
use crate::state::AppState;
use actix_web::http::header;
use actix_web::{web, HttpResponse};
use plinth_store as db;
use plinth_store::predictions::{Filter, PredictionRow};

/// A cell a spreadsheet would read as a formula (starting with `=`, `+`, `-`, `@`, a tab or a
/// carriage return) gets a leading `'`, as OWASP advises: labels and usernames reach these cells.
/// Quoting is the `csv` crate's.
pub fn defuse(s: &str) -> Cow<'_, str> {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        Cow::Owned(format!("'{s}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// Writes rows as CSV lines ending in CRLF (RFC 4180).
fn csv_lines<I, R, S>(rows: I) -> Vec<u8>
where
    I: IntoIterator<Item = R>,
    R: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    for row in rows {
        let cells: Vec<S> = row.into_iter().collect();
        let defused: Vec<Cow<'_, str>> = cells.iter().map(|c| defuse(c.as_ref())).collect();
        // Writing to memory fails only on a record of a different length, which cannot happen.
        if let Err(e) = writer.write_record(defused.iter().map(|c| c.as_bytes())) {
            tracing::error!(error = %e, "a CSV row could not be written");
        }
    }
    writer.into_inner().unwrap_or_default()
}

fn csv_row(p: &PredictionRow, features: &[String]) -> Vec<String> {
    let time_format = time::format_description::well_known::Rfc3339;
    let mut row = vec![
        p.id.to_string(),
        p.created_at.format(&time_format).unwrap_or_default(),
        p.username.clone().unwrap_or_default(),
        p.model.clone(),
        p.version.to_string(),
        p.source.clone(),
        result_of(p),
        format!("{:.3}", p.latency_us as f64 / 1000.0),
        p.inputs.0.to_string(),
        p.outputs.0.to_string(),
    ];
    row.extend(features.iter().map(|f| cell(p.inputs.0.get(f))));
    row
}

/// A feature's value as a cell: empty when missing (or not one of this row's model's features).
fn cell(value: Option<&serde_json::Value>) -> String {
    match value {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// The fixed columns, then one per feature (named `input.<name>` where a feature's name is
/// already a fixed column's).
fn header(features: &[String]) -> Vec<String> {
    let mut header: Vec<String> = HEADER.iter().map(|h| h.to_string()).collect();
    header.extend(features.iter().map(|f| {
        if HEADER.contains(&f.as_str()) {
            format!("input.{f}")
        } else {
            f.clone()
        }
    }));
    header
}

const HEADER: [&str; 10] = [
    "id",
    "created_at",
    "user",
    "model",
    "version",
    "source",
    "result",
    "latency_ms",
    "inputs",
    "outputs",
];

/// Rows per export page: one short query each.
const EXPORT_PAGE: i64 = 500;

/// How long an export waits for the client to take the next page before giving up.
const EXPORT_SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Streams the filtered rows as CSV, a page at a time. The pages are read by a task that holds
/// no connection while it waits for the client, and gives up when the client stops reading.
pub(crate) fn csv_response(
    state: &AppState,
    filter: Filter,
    filename: &str,
    slot: crate::exports::ExportSlot,
) -> HttpResponse {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<web::Bytes, AppError>>(2);
    let pool = state.pool.clone();
    tokio::spawn(async move {
        let _slot = slot;
        let send = |item| tx.send_timeout(item, EXPORT_SEND_TIMEOUT);
        let features = match db::predictions::export_features(&pool, filter.model.as_deref()).await
        {
            Ok(features) => features,
            Err(e) => {
                tracing::warn!(error = %e, "the export's columns could not be read");
                let _ = send(Err(AppError::from(e))).await;
                return;
            }
        };
        let header = csv_lines([header(&features)]);
        if send(Ok(web::Bytes::from(header))).await.is_err() {
            return;
        }
        let mut cursor = None;
        loop {
            let rows = match db::predictions::export_page(&pool, &filter, cursor, EXPORT_PAGE).await
            {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(error = %e, "an export page failed");
                    let _ = send(Err(AppError::from(e))).await;
                    return;
                }
            };
            let Some(last) = rows.last() else { return };
            cursor = Some((last.created_at, last.id));
            let full = rows.len() as i64 == EXPORT_PAGE;
            let chunk = csv_lines(rows.iter().map(|r| csv_row(r, &features)));
            // A client that stops reading (or went away) ends the export.
            if send(Ok(web::Bytes::from(chunk))).await.is_err() || !full {
                return;
            }
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{filename}\""),
        ))
        .streaming(body)
}

pub async fn history_csv(
    LoggedIn(_, user): LoggedIn,
    state: web::Data<AppState>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, AppError> {
    let mut filter = query.filter().map_err(AppError::BadRequest)?;
    filter.user_id = Some(user.id);
    filter.username = None;
    let slot = state.exports.start(user.id)?;
    Ok(csv_response(&state, filter, "plinth-history.csv", slot))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_quoted_and_formulas_defused() {
        let rows = [[
            Cow::Borrowed("=1+1"),
            Cow::Borrowed("a,b"),
            Cow::Borrowed("say \"hi\""),
            Cow::Borrowed("plain"),
        ]];
        assert_eq!(
            String::from_utf8(csv_lines(rows)).unwrap(),
            "'=1+1,\"a,b\",\"say \"\"hi\"\"\",plain\r\n"
        );
    }
}
