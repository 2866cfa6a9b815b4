//! plinth score: a CSV or Parquet file scored with the batch jobs' code, without a server, by a
//! model directory, an .onnx file or a registry model.

use std::process::ExitCode;

use super::Command;
use crate::config::Settings;
use plinth_store as db;

/// A registry model's card and loaded version, for `plinth score NAME`; with what explaining
/// it needs when `--explain` asks (or why it cannot be explained).
pub(super) async fn registry_model(
    settings: &Settings,
    command: &Command,
) -> anyhow::Result<Found> {
    let Command::Score {
        model,
        version,
        explain,
        ..
    } = command
    else {
        anyhow::bail!("not a score command");
    };
    let pool = db::connect(&settings.database_url).await?;
    let registry = crate::startup::registry_for(&pool, settings)?;
    let selector = match version {
        Some(n) => crate::registry::Selector::Number(*n),
        None => crate::registry::Selector::default(),
    };
    let served = registry
        .resolve(model, &selector)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{model:?} is neither a model directory or .onnx file nor a model in the registry (with that version)"
            )
        })?;
    let explanation = if *explain {
        Some(registry.explanation_base(&served).await.as_ref().clone())
    } else {
        None
    };
    Ok(((*served.card).clone(), served.loaded.clone(), explanation))
}

/// What `plinth score` found in the registry: the card, the loaded version, and (when asked)
/// what explaining it needs or why it cannot be explained.
pub(super) type Found = (
    crate::registry::card::Card,
    std::sync::Arc<plinth_inference::LoadedModel>,
    crate::batch::local::AskedExplanation,
);

/// `plinth score`: scores the file and reports on standard error.
pub(super) fn score(found: Option<Found>, command: Command) -> ExitCode {
    use crate::batch::local::{load_model_explained, score_file, Output};
    use crate::batch::Format;
    let Command::Score {
        model,
        input,
        output,
        max_errors,
        threads,
        explain,
        ..
    } = command
    else {
        return ExitCode::FAILURE;
    };
    let (card, loaded, explanation) = match found {
        Some(found) => found,
        None => match load_model_explained(std::path::Path::new(&model), explain) {
            Ok((card, loaded, explanation)) => (card, std::sync::Arc::new(loaded), explanation),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let explanation = match explanation {
        Some(Ok(e)) => Some(e),
        Some(Err(why)) => {
            eprintln!("error: {model} cannot explain its predictions, so --explain cannot add contributions: {why}");
            return ExitCode::FAILURE;
        }
        None => None,
    };
    let format = Format::from_name(&input.to_string_lossy());
    let sink: Box<dyn std::io::Write + Send> = match &output {
        Some(path) => match std::fs::File::create(path) {
            Ok(f) => Box::new(std::io::BufWriter::with_capacity(1 << 20, f)),
            Err(e) => {
                eprintln!("error: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
        None => Box::new(std::io::BufWriter::with_capacity(
            1 << 20,
            std::io::stdout(),
        )),
    };
    let sink = match output
        .as_ref()
        .map(|p| Format::from_name(&p.to_string_lossy()))
    {
        Some(Format::Parquet) => Output::Parquet(sink),
        _ => Output::Csv(sink),
    };
    let threads =
        threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    match score_file(
        &card,
        &loaded,
        &input,
        format,
        sink,
        threads,
        max_errors,
        explanation.as_ref(),
    ) {
        Ok(report) => {
            let place = format.place();
            for (line, reason) in &report.first_errors {
                eprintln!("{place} {line}: {reason}");
            }
            if report.refused as usize > report.first_errors.len() {
                eprintln!(
                    "… and {} more refused rows",
                    report.refused as usize - report.first_errors.len()
                );
            }
            let secs = report.elapsed.as_secs_f64();
            eprintln!(
                "scored {} rows ({} refused) in {secs:.2} s, {:.0} rows/s",
                report.rows - report.refused,
                report.refused,
                report.rows as f64 / secs.max(1e-9)
            );
            match report.stopped {
                Some(why) => {
                    eprintln!("{why}");
                    ExitCode::FAILURE
                }
                None => ExitCode::SUCCESS,
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
