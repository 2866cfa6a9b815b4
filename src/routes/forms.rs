//! Reading submitted forms, URL-encoded or multipart (file uploads), with the CSRF check first.

use std::collections::HashMap;

use actix_multipart::Multipart;
use actix_session::SessionExt;
use actix_web::{web, HttpMessage, HttpRequest};
use futures_util::StreamExt;

use crate::auth::csrf;
use crate::error::AppError;

/// A submitted form: text fields and uploaded files, by field name.
#[derive(Debug, Default)]
pub struct Submitted {
    pub fields: HashMap<String, String>,
    pub files: HashMap<String, Vec<u8>>,
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

/// Reads the body as a form, whichever encoding the browser chose, refusing more than `limit`
/// bytes in all; then checks the CSRF token before anything else looks at it.
pub async fn read_form(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<Submitted, AppError> {
    let submitted = read_unchecked(req, payload, limit).await?;
    if !csrf::verify(&req.get_session(), submitted.field(csrf::FIELD)) {
        return Err(AppError::Csrf);
    }
    Ok(submitted)
}

/// Reads a form without the CSRF check: only for callers authenticated by an API token.
pub async fn read_unchecked(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<Submitted, AppError> {
    let content_type = req.content_type().to_string();
    let submitted = if content_type == "multipart/form-data" {
        read_multipart(req, payload, limit).await?
    } else if content_type == "application/x-www-form-urlencoded" || content_type.is_empty() {
        let body = read_all(payload, limit).await?;
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body)
            .map_err(|_| AppError::BadRequest("The form could not be read.".into()))?;
        Submitted {
            fields: pairs.into_iter().collect(),
            files: HashMap::new(),
        }
    } else {
        return Err(AppError::BadRequest(format!(
            "Forms must be sent as application/x-www-form-urlencoded or multipart/form-data, not {content_type}."
        )));
    };
    Ok(submitted)
}

fn too_large(limit: usize) -> AppError {
    AppError::PayloadTooLarge(format!(
        "The upload is larger than this server accepts ({} MiB).",
        limit / (1 << 20)
    ))
}

async fn read_all(mut payload: web::Payload, limit: usize) -> Result<Vec<u8>, AppError> {
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| AppError::BadRequest(format!("The request body broke off: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn read_multipart(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<Submitted, AppError> {
    let mut multipart = Multipart::new(req.headers(), payload);
    let mut out = Submitted::default();
    let mut total = 0usize;
    while let Some(field) = multipart.next().await {
        let mut field = field
            .map_err(|e| AppError::BadRequest(format!("The upload could not be read: {e}")))?;
        let name = field.name().unwrap_or_default().to_string();
        let is_file = field
            .content_disposition()
            .and_then(|cd| cd.get_filename())
            .is_some();
        let mut bytes = Vec::new();
        while let Some(chunk) = field.next().await {
            let chunk = chunk
                .map_err(|e| AppError::BadRequest(format!("The upload could not be read: {e}")))?;
            total += chunk.len();
            if total > limit {
                return Err(too_large(limit));
            }
            bytes.extend_from_slice(&chunk);
        }
        if is_file {
            out.files.insert(name, bytes);
        } else {
            let text = String::from_utf8(bytes)
                .map_err(|_| AppError::BadRequest(format!("The field {name} is not text.")))?;
            out.fields.insert(name, text);
        }
    }
    Ok(out)
}
