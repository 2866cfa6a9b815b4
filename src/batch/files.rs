//! Files in and out of batch scoring: a CSV or Parquet file read as chunks of whole records
//! (CSV records without a header, whatever the input), and results written as Parquet.
//!
//! Nothing here holds more than a chunk: a CSV file is read record by record and each chunk's
//! bytes are copied as they were; a Parquet file is read a batch of rows at a time.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{Float64Builder, Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};

use super::{ColumnKind, Format, MAX_CHUNK_BYTES, MAX_COLUMNS, MAX_RECORD_BYTES};

/// Whole records of the input, as CSV without a header, in the file's columns.
#[derive(Clone, Debug, PartialEq)]
pub struct Chunk {
    /// The first record's place: its line (CSV, the header is line 1) or row (Parquet, from 1).
    pub first_line: i64,
    pub rows: usize,
    pub bytes: Vec<u8>,
}

/// A file being read chunk by chunk.
pub trait ChunkSource: Send {
    /// The file's columns, from its first line or its schema.
    fn columns(&self) -> &[String];
    /// The next chunk of at most the configured rows; `None` at the end.
    fn next_chunk(&mut self) -> Result<Option<Chunk>, String>;
}

/// Opens a file for reading in chunks of up to `chunk_rows` records.
pub fn open(
    path: &Path,
    format: Format,
    chunk_rows: usize,
) -> Result<Box<dyn ChunkSource>, String> {
    let chunk_rows = chunk_rows.max(1);
    match format {
        Format::Csv => Ok(Box::new(CsvSource::open(path, chunk_rows)?)),
        Format::Parquet => Ok(Box::new(ParquetSource::open(path, chunk_rows)?)),
    }
}

struct CsvSource {
    reader: csv::Reader<BufReader<File>>,
    /// The same file, read alongside for the chunks' bytes as they were.
    raw: BufReader<File>,
    columns: Vec<String>,
    chunk_rows: usize,
    record: csv::ByteRecord,
    /// The line the next chunk's first byte is on (counted here: a record's own position, as
    /// the csv crate gives it, can be that of blank lines before it).
    line: i64,
}

/// Line breaks in `bytes`.
pub fn newlines(bytes: &[u8]) -> i64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as i64
}

impl CsvSource {
    fn open(path: &Path, chunk_rows: usize) -> Result<CsvSource, String> {
        let file = File::open(path).map_err(|e| format!("the file could not be opened: {e}"))?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(BufReader::with_capacity(1 << 20, file));
        let mut header = csv::ByteRecord::new();
        let found = reader
            .read_byte_record(&mut header)
            .map_err(|e| format!("The first line could not be read as CSV: {e}"))?;
        if !found {
            return Err(
                "The file is empty: its first line must name the columns, then one row a line."
                    .into(),
            );
        }
        if header.len() > MAX_COLUMNS {
            return Err(format!(
                "The first line names {} columns; at most {MAX_COLUMNS} are accepted.",
                header.len()
            ));
        }
        let columns: Vec<String> = header
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let name = String::from_utf8_lossy(name);
                let name = if i == 0 {
                    name.trim_start_matches('\u{feff}')
                } else {
                    &name
                };
                name.trim().to_string()
            })
            .collect();
        let start = reader.position().byte();
        if start > MAX_RECORD_BYTES as u64 {
            return Err("The first line is longer than 1 MiB.".into());
        }
        let mut raw = BufReader::with_capacity(
            1 << 20,
            File::open(path).map_err(|e| format!("the file could not be opened: {e}"))?,
        );
        let mut head = vec![0; start as usize];
        raw.read_exact(&mut head)
            .map_err(|e| format!("the file could not be read: {e}"))?;
        Ok(CsvSource {
            reader,
            raw,
            columns,
            chunk_rows,
            record: csv::ByteRecord::new(),
            line: 1 + newlines(&head),
        })
    }
}

impl ChunkSource for CsvSource {
    fn columns(&self) -> &[String] {
        &self.columns
    }

    fn next_chunk(&mut self) -> Result<Option<Chunk>, String> {
        let start = self.reader.position().clone();
        let mut rows = 0;
        let mut end = start.byte();
        while rows < self.chunk_rows && (end - start.byte()) < MAX_CHUNK_BYTES as u64 {
            let found = self
                .reader
                .read_byte_record(&mut self.record)
                .map_err(|e| {
                    format!(
                        "Line {}: the file could not be read as CSV: {e}",
                        self.reader.position().line()
                    )
                })?;
            if !found {
                break;
            }
            let next = self.reader.position().byte();
            if next - end > MAX_RECORD_BYTES as u64 {
                let line = self.reader.position().line();
                return Err(format!(
                    "The record before line {line} is longer than 1 MiB."
                ));
            }
            end = next;
            rows += 1;
        }
        if rows == 0 {
            return Ok(None);
        }
        let mut bytes = vec![0; (end - start.byte()) as usize];
        self.raw
            .read_exact(&mut bytes)
            .map_err(|e| format!("the file could not be read: {e}"))?;
        let first_line = self.line;
        self.line += newlines(&bytes);
        Ok(Some(Chunk {
            first_line,
            rows,
            bytes,
        }))
    }
}

struct ParquetSource {
    reader: parquet::arrow::arrow_reader::ParquetRecordBatchReader,
    columns: Vec<String>,
    next_row: i64,
}

impl ParquetSource {
    fn open(path: &Path, chunk_rows: usize) -> Result<ParquetSource, String> {
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let file = File::open(path).map_err(|e| format!("the file could not be opened: {e}"))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| format!("The file is not a Parquet file Plinth can read: {e}"))?;
        let columns: Vec<String> = builder
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        if columns.len() > MAX_COLUMNS {
            return Err(format!(
                "The file has {} columns; at most {MAX_COLUMNS} are accepted.",
                columns.len()
            ));
        }
        let reader = builder
            .with_batch_size(chunk_rows)
            .build()
            .map_err(|e| format!("The Parquet file cannot be read: {e}"))?;
        Ok(ParquetSource {
            reader,
            columns,
            next_row: 1,
        })
    }
}

impl ChunkSource for ParquetSource {
    fn columns(&self) -> &[String] {
        &self.columns
    }

    fn next_chunk(&mut self) -> Result<Option<Chunk>, String> {
        let Some(batch) = self.reader.next() else {
            return Ok(None);
        };
        let batch = batch.map_err(|e| {
            format!(
                "Row {}: the Parquet file cannot be read: {e}",
                self.next_row
            )
        })?;
        let rows = batch.num_rows();
        if rows == 0 {
            return self.next_chunk();
        }
        let bytes = batch_to_csv(&batch)?;
        let first_line = self.next_row;
        self.next_row += rows as i64;
        Ok(Some(Chunk {
            first_line,
            rows,
            bytes,
        }))
    }
}

/// A batch of rows as CSV records, each value as Arrow displays it, nulls empty.
fn batch_to_csv(batch: &RecordBatch) -> Result<Vec<u8>, String> {
    use arrow_cast::display::{ArrayFormatter, FormatOptions};
    let options = FormatOptions::default();
    let formatters = batch
        .columns()
        .iter()
        .zip(batch.schema().fields())
        .map(|(c, f)| {
            ArrayFormatter::try_new(c.as_ref(), &options).map_err(|e| {
                format!(
                    "The column {:?} has a type Plinth cannot read ({}): {e}",
                    f.name(),
                    f.data_type()
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut w = csv::WriterBuilder::new().from_writer(Vec::with_capacity(batch.num_rows() * 32));
    let mut record = csv::ByteRecord::new();
    let mut text = String::new();
    for row in 0..batch.num_rows() {
        record.clear();
        for f in &formatters {
            text.clear();
            use std::fmt::Write as _;
            let _ = write!(text, "{}", f.value(row));
            record.push_field(text.as_bytes());
        }
        w.write_byte_record(&record)
            .map_err(|e| format!("a row could not be written: {e}"))?;
    }
    w.into_inner()
        .map_err(|e| format!("a row could not be written: {e}"))
}

/// Writes results as Parquet: the output's columns typed by [`ColumnKind`] (text, float64,
/// int64; an empty field is null), a row group per chunk given.
pub struct ParquetWriter<W: Write + Send> {
    writer: parquet::arrow::ArrowWriter<W>,
    schema: Arc<Schema>,
    kinds: Vec<ColumnKind>,
}

impl<W: Write + Send> ParquetWriter<W> {
    pub fn new(out: W, header: &[String], kinds: &[ColumnKind]) -> Result<Self, String> {
        let fields: Vec<Field> = header
            .iter()
            .zip(kinds)
            .map(|(name, kind)| {
                let t = match kind {
                    ColumnKind::Text => DataType::Utf8,
                    ColumnKind::Float => DataType::Float64,
                    ColumnKind::Int => DataType::Int64,
                };
                Field::new(name, t, true)
            })
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let props = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .build();
        let writer = parquet::arrow::ArrowWriter::try_new(out, schema.clone(), Some(props))
            .map_err(|e| format!("the Parquet file could not be started: {e}"))?;
        Ok(ParquetWriter {
            writer,
            schema,
            kinds: kinds.to_vec(),
        })
    }

    /// Appends a chunk of output records (CSV without a header).
    pub fn write_csv(&mut self, bytes: &[u8]) -> Result<(), String> {
        enum Column {
            Text(StringBuilder),
            Float(Float64Builder),
            Int(Int64Builder),
        }
        let mut columns: Vec<Column> = self
            .kinds
            .iter()
            .map(|k| match k {
                ColumnKind::Text => Column::Text(StringBuilder::new()),
                ColumnKind::Float => Column::Float(Float64Builder::new()),
                ColumnKind::Int => Column::Int(Int64Builder::new()),
            })
            .collect();
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(bytes);
        let mut record = csv::ByteRecord::new();
        let mut rows = 0;
        while reader
            .read_byte_record(&mut record)
            .map_err(|e| format!("a result could not be read: {e}"))?
        {
            rows += 1;
            for (i, column) in columns.iter_mut().enumerate() {
                let field = record.get(i).unwrap_or_default();
                let text = std::str::from_utf8(field).ok().filter(|t| !t.is_empty());
                match column {
                    Column::Text(b) => match text {
                        Some(t) => b.append_value(t),
                        None if !field.is_empty() => b.append_value(String::from_utf8_lossy(field)),
                        None => b.append_null(),
                    },
                    Column::Float(b) => {
                        b.append_option(text.and_then(|t| t.trim().parse::<f64>().ok()))
                    }
                    Column::Int(b) => {
                        b.append_option(text.and_then(|t| t.trim().parse::<i64>().ok()))
                    }
                }
            }
        }
        if rows == 0 {
            return Ok(());
        }
        let arrays: Vec<ArrayRef> = columns
            .into_iter()
            .map(|c| -> ArrayRef {
                match c {
                    Column::Text(mut b) => Arc::new(b.finish()),
                    Column::Float(mut b) => Arc::new(b.finish()),
                    Column::Int(mut b) => Arc::new(b.finish()),
                }
            })
            .collect();
        let batch = RecordBatch::try_new(self.schema.clone(), arrays)
            .map_err(|e| format!("the results could not be assembled: {e}"))?;
        self.writer
            .write(&batch)
            .map_err(|e| format!("the Parquet file could not be written: {e}"))?;
        self.writer
            .flush()
            .map_err(|e| format!("the Parquet file could not be written: {e}"))
    }

    /// Writes the footer and hands back the output.
    pub fn finish(self) -> Result<W, String> {
        self.writer
            .into_inner()
            .map_err(|e| format!("the Parquet file could not be finished: {e}"))
    }
}

/// A [`Write`] that hands its bytes to an async consumer in pieces of about 1 MiB (results
/// streamed from a blocking thread to a response or an upload).
pub struct ChannelWriter {
    buf: Vec<u8>,
    tx: tokio::sync::mpsc::Sender<Result<actix_web::web::Bytes, String>>,
}

impl ChannelWriter {
    pub fn new(tx: tokio::sync::mpsc::Sender<Result<actix_web::web::Bytes, String>>) -> Self {
        ChannelWriter {
            buf: Vec::with_capacity(1 << 20),
            tx,
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let piece = actix_web::web::Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(1 << 20),
        ));
        self.tx
            .blocking_send(Ok(piece))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the reader left"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 1 << 20 {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

impl Drop for ChannelWriter {
    fn drop(&mut self) {
        let _ = self.send();
    }
}
