//! A version's reference data (`reference.csv`, a sample of the training data): checked at
//! upload and read into columns for the drift checks, by the `csv` crate (quoted fields and all).

use std::collections::BTreeMap;

use super::card::Card;

/// The reference's values, one column per card feature.
pub type Columns = BTreeMap<String, Vec<f64>>;

fn reader(csv: &[u8]) -> csv::Reader<&[u8]> {
    csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(csv)
}

/// Checks a reference CSV: UTF-8, a header naming every card feature, each row as many cells as
/// the header. Returns the row count, or what is wrong with the line named.
pub fn check(csv: &[u8], card: &Card) -> Result<i32, String> {
    let mut reader = reader(csv);
    let header = match reader.headers() {
        Ok(h) if !h.is_empty() => h.clone(),
        Ok(_) => return Err("reference.csv is empty.".into()),
        Err(e) if is_utf8(&e) => return Err("reference.csv is not UTF-8 text.".into()),
        Err(e) => return Err(format!("reference.csv cannot be read: {e}.")),
    };
    for f in &card.features {
        if !header.iter().any(|h| h == f.name) {
            return Err(format!(
                "reference.csv has no column {} (its header must name the card's features).",
                f.name
            ));
        }
    }
    let mut rows = 0i32;
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) if is_utf8(&e) => return Err("reference.csv is not UTF-8 text.".into()),
            Err(e) => return Err(format!("reference.csv cannot be read: {e}.")),
        };
        if record.len() != header.len() {
            let line = record.position().map_or(0, |p| p.line());
            return Err(format!(
                "reference.csv line {line} has {} cells; the header has {}.",
                record.len(),
                header.len()
            ));
        }
        rows = rows.saturating_add(1);
    }
    Ok(rows)
}

fn is_utf8(e: &csv::Error) -> bool {
    matches!(e.kind(), csv::ErrorKind::Utf8 { .. })
}

/// The reference's values by card feature: numbers, or a choice's index for categories. Cells
/// that are neither (and rows that cannot be read) are skipped.
pub fn columns(csv: &[u8], card: &Card) -> Columns {
    let mut reader = reader(csv);
    let Ok(header) = reader.headers().cloned() else {
        return Columns::new();
    };
    let index: Vec<(usize, &super::card::Feature)> = card
        .features
        .iter()
        .filter_map(|f| header.iter().position(|h| h == f.name).map(|i| (i, f)))
        .collect();
    let mut columns = Columns::new();
    for record in reader.records().flatten() {
        for (i, f) in &index {
            let Some(cell) = record.get(*i) else {
                continue;
            };
            let value = cell
                .parse::<f64>()
                .ok()
                .or_else(|| f.choice_index(cell).map(|i| i as f64));
            // A feature that may be missing keeps its gaps (empty or NaN) as NaN: drift
            // compares their share.
            let value = match value {
                Some(v) if v.is_nan() && f.allows_missing() => Some(v),
                None if cell.trim().is_empty() && f.allows_missing() => Some(f64::NAN),
                other => other.filter(|v| v.is_finite()),
            };
            if let Some(v) = value {
                columns.entry(f.name.clone()).or_default().push(v);
            }
        }
    }
    columns
}

/// The reference's rows, one value per card feature in the card's order (numbers, or a choice's
/// index); rows with a cell that is neither (or a gap where the feature may not be missing) are
/// skipped.
pub fn rows(csv: &[u8], card: &Card) -> Vec<Vec<f64>> {
    let mut reader = reader(csv);
    let Ok(header) = reader.headers().cloned() else {
        return Vec::new();
    };
    let Some(index) = card
        .features
        .iter()
        .map(|f| header.iter().position(|h| h == f.name).map(|i| (i, f)))
        .collect::<Option<Vec<_>>>()
    else {
        return Vec::new();
    };
    reader
        .records()
        .flatten()
        .filter_map(|record| {
            index
                .iter()
                .map(|(i, f)| {
                    let cell = record.get(*i)?;
                    let value = cell
                        .parse::<f64>()
                        .ok()
                        .or_else(|| f.choice_index(cell).map(|i| i as f64));
                    match value {
                        Some(v) if v.is_finite() => Some(v),
                        Some(v) if v.is_nan() && f.allows_missing() => Some(v),
                        None if cell.trim().is_empty() && f.allows_missing() => Some(f64::NAN),
                        _ => None,
                    }
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iris() -> Card {
        Card::parse(&std::fs::read_to_string("models/iris/1/card.toml").unwrap()).unwrap()
    }

    #[test]
    fn quoted_fields_are_fields() {
        let card = iris();
        let csv = b"sepal_length,sepal_width,petal_length,petal_width,note\n\
                    \"5.1\",3.5,1.4,0.2,\"a, b\"\n4.9,3.0,1.4,0.2,\"say \"\"hi\"\"\"\n";
        assert_eq!(check(csv, &card), Ok(2));
        let columns = columns(csv, &card);
        assert_eq!(columns["sepal_length"], vec![5.1, 4.9]);
        assert_eq!(columns["petal_width"], vec![0.2, 0.2]);
    }

    #[test]
    fn what_is_wrong_is_named() {
        let card = iris();
        assert_eq!(check(b"", &card), Err("reference.csv is empty.".into()));
        assert!(check(b"a,b\n1,2\n", &card)
            .unwrap_err()
            .contains("has no column sepal_length"));
        let short = b"sepal_length,sepal_width,petal_length,petal_width\n1,2,3,4\n1,2,3\n";
        assert_eq!(
            check(short, &card),
            Err("reference.csv line 3 has 3 cells; the header has 4.".into())
        );
        let bad = b"sepal_length,sepal_width,petal_length,petal_width\n1,2,3,\xff\n";
        assert_eq!(
            check(bad, &card),
            Err("reference.csv is not UTF-8 text.".into())
        );
    }
}
