//! A chunk of a batch file read against the card: each record checked, its values parsed,
//! refusals kept with their line and reason.

use super::{files, Format, Layout};
use crate::registry::card::{Card, FeatureKind};

/// A column's type in a Parquet output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnKind {
    Text,
    Float,
    Int,
}

pub(super) fn quoted_list(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What became of one record.
#[derive(Clone, Debug)]
pub(super) enum Verdict {
    /// Scored: its position among the chunk's predictions (before scoring, among its rows).
    Row(usize),
    Refused(String),
}

/// A chunk of records read and checked: the rows the model can take, and why the others were
/// refused.
pub struct Parsed {
    pub(super) records: Vec<csv::ByteRecord>,
    /// Each record's place in the file (its line, or its row in a Parquet file).
    pub(super) places: Vec<i64>,
    pub(super) verdicts: Vec<Verdict>,
    /// The good records' rows of the card's features.
    pub rows: Vec<Vec<f64>>,
    /// Their free texts (see `registry::encode::Texts`).
    pub texts: Vec<Vec<String>>,
}

impl Parsed {
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Each record's prediction among the scored rows (after [`score`]), or why it was refused.
    pub fn verdicts(&self) -> impl Iterator<Item = Result<usize, &str>> + '_ {
        self.verdicts.iter().map(|v| match v {
            Verdict::Row(i) => Ok(*i),
            Verdict::Refused(reason) => Err(reason.as_str()),
        })
    }

    /// Record `i`'s place in the file (its line, or its row in a Parquet file).
    pub fn place(&self, i: usize) -> i64 {
        self.places.get(i).copied().unwrap_or_default()
    }

    /// Record `i` as read.
    pub fn record(&self, i: usize) -> Option<&csv::ByteRecord> {
        self.records.get(i)
    }

    /// Refused records: their place in the file and the reason.
    pub fn errors(&self) -> Vec<(i64, String)> {
        self.places
            .iter()
            .zip(&self.verdicts)
            .filter_map(|(place, v)| match v {
                Verdict::Refused(reason) => Some((*place, reason.clone())),
                Verdict::Row(_) => None,
            })
            .collect()
    }
}

/// Reads a chunk's records (CSV without a header, in the layout's columns) and checks each row
/// the way the form does. `first_line` is the place of the chunk's first record in the file:
/// for CSV the line, counted as the chunk's own lines go; for Parquet the row, one a record.
pub fn parse_chunk(
    card: &Card,
    layout: &Layout,
    format: Format,
    bytes: &[u8],
    first_line: i64,
) -> Result<Parsed, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut parsed = Parsed {
        records: Vec::new(),
        places: Vec::new(),
        verdicts: Vec::new(),
        rows: Vec::new(),
        texts: Vec::new(),
    };
    let mut record = csv::ByteRecord::new();
    // For CSV: the line the byte at `seen` is on.
    let (mut seen, mut line) = (0usize, first_line);
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(format!("the file could not be read as CSV: {e}")),
        }
        let place = match format {
            Format::Csv => {
                // The record starts after any blank lines its reported position includes.
                let mut start = record.position().map_or(seen, |p| p.byte() as usize);
                while matches!(bytes.get(start), Some(b'\n' | b'\r')) {
                    start += 1;
                }
                let start = start.clamp(seen, bytes.len());
                line += files::newlines(&bytes[seen..start]);
                seen = start;
                line
            }
            Format::Parquet => first_line + parsed.records.len() as i64,
        };
        let verdict = match check_record(card, layout, &record) {
            Ok((row, texts)) => {
                parsed.rows.push(row);
                parsed.texts.push(texts);
                Verdict::Row(parsed.rows.len() - 1)
            }
            Err(reason) => Verdict::Refused(reason),
        };
        parsed.places.push(place);
        parsed.verdicts.push(verdict);
        parsed.records.push(record.clone());
    }
    Ok(parsed)
}

/// One record as a row of the card's features, or every problem with it, each naming its
/// column, in the form's words.
pub(super) fn check_record(
    card: &Card,
    layout: &Layout,
    record: &csv::ByteRecord,
) -> Result<(Vec<f64>, Vec<String>), String> {
    if record.len() != layout.columns.len() {
        return Err(format!(
            "It has {} fields; the first line names {} columns.",
            record.len(),
            layout.columns.len()
        ));
    }
    let mut row = Vec::with_capacity(card.features.len());
    let mut texts = Vec::new();
    let mut problems = Vec::new();
    for (f, at) in card.features.iter().zip(&layout.feature_at) {
        let raw = at.and_then(|at| record.get(at)).unwrap_or_default();
        if f.kind == FeatureKind::Text {
            match std::str::from_utf8(raw) {
                Ok(text) if !text.trim().is_empty() => texts.push(text.to_string()),
                Ok(_) => problems.push(format!("{}: Enter some text.", f.name)),
                Err(_) => problems.push(format!("{}: not UTF-8 text.", f.name)),
            }
            row.push(0.0);
            continue;
        }
        let text = std::str::from_utf8(raw).map(str::trim);
        let value = match text {
            Err(_) => Err("Enter a number.".to_string()),
            Ok("") if f.allows_missing() => Ok(f64::NAN),
            Ok("") => f
                .default
                .ok_or_else(|| "This field is required.".to_string()),
            Ok(t) => parse_value(f, t),
        };
        match value.and_then(|v| f.check(v)) {
            Ok(v) => row.push(v),
            Err(e) => problems.push(format!("{}: {e}", f.name)),
        }
    }
    if problems.is_empty() {
        Ok((row, texts))
    } else {
        Err(problems.join(" "))
    }
}

/// A field's value: a number, a category's text (or its position), yes/no for a boolean.
pub(super) fn parse_value(f: &crate::registry::card::Feature, text: &str) -> Result<f64, String> {
    match f.kind {
        FeatureKind::Category => {
            if let Some(i) = f.choice_index(text) {
                return Ok(i as f64);
            }
            text.parse::<f64>()
                .map_err(|_| "Choose one of the listed values.".to_string())
        }
        FeatureKind::Boolean => match text.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" | "1.0" => Ok(1.0),
            "false" | "no" | "0" | "0.0" => Ok(0.0),
            _ => Err("Choose yes or no.".to_string()),
        },
        _ => text
            .parse::<f64>()
            .map_err(|_| "Enter a number.".to_string()),
    }
}
