//! JSON endpoints for programs: Plinth's own v1, the Open Inference Protocol (V2) as Triton,
//! KServe and MLServer speak it, KServe V1, and the OpenAPI document describing them.

pub mod contracts;
pub mod docs;
pub mod kserve;
pub mod tensors;
pub mod v1;
pub mod v2;

use actix_web::{HttpMessage, HttpRequest};
use serde::de::DeserializeOwned;

use crate::error::AppError;
use crate::state::AppState;

/// Parses a JSON body, naming what is wrong: the content type, the syntax, or the shape.
pub fn json_body<T: DeserializeOwned>(req: &HttpRequest, body: &[u8]) -> Result<T, AppError> {
    let content_type = req.content_type();
    if !content_type.is_empty() && content_type != "application/json" {
        return Err(AppError::UnsupportedMediaType(format!(
            "Send the body as application/json, not {content_type}."
        )));
    }
    if body.is_empty() {
        return Err(AppError::BadRequest(
            "The request body is empty; send a JSON object.".into(),
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize::<_, T>(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            AppError::BadRequest(format!("The body is not valid JSON: {inner}."))
        } else if path == "." {
            AppError::BadRequest(format!(
                "The JSON body does not have the expected shape: {inner}."
            ))
        } else {
            AppError::BadRequest(format!(
                "The JSON body does not have the expected shape at {path}: {inner}."
            ))
        }
    })
}

/// Refuses batches over the configured limit.
pub fn check_rows(state: &AppState, rows: usize) -> Result<(), AppError> {
    if rows == 0 {
        return Err(AppError::Unprocessable("Send at least one row.".into()));
    }
    if rows > state.settings.max_batch_rows {
        return Err(AppError::PayloadTooLarge(format!(
            "{rows} rows is more than the {} one request may carry.",
            state.settings.max_batch_rows
        )));
    }
    Ok(())
}
