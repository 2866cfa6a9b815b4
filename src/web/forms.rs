//! Reading submitted forms, URL-encoded or multipart (file uploads), with the CSRF check first.
//!
//! Every byte of the request counts against its limit — part headers, boundaries and the
//! preamble included — and a declared `Content-Length` over the limit is refused before anything
//! is read. In a multipart form the CSRF token must come before the first file (browsers send
//! parts in document order, and every form puts the token first) or in an `X-CSRF-Token` header,
//! so a forged upload is refused before a byte of its file is read.

use std::cell::Cell;
use std::collections::HashMap;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use actix_multipart::Multipart;
use actix_session::SessionExt;
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::{web, HttpMessage, HttpRequest};
use futures_util::{Stream, StreamExt};

use crate::auth::csrf;
use crate::error::AppError;

/// The most parts one multipart form may have (the largest form has five).
const MAX_PARTS: usize = 16;
/// The header a script may send the CSRF token in instead of a form field.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A submitted form: text fields and uploaded files, by field name.
#[derive(Debug, Default)]
pub struct Submitted {
    pub fields: HashMap<String, String>,
    pub files: HashMap<String, Vec<u8>>,
    /// With [`read_form_spooled`]: files written to disk as they arrived, with their names.
    pub spooled: HashMap<String, (String, Spooled)>,
}

/// An uploaded file on disk, removed when dropped.
#[derive(Debug)]
pub struct Spooled {
    pub path: std::path::PathBuf,
    pub size: u64,
}

impl Spooled {
    /// A new, empty file's name under `dir` (created if needed).
    pub async fn create_in(dir: &std::path::Path) -> std::io::Result<Spooled> {
        tokio::fs::create_dir_all(dir).await?;
        Ok(Spooled {
            path: dir.join(format!("upload-{}", uuid::Uuid::new_v4().simple())),
            size: 0,
        })
    }
}

impl Drop for Spooled {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Submitted {
    pub fn field(&self, name: &str) -> &str {
        self.fields.get(name).map_or("", String::as_str)
    }

    /// A file that was actually chosen (browsers send an empty part for an empty file input).
    pub fn file(&self, name: &str) -> Option<&[u8]> {
        self.files
            .get(name)
            .map(Vec::as_slice)
            .filter(|b| !b.is_empty())
    }
}

/// When the CSRF token is checked.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Csrf {
    /// A browser form: the token is checked before any file is read.
    Required,
    /// A caller authenticated by an API token.
    NotNeeded,
}

/// Reads the body as a form, whichever encoding the browser chose, refusing more than `limit`
/// bytes in all; the CSRF token is checked before any file part is read.
pub async fn read_form(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<Submitted, AppError> {
    read(req, payload, limit, Csrf::Required).await
}

/// Reads a form without the CSRF check: only for callers authenticated by an API token.
pub async fn read_unchecked(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<Submitted, AppError> {
    read(req, payload, limit, Csrf::NotNeeded).await
}

/// Reads a form whose files may be large (a batch job's input): each file is written to a new
/// file under `dir` as it arrives, so memory holds a piece at a time. Checked as
/// [`read_form`] (or, for API callers, as [`read_unchecked`]).
pub async fn read_form_spooled(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
    dir: &std::path::Path,
    check_csrf: bool,
) -> Result<Submitted, AppError> {
    let mode = if check_csrf {
        Csrf::Required
    } else {
        Csrf::NotNeeded
    };
    read_with(req, payload, limit, mode, Some(dir)).await
}

async fn read(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
    csrf_mode: Csrf,
) -> Result<Submitted, AppError> {
    read_with(req, payload, limit, csrf_mode, None).await
}

async fn read_with(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
    csrf_mode: Csrf,
    spool: Option<&std::path::Path>,
) -> Result<Submitted, AppError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    let content_type = req.content_type().to_string();
    let header_ok = csrf_mode == Csrf::NotNeeded
        || req
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| csrf::verify(&req.get_session(), t));
    let overflowed = Rc::new(Cell::new(false));
    let body = Counted {
        inner: payload,
        seen: 0,
        limit,
        overflowed: overflowed.clone(),
    };
    if content_type == "multipart/form-data" {
        read_multipart(req, body, limit, header_ok, overflowed, spool).await
    } else if content_type == "application/x-www-form-urlencoded" || content_type.is_empty() {
        let body = read_all(body, limit).await?;
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body)
            .map_err(|_| AppError::BadRequest("The form could not be read.".into()))?;
        let submitted = Submitted {
            fields: pairs.into_iter().collect(),
            ..Submitted::default()
        };
        if !header_ok && !csrf::verify(&req.get_session(), submitted.field(csrf::FIELD)) {
            return Err(AppError::Csrf);
        }
        Ok(submitted)
    } else {
        Err(AppError::BadRequest(format!(
            "Forms must be sent as application/x-www-form-urlencoded or multipart/form-data, not {content_type}."
        )))
    }
}

fn too_large(limit: usize) -> AppError {
    let limit = if limit >= 1 << 20 {
        format!("{} MiB", limit >> 20)
    } else {
        format!("{} KiB", limit.div_ceil(1024))
    };
    AppError::PayloadTooLarge(format!(
        "The request is larger than this server accepts for this form ({limit})."
    ))
}

/// The request body, counting every byte and failing once more than `limit` arrived.
struct Counted<S> {
    inner: S,
    seen: usize,
    limit: usize,
    overflowed: Rc<Cell<bool>>,
}

impl<S> Stream for Counted<S>
where
    S: Stream<Item = Result<web::Bytes, PayloadError>> + Unpin,
{
    type Item = Result<web::Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.overflowed.get() {
            return Poll::Ready(Some(Err(PayloadError::Overflow)));
        }
        let item = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &item {
            self.seen = self.seen.saturating_add(chunk.len());
            if self.seen > self.limit {
                self.overflowed.set(true);
                return Poll::Ready(Some(Err(PayloadError::Overflow)));
            }
        }
        item
    }
}

async fn read_all<S>(mut body: Counted<S>, limit: usize) -> Result<Vec<u8>, AppError>
where
    S: Stream<Item = Result<web::Bytes, PayloadError>> + Unpin,
{
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(chunk) => out.extend_from_slice(&chunk),
            Err(PayloadError::Overflow) => return Err(too_large(limit)),
            Err(e) => {
                return Err(AppError::BadRequest(format!(
                    "The request body broke off: {e}"
                )))
            }
        }
    }
    Ok(out)
}

async fn read_multipart<S>(
    req: &HttpRequest,
    body: Counted<S>,
    limit: usize,
    mut csrf_ok: bool,
    overflowed: Rc<Cell<bool>>,
    spool: Option<&std::path::Path>,
) -> Result<Submitted, AppError>
where
    S: Stream<Item = Result<web::Bytes, PayloadError>> + Unpin + 'static,
{
    let unreadable = |e: actix_multipart::MultipartError| {
        if overflowed.get() {
            too_large(limit)
        } else {
            AppError::BadRequest(format!("The upload could not be read: {e}"))
        }
    };
    let session = req.get_session();
    let mut multipart = Multipart::new(req.headers(), body);
    let mut out = Submitted::default();
    let mut parts = 0usize;
    while let Some(field) = multipart.next().await {
        let mut field = field.map_err(unreadable)?;
        parts += 1;
        if parts > MAX_PARTS {
            return Err(AppError::BadRequest(format!(
                "The form has more than {MAX_PARTS} parts."
            )));
        }
        let name = field.name().unwrap_or_default().to_string();
        let is_file = field
            .content_disposition()
            .and_then(|cd| cd.get_filename())
            .is_some();
        if is_file && !csrf_ok {
            // The token must have come already: refuse before reading the file.
            return Err(AppError::Csrf);
        }
        if let (true, Some(dir)) = (is_file, spool) {
            use tokio::io::AsyncWriteExt;
            let filename = field
                .content_disposition()
                .and_then(|cd| cd.get_filename())
                .unwrap_or_default()
                .to_string();
            let mut spooled = Spooled::create_in(dir).await.map_err(AppError::internal)?;
            let mut file = tokio::fs::File::create(&spooled.path)
                .await
                .map_err(AppError::internal)?;
            while let Some(chunk) = field.next().await {
                let chunk = chunk.map_err(unreadable)?;
                spooled.size += chunk.len() as u64;
                file.write_all(&chunk).await.map_err(AppError::internal)?;
            }
            file.flush().await.map_err(AppError::internal)?;
            out.spooled.insert(name, (filename, spooled));
            continue;
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = field.next().await {
            bytes.extend_from_slice(&chunk.map_err(unreadable)?);
            // A form with a large file keeps its other fields small.
            if spool.is_some() && bytes.len() > 64 << 10 {
                return Err(AppError::PayloadTooLarge(format!(
                    "The field {name} is longer than 64 KiB."
                )));
            }
        }
        if is_file {
            out.files.insert(name, bytes);
        } else {
            let text = String::from_utf8(bytes)
                .map_err(|_| AppError::BadRequest(format!("The field {name} is not text.")))?;
            if name == csrf::FIELD && !csrf_ok {
                csrf_ok = csrf::verify(&session, &text);
                if !csrf_ok {
                    return Err(AppError::Csrf);
                }
            }
            out.fields.insert(name, text);
        }
    }
    if !csrf_ok {
        return Err(AppError::Csrf);
    }
    Ok(out)
}
