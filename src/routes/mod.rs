//! The HTML pages, one folder per area as in `templates/`, and the operational endpoints. Every
//! path is mounted in [`crate::urls`].

pub mod accounts;
pub mod admin;
pub mod assets;
pub mod history;
pub mod jobs;
pub mod models;
pub mod ops;
