//! The rows a platform's request carries: MLflow's dataframe_split, dataframe_records,
//! instances and inputs, Azure ML's input_data, Vertex's instances, and CSV, each read into
//! rows of the card's features.

use actix_web::HttpRequest;
use serde_json::{Map, Value};

use super::Contract;
use crate::api::v1::row_from_json;
use crate::registry::card::{Card, FeatureKind};

pub(super) fn wants_csv(req: &HttpRequest) -> bool {
    req.headers()
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().starts_with("text/csv")))
}

pub(super) fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The rows a request carries, checked against the card.
pub(super) fn rows_of(
    contract: Contract,
    req: &HttpRequest,
    body: &[u8],
    card: &Card,
) -> Result<Vec<Vec<f64>>, String> {
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let objects = match content_type.as_str() {
        "text/csv" | "application/csv" if contract != Contract::Vertex => csv_rows(body, card)?,
        "application/json" | "" => {
            let value: Value = serde_json::from_slice(body)
                .map_err(|e| format!("The body is not valid JSON: {e}."))?;
            json_rows(contract, value, card)?
        }
        other => {
            let accepted = if contract == Contract::Vertex {
                "application/json"
            } else {
                "application/json or text/csv"
            };
            return Err(format!(
                "Content type {other:?} is not accepted here; send {accepted}."
            ));
        }
    };
    if objects.is_empty() {
        return Err("Send at least one row.".into());
    }
    objects
        .iter()
        .enumerate()
        .map(|(i, row)| row_from_json(card, row, Some(i)))
        .collect()
}

/// CSV rows without a header, the card's features in order (SageMaker Batch Transform, MLflow).
pub(super) fn csv_rows(body: &[u8], card: &Card) -> Result<Vec<Value>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(body);
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| format!("row {i}: not valid CSV: {e}"))?;
        if record.iter().all(str::is_empty) {
            continue;
        }
        let values: Vec<Value> = record
            .iter()
            .map(|v| Value::String(v.to_string()))
            .collect();
        rows.push(positional(card, &values, i)?);
    }
    Ok(rows)
}

/// A row given as a list of values in the card's feature order, as named features.
pub(super) fn positional(card: &Card, values: &[Value], i: usize) -> Result<Value, String> {
    if values.len() != card.features.len() {
        return Err(format!(
            "row {i}: expected {} values ({}), got {}",
            card.features.len(),
            feature_names(card),
            values.len()
        ));
    }
    let mut map = Map::new();
    for (f, v) in card.features.iter().zip(values) {
        map.insert(f.name.clone(), typed(f.kind, v));
    }
    Ok(Value::Object(map))
}

/// CSV cells and loosely typed JSON: numbers given as text become numbers, `true`/`false`
/// booleans; category choices stay text.
pub(super) fn typed(kind: FeatureKind, v: &Value) -> Value {
    let Value::String(s) = v else {
        return v.clone();
    };
    match kind {
        FeatureKind::Category => v.clone(),
        FeatureKind::Boolean if s.eq_ignore_ascii_case("true") => Value::Bool(true),
        FeatureKind::Boolean if s.eq_ignore_ascii_case("false") => Value::Bool(false),
        _ => s
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or_else(|| v.clone(), Value::Number),
    }
}

pub(super) fn feature_names(card: &Card) -> String {
    card.features
        .iter()
        .map(|f| f.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn json_rows(
    contract: Contract,
    value: Value,
    card: &Card,
) -> Result<Vec<Value>, String> {
    let Value::Object(mut top) = value else {
        return Err(match contract {
            Contract::Vertex => "Send a JSON object: {\"instances\": [...]}.".into(),
            Contract::AzureMl => "Send a JSON object: {\"input_data\": ...} or {\"data\": [...]}.".into(),
            _ => "Send a JSON object with one of dataframe_split, dataframe_records, instances or inputs.".into(),
        });
    };
    let (formats, extras): (&[&str], &[&str]) = match contract {
        Contract::Vertex => (&["instances"], &["parameters"]),
        Contract::AzureMl => (
            &[
                "input_data",
                "data",
                "dataframe_split",
                "dataframe_records",
                "instances",
                "inputs",
            ],
            &["params", "parameters"],
        ),
        _ => (
            &[
                "dataframe_split",
                "dataframe_records",
                "instances",
                "inputs",
            ],
            &["params"],
        ),
    };
    if let Some(unknown) = top
        .keys()
        .find(|k| !formats.contains(&k.as_str()) && !extras.contains(&k.as_str()))
    {
        return Err(format!(
            "Unknown field {unknown:?}; expected one of {}.",
            formats.join(", ")
        ));
    }
    let given: Vec<&str> = formats
        .iter()
        .copied()
        .filter(|f| top.contains_key(*f))
        .collect();
    let format = match given.as_slice() {
        [one] => *one,
        [] => return Err(format!("Expected one of {}.", formats.join(", "))),
        many => return Err(format!("Give one of {}, not several.", many.join(", "))),
    };
    let data = top.remove(format).unwrap_or(Value::Null);
    match format {
        "dataframe_split" => split_rows(data, card),
        "dataframe_records" => records(data, card, format),
        "input_data" => match data {
            Value::Object(_) => split_rows(data, card),
            other => records(other, card, format),
        },
        // instances, inputs, data: rows as objects or as lists in feature order, or (inputs)
        // one list per feature.
        _ => match data {
            Value::Object(columns) if format == "inputs" => column_rows(columns),
            other => records(other, card, format),
        },
    }
}

/// `{"columns": [...], "data": [[...]], "index": [...]}`, pandas' split orientation.
pub(super) fn split_rows(data: Value, card: &Card) -> Result<Vec<Value>, String> {
    let Value::Object(mut split) = data else {
        return Err("dataframe_split must be an object with columns and data.".into());
    };
    if let Some(unknown) = split
        .keys()
        .find(|k| !["columns", "data", "index"].contains(&k.as_str()))
    {
        return Err(format!(
            "dataframe_split: unknown field {unknown:?} (columns, data, index)."
        ));
    }
    let rows = match split.remove("data") {
        Some(Value::Array(rows)) => rows,
        _ => return Err("dataframe_split: data must be a list of rows.".into()),
    };
    let columns = match split.remove("columns") {
        None => None,
        Some(Value::Array(cols)) => Some(
            cols.iter()
                .map(|c| {
                    c.as_str()
                        .map(str::to_string)
                        .ok_or("dataframe_split: columns must be names.")
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => return Err("dataframe_split: columns must be a list of names.".into()),
    };
    rows.into_iter()
        .enumerate()
        .map(|(i, row)| {
            let Value::Array(values) = row else {
                return Err(format!("row {i}: each row of data must be a list"));
            };
            match &columns {
                None => positional(card, &values, i),
                Some(cols) => {
                    if cols.len() != values.len() {
                        return Err(format!(
                            "row {i}: {} columns but {} values",
                            cols.len(),
                            values.len()
                        ));
                    }
                    let kinds = |name: &str| {
                        card.features
                            .iter()
                            .find(|f| f.name == name)
                            .map_or(FeatureKind::Number, |f| f.kind)
                    };
                    Ok(Value::Object(
                        cols.iter()
                            .zip(&values)
                            .map(|(c, v)| (c.clone(), typed(kinds(c), v)))
                            .collect(),
                    ))
                }
            }
        })
        .collect()
}

/// A list of rows, each an object of named features or a list in the card's feature order.
pub(super) fn records(data: Value, card: &Card, format: &str) -> Result<Vec<Value>, String> {
    let Value::Array(rows) = data else {
        return Err(format!("{format} must be a list of rows."));
    };
    rows.into_iter()
        .enumerate()
        .map(|(i, row)| match row {
            Value::Object(_) => Ok(row),
            Value::Array(values) => positional(card, &values, i),
            other => Err(format!(
                "row {i}: expected an object of named features or a list of {} values, got {other}",
                card.features.len()
            )),
        })
        .collect()
}

/// `{"feature": [v0, v1, ...], ...}`: MLflow's column-oriented `inputs`.
pub(super) fn column_rows(columns: Map<String, Value>) -> Result<Vec<Value>, String> {
    let mut lists = Vec::new();
    for (name, values) in &columns {
        let Value::Array(values) = values else {
            return Err(format!("inputs.{name} must be a list of values."));
        };
        lists.push((name, values));
    }
    let n = lists.first().map_or(0, |(_, v)| v.len());
    if let Some((name, v)) = lists.iter().find(|(_, v)| v.len() != n) {
        return Err(format!(
            "inputs.{name} has {} values where the others have {n}.",
            v.len()
        ));
    }
    Ok((0..n)
        .map(|i| {
            Value::Object(
                lists
                    .iter()
                    .map(|(name, values)| ((*name).clone(), values[i].clone()))
                    .collect(),
            )
        })
        .collect())
}
