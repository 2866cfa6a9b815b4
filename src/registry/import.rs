//! Importing: uploads and the model repository validated and stored as versions, and aliases
//! moved.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::artifacts::sha256_hex;
use super::card::Card;

use super::{
    check_alias_name, check_model_name, reference, ImportError, Imported, Registry,
    RepositoryImport, Upload, PRODUCTION,
};
use plinth_store as db;
use plinth_store::models::{ModelRow, NewVersion};

impl Registry {
    /// Validates and stores a new version. The same file for the same model is not stored twice.
    /// The first version of a model becomes its `production` version.
    pub async fn import(&self, upload: Upload) -> Result<Imported, ImportError> {
        check_model_name(&upload.model).map_err(ImportError::Invalid)?;
        if upload.onnx.len() > self.max_model_bytes {
            return Err(ImportError::Invalid(format!(
                "The model file is {} bytes; the limit is {} bytes.",
                upload.onnx.len(),
                self.max_model_bytes
            )));
        }
        if upload.onnx.is_empty() {
            return Err(ImportError::Invalid("The model file is empty.".into()));
        }
        let sha = sha256_hex(&upload.onnx);
        let onnx = Arc::new(upload.onnx);
        let loaded = self
            .load_bytes(onnx.clone())
            .await
            .map_err(ImportError::Invalid)?;
        let card = card_for(&upload.model, upload.card.as_deref(), &loaded.signature)
            .map_err(ImportError::Invalid)?;
        let reference_rows = match &upload.reference_csv {
            Some(csv) if !csv.is_empty() => {
                Some(reference::check(csv, &card).map_err(ImportError::Invalid)?)
            }
            _ => None,
        };

        // A file this model has already is answered without the store (which may be down).
        if let Some(model) = db::models::find_model(&self.pool, &upload.model).await? {
            if let Some(version) = db::models::version_by_sha(&self.pool, model.id, &sha).await? {
                return Ok(Imported::AlreadyThere {
                    model: upload.model,
                    version,
                });
            }
        }
        // The files are in the store before the registry names them (content-addressed, so an
        // upload whose transaction then fails leaves only an unnamed object behind), and no
        // transaction waits on the store.
        self.artifacts.put(&onnx).await?;
        let reference_sha = match &upload.reference_csv {
            Some(csv) if !csv.is_empty() => Some(self.artifacts.put(csv).await?),
            _ => None,
        };
        let mut tx = self.pool.begin().await?;
        let model = db::models::ensure_model(&mut tx, &upload.model, upload.actor).await?;
        if let Some(version) = db::models::version_by_sha(&mut *tx, model.id, &sha).await? {
            tx.rollback().await?;
            return Ok(Imported::AlreadyThere {
                model: upload.model,
                version,
            });
        }
        let signature = serde_json::to_value(&loaded.signature)
            .map_err(|e| ImportError::Invalid(e.to_string()))?;
        let card_json =
            serde_json::to_value(&card).map_err(|e| ImportError::Invalid(e.to_string()))?;
        let metadata = serde_json::to_value(&loaded.metadata)
            .map_err(|e| ImportError::Invalid(e.to_string()))?;
        let (version_id, version) = db::models::insert_version(
            &mut tx,
            model.id,
            &NewVersion {
                sha256: &sha,
                size_bytes: onnx.len() as i64,
                card: card_json,
                signature,
                metadata,
                reference_sha256: reference_sha.as_deref(),
                reference_rows,
                source: upload.source,
                actor: upload.actor,
            },
        )
        .await?;
        // The card's lineage names the data sets it was trained and evaluated on.
        if let Some(training) = &card.training {
            let lineage = db::datasets::Lineage {
                data_sha256: training.data_sha256.as_deref(),
                dataset: training.dataset.as_deref(),
                evaluation_dataset: training.evaluation_dataset.as_deref(),
            };
            db::datasets::link_lineage(&mut tx, version_id, lineage).await?;
        }
        if !db::models::has_alias(&mut tx, model.id, PRODUCTION).await? {
            db::models::set_alias(
                &mut tx,
                model.id,
                PRODUCTION,
                version_id,
                upload.actor,
                None,
            )
            .await?;
        }
        tx.commit().await?;
        self.resolved.changed();
        self.remember(version_id, Arc::new(card), Arc::new(loaded));
        tracing::info!(model = %upload.model, version, sha256 = %sha, "model version imported");
        Ok(Imported::New {
            model: upload.model,
            version,
        })
    }

    /// Imports every `<name>/<version>/model.onnx` under `dir`, in version order. A version
    /// that is refused is listed with its reason and the rest are still imported; storage or
    /// database failures stop the import.
    pub async fn import_repository(&self, dir: &Path) -> anyhow::Result<RepositoryImport> {
        let mut report = RepositoryImport::default();
        let mut models = std::fs::read_dir(dir)?
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .collect::<Vec<_>>();
        models.sort_by_key(|e| e.file_name());
        for model_dir in models {
            let name = model_dir.file_name().to_string_lossy().to_string();
            let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(model_dir.path())?
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
                    e.path().join("model.onnx").is_file().then(|| (v, e.path()))
                })
                .collect();
            versions.sort();
            for (_, path) in versions {
                let onnx = match std::fs::read(path.join("model.onnx")) {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        report
                            .refused
                            .push((path, format!("model.onnx cannot be read: {e}")));
                        continue;
                    }
                };
                match self.import(from_directory(&name, &path, onnx)).await {
                    Ok(imported) => report.imported.push(imported),
                    Err(ImportError::Invalid(msg)) => report.refused.push((path, msg)),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(report)
    }

    /// Imports one model directory (`model.onnx`, and `card.toml` and `reference.csv` when
    /// present) as a version of `name`: a platform's model directory. A refused file is an
    /// error here, since there is nothing else to serve.
    pub async fn import_single(&self, dir: &Path, name: &str) -> anyhow::Result<Imported> {
        check_model_name(name).map_err(|e| anyhow::anyhow!("PLINTH_DEFAULT_MODEL: {e}"))?;
        let onnx = std::fs::read(dir.join("model.onnx"))
            .map_err(|e| anyhow::anyhow!("{}/model.onnx cannot be read: {e}", dir.display()))?;
        match self.import(from_directory(name, dir, onnx)).await {
            Ok(imported) => Ok(imported),
            Err(ImportError::Invalid(msg)) => {
                anyhow::bail!("the model in {} was refused: {msg}", dir.display())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Points `alias` at version `number` of `model`, recording who moved it. Returns the
    /// version it pointed at before.
    pub async fn move_alias(
        &self,
        model: &ModelRow,
        alias: &str,
        number: i32,
        actor: Option<i64>,
    ) -> Result<Option<i32>, ImportError> {
        self.move_alias_because(model, alias, number, actor, None)
            .await
    }

    /// [`Self::move_alias`], recording `reason` (the rule that fired) in the alias history.
    pub async fn move_alias_because(
        &self,
        model: &ModelRow,
        alias: &str,
        number: i32,
        actor: Option<i64>,
        reason: Option<&str>,
    ) -> Result<Option<i32>, ImportError> {
        check_alias_name(alias).map_err(ImportError::Invalid)?;
        let (_, version) = db::models::by_number(&self.pool, &model.name, number)
            .await?
            .ok_or_else(|| {
                ImportError::Invalid(format!("{} has no version {number}.", model.name))
            })?;
        // Load before moving, so the first request after the move does not wait for it.
        self.load(&version)
            .await
            .map_err(|e| ImportError::Invalid(format!("version {number} cannot be loaded: {e}")))?;
        let previous = db::models::aliases(&self.pool, model.id)
            .await?
            .into_iter()
            .find(|(a, _)| a == alias)
            .map(|(_, v)| v);
        let mut tx = self.pool.begin().await?;
        db::models::set_alias(&mut tx, model.id, alias, version.id, actor, reason).await?;
        if alias == super::PRODUCTION {
            // The canary's candidate promoted: the canary is over.
            db::traffic::end_if_candidate(&mut tx, model.id, version.id).await?;
        }
        tx.commit().await?;
        self.resolved.changed();
        tracing::info!(model = %model.name, alias, version = number, "alias moved");
        Ok(previous)
    }
}

/// A version directory's files as an upload from the repository: `onnx` (read by the caller,
/// who reports it missing its own way) with the `card.toml` and `reference.csv` beside it.
fn from_directory(name: &str, dir: &Path, onnx: Vec<u8>) -> Upload {
    Upload {
        model: name.to_string(),
        onnx,
        card: std::fs::read_to_string(dir.join("card.toml")).ok(),
        reference_csv: std::fs::read(dir.join("reference.csv")).ok(),
        source: "repository",
        actor: None,
    }
}

/// A version's card: `card.toml`'s text when given (a card naming no features takes them, and
/// the labels, from the signature), else one derived from the signature; checked against it.
pub fn card_for(
    model: &str,
    text: Option<&str>,
    signature: &plinth_inference::Signature,
) -> Result<Card, String> {
    let card = match text {
        Some(text) if !text.trim().is_empty() => {
            let mut card = Card::parse(text)?;
            if card.features.is_empty() && card.image.is_none() {
                let derived = Card::derived(model, signature);
                card.features = derived.features;
                if card.labels.is_none() {
                    card.labels = derived.labels;
                    card.task = derived.task;
                }
            }
            card
        }
        _ => Card::derived(model, signature),
    };
    card.check_against(signature)?;
    Ok(card)
}

/// The directory holding a platform's single model: `dir` itself when it has a `model.onnx`,
/// or its only subdirectory that has one (Azure ML mounts a registered model's folder inside
/// `AZUREML_MODEL_DIR`). `None` for a repository of `<name>/<version>/` folders.
pub fn single_model_dir(dir: &Path) -> Option<PathBuf> {
    if dir.join("model.onnx").is_file() {
        return Some(dir.to_path_buf());
    }
    let subdirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    match subdirs.as_slice() {
        [only] if only.join("model.onnx").is_file() => Some(only.clone()),
        _ => None,
    }
}

/// An import that failed: a file refused (422), a store that could not take it (503, with the
/// store's reason), or the database.
impl From<ImportError> for crate::error::AppError {
    fn from(err: ImportError) -> Self {
        use crate::error::AppError;
        match err {
            ImportError::Invalid(e) => AppError::Unprocessable(e),
            ImportError::Storage(e) => AppError::Unavailable(format!(
                "The model file could not be stored, so nothing was added: {e}"
            )),
            ImportError::Database(e) => AppError::Database(e),
        }
    }
}
