//! plinth models and plinth datasets: the model repository imported by hand, data set versions
//! added and listed.

use super::{DatasetsCommand, ModelsCommand};
use crate::config::Settings;
use crate::registry::Imported;
use plinth_store as db;

pub(super) async fn models(settings: &Settings, command: ModelsCommand) -> anyhow::Result<()> {
    let pool = db::connect(&settings.database_url).await?;
    db::migrate(&pool).await?;
    match command {
        ModelsCommand::Import { path } => {
            let registry = crate::startup::registry_for(&pool, settings)?;
            let report = registry.import_repository(&path).await?;
            for imported in report.imported {
                match imported {
                    Imported::New { model, version } => {
                        println!("{model}: imported as version {version}")
                    }
                    Imported::AlreadyThere { model, version } => {
                        println!("{model}: already there as version {version}")
                    }
                }
            }
            for (dir, reason) in &report.refused {
                eprintln!("{}: refused: {reason}", dir.display());
            }
            if !report.refused.is_empty() {
                anyhow::bail!(
                    "{} version(s) refused; the others were imported",
                    report.refused.len()
                );
            }
        }
        ModelsCommand::List => {
            let models = db::models::catalogue(&pool).await?;
            if models.is_empty() {
                println!("no models");
            }
            for m in models {
                let model = db::models::find_model(&pool, &m.name)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("{} vanished", m.name))?;
                let aliases = db::models::aliases(&pool, model.id).await?;
                let aliases: Vec<String> =
                    aliases.iter().map(|(a, v)| format!("{a}={v}")).collect();
                println!(
                    "{}\t{} version(s)\t{}",
                    m.name,
                    m.versions,
                    aliases.join(" ")
                );
            }
        }
    }
    Ok(())
}

pub(super) async fn datasets(settings: &Settings, command: DatasetsCommand) -> anyhow::Result<()> {
    use crate::datasets::{AddError, Adding, Location};
    let pool = db::connect(&settings.database_url).await?;
    db::migrate(&pool).await?;
    match command {
        DatasetsCommand::Add {
            name,
            file,
            key,
            description,
        } => {
            let registry = crate::startup::registry_for(&pool, settings)?;
            let is_url = crate::registry::artifacts::is_url(&file);
            // A URL is read into a scratch file to be profiled; a path is read where it is.
            let scratch = tempfile_path(settings);
            let path = if is_url {
                crate::registry::artifacts::check_object_url(&file).map_err(anyhow::Error::msg)?;
                crate::registry::artifacts::download_to_file(
                    &file,
                    &scratch,
                    settings.max_job_bytes,
                )
                .await
                .map_err(anyhow::Error::msg)?;
                scratch.clone()
            } else {
                std::path::PathBuf::from(&file)
            };
            let adding = Adding {
                name: &name,
                description: &description,
                key: key.as_deref(),
                format: crate::batch::Format::from_name(&file),
                location: if is_url {
                    Location::Url(&file)
                } else {
                    Location::Uploaded
                },
                actor: None,
            };
            let added = crate::datasets::add(&pool, registry.artifacts(), &path, adding).await;
            let _ = std::fs::remove_file(&scratch);
            let added = match added {
                Ok(a) => a,
                Err(AddError::Invalid(e)) => anyhow::bail!("{file}: {e}"),
                Err(e) => return Err(e.into()),
            };
            if added.created {
                crate::audit::record(
                    &pool,
                    None,
                    None,
                    "dataset.added",
                    format!("{} v{}", added.name, added.version),
                    serde_json::json!({"dataset": added.name, "version": added.version, "rows": added.rows, "sha256": added.sha256, "by": "cli"}),
                )
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
                println!(
                    "{}: added as version {} ({} rows)",
                    added.name, added.version, added.rows
                );
            } else {
                println!("{}: already there as version {}", added.name, added.version);
            }
        }
        DatasetsCommand::List => {
            let all = db::datasets::list(&pool).await?;
            if all.is_empty() {
                println!("no data sets");
            }
            for d in all {
                for v in db::datasets::versions(&pool, d.id).await? {
                    println!(
                        "{}\tv{}\t{} rows\t{}\t{}",
                        d.name,
                        v.version,
                        v.row_count,
                        &v.sha256[..12.min(v.sha256.len())],
                        if v.location_kind == "url" {
                            v.location.as_str()
                        } else {
                            "uploaded"
                        }
                    );
                }
            }
        }
    }
    Ok(())
}

/// A scratch file's path under the cache directory.
pub(super) fn tempfile_path(settings: &Settings) -> std::path::PathBuf {
    let dir = settings.cache_dir.join("uploads");
    let _ = std::fs::create_dir_all(&dir);
    dir.join(format!("dataset-{}", uuid::Uuid::new_v4().simple()))
}
