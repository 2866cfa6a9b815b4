//! What changed between two data set versions: the schema, the rows (when both are keyed by the
//! same column) and each shared column's distribution, with the drift checks' statistics.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;
use serde_json::Value;

use super::{is_missing, number, Column, Kind, Table};
use crate::monitoring::drift;
use crate::registry::card::{Card, Feature, FeatureKind};

/// Example keys listed per kind of row change.
const EXAMPLES: usize = 20;

/// One column's distribution in a and in b.
#[derive(Clone, Debug, Serialize)]
pub struct Shift {
    pub column: String,
    pub kind: Kind,
    pub method: String,
    pub statistic: f64,
    pub p_value: Option<f64>,
    pub threshold: f64,
    pub drifted: bool,
    pub psi: f64,
    /// `{"edges" or "categories", "reference": a's shares, "current": b's shares}`.
    pub histogram: Value,
    /// Shares of missing cells in a and b.
    pub a_missing: f64,
    pub b_missing: f64,
}

/// A column's values as numbers for the drift statistics: the number itself, or a text value's
/// position among `choices`.
fn values(cells: &[&str], kind: Kind, choices: &[String]) -> Vec<f64> {
    cells
        .iter()
        .filter(|c| !is_missing(c))
        .filter_map(|c| match kind {
            Kind::Number => number(c),
            Kind::Text => choices
                .binary_search_by(|x| x.as_str().cmp(c.trim()))
                .ok()
                .map(|i| i as f64),
        })
        .collect()
}

fn missing_share(cells: &[&str]) -> f64 {
    if cells.is_empty() {
        return 0.0;
    }
    cells.iter().filter(|c| is_missing(c)).count() as f64 / cells.len() as f64
}

/// Compares one column's cells in a and b, as the drift check compares a feature's reference
/// with live inputs (a is the reference).
pub fn shift(column: &str, kind: Kind, a: &[&str], b: &[&str]) -> Option<Shift> {
    let choices: Vec<String> = match kind {
        Kind::Number => Vec::new(),
        Kind::Text => a
            .iter()
            .chain(b)
            .filter(|c| !is_missing(c))
            .map(|c| c.trim().to_string())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
    };
    let (va, vb) = (values(a, kind, &choices), values(b, kind, &choices));
    let card = Card {
        features: vec![Feature {
            name: column.to_string(),
            label: None,
            unit: None,
            kind: match kind {
                Kind::Number => FeatureKind::Number,
                Kind::Text => FeatureKind::Category,
            },
            min: None,
            max: None,
            step: None,
            choices: (kind == Kind::Text).then(|| choices.clone()),
            help: None,
            missing: Default::default(),
            default: None,
        }],
        ..Card::default()
    };
    let mut ra = std::collections::BTreeMap::new();
    ra.insert(column.to_string(), va);
    let mut rb = std::collections::BTreeMap::new();
    rb.insert(column.to_string(), vb);
    let found = drift::compare(&card, &ra, &rb).into_iter().next()?;
    let mut histogram = found.histogram;
    // Categories by name, not by their position.
    if let Some(cats) = histogram
        .get_mut("categories")
        .and_then(Value::as_array_mut)
    {
        for c in cats.iter_mut() {
            let name = c
                .as_str()
                .and_then(|s| s.parse::<usize>().ok())
                .and_then(|i| choices.get(i).cloned());
            if let Some(name) = name {
                *c = Value::String(name);
            }
        }
    }
    Some(Shift {
        column: column.to_string(),
        kind,
        method: found.method.to_string(),
        statistic: found.statistic,
        p_value: found.p_value,
        threshold: found.threshold,
        drifted: found.drifted,
        psi: found.psi,
        histogram,
        a_missing: missing_share(a),
        b_missing: missing_share(b),
    })
}

/// Rows added, removed and changed between two versions keyed by the same column.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RowChanges {
    pub key: String,
    pub added: usize,
    pub removed: usize,
    pub changed: usize,
    pub unchanged: usize,
    pub added_keys: Vec<String>,
    pub removed_keys: Vec<String>,
    /// Changed rows' keys, each with the columns whose cell changed.
    pub changed_keys: Vec<(String, Vec<String>)>,
}

/// The difference between data set versions a and b.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Difference {
    pub a_rows: usize,
    pub b_rows: usize,
    pub added_columns: Vec<String>,
    pub removed_columns: Vec<String>,
    /// Columns in both whose kind changed: name, a's kind, b's kind.
    pub retyped_columns: Vec<(String, Kind, Kind)>,
    /// When both versions are keyed by the same column.
    pub rows: Option<RowChanges>,
    /// Each column in both, compared.
    pub shifts: Vec<Shift>,
}

fn row_changes(key: &str, a: &Table, b: &Table) -> Option<RowChanges> {
    let (ka, kb) = (a.index(key)?, b.index(key)?);
    // The columns both have, other than the key, by position in each.
    let shared: Vec<(String, usize, usize)> = a
        .columns
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != ka)
        .filter_map(|(i, c)| b.index(c).map(|j| (c.clone(), i, j)))
        .collect();
    let index_b: HashMap<&str, usize> = b
        .rows
        .iter()
        .enumerate()
        .map(|(n, r)| (r.get(kb).unwrap_or("").trim(), n))
        .collect();
    let mut out = RowChanges {
        key: key.to_string(),
        ..RowChanges::default()
    };
    let mut in_a = std::collections::HashSet::new();
    for ra in &a.rows {
        let k = ra.get(ka).unwrap_or("").trim();
        in_a.insert(k);
        match index_b.get(k) {
            None => {
                out.removed += 1;
                if out.removed_keys.len() < EXAMPLES {
                    out.removed_keys.push(k.to_string());
                }
            }
            Some(&n) => {
                let rb = &b.rows[n];
                let differing: Vec<String> = shared
                    .iter()
                    .filter(|(_, i, j)| {
                        let (x, y) = (
                            ra.get(*i).unwrap_or("").trim(),
                            rb.get(*j).unwrap_or("").trim(),
                        );
                        // 1 and 1.0 are the same number.
                        x != y && !matches!((number(x), number(y)), (Some(p), Some(q)) if p == q)
                    })
                    .map(|(c, _, _)| c.clone())
                    .collect();
                if differing.is_empty() {
                    out.unchanged += 1;
                } else {
                    out.changed += 1;
                    if out.changed_keys.len() < EXAMPLES {
                        out.changed_keys.push((k.to_string(), differing));
                    }
                }
            }
        }
    }
    for rb in &b.rows {
        let k = rb.get(kb).unwrap_or("").trim();
        if !in_a.contains(k) {
            out.added += 1;
            if out.added_keys.len() < EXAMPLES {
                out.added_keys.push(k.to_string());
            }
        }
    }
    Some(out)
}

/// Compares two data set versions; `key` when both are keyed by that column.
pub fn difference(
    a: &Table,
    a_schema: &[Column],
    b: &Table,
    b_schema: &[Column],
    key: Option<&str>,
) -> Difference {
    let kind_in =
        |schema: &[Column], name: &str| schema.iter().find(|c| c.name == name).map(|c| c.kind);
    let mut d = Difference {
        a_rows: a.rows.len(),
        b_rows: b.rows.len(),
        ..Difference::default()
    };
    d.added_columns = b
        .columns
        .iter()
        .filter(|c| a.index(c).is_none())
        .cloned()
        .collect();
    d.removed_columns = a
        .columns
        .iter()
        .filter(|c| b.index(c).is_none())
        .cloned()
        .collect();
    for (i, name) in a.columns.iter().enumerate() {
        let Some(j) = b.index(name) else { continue };
        let (Some(ka), Some(kb)) = (
            kind_in(a_schema, name.as_str()),
            kind_in(b_schema, name.as_str()),
        ) else {
            continue;
        };
        if ka != kb {
            d.retyped_columns.push((name.clone(), ka, kb));
        }
        if Some(name.as_str()) == key {
            continue;
        }
        // A column that became text is compared as text.
        let kind = if ka == Kind::Number && kb == Kind::Number {
            Kind::Number
        } else {
            Kind::Text
        };
        let ca: Vec<&str> = a.column(i).collect();
        let cb: Vec<&str> = b.column(j).collect();
        if let Some(s) = shift(name, kind, &ca, &cb) {
            d.shifts.push(s);
        }
    }
    d.rows = key.and_then(|k| row_changes(k, a, b));
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(csv: &str) -> Table {
        let mut reader = csv::ReaderBuilder::new().from_reader(csv.as_bytes());
        let columns = reader
            .headers()
            .unwrap()
            .iter()
            .map(str::to_string)
            .collect();
        Table {
            columns,
            rows: reader.records().map(Result::unwrap).collect(),
        }
    }

    #[test]
    fn keyed_rows_added_removed_changed() {
        let a = table("id,x,c\n1,1.0,red\n2,2,blue\n3,3,red\n");
        let b = table("id,x,c,new\n1,1,red,9\n2,2.5,blue,9\n4,4,green,9\n");
        let d = difference(&a, &a.schema(), &b, &b.schema(), Some("id"));
        let rows = d.rows.unwrap();
        assert_eq!(
            (rows.added, rows.removed, rows.changed, rows.unchanged),
            (1, 1, 1, 1)
        );
        assert_eq!(rows.added_keys, vec!["4"]);
        assert_eq!(rows.removed_keys, vec!["3"]);
        assert_eq!(
            rows.changed_keys,
            vec![("2".to_string(), vec!["x".to_string()])]
        );
        assert_eq!(d.added_columns, vec!["new"]);
        assert!(d.removed_columns.is_empty());
        // x and c compared; the key is not.
        let names: Vec<&str> = d.shifts.iter().map(|s| s.column.as_str()).collect();
        assert_eq!(names, vec!["x", "c"]);
        let c = &d.shifts[1];
        assert_eq!(
            c.histogram["categories"],
            serde_json::json!(["blue", "green", "red"])
        );
    }

    #[test]
    fn a_moved_column_drifts_and_a_copy_does_not() {
        let a_csv: String = std::iter::once("x\n".to_string())
            .chain((0..500).map(|i| format!("{}\n", i % 50)))
            .collect();
        let b_csv: String = std::iter::once("x\n".to_string())
            .chain((0..500).map(|i| format!("{}\n", 30 + i % 50)))
            .collect();
        let (a, b) = (table(&a_csv), table(&b_csv));
        let same = difference(&a, &a.schema(), &a, &a.schema(), None);
        assert!(!same.shifts[0].drifted);
        let moved = difference(&a, &a.schema(), &b, &b.schema(), None);
        assert!(moved.shifts[0].drifted, "{:?}", moved.shifts[0]);
        assert_eq!(moved.shifts[0].method, "Kolmogorov-Smirnov");
        assert!(moved.rows.is_none());
    }
}
