//! The model registry: importing the model repository, validating uploads, versions, aliases,
//! and the loaded plans that serve them.

pub mod artifacts;
pub mod card;
pub mod decode;
pub mod picture;
pub mod reference;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

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

/// What importing a model repository did: the versions imported (or found already there) and
/// the ones refused, each with its directory and the reason.
#[derive(Debug, Default)]
pub struct RepositoryImport {
    pub imported: Vec<Imported>,
    pub refused: Vec<(PathBuf, String)>,
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

/// How loading is bounded: how long one load may take, how many loaded versions stay in memory,
/// and where copies of lost artifacts may be found.
#[derive(Clone, Debug)]
pub struct LoadPolicy {
    pub timeout: Duration,
    pub max_loaded: usize,
    /// The model repository: a missing artifact with the same SHA-256 there is restored from it.
    pub repository: Option<PathBuf>,
}

impl Default for LoadPolicy {
    fn default() -> Self {
        LoadPolicy {
            timeout: Duration::from_secs(60),
            max_loaded: 32,
            repository: None,
        }
    }
}

/// Why a version cannot be served just now.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The version exists but cannot be loaded (missing or corrupt artifact, a model that no
    /// longer loads, a load that took too long): answered 503 with the reason.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A loaded version and when it was last used (for evicting the least recently used).
struct Slot {
    ready: Ready,
    used: AtomicU64,
}

pub struct Registry {
    pool: PgPool,
    artifacts: ArtifactStore,
    max_model_bytes: usize,
    policy: LoadPolicy,
    /// Loaded versions by version id, at most `policy.max_loaded`. Versions are immutable, so
    /// entries never go stale; the least recently used goes first.
    loaded: RwLock<HashMap<i64, Slot>>,
    /// A clock for `Slot::used`.
    ticks: AtomicU64,
    /// Model files loaded from the artifact store since start.
    loads: AtomicU64,
    /// One lock per version being loaded, so concurrent first requests load it once.
    loading: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
    /// What (model, alias or number) resolved to lately; see [`crate::cache`].
    resolved: Cache<(String, Selector), Served>,
    /// The model repository's files by SHA-256, read once on the first lost artifact: a version
    /// that stays broken must not rescan and rehash the repository on every request.
    repository_index: tokio::sync::OnceCell<HashMap<String, PathBuf>>,
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
        Self::with_policy(pool, artifacts, max_model_bytes, LoadPolicy::default())
    }

    pub fn with_policy(
        pool: PgPool,
        artifacts: ArtifactStore,
        max_model_bytes: usize,
        policy: LoadPolicy,
    ) -> Self {
        Registry {
            pool,
            artifacts,
            max_model_bytes,
            policy,
            loaded: RwLock::new(HashMap::new()),
            ticks: AtomicU64::new(0),
            loads: AtomicU64::new(0),
            loading: Mutex::new(HashMap::new()),
            resolved: Cache::new(),
            repository_index: tokio::sync::OnceCell::new(),
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
        let onnx = Arc::new(upload.onnx);
        let loaded = self
            .load_bytes(onnx.clone())
            .await
            .map_err(ImportError::Invalid)?;
        let card = match &upload.card {
            Some(text) if !text.trim().is_empty() => {
                Card::parse(text).map_err(ImportError::Invalid)?
            }
            _ => Card::derived(&upload.model, &loaded.signature),
        };
        card.check_against(&loaded.signature)
            .map_err(ImportError::Invalid)?;
        let reference_rows = match &upload.reference_csv {
            Some(csv) if !csv.is_empty() => {
                Some(reference::check(csv, &card).map_err(ImportError::Invalid)?)
            }
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
                let upload = Upload {
                    model: name.clone(),
                    onnx,
                    card: std::fs::read_to_string(path.join("card.toml")).ok(),
                    reference_csv: std::fs::read(path.join("reference.csv")).ok(),
                    source: "repository",
                    actor: None,
                };
                match self.import(upload).await {
                    Ok(imported) => report.imported.push(imported),
                    Err(ImportError::Invalid(msg)) => report.refused.push((path, msg)),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(report)
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
    pub async fn resolve(
        &self,
        name: &str,
        selector: &Selector,
    ) -> Result<Option<Served>, ServeError> {
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
                let (card, loaded) = self.load(&version).await.map_err(|e| {
                    ServeError::Unavailable(format!(
                        "Version {} of {name} cannot be served just now: {e}",
                        version.version
                    ))
                })?;
                Ok(Some(Served {
                    model,
                    version: Arc::new(version),
                    card,
                    loaded,
                }))
            })
            .await
    }

    /// The loaded plan of a version, from memory or from its artifact. Concurrent calls for the
    /// same version load it once; the load runs on the blocking pool, bounded in time.
    pub async fn load(
        &self,
        version: &VersionRow,
    ) -> anyhow::Result<(Arc<Card>, Arc<LoadedModel>)> {
        if let Some(found) = self.cached(version.id) {
            return Ok(found);
        }
        let gate = {
            let mut loading = self
                .loading
                .lock()
                .map_err(|_| anyhow::anyhow!("model loading lock poisoned"))?;
            loading.entry(version.id).or_default().clone()
        };
        let _turn = gate.lock().await;
        // Whoever held the gate before may have loaded it meanwhile.
        let result = match self.cached(version.id) {
            Some(found) => Ok(found),
            None => self.load_uncached(version).await,
        };
        if let Ok(mut loading) = self.loading.lock() {
            loading.remove(&version.id);
        }
        result
    }

    async fn load_uncached(
        &self,
        version: &VersionRow,
    ) -> anyhow::Result<(Arc<Card>, Arc<LoadedModel>)> {
        let bytes = match self.artifacts.get(&version.sha256).await {
            Ok(bytes) => bytes,
            Err(e) => match self.restore(&version.sha256).await {
                Some(bytes) => bytes,
                None => anyhow::bail!("{}", artifact_problem(&version.sha256, &e)),
            },
        };
        self.loads.fetch_add(1, Ordering::Relaxed);
        let loaded = self
            .load_bytes(Arc::new(bytes))
            .await
            .map_err(anyhow::Error::msg)?;
        let card: Card = serde_json::from_value(version.card.0.clone())?;
        let entry = (Arc::new(card), Arc::new(loaded));
        self.remember(version.id, entry.0.clone(), entry.1.clone());
        Ok(entry)
    }

    /// Loads a model file on the blocking pool, giving up after the policy's timeout (the load
    /// finishes in the background, but nobody waits for it).
    async fn load_bytes(&self, bytes: Arc<Vec<u8>>) -> Result<LoadedModel, String> {
        let work = tokio::task::spawn_blocking(move || inference::load(&bytes));
        match tokio::time::timeout(self.policy.timeout, work).await {
            Err(_) => Err(format!(
                "loading the model took longer than {:.0?}",
                self.policy.timeout
            )),
            Ok(Err(e)) => Err(format!("loading the model failed: {e}")),
            Ok(Ok(loaded)) => loaded.map_err(|e| e.to_string()),
        }
    }

    /// Looks for a lost artifact in the model repository: a `model.onnx` or `reference.csv` with
    /// the same SHA-256 is copied back into the store.
    async fn restore(&self, sha: &str) -> Option<Vec<u8>> {
        let dir = self.policy.repository.clone()?;
        let index = self
            .repository_index
            .get_or_init(|| async move {
                tokio::task::spawn_blocking(move || index_repository(&dir))
                    .await
                    .unwrap_or_default()
            })
            .await;
        let found = tokio::fs::read(index.get(sha)?).await.ok()?;
        // The file may have changed since it was indexed.
        if sha256_hex(&found) != sha {
            return None;
        }
        match self.artifacts.put(&found).await {
            Ok(_) => tracing::warn!(
                sha256 = sha,
                "restored a missing artifact from the model repository"
            ),
            Err(e) => {
                tracing::warn!(sha256 = sha, error = %e, "could not restore a missing artifact")
            }
        }
        Some(found)
    }

    /// Checks that a version's artifacts are present and intact, restoring them from the model
    /// repository where it holds the same files. The reason when they are not.
    pub async fn verify_artifacts(&self, version: &VersionRow) -> Result<(), String> {
        let shas = std::iter::once(&version.sha256).chain(version.reference_sha256.as_ref());
        for sha in shas {
            if let Err(e) = self.artifacts.get(sha).await {
                if self.restore(sha).await.is_none() {
                    return Err(artifact_problem(sha, &e));
                }
            }
        }
        Ok(())
    }

    fn cached(&self, version_id: i64) -> Option<Ready> {
        let map = self.loaded.read().ok()?;
        let slot = map.get(&version_id)?;
        slot.used.store(
            self.ticks.fetch_add(1, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        Some(slot.ready.clone())
    }

    fn remember(&self, version_id: i64, card: Arc<Card>, loaded: Arc<LoadedModel>) {
        if let Ok(mut map) = self.loaded.write() {
            while map.len() >= self.policy.max_loaded.max(1) {
                let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, slot)| slot.used.load(Ordering::Relaxed))
                    .map(|(id, _)| *id)
                else {
                    break;
                };
                map.remove(&oldest);
            }
            let used = AtomicU64::new(self.ticks.fetch_add(1, Ordering::Relaxed));
            map.insert(
                version_id,
                Slot {
                    ready: (card, loaded),
                    used,
                },
            );
        }
    }

    /// How many times a version was loaded from the artifact store.
    pub fn load_count(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    /// How many versions are loaded in memory.
    pub fn loaded_count(&self) -> usize {
        self.loaded.read().map_or(0, |m| m.len())
    }

    /// The card of a version by id: from the loaded versions when it is one of them (versions
    /// never change), else read from the database.
    pub async fn card_by_version_id(&self, id: i64) -> anyhow::Result<Option<Arc<Card>>> {
        if let Some((card, _)) = self.cached(id) {
            return Ok(Some(card));
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
    pub async fn reference_csv(&self, version: &VersionRow) -> anyhow::Result<Option<Vec<u8>>> {
        let Some(sha) = &version.reference_sha256 else {
            return Ok(None);
        };
        Ok(Some(self.artifacts.get(sha).await?))
    }
}

/// What is wrong with an artifact, for the person running Plinth.
fn artifact_problem(sha: &str, e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::NotFound {
        format!("its file {sha} is missing from the artifact store (PLINTH_ARTIFACTS)")
    } else {
        format!("its file {sha} cannot be read from the artifact store: {e}")
    }
}

/// Every `model.onnx` and `reference.csv` under `dir/<name>/<version>/`, by SHA-256.
fn index_repository(dir: &Path) -> HashMap<String, PathBuf> {
    let mut index = HashMap::new();
    let Ok(models) = std::fs::read_dir(dir) else {
        return index;
    };
    for model in models.filter_map(Result::ok) {
        let Ok(versions) = std::fs::read_dir(model.path()) else {
            continue;
        };
        for version in versions.filter_map(Result::ok) {
            for file in ["model.onnx", "reference.csv"] {
                let path = version.path().join(file);
                if let Ok(bytes) = std::fs::read(&path) {
                    index.insert(sha256_hex(&bytes), path);
                }
            }
        }
    }
    index
}

/// The card stored with a version; a default card if it cannot be read.
pub fn card_of(version: &VersionRow) -> Card {
    Card::from_stored(Some(&version.card.0))
}

/// The signature stored with a version.
pub fn signature_of(version: &VersionRow) -> Option<Signature> {
    serde_json::from_value(version.signature.0.clone()).ok()
}
