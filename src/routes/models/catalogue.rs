//! The home page: the catalogue of models with a production version.

use crate::auth::PageCtx;
use crate::error::AppError;
use crate::registry::card::Card;
use crate::state::AppState;
use crate::web::render;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;
use plinth_store as db;

// --- catalogue ----------------------------------------------------------------------------

pub struct CatalogueEntry {
    pub name: String,
    pub title: String,
    pub summary: String,
    pub task: &'static str,
    pub version: Option<i32>,
    pub versions: i64,
}

#[derive(Template)]
#[template(path = "models/catalogue.html")]
struct CataloguePage {
    ctx: PageCtx,
    models: Vec<CatalogueEntry>,
}

/// The first paragraph of a Markdown description, as plain text.
fn summary(description: &str) -> String {
    let first = description
        .split("\n\n")
        .map(str::trim)
        .find(|p| !p.is_empty())
        .unwrap_or("");
    first.replace(['*', '_', '`'], "").replace('\n', " ")
}

pub async fn catalogue(ctx: PageCtx, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let models = db::models::catalogue(&state.pool)
        .await?
        .into_iter()
        .map(|row| {
            let card: Card = Card::from_stored(row.card.as_ref().map(|c| &c.0));
            CatalogueEntry {
                title: card.display_title(&row.name).to_string(),
                summary: summary(&card.description),
                task: card.task.as_str(),
                name: row.name,
                version: row.version,
                versions: row.versions,
            }
        })
        .collect();
    render(&CataloguePage { ctx, models }, StatusCode::OK)
}
