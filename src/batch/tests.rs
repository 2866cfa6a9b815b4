use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::files::{self, ParquetWriter};
use super::local::{load_model, score_file, Output};
use super::*;

fn iris() -> (Card, LoadedModel) {
    load_model(&Path::new(env!("CARGO_MANIFEST_DIR")).join("models/iris/1")).expect("iris loads")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Every chunk of a file.
fn chunks(path: &Path, format: Format, rows: usize) -> (Vec<String>, Vec<files::Chunk>) {
    let mut source = files::open(path, format, rows).unwrap();
    let columns = source.columns().to_vec();
    let mut out = Vec::new();
    while let Some(c) = source.next_chunk().unwrap() {
        out.push(c);
    }
    (columns, out)
}

/// The fixture's onnxruntime outputs for the iris rows.
fn fixture() -> (Vec<Vec<f64>>, Vec<i64>, Vec<Vec<f64>>) {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/iris.json"),
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let rows: Vec<Vec<f64>> = serde_json::from_value(v["rows"].clone()).unwrap();
    let labels: Vec<i64> = serde_json::from_value(v["outputs"]["label"].clone()).unwrap();
    let probs: Vec<Vec<f64>> =
        serde_json::from_value(v["outputs"]["probabilities"].clone()).unwrap();
    (rows, labels, probs)
}

#[test]
fn a_csv_file_is_cut_into_whole_records_whatever_their_quoting_and_line_endings() {
    let dir = tempfile::tempdir().unwrap();
    let text = "\u{feff}id,note,x\r\n1,plain,1.5\r\n2,\"two\nlines\",2.5\r\n\r\n3,\"a \"\"quote\"\", and a comma\",3.5\r\n4,last,4.5";
    let path = write(dir.path(), "in.csv", text);
    let (columns, got) = chunks(&path, Format::Csv, 2);
    assert_eq!(
        columns,
        ["id", "note", "x"],
        "the byte-order mark is not part of a name"
    );
    assert_eq!(got.iter().map(|c| c.rows).collect::<Vec<_>>(), [2, 2]);
    // The chunks' bytes are the file's, back to back, after the header.
    let joined: Vec<u8> = got.iter().flat_map(|c| c.bytes.clone()).collect();
    let header_end = text.find("\r\n").unwrap() + 1;
    assert!(text.as_bytes()[header_end..].ends_with(&joined[joined.len() - 10..]));
    let mut ids = Vec::new();
    for c in &got {
        let mut r = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(c.bytes.as_slice());
        for rec in r.records() {
            let rec = rec.unwrap();
            ids.push(rec[0].to_string());
        }
    }
    assert_eq!(ids, ["1", "2", "3", "4"]);
}

#[test]
fn refused_rows_are_reported_at_their_line_in_the_file_with_the_forms_words() {
    let (card, model) = iris();
    let dir = tempfile::tempdir().unwrap();
    // Line 1 header; 2 good; 3 a quoted id over two lines (3-4); 5 blank; 6 bad; 7 short.
    let text = "id,sepal_length,sepal_width,petal_length,petal_width\n\
                a,5.1,3.5,1.4,0.2\n\
                \"b\nc\",6.2,2.9,4.3,1.3\n\
                \n\
                d,99,3.5,,x\n\
                e,5.1\n\
                f,5.1,3.5,1.4,0.2\n";
    for (ending, rows) in [("\n", 1), ("\n", 2), ("\n", 100), ("\r\n", 1), ("\r\n", 3)] {
        let path = write(dir.path(), "in.csv", &text.replace('\n', ending));
        let (columns, got) = chunks(&path, Format::Csv, rows);
        let layout = Layout::new(&card, &model, columns, false).unwrap();
        let mut errors = Vec::new();
        let mut total = 0;
        for c in &got {
            let parsed = parse_chunk(&card, &layout, Format::Csv, &c.bytes, c.first_line).unwrap();
            total += parsed.len();
            errors.extend(parsed.errors());
        }
        assert_eq!(total, 5, "chunks of {rows}");
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0].0, 6, "chunks of {rows}: {errors:?}");
        assert!(
            errors[0]
                .1
                .contains("sepal_length: Enter a value between 4.3 and 7.9"),
            "{errors:?}"
        );
        assert!(
            errors[0]
                .1
                .contains("petal_length: This field is required."),
            "{errors:?}"
        );
        assert!(
            errors[0].1.contains("petal_width: Enter a number."),
            "{errors:?}"
        );
        assert_eq!(errors[1].0, 7, "chunks of {rows}: {errors:?}");
        assert!(errors[1].1.contains("2 fields"), "{errors:?}");
    }
}

#[test]
fn columns_are_matched_by_name_and_missing_ones_are_named() {
    let (card, model) = iris();
    let cols = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let e = Layout::new(
        &card,
        &model,
        cols(&["sepal_length", "petal_width", "id"]),
        true,
    )
    .unwrap_err();
    assert!(e.contains("\"sepal_width\", \"petal_length\""), "{e}");
    let e = Layout::new(
        &card,
        &model,
        cols(&[
            "sepal_length",
            "sepal_width",
            "petal_length",
            "petal_width",
            "petal_width",
        ]),
        true,
    )
    .unwrap_err();
    assert!(e.contains("more than once"), "{e}");
    // Any order; an input column named like an output keeps its name.
    let layout = Layout::new(
        &card,
        &model,
        cols(&[
            "prediction",
            "petal_width",
            "petal_length",
            "sepal_width",
            "sepal_length",
        ]),
        true,
    )
    .unwrap();
    assert_eq!(
        layout.header(),
        cols(&[
            "prediction",
            "petal_width",
            "petal_length",
            "sepal_width",
            "sepal_length",
            "prediction_id",
            "prediction_",
            "probability_setosa",
            "probability_versicolor",
            "probability_virginica",
            "error"
        ])
    );
}

#[test]
fn scored_rows_match_onnxruntime_and_keep_their_other_columns() {
    let (card, model) = iris();
    let (rows, labels, probs) = fixture();
    let mut text = String::from("petal_width,id,sepal_length,sepal_width,petal_length\n");
    for (i, r) in rows.iter().enumerate() {
        text.push_str(&format!("{},row-{i},{},{},{}\n", r[3], r[0], r[1], r[2]));
    }
    let columns: Vec<String> = text
        .lines()
        .next()
        .unwrap()
        .split(',')
        .map(String::from)
        .collect();
    let layout = Layout::new(&card, &model, columns, true).unwrap();
    let body = text.split_once('\n').unwrap().1;
    let mut parsed = parse_chunk(&card, &layout, Format::Csv, body.as_bytes(), 2).unwrap();
    let scored = score(&card, &model, &mut parsed);
    assert_eq!(scored.len(), rows.len());
    let ids: Vec<i64> = (100..100 + rows.len() as i64).collect();
    let out = write_output(&layout, &parsed, &scored, Some(&ids));
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(out.as_slice());
    for (i, rec) in reader.records().enumerate() {
        let rec = rec.unwrap();
        assert_eq!(&rec[1], format!("row-{i}"));
        assert_eq!(&rec[5], ids[i].to_string());
        assert_eq!(&rec[6], card.label_name(labels[i] as usize));
        for c in 0..3 {
            let p: f64 = rec[7 + c].parse().unwrap();
            assert!(
                (p - probs[i][c]).abs() < 1e-5,
                "row {i} class {c}: {p} vs {}",
                probs[i][c]
            );
        }
        assert_eq!(&rec[10], "");
    }
    // What is stored: the rows in the card's order.
    match &scored.stored {
        plinth_store::predictions::StoredInputs::Numbers(x) => assert_eq!(&x[..4], &rows[0][..]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_parquet_file_in_and_out() {
    use arrow_array::{Array, Float64Array, Int64Array, RecordBatch, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    let (card, model) = iris();
    let (rows, labels, _) = fixture();
    let dir = tempfile::tempdir().unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Int64, false),
        Field::new("sepal_length", DataType::Float64, true),
        Field::new("sepal_width", DataType::Float64, false),
        Field::new("petal_length", DataType::Float64, false),
        Field::new("petal_width", DataType::Float64, false),
    ]));
    let col = |c: usize| -> Arc<dyn Array> {
        Arc::new(Float64Array::from_iter(rows.iter().enumerate().map(
            |(i, r)| {
                // The last row has a gap where sepal_length should be.
                (c != 0 || i + 1 < rows.len()).then_some(r[c])
            },
        )))
    };
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from_iter_values(0..rows.len() as i64)),
            col(0),
            col(1),
            col(2),
            col(3),
        ],
    )
    .unwrap();
    let input = dir.path().join("in.parquet");
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&input).unwrap(), schema, None)
            .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();

    let (columns, got) = chunks(&input, Format::Parquet, 3);
    assert_eq!(columns[0], "key");
    assert_eq!(got.iter().map(|c| c.first_line).collect::<Vec<_>>(), [1, 4]);

    // Scored by `plinth score` into Parquet, read back with its types.
    let output = dir.path().join("out.parquet");
    let file = std::fs::File::create(&output).unwrap();
    let report = score_file(
        &card,
        &model,
        &input,
        Format::Parquet,
        Output::Parquet(Box::new(file)),
        2,
        10,
        None,
    )
    .unwrap();
    assert_eq!(report.rows, rows.len() as u64);
    assert_eq!(report.refused, 1);
    assert_eq!(report.first_errors[0].0, rows.len() as i64, "{report:?}");
    assert!(report.first_errors[0]
        .1
        .contains("sepal_length: This field is required."));
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&output).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    let out = arrow_select_concat(&batches);
    let names: Vec<String> = out
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names[5], "prediction");
    assert_eq!(out.schema().field(1).data_type(), &DataType::Float64);
    assert_eq!(out.schema().field(6).data_type(), &DataType::Float64);
    let predicted = out
        .column(5)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    let errors = out
        .column(9)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    for (i, label) in labels.iter().enumerate().take(rows.len() - 1) {
        assert_eq!(predicted.value(i), card.label_name(*label as usize));
        assert!(errors.is_null(i));
    }
    assert!(predicted.is_null(rows.len() - 1));
    assert!(errors.value(rows.len() - 1).contains("sepal_length"));
}

/// The batches as rows of one batch (for reading back a small file).
fn arrow_select_concat(batches: &[arrow_array::RecordBatch]) -> arrow_array::RecordBatch {
    let schema = batches[0].schema();
    let columns = (0..schema.fields().len())
        .map(|c| {
            let parts: Vec<&dyn arrow_array::Array> =
                batches.iter().map(|b| b.column(c).as_ref()).collect();
            arrow_select::concat::concat(&parts).unwrap()
        })
        .collect();
    arrow_array::RecordBatch::try_new(schema, columns).unwrap()
}

#[test]
fn plinth_score_keeps_the_files_order_across_threads_and_stops_at_the_budget() {
    let (card, model) = iris();
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("sepal_length,sepal_width,petal_length,petal_width,n\n");
    let n = 3 * DEFAULT_CHUNK_ROWS + 17;
    for i in 0..n {
        text.push_str(&format!("5.1,3.5,1.4,0.2,{i}\n"));
    }
    let input = write(dir.path(), "many.csv", &text);
    let mut out = Vec::new();
    let report = score_file(
        &card,
        &model,
        &input,
        Format::Csv,
        Output::Csv(Box::new(&mut out)),
        4,
        0,
        None,
    )
    .unwrap();
    assert_eq!(report.rows, n as u64);
    assert!(report.stopped.is_none());
    let mut reader = csv::Reader::from_reader(out.as_slice());
    let header = reader.headers().unwrap().clone();
    assert_eq!(&header[5], "prediction");
    let order: Vec<usize> = reader
        .records()
        .map(|r| r.unwrap()[4].parse().unwrap())
        .collect();
    assert_eq!(order, (0..n).collect::<Vec<_>>());

    // One bad row past a budget of none stops the run.
    text.push_str("x,3.5,1.4,0.2,bad\n");
    let input = write(dir.path(), "bad.csv", &text);
    let report = score_file(
        &card,
        &model,
        &input,
        Format::Csv,
        Output::Csv(Box::new(std::io::sink())),
        2,
        0,
        None,
    )
    .unwrap();
    assert!(report.stopped.is_some(), "{report:?}");
}

#[test]
fn a_writer_to_parquet_types_the_outputs() {
    let header: Vec<String> = ["id", "x", "prediction_id", "prediction", "error"]
        .map(String::from)
        .to_vec();
    let kinds = [
        ColumnKind::Text,
        ColumnKind::Float,
        ColumnKind::Int,
        ColumnKind::Float,
        ColumnKind::Text,
    ];
    let mut w = ParquetWriter::new(Vec::new(), &header, &kinds).unwrap();
    w.write_csv(b"a,1.5,7,0.25,\nb,,,,\"bad, row\"\n").unwrap();
    let bytes = w.finish().unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        actix_web::web::Bytes::from(bytes),
    )
    .unwrap()
    .build()
    .unwrap();
    let batch = reader.into_iter().next().unwrap().unwrap();
    assert_eq!(batch.num_rows(), 2);
    assert_eq!(batch.column(2).null_count(), 1);
}
