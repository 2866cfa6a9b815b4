//! Every user's predictions, for staff: `/admin/predictions` and its CSV export, the same
//! listing as the history page.

use crate::auth::StaffOnly;
use crate::error::AppError;
use crate::routes::history::export::csv_response;
use crate::routes::history::{listing, HistoryQuery};
use crate::state::AppState;
use actix_web::{web, HttpResponse};

pub async fn admin_predictions(
    StaffOnly(ctx, _): StaffOnly,
    state: web::Data<AppState>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, AppError> {
    listing(ctx, &state, query.into_inner(), None).await
}

pub async fn admin_predictions_csv(
    StaffOnly(_, staff): StaffOnly,
    state: web::Data<AppState>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, AppError> {
    let filter = query.filter().map_err(AppError::BadRequest)?;
    let slot = state.exports.start(staff.id)?;
    Ok(csv_response(&state, filter, "plinth-predictions.csv", slot))
}
