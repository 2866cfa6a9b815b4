//! The model registry: importing the model repository, validating uploads, versions, aliases,
//! and the loaded plans that serve them.

pub mod artifacts;
pub mod card;
pub mod decode;
pub mod picture;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use sqlx::PgPool;

use crate::cache::Cache;
use crate::db;
use crate::db::models::{ModelRow, NewVersion, VersionRow};
use crate::inference::{self, LoadedModel, Signature};
use artifacts::{sha256_hex, ArtifactStore};
use card::Card;

/// Why an upload or import was refused; the message is for the person who sent it.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Invalid(String),
    #[error("storage failed: {0}")]
    Storage(#[from] std::io::Error),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// How a request names the version it wants.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Selector {
    Alias(String),
    Number(i32),
}

impl Default for Selector {
    fn default() -> Self {
        Selector::Alias(PRODUCTION.into())
    }
}

pub const PRODUCTION: &str = "production";

/// A version ready to serve: its rows, card and loaded plan.
#[derive(Clone)]
pub struct Served {
    pub model: ModelRow,
    pub version: Arc<VersionRow>,
    pub card: Arc<Card>,
    pub loaded: Arc<LoadedModel>,
}

/// The result of importing one version.
#[derive(Debug, PartialEq)]
pub enum Imported {
    New { model: String, version: i32 },
    AlreadyThere { model: String, version: i32 },
}

/// What a new version is made of, as uploaded or found in the repository.
pub struct Upload {
    pub model: String,
    pub onnx: Vec<u8>,
    pub card: Option<String>,
    pub reference_csv: Option<Vec<u8>>,
    pub source: &'static str,
    pub actor: Option<i64>,
}

/// A version's card and plan, as kept in memory.
type Ready = (Arc<Card>, Arc<LoadedModel>);

pub struct Registry {
    pool: PgPool,
    artifacts: ArtifactStore,
    max_model_bytes: usize,
    /// Loaded versions by version id. Versions are immutable, so entries never go stale.
    loaded: RwLock<HashMap<i64, Ready>>,
    /// What (model, alias or number) resolved to lately; see [`crate::cache`].
    resolved: Cache<(String, Selector), Served>,
}

/// Model names as they appear in URLs: lowercase letters, digits, `-` and `_`.
pub fn check_model_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err("Model names use lowercase letters, digits, - and _ (at most 64), starting with a letter or digit.".into())
    }
}

/// Alias names: like model names.
pub fn check_alias_name(name: &str) -> Result<(), String> {
    check_model_name(name)
        .map_err(|_| "Alias names use lowercase letters, digits, - and _ (at most 64).".to_string())
}

impl Registry {
    pub fn new(pool: PgPool, artifacts: ArtifactStore, max_model_bytes: usize) -> Self {
        Registry {
            pool,
            artifacts,
            max_model_bytes,
            loaded: RwLock::new(HashMap::new()),
            resolved: Cache::new(),
        }
    }

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
        let onnx = upload.onnx;
        let (loaded, onnx) = tokio::task::spawn_blocking(move || (inference::load(&onnx), onnx))
            .await
            .map_err(|e| ImportError::Invalid(format!("loading failed: {e}")))?;
        let loaded = loaded.map_err(|e| ImportError::Invalid(e.to_string()))?;
        let card = match &upload.card {
            Some(text) if !text.trim().is_empty() => {
                Card::parse(text).map_err(ImportError::Invalid)?
            }
            _ => Card::derived(&upload.model, &loaded.signature),
        };
        card.check_against(&loaded.signature)
            .map_err(ImportError::Invalid)?;
        let reference_rows = match &upload.reference_csv {
            Some(csv) if !csv.is_empty() => Some(check_reference(csv, &card)?),
            _ => None,
        };

        let mut tx = self.pool.begin().await?;
        let model = db::models::ensure_model(&mut tx, &upload.model, upload.actor).await?;
        if let Some(version) = db::models::version_by_sha(&mut tx, model.id, &sha).await? {
            tx.rollback().await?;
            return Ok(Imported::AlreadyThere {
                model: upload.model,
                version,
            });
        }
        self.artifacts.put(&onnx).await?;
        let reference_sha = match &upload.reference_csv {
            Some(csv) if !csv.is_empty() => Some(self.artifacts.put(csv).await?),
            _ => None,
        };
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
                reference_profile: upload
                    .reference_csv
                    .as_deref()
                    .and_then(|csv| std::str::from_utf8(csv).ok())
                    .map(|csv| crate::monitoring::drift::profile(csv, &card)),
                source: upload.source,
                actor: upload.actor,
            },
        )
        .await?;
        if !db::models::has_alias(&mut tx, model.id, PRODUCTION).await? {
            db::models::set_alias(&mut tx, model.id, PRODUCTION, version_id, upload.actor).await?;
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

    /// Imports every `<name>/<version>/model.onnx` under `dir`, in version order.
    pub async fn import_repository(&self, dir: &Path) -> anyhow::Result<Vec<Imported>> {
        let mut found = Vec::new();
        let mut models = std::fs::read_dir(dir)?
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .collect::<Vec<_>>();
        models.sort_by_key(|e| e.file_name());
        for model_dir in models {
            let name = model_dir.file_name().to_string_lossy().to_string();
            let mut versions: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir(model_dir.path())?
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
                    e.path().join("model.onnx").is_file().then(|| (v, e.path()))
                })
                .collect();
            versions.sort();
            for (_, path) in versions {
                let upload = Upload {
                    model: name.clone(),
                    onnx: std::fs::read(path.join("model.onnx"))?,
                    card: std::fs::read_to_string(path.join("card.toml")).ok(),
                    reference_csv: std::fs::read(path.join("reference.csv")).ok(),
                    source: "repository",
                    actor: None,
                };
                match self.import(upload).await {
                    Ok(imported) => found.push(imported),
                    Err(ImportError::Invalid(msg)) => {
                        anyhow::bail!("{}: {msg}", path.display())
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(found)
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
        db::models::set_alias(&mut tx, model.id, alias, version.id, actor).await?;
        tx.commit().await?;
        self.resolved.changed();
        tracing::info!(model = %model.name, alias, version = number, "alias moved");
        Ok(previous)
    }

    /// The version a request asks for, loaded. `None` when the model or version does not exist.
    pub async fn resolve(&self, name: &str, selector: &Selector) -> anyhow::Result<Option<Served>> {
        let key = (name.to_string(), selector.clone());
        self.resolved
            .get_or_fetch(key, || async {
                let found = match selector {
                    Selector::Alias(alias) => db::models::by_alias(&self.pool, name, alias).await?,
                    Selector::Number(n) => db::models::by_number(&self.pool, name, *n).await?,
                };
                let Some((model, version)) = found else {
                    return Ok(None);
                };
                let (card, loaded) = self.load(&version).await?;
                Ok(Some(Served {
                    model,
                    version: Arc::new(version),
                    card,
                    loaded,
                }))
            })
            .await
    }

    /// The loaded plan of a version, from memory or from its artifact.
    pub async fn load(
        &self,
        version: &VersionRow,
    ) -> anyhow::Result<(Arc<Card>, Arc<LoadedModel>)> {
        if let Some(found) = self
            .loaded
            .read()
            .map_err(|_| anyhow::anyhow!("model cache poisoned"))?
            .get(&version.id)
        {
            return Ok(found.clone());
        }
        let bytes = self.artifacts.get(&version.sha256).await?;
        let loaded = tokio::task::spawn_blocking(move || inference::load(&bytes)).await??;
        let card: Card = serde_json::from_value(version.card.0.clone())?;
        let entry = (Arc::new(card), Arc::new(loaded));
        self.remember(version.id, entry.0.clone(), entry.1.clone());
        Ok(entry)
    }

    fn remember(&self, version_id: i64, card: Arc<Card>, loaded: Arc<LoadedModel>) {
        if let Ok(mut map) = self.loaded.write() {
            map.insert(version_id, (card, loaded));
        }
    }

    /// The card of a version by id: from the loaded versions when it is one of them (versions
    /// never change), else read from the database.
    pub async fn card_by_version_id(&self, id: i64) -> anyhow::Result<Option<Arc<Card>>> {
        if let Some((card, _)) = self
            .loaded
            .read()
            .map_err(|_| anyhow::anyhow!("model cache poisoned"))?
            .get(&id)
        {
            return Ok(Some(card.clone()));
        }
        let version = db::models::version_by_id(&self.pool, id).await?;
        Ok(version.map(|v| Arc::new(card_of(&v))))
    }

    /// The resolution cache's epoch, bumped when another process moves an alias.
    pub fn changes(&self) -> crate::cache::Epoch {
        self.resolved.epoch_handle()
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The reference data stored with a version, if it has any.
    pub async fn reference_csv(&self, version: &VersionRow) -> anyhow::Result<Option<String>> {
        let Some(sha) = &version.reference_sha256 else {
            return Ok(None);
        };
        let bytes = self.artifacts.get(sha).await?;
        Ok(Some(String::from_utf8(bytes)?))
    }
}

/// Checks a reference CSV: a header naming the card's features, numeric rows. Returns the row count.
fn check_reference(csv: &[u8], card: &Card) -> Result<i32, ImportError> {
    let text = std::str::from_utf8(csv)
        .map_err(|_| ImportError::Invalid("reference.csv is not UTF-8 text.".into()))?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .ok_or_else(|| ImportError::Invalid("reference.csv is empty.".into()))?
        .split(',')
        .map(str::trim)
        .collect();
    for f in &card.features {
        if !header.contains(&f.name.as_str()) {
            return Err(ImportError::Invalid(format!(
                "reference.csv has no column {} (its header must name the card's features).",
                f.name
            )));
        }
    }
    let mut rows = 0i32;
    for (i, line) in lines.enumerate() {
        let cells: Vec<&str> = line.split(',').collect();
        if cells.len() != header.len() {
            return Err(ImportError::Invalid(format!(
                "reference.csv line {} has {} cells; the header has {}.",
                i + 2,
                cells.len(),
                header.len()
            )));
        }
        rows += 1;
    }
    Ok(rows)
}

/// The card stored with a version; a default card if it cannot be read.
pub fn card_of(version: &VersionRow) -> Card {
    Card::from_stored(Some(&version.card.0))
}

/// The signature stored with a version.
pub fn signature_of(version: &VersionRow) -> Option<Signature> {
    serde_json::from_value(version.signature.0.clone()).ok()
}
