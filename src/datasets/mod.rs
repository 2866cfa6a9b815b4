//! Data versions: data sets kept as registry entries (a file, its SHA-256, schema and profile),
//! the difference between two of them, and two model versions compared over their reference
//! rows ([`compare`]).
//!
//! A data set file is a CSV (with a header) or a Parquet file, read with the batch jobs' reader
//! ([`crate::batch::files`]). A column is a number column when every cell that is not missing
//! reads as a finite number, else a text column. Missing cells are empty or `NA`, `NaN`,
//! `null`, `None` (any case).

pub mod compare;
pub mod diff;

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::batch::files;
use crate::batch::Format;
use crate::monitoring::stats;

/// Data set names: as model names.
pub fn check_name(name: &str) -> Result<(), String> {
    crate::registry::check_model_name(name).map_err(|_| {
        "Data set names use lowercase letters, digits, - and _ (at most 64), starting with a letter or digit.".to_string()
    })
}

/// Rows read per chunk.
const CHUNK_ROWS: usize = 8192;
/// Categories listed in a text column's profile.
const TOP_CATEGORIES: usize = 20;

/// A column's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Number,
    Text,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Number => "number",
            Kind::Text => "text",
        }
    }
}

/// One column of a data set's schema.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    pub kind: Kind,
}

/// A data set file read whole: its columns and its records (cells as text).
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<csv::StringRecord>,
}

/// Whether a cell counts as missing.
pub fn is_missing(cell: &str) -> bool {
    let c = cell.trim();
    c.is_empty()
        || c.eq_ignore_ascii_case("na")
        || c.eq_ignore_ascii_case("nan")
        || c.eq_ignore_ascii_case("null")
        || c.eq_ignore_ascii_case("none")
}

/// A cell as a finite number, if it is one.
pub fn number(cell: &str) -> Option<f64> {
    cell.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Reads a whole file (blocking). Refuses, saying why, a file that cannot be read, has no
/// columns, names a column twice or has a record of the wrong length.
pub fn read(path: &Path, format: Format) -> Result<Table, String> {
    let mut source = files::open(path, format, CHUNK_ROWS)?;
    let columns = source.columns().to_vec();
    if columns.is_empty() || columns.iter().all(|c| c.trim().is_empty()) {
        return Err("The file has no columns (its first line must name them).".into());
    }
    let mut seen = std::collections::HashSet::new();
    for c in &columns {
        if !seen.insert(c.as_str()) {
            return Err(format!("The column {c:?} appears more than once."));
        }
    }
    let mut rows = Vec::new();
    while let Some(chunk) = source.next_chunk()? {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(chunk.bytes.as_slice());
        for (i, record) in reader.records().enumerate() {
            let record = record.map_err(|e| format!("The file cannot be read: {e}."))?;
            if record.len() != columns.len() {
                return Err(format!(
                    "{} {} has {} cells; the header names {} columns.",
                    if format == Format::Csv { "Line" } else { "Row" },
                    chunk.first_line + i as i64,
                    record.len(),
                    columns.len()
                ));
            }
            rows.push(record);
        }
    }
    Ok(Table { columns, rows })
}

impl Table {
    /// The column's cells.
    pub fn column<'a>(&'a self, i: usize) -> impl Iterator<Item = &'a str> + 'a {
        self.rows.iter().map(move |r| r.get(i).unwrap_or(""))
    }

    /// The schema: each column's kind.
    pub fn schema(&self) -> Vec<Column> {
        (0..self.columns.len())
            .map(|i| {
                let mut any = false;
                let numeric = self.column(i).filter(|c| !is_missing(c)).all(|c| {
                    any = true;
                    number(c).is_some()
                });
                Column {
                    name: self.columns[i].clone(),
                    kind: if numeric && any {
                        Kind::Number
                    } else {
                        Kind::Text
                    },
                }
            })
            .collect()
    }

    /// The position of a column.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    /// Checks that `key` names a column whose values are all present and distinct.
    pub fn check_key(&self, key: &str, format: Format) -> Result<usize, String> {
        let i = self.index(key).ok_or_else(|| {
            format!(
                "The key column {key:?} is not in the file (its columns: {}).",
                self.columns.join(", ")
            )
        })?;
        let mut seen = std::collections::HashMap::new();
        // Records start on line 2 of a CSV file (after the header), at row 1 of a Parquet file.
        let first = if format == Format::Csv { 2 } else { 1 };
        for (n, cell) in self.column(i).enumerate() {
            let place = first + n;
            if is_missing(cell) {
                return Err(format!(
                    "The key column {key:?} is empty on {} {place}; every row needs a key.",
                    format.place()
                ));
            }
            if let Some(before) = seen.insert(cell.trim(), place) {
                return Err(format!(
                    "The key column {key:?} has {:?} twice ({} {before} and {place}); keys must be unique.",
                    cell.trim(),
                    format.place()
                ));
            }
        }
        Ok(i)
    }

    /// A number column's values (missing cells left out).
    pub fn numbers(&self, i: usize) -> Vec<f64> {
        self.column(i).filter_map(number).collect()
    }
}

/// Quantile `q` of sorted values (linear interpolation, numpy's default).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, frac) = (pos.floor() as usize, pos - pos.floor());
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

/// Rounds for storage and display (12 significant digits are plenty for a profile).
fn tidy(v: f64) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let digits = 12 - v.abs().log10().ceil() as i32;
    let scale = 10f64.powi(digits.clamp(-300, 300));
    (v * scale).round() / scale
}

/// A number column's profile.
pub fn number_profile(values: &[f64], missing: usize) -> Value {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n == 0 {
        return json!({"count": 0, "missing": missing});
    }
    let edges = stats::sturges_edges(&sorted);
    // At most 30 bins on a page: wider bins for large columns.
    let edges = if edges.len() > 31 {
        let (lo, hi) = (sorted[0], sorted[n - 1]);
        (0..=30).map(|k| lo + (hi - lo) * k as f64 / 30.0).collect()
    } else {
        edges
    };
    let mut distinct = sorted.clone();
    distinct.dedup();
    json!({
        "count": n,
        "missing": missing,
        "distinct": distinct.len(),
        "mean": tidy(stats::mean(&sorted)),
        "std": tidy(stats::std_dev(&sorted)),
        "min": sorted[0],
        "p05": tidy(quantile(&sorted, 0.05)),
        "p25": tidy(quantile(&sorted, 0.25)),
        "p50": tidy(quantile(&sorted, 0.5)),
        "p75": tidy(quantile(&sorted, 0.75)),
        "p95": tidy(quantile(&sorted, 0.95)),
        "max": sorted[n - 1],
        "histogram": {"edges": edges.iter().map(|e| tidy(*e)).collect::<Vec<_>>(), "counts": stats::histogram(&sorted, &edges)},
    })
}

/// A text column's profile: its most frequent values.
pub fn text_profile<'a>(cells: impl Iterator<Item = &'a str>) -> Value {
    let mut counts: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    let (mut n, mut missing) = (0u64, 0u64);
    for c in cells {
        if is_missing(c) {
            missing += 1;
        } else {
            n += 1;
            *counts.entry(c.trim()).or_default() += 1;
        }
    }
    let distinct = counts.len();
    let mut top: Vec<(&str, u64)> = counts.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    top.truncate(TOP_CATEGORIES);
    json!({
        "count": n,
        "missing": missing,
        "distinct": distinct,
        "top": top.iter().map(|(v, c)| json!([v, c])).collect::<Vec<_>>(),
    })
}

/// The profile of every column, by name.
pub fn profile(table: &Table, schema: &[Column]) -> Value {
    let mut columns = serde_json::Map::new();
    for (i, col) in schema.iter().enumerate() {
        let p = match col.kind {
            Kind::Number => {
                let values = table.numbers(i);
                let missing = table.rows.len() - values.len();
                number_profile(&values, missing)
            }
            Kind::Text => text_profile(table.column(i)),
        };
        columns.insert(col.name.clone(), p);
    }
    json!({"rows": table.rows.len(), "columns": columns})
}

/// What adding a file found: everything the registry stores about it.
pub struct Described {
    pub sha256: String,
    pub size_bytes: i64,
    pub rows: i64,
    pub format: Format,
    pub schema: Vec<Column>,
    pub profile: Value,
}

/// Reads, checks and profiles a data set file (blocking).
pub fn describe(path: &Path, format: Format, key: Option<&str>) -> Result<Described, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("The file cannot be read: {e}."))?;
    describe_read(&bytes, path, format, key)
}

/// [`describe`] of a file whose bytes were read already (`bytes`, the contents of `path`).
fn describe_read(
    bytes: &[u8],
    path: &Path,
    format: Format,
    key: Option<&str>,
) -> Result<Described, String> {
    if bytes.is_empty() {
        return Err("The file is empty.".into());
    }
    let sha256 = crate::registry::artifacts::sha256_hex(bytes);
    let table = read(path, format)?;
    if let Some(key) = key {
        table.check_key(key, format)?;
    }
    let schema = table.schema();
    let profile = profile(&table, &schema);
    Ok(Described {
        sha256,
        size_bytes: bytes.len() as i64,
        rows: table.rows.len() as i64,
        format,
        schema,
        profile,
    })
}

/// Where a data set version's file lives.
pub enum Location<'a> {
    /// Sent to Plinth: kept in the artifact store.
    Uploaded,
    /// Read from an object-store URL, and read there again when needed.
    Url(&'a str),
}

/// What adding a file did.
pub struct Added {
    pub name: String,
    pub version: i32,
    /// False when the file was that version already.
    pub created: bool,
    pub rows: i64,
    pub sha256: String,
}

/// Why a file was not added; `Invalid` is for the person who sent it.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error("{0}")]
    Invalid(String),
    #[error("the file could not be stored: {0}")]
    Storage(#[from] std::io::Error),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// What a new data set version is called and described as.
pub struct Adding<'a> {
    pub name: &'a str,
    pub description: &'a str,
    pub key: Option<&'a str>,
    pub format: Format,
    pub location: Location<'a>,
    pub actor: Option<i64>,
}

/// Adds the file at `path` as the next version of data set `name` (created if new): checked,
/// profiled, stored (an upload in the artifact store; a URL is recorded). The same file added
/// to the same data set again is the version it already is.
pub async fn add(
    pool: &sqlx::PgPool,
    artifacts: &crate::registry::artifacts::ArtifactStore,
    path: &Path,
    adding: Adding<'_>,
) -> Result<Added, AddError> {
    check_name(adding.name).map_err(AddError::Invalid)?;
    let key = adding.key.map(str::trim).filter(|k| !k.is_empty());
    if adding.description.len() > 2000 {
        return Err(AddError::Invalid(
            "The description is longer than 2,000 characters.".into(),
        ));
    }
    let (owned, format, key_owned) = (path.to_path_buf(), adding.format, key.map(str::to_string));
    // The file is read once: its bytes are hashed, profiled and (for an upload) stored.
    let (described, bytes) = tokio::task::spawn_blocking(move || {
        let bytes = std::fs::read(&owned).map_err(|e| format!("The file cannot be read: {e}."))?;
        let described = describe_read(&bytes, &owned, format, key_owned.as_deref())?;
        Ok::<_, String>((described, bytes))
    })
    .await
    .map_err(|e| AddError::Invalid(format!("The file could not be read: {e}")))?
    .map_err(AddError::Invalid)?;
    let (location_kind, location) = match adding.location {
        Location::Uploaded => {
            artifacts.put(&bytes).await?;
            ("artifact", described.sha256.clone())
        }
        Location::Url(url) => ("url", url.trim().to_string()),
    };
    let schema =
        serde_json::to_value(&described.schema).map_err(|e| AddError::Invalid(e.to_string()))?;
    let (version, created) = plinth_store::datasets::add(
        pool,
        &plinth_store::datasets::NewDatasetVersion {
            name: adding.name,
            description: adding.description.trim(),
            sha256: &described.sha256,
            size_bytes: described.size_bytes,
            row_count: described.rows,
            format: described.format.as_str(),
            schema,
            profile: described.profile,
            key_column: key,
            location_kind,
            location: &location,
            actor: adding.actor,
        },
    )
    .await?;
    Ok(Added {
        name: adding.name.to_string(),
        version,
        created,
        rows: described.rows,
        sha256: described.sha256,
    })
}

/// A data set version's schema as stored.
pub fn schema_of(row: &plinth_store::datasets::DatasetVersionRow) -> Vec<Column> {
    serde_json::from_value(row.schema.0.clone()).unwrap_or_default()
}

/// Reads a data set version's file back (from the artifact store, or its URL again: a file
/// that changed there since it was added is refused, naming both SHA-256s).
pub async fn load(
    state: &crate::state::AppState,
    row: &plinth_store::datasets::DatasetVersionRow,
) -> Result<Table, String> {
    let file = crate::web::forms::Spooled::create_in(&crate::batch::jobs::spool_dir(state))
        .await
        .map_err(|e| format!("A scratch file cannot be written: {e}"))?;
    if row.location_kind == "url" {
        crate::registry::artifacts::download_to_file(
            &row.location,
            &file.path,
            state.settings.max_job_bytes,
        )
        .await?;
    } else {
        let bytes = state
            .registry
            .artifacts()
            .get(&row.sha256)
            .await
            .map_err(|e| {
                format!(
                    "The file of {} v{} cannot be read: {e}",
                    row.dataset, row.version
                )
            })?;
        tokio::fs::write(&file.path, bytes)
            .await
            .map_err(|e| format!("A scratch file cannot be written: {e}"))?;
    }
    let format = Format::parse(&row.format).unwrap_or(Format::Csv);
    let (name, version, sha) = (row.dataset.clone(), row.version, row.sha256.clone());
    tokio::task::spawn_blocking(move || {
        let bytes = std::fs::read(&file.path).map_err(|e| e.to_string())?;
        let now = crate::registry::artifacts::sha256_hex(&bytes);
        if now != sha {
            return Err(format!(
                "The file of {name} v{version} has changed since it was added (SHA-256 {} then, {} now).",
                &sha[..12.min(sha.len())],
                &now[..12]
            ));
        }
        read(&file.path, format)
    })
    .await
    .map_err(|e| e.to_string())?
}

#[cfg(test)]
mod tests;
