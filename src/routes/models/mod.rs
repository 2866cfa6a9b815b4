//! The model pages (`templates/models/`): the catalogue, a model's form, a prediction's result.

pub mod catalogue;
pub mod form;
pub mod result;
