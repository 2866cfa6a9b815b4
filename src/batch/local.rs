//! `plinth score`: a file scored on this machine with the jobs' own code (the same chunks, the
//! same checks, the same output columns), without a server. Chunks are scored by a thread per
//! core and written in order; memory holds a few chunks whatever the file's size. Nothing is
//! stored.

use std::io::Write;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::files::{self, ParquetWriter};
use super::{explain_scored, parse_chunk, score, write_output, Format, Layout};
use crate::registry::card::Card;
use crate::registry::Explanation;
use plinth_inference::LoadedModel;

/// What a run did.
#[derive(Debug)]
pub struct Report {
    pub rows: u64,
    pub refused: u64,
    /// The first refused rows: their place and why.
    pub first_errors: Vec<(i64, String)>,
    pub elapsed: Duration,
    /// Set when the error budget was spent and the run stopped.
    pub stopped: Option<String>,
}

/// A model directory (`model.onnx` with its `card.toml`) or an `.onnx` file, loaded.
pub fn load_model(path: &Path) -> Result<(Card, LoadedModel), String> {
    load_model_explained(path, false).map(|(card, model, _)| (card, model))
}

/// What `--explain` asked for: what explaining the model needs, or why it cannot be explained
/// (`None` when not asked).
pub type AskedExplanation = Option<Result<Explanation, String>>;

/// [`load_model`], and with `explain` what explaining it needs, counted on the `reference.csv`
/// of its directory (or why it cannot be explained).
pub fn load_model_explained(
    path: &Path,
    explain: bool,
) -> Result<(Card, LoadedModel, AskedExplanation), String> {
    let (dir, onnx) = if path.is_dir() {
        (path.to_path_buf(), path.join("model.onnx"))
    } else {
        (
            path.parent().map(Path::to_path_buf).unwrap_or_default(),
            path.to_path_buf(),
        )
    };
    let bytes =
        std::fs::read(&onnx).map_err(|e| format!("{}: cannot be read: {e}", onnx.display()))?;
    let model = plinth_inference::load(&bytes).map_err(|e| format!("{}: {e}", onnx.display()))?;
    let card_text = if path.is_dir() {
        std::fs::read_to_string(dir.join("card.toml")).ok()
    } else {
        None
    };
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "model".into());
    let card = crate::registry::import::card_for(&name, card_text.as_deref(), &model.signature)?;
    let explanation = explain.then(|| {
        // The model's kind first: a model that cannot be explained says so.
        let explainer = std::sync::Arc::new(plinth_inference::explain::Explainer::from_onnx(&bytes)?);
        let reference = dir.join("reference.csv");
        let csv = std::fs::read(&reference).map_err(|e| {
            format!(
                "{} cannot be read ({e}); explanations count how often each branch is taken on the reference data",
                reference.display()
            )
        })?;
        crate::registry::count_on_reference(explainer, &csv, &card, &model)
    });
    Ok((card, model, explanation))
}

/// Where results go.
pub enum Output<'a> {
    Csv(Box<dyn Write + Send + 'a>),
    Parquet(Box<dyn Write + Send + 'a>),
}

/// Scores `input` into `output` with `threads` threads.
#[allow(clippy::too_many_arguments)]
pub fn score_file(
    card: &Card,
    model: &LoadedModel,
    input: &Path,
    format: Format,
    output: Output<'_>,
    threads: usize,
    max_errors: u64,
    explanation: Option<&Explanation>,
) -> Result<Report, String> {
    let started = Instant::now();
    let mut source = files::open(input, format, super::DEFAULT_CHUNK_ROWS)?;
    let explained = explanation.map_or_else(Vec::new, |(explainer, _)| {
        crate::registry::explained::explained_features(card, model, explainer)
    });
    let layout =
        Layout::new(card, model, source.columns().to_vec(), false)?.with_contributions(&explained);
    enum Sink<'a> {
        Csv(Box<dyn Write + Send + 'a>),
        Parquet(Box<ParquetWriter<Box<dyn Write + Send + 'a>>>),
    }
    let mut sink = match output {
        Output::Csv(mut w) => {
            w.write_all(&layout.header_csv())
                .map_err(|e| format!("the results could not be written: {e}"))?;
            Sink::Csv(w)
        }
        Output::Parquet(w) => Sink::Parquet(Box::new(ParquetWriter::new(
            w,
            &layout.header(),
            &layout.output_kinds(card),
        )?)),
    };
    let threads = threads.max(1);
    let mut report = Report {
        rows: 0,
        refused: 0,
        first_errors: Vec::new(),
        elapsed: Duration::ZERO,
        stopped: None,
    };
    std::thread::scope(|scope| -> Result<(), String> {
        let (work_tx, work_rx) = mpsc::sync_channel::<(usize, files::Chunk)>(threads * 2);
        let work_rx = std::sync::Arc::new(std::sync::Mutex::new(work_rx));
        let (done_tx, done_rx) = mpsc::sync_channel::<(
            usize,
            Result<(Vec<u8>, u64, Vec<(i64, String)>), String>,
        )>(threads * 2);
        for _ in 0..threads {
            let (work_rx, done_tx, layout) = (work_rx.clone(), done_tx.clone(), &layout);
            scope.spawn(move || loop {
                let next = work_rx.lock().map(|rx| rx.recv());
                let Ok(Ok((seq, chunk))) = next else {
                    return;
                };
                let result = parse_chunk(card, layout, format, &chunk.bytes, chunk.first_line)
                    .and_then(|mut parsed| {
                        let mut scored = score(card, model, &mut parsed);
                        if let Some(explanation) = explanation {
                            explain_scored(card, model, explanation, &parsed, &mut scored)
                                .map_err(|e| {
                                    format!("the contributions could not be computed: {e}")
                                })?;
                        }
                        let out = write_output(layout, &parsed, &scored, None);
                        Ok((out, parsed.len() as u64, parsed.errors()))
                    });
                if done_tx.send((seq, result)).is_err() {
                    return;
                }
            });
        }
        drop(done_tx);
        // The reader feeds the workers; this thread writes results in order.
        let reader = scope.spawn(move || -> Result<(), String> {
            let mut seq = 0;
            while let Some(chunk) = source.next_chunk()? {
                if work_tx.send((seq, chunk)).is_err() {
                    return Ok(());
                }
                seq += 1;
            }
            Ok(())
        });
        let mut waiting = std::collections::BTreeMap::new();
        let mut next = 0usize;
        for (seq, result) in done_rx.iter() {
            waiting.insert(seq, result);
            while let Some(result) = waiting.remove(&next) {
                next += 1;
                let (out, rows, errors) = result?;
                match &mut sink {
                    Sink::Csv(w) => w
                        .write_all(&out)
                        .map_err(|e| format!("the results could not be written: {e}"))?,
                    Sink::Parquet(w) => w.write_csv(&out)?,
                }
                report.rows += rows;
                report.refused += errors.len() as u64;
                let room = 10usize.saturating_sub(report.first_errors.len());
                report.first_errors.extend(errors.into_iter().take(room));
                if report.refused > max_errors {
                    report.stopped = Some(format!(
                        "stopped: {} rows were refused, more than the error budget of {max_errors}",
                        report.refused
                    ));
                    // Dropping the receiver stops the workers and the reader.
                    return Ok(());
                }
            }
        }
        reader
            .join()
            .map_err(|_| "the reader failed".to_string())??;
        Ok(())
    })?;
    match sink {
        Sink::Csv(mut w) => w
            .flush()
            .map_err(|e| format!("the results could not be written: {e}"))?,
        Sink::Parquet(w) => {
            w.finish()?
                .flush()
                .map_err(|e| format!("the results could not be written: {e}"))?;
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}
