//! Batch scoring: a file of rows in, a file of predictions out.
//!
//! A file is read as chunks of whole records ([`files`]); each chunk is parsed against the
//! card, scored in one run of the model and written back as CSV records: the input's fields,
//! then the outputs ([`Layout`]). The same code serves the durable jobs ([`jobs`], [`worker`])
//! and `plinth score`, which runs without a server or a database.

pub mod files;
pub mod jobs;
pub mod local;
pub mod worker;

use crate::registry::card::{classifier_outputs, Card, FeatureKind, Task};
use crate::registry::decode::{decode, Outcome};
use plinth_inference::{LoadedModel, RunError};
use plinth_store::predictions::StoredInputs;

mod parse;

pub use parse::{parse_chunk, ColumnKind, Parsed};
use parse::{quoted_list, Verdict};

/// Rows per chunk unless configured (`PLINTH_JOB_CHUNK_ROWS`).
pub const DEFAULT_CHUNK_ROWS: usize = 8192;
/// A chunk ends early once it holds this many bytes (wide rows).
pub const MAX_CHUNK_BYTES: usize = 8 << 20;
/// The longest record a file may have.
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// The most columns a file may have.
pub const MAX_COLUMNS: usize = plinth_inference::MAX_INPUT_COLUMNS;

/// The file formats a job reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Csv,
    Parquet,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Parquet => "parquet",
        }
    }

    pub fn parse(s: &str) -> Option<Format> {
        match s.to_ascii_lowercase().as_str() {
            "csv" => Some(Format::Csv),
            "parquet" => Some(Format::Parquet),
            _ => None,
        }
    }

    /// From a file name or URL: `.parquet` or `.pq` is Parquet, anything else CSV.
    pub fn from_name(name: &str) -> Format {
        let path = name
            .split(['?', '#'])
            .next()
            .unwrap_or(name)
            .to_ascii_lowercase();
        if path.ends_with(".parquet") || path.ends_with(".pq") {
            Format::Parquet
        } else {
            Format::Csv
        }
    }

    /// A file sent as a request's body: CSV for `text/csv`, Parquet for Parquet's types, and by
    /// the file's name (CSV without one) for `application/octet-stream`.
    pub fn of_body(content_type: &str, filename: Option<&str>) -> Format {
        match content_type {
            "text/csv" | "application/csv" => Format::Csv,
            "application/octet-stream" => filename.map_or(Format::Csv, Format::from_name),
            _ => Format::Parquet,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Parquet => "application/vnd.apache.parquet",
        }
    }

    /// What a place in the file is called in messages.
    pub fn place(self) -> &'static str {
        match self {
            Format::Csv => "line",
            Format::Parquet => "row",
        }
    }
}

/// How a file's columns meet a model: which column feeds each of the card's features, and the
/// output columns written after the input's.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The input's columns, in order.
    pub columns: Vec<String>,
    /// For each of the card's features, its column (none for a feature with a default that
    /// the file leaves out: a map input's key).
    feature_at: Vec<Option<usize>>,
    /// The output columns, after the input's.
    pub outputs: Vec<String>,
    /// Whether the outputs start with `prediction_id` (jobs store their predictions).
    with_ids: bool,
    /// Probability columns (classifiers with a probability output).
    classes: usize,
    /// The features whose contributions follow the probabilities (after the explanation's
    /// base value), when the job asked for them.
    contributions: Vec<String>,
}

impl Layout {
    /// Matches `columns` to the card's features by name. Refuses, naming them, features that
    /// have no column and columns given twice.
    pub fn new(
        card: &Card,
        model: &LoadedModel,
        columns: Vec<String>,
        with_ids: bool,
    ) -> Result<Layout, String> {
        if columns.len() > MAX_COLUMNS {
            return Err(format!(
                "The file has {} columns; at most {MAX_COLUMNS} are accepted.",
                columns.len()
            ));
        }
        let mut feature_at = Vec::with_capacity(card.features.len());
        let mut missing = Vec::new();
        for f in &card.features {
            let mut at = columns.iter().enumerate().filter(|(_, c)| **c == f.name);
            match (at.next(), at.next()) {
                (Some((i, _)), None) => feature_at.push(Some(i)),
                (Some(_), Some(_)) => {
                    return Err(format!("The column {:?} appears more than once.", f.name))
                }
                (None, _) if f.default.is_some() => feature_at.push(None),
                (None, _) => missing.push(f.name.as_str()),
            }
        }
        if !missing.is_empty() {
            let names = quoted_list(&missing);
            let noun = if missing.len() == 1 {
                "a column"
            } else {
                "columns"
            };
            return Err(format!(
                "The file has no {noun} for {names}: the model needs every one of its features ({}), by name, in the first line.",
                quoted_list(&card.features.iter().map(|f| f.name.as_str()).collect::<Vec<_>>())
            ));
        }
        let classes = match card.task {
            Task::Classification => {
                let which = classifier_outputs(&model.signature);
                which
                    .probabilities
                    .and_then(|i| model.signature.outputs.get(i))
                    .and_then(|o| o.shape.get(1).copied().flatten())
                    .or_else(|| {
                        which
                            .probabilities
                            .and_then(|_| card.labels.as_ref().map(Vec::len))
                    })
                    .unwrap_or(0)
            }
            Task::Regression => 0,
        };
        let mut outputs = Vec::new();
        if with_ids {
            outputs.push("prediction_id".to_string());
        }
        outputs.push("prediction".to_string());
        for c in 0..classes {
            outputs.push(format!("probability_{}", card.label_name(c)));
        }
        outputs.push("error".to_string());
        // An input column with an output's name keeps its name; the output gets a suffix.
        for out in &mut outputs {
            while columns.contains(out) {
                out.push('_');
            }
        }
        Ok(Layout {
            columns,
            feature_at,
            outputs,
            with_ids,
            classes,
            contributions: Vec::new(),
        })
    }

    /// Adds the explanation's columns before `error`: `explanation_base` (what the model gives
    /// on average), then `contribution_<feature>` for each of `features`. A row's base plus its
    /// contributions is the explained score (see the explanation's scale).
    pub fn with_contributions(mut self, features: &[String]) -> Layout {
        if features.is_empty() {
            return self;
        }
        let error = self.outputs.pop();
        let mut added = vec!["explanation_base".to_string()];
        added.extend(features.iter().map(|f| format!("contribution_{f}")));
        for mut out in added {
            while self.columns.contains(&out) {
                out.push('_');
            }
            self.outputs.push(out);
        }
        self.outputs.extend(error);
        self.contributions = features.to_vec();
        self
    }

    /// The output file's columns.
    pub fn header(&self) -> Vec<String> {
        self.columns.iter().chain(&self.outputs).cloned().collect()
    }

    /// The output header as a CSV line.
    pub fn header_csv(&self) -> Vec<u8> {
        let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
        // Writing to a Vec cannot fail.
        let _ = w.write_record(self.header());
        w.into_inner().unwrap_or_default()
    }

    /// Positions (in the output) of the numeric columns: the card's numeric features, the
    /// ids, the probabilities, and the prediction of a regressor.
    pub fn output_kinds(&self, card: &Card) -> Vec<ColumnKind> {
        let mut kinds = vec![ColumnKind::Text; self.columns.len()];
        for (f, at) in card.features.iter().zip(&self.feature_at) {
            let Some(at) = *at else { continue };
            if !matches!(f.kind, FeatureKind::Category | FeatureKind::Text) {
                kinds[at] = ColumnKind::Float;
            }
        }
        if self.with_ids {
            kinds.push(ColumnKind::Int);
        }
        kinds.push(match card.task {
            Task::Classification => ColumnKind::Text,
            Task::Regression => ColumnKind::Float,
        });
        kinds.extend(std::iter::repeat_n(ColumnKind::Float, self.classes));
        if !self.contributions.is_empty() {
            kinds.extend(std::iter::repeat_n(
                ColumnKind::Float,
                self.contributions.len() + 1,
            ));
        }
        kinds.push(ColumnKind::Text);
        kinds
    }
}

/// Rows given to the model in one run.
const RUN_ROWS: usize = 1024;

/// A chunk's predictions, one per row the model scored.
pub struct Scored {
    pub outcomes: Vec<Outcome>,
    /// The scored rows as the prediction log stores them.
    pub stored: StoredInputs,
    /// Each scored row's explanation (base value, then the contributions in the layout's
    /// order), when the job asked for them.
    pub explained: Vec<(f64, Vec<f64>)>,
}

impl Scored {
    pub fn len(&self) -> usize {
        self.outcomes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.outcomes.is_empty()
    }
}

/// Runs the model over a chunk's good rows, [`RUN_ROWS`] at a time, on the calling thread. A
/// run that fails is retried a row at a time, so a row the model cannot score is refused alone
/// (with the model's reason) and the others are scored.
pub fn score(card: &Card, model: &LoadedModel, parsed: &mut Parsed) -> Scored {
    let specs = &model.signature.inputs;
    let mut results: Vec<Result<Outcome, String>> = Vec::with_capacity(parsed.rows.len());
    let run = |rows: &[Vec<f64>], texts: &[Vec<String>]| -> Result<Vec<Outcome>, RunError> {
        let outputs = model.run(crate::registry::encode::input_tensors(
            card, specs, rows, texts,
        ))?;
        Ok(decode(card, &model.signature, &outputs, rows.len()))
    };
    // Rows without free text have no texts: an empty slice for each run.
    let no_texts = parsed.texts.iter().all(Vec::is_empty);
    let texts_of = |at: usize, n: usize| -> &[Vec<String>] {
        if no_texts {
            &[]
        } else {
            &parsed.texts[at..(at + n).min(parsed.texts.len())]
        }
    };
    for (k, rows) in parsed.rows.chunks(RUN_ROWS).enumerate() {
        let at = k * RUN_ROWS;
        match run(rows, texts_of(at, rows.len())) {
            Ok(outcomes) => results.extend(outcomes.into_iter().map(Ok)),
            Err(_) => {
                for (i, row) in rows.iter().enumerate() {
                    results.push(match run(std::slice::from_ref(row), texts_of(at + i, 1)) {
                        Ok(mut o) if o.len() == 1 => Ok(o.remove(0)),
                        Ok(_) => Err("The model gave no prediction for this row.".into()),
                        Err(e) => Err(format!("The model could not score this row: {e}")),
                    });
                }
            }
        }
    }
    // Renumber the scored rows among the predictions; the others become refused.
    let mut outcomes = Vec::with_capacity(results.len());
    let mut scored_rows = Vec::with_capacity(results.len());
    let mut scored_texts = Vec::with_capacity(parsed.texts.len());
    let mut results: Vec<Option<Result<Outcome, String>>> = results.into_iter().map(Some).collect();
    for verdict in &mut parsed.verdicts {
        if let Verdict::Row(r) = *verdict {
            match results.get_mut(r).and_then(Option::take) {
                Some(Ok(o)) => {
                    outcomes.push(o);
                    scored_rows.push(std::mem::take(&mut parsed.rows[r]));
                    if let Some(t) = parsed.texts.get_mut(r) {
                        scored_texts.push(std::mem::take(t));
                    }
                    *verdict = Verdict::Row(outcomes.len() - 1);
                }
                Some(Err(reason)) => *verdict = Verdict::Refused(reason),
                None => *verdict = Verdict::Refused("The row was not scored.".into()),
            }
        }
    }
    parsed.rows = scored_rows;
    parsed.texts = scored_texts;
    Scored {
        stored: crate::registry::encode::stored_inputs(card, specs, &parsed.rows, &parsed.texts),
        outcomes,
        explained: Vec::new(),
    }
}

/// Adds each scored row's explanation (its base value, then its contributions in the
/// explained features' order) to `scored`, for the class the row was answered with.
pub fn explain_scored(
    card: &Card,
    model: &LoadedModel,
    explanation: &crate::registry::Explanation,
    parsed: &Parsed,
    scored: &mut Scored,
) -> Result<(), String> {
    let (explainer, covers) = explanation;
    let labels: Vec<Option<String>> = scored.outcomes.iter().map(|o| o.label.clone()).collect();
    let answered = crate::registry::explained::Answered {
        card,
        loaded: model,
        explainer,
        covers,
        rows: &parsed.rows,
        labels: &labels,
    };
    scored.explained = crate::registry::explained::explain_columns(&answered)?
        .into_iter()
        .map(|e| (e.base, e.contributions))
        .collect();
    Ok(())
}

/// The chunk's output records: each input record's fields (as read; a short record padded,
/// a long one cut to the header's columns), then its prediction or its error. `ids` are the
/// scored rows' prediction ids, when stored.
pub fn write_output(
    layout: &Layout,
    parsed: &Parsed,
    scored: &Scored,
    ids: Option<&[i64]>,
) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new()
        .flexible(true)
        .from_writer(Vec::with_capacity(parsed.len() * 64));
    let width = layout.columns.len();
    let mut out = csv::ByteRecord::new();
    for (record, verdict) in parsed.records.iter().zip(&parsed.verdicts) {
        out.clear();
        for i in 0..width {
            out.push_field(record.get(i).unwrap_or_default());
        }
        match verdict {
            Verdict::Row(row) => {
                if layout.with_ids {
                    let id = ids.and_then(|ids| ids.get(*row)).copied().unwrap_or(0);
                    out.push_field(id.to_string().as_bytes());
                }
                let outcome = scored.outcomes.get(*row);
                match outcome.map(|o| (&o.label, o.value)) {
                    Some((Some(label), _)) => out.push_field(label.as_bytes()),
                    Some((None, Some(v))) => out.push_field(v.to_string().as_bytes()),
                    _ => out.push_field(b""),
                }
                for c in 0..layout.classes {
                    match outcome.and_then(|o| o.probabilities.get(c)) {
                        Some((_, p)) => out.push_field(p.to_string().as_bytes()),
                        None => out.push_field(b""),
                    }
                }
                if !layout.contributions.is_empty() {
                    let explained = scored.explained.get(*row);
                    match explained {
                        Some((base, _)) => out.push_field(base.to_string().as_bytes()),
                        None => out.push_field(b""),
                    }
                    for c in 0..layout.contributions.len() {
                        match explained.and_then(|(_, e)| e.get(c)) {
                            Some(v) => out.push_field(v.to_string().as_bytes()),
                            None => out.push_field(b""),
                        }
                    }
                }
                out.push_field(b"");
            }
            Verdict::Refused(reason) => {
                for _ in 1..layout.outputs.len() {
                    out.push_field(b"");
                }
                out.push_field(reason.as_bytes());
            }
        }
        // Writing to a Vec cannot fail.
        let _ = w.write_byte_record(&out);
    }
    w.into_inner().unwrap_or_default()
}

#[cfg(test)]
mod tests;
