//! The model registry: importing the model repository, validating uploads, versions, aliases,
//! and the loaded plans that serve them.

pub mod artifacts;
pub mod card;
pub mod decode;
pub mod encode;
pub mod explained;
pub mod picture;
pub mod reference;

pub mod import;
pub use import::single_model_dir;
mod load;
pub mod traffic;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use sqlx::PgPool;

use crate::cache::Cache;
use artifacts::ArtifactStore;
use card::Card;
use plinth_inference::{LoadedModel, Signature};
use plinth_store::models::{ModelRow, VersionRow};

/// Why an upload or import was refused; the message is for the person who sent it.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Invalid(String),
    #[error("the model file could not be stored: {0}")]
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

/// What explaining a version's predictions needs: its explainer and what that needs of the
/// reference data (the trees' covers, the linear model's means); or why it cannot be had.
pub type ExplanationBase = Arc<Result<Explanation, String>>;

/// An explainer and what it needs of the reference data (the trees' covers, the linear model's
/// means).
pub type Explanation = (Arc<plinth_inference::explain::Explainer>, Vec<f64>);

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
    /// Each model's canary, if it has one; forgotten with `resolved`.
    policies: Cache<String, Option<Arc<plinth_store::traffic::PolicyRow>>>,
    /// Each model's shadow versions (numbers); forgotten with `resolved`.
    shadows: Cache<String, Option<Arc<Vec<i32>>>>,
    /// The model repository's files by SHA-256, read once on the first lost artifact: a version
    /// that stays broken must not rescan and rehash the repository on every request.
    repository_index: tokio::sync::OnceCell<HashMap<String, PathBuf>>,
    /// What explanations need of each version's reference data (the trees' covers), counted
    /// once per version (immutable, like the versions).
    explanations: Mutex<HashMap<i64, ExplanationBase>>,
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
        let resolved = Cache::new();
        let policies = Cache::with_epoch(resolved.epoch_handle());
        let shadows = Cache::with_epoch(resolved.epoch_handle());
        Registry {
            pool,
            artifacts,
            max_model_bytes,
            policy,
            loaded: RwLock::new(HashMap::new()),
            ticks: AtomicU64::new(0),
            loads: AtomicU64::new(0),
            loading: Mutex::new(HashMap::new()),
            resolved,
            policies,
            shadows,
            repository_index: tokio::sync::OnceCell::new(),
            explanations: Mutex::new(HashMap::new()),
        }
    }

    /// The resolution cache's epoch, bumped when another process moves an alias.
    pub fn changes(&self) -> crate::cache::Epoch {
        self.resolved.epoch_handle()
    }

    /// The model's canary, if it has one (cached until a policy or an alias changes).
    pub async fn policy(
        &self,
        name: &str,
    ) -> sqlx::Result<Option<Arc<plinth_store::traffic::PolicyRow>>> {
        // "No canary" is kept too: it is what nearly every request finds.
        let found = self
            .policies
            .get_or_fetch(name.to_string(), || async {
                let row = plinth_store::traffic::policy(&self.pool, name).await?;
                Ok::<_, sqlx::Error>(Some(row.map(Arc::new)))
            })
            .await?;
        Ok(found.flatten())
    }

    /// The model's shadow versions, if it has any (cached like [`Registry::policy`]).
    pub async fn shadows(&self, name: &str) -> sqlx::Result<Option<Arc<Vec<i32>>>> {
        let found = self
            .shadows
            .get_or_fetch(name.to_string(), || async {
                let list = plinth_store::shadow::versions(&self.pool, name).await?;
                Ok::<_, sqlx::Error>(Some((!list.is_empty()).then(|| Arc::new(list))))
            })
            .await?;
        Ok(found.flatten())
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Where the versions' files are kept.
    pub fn artifacts(&self) -> &ArtifactStore {
        &self.artifacts
    }

    /// What explaining `served`'s predictions needs of its reference data (the trees' covers),
    /// counted on first use and kept; or why it cannot be had.
    pub async fn explanation_base(&self, served: &Served) -> ExplanationBase {
        let id = served.version.id;
        if let Some(found) = self
            .explanations
            .lock()
            .ok()
            .and_then(|m| m.get(&id).cloned())
        {
            return found;
        }
        let counted = Arc::new(self.count_explanation_base(served).await);
        // A store that could not be read is tried again next time; anything else is kept.
        let keep = !matches!(counted.as_ref(), Err(e) if e.starts_with("The reference data cannot be read"));
        if keep {
            if let Ok(mut m) = self.explanations.lock() {
                m.insert(id, counted.clone());
            }
        }
        counted
    }

    async fn count_explanation_base(&self, served: &Served) -> Result<Explanation, String> {
        let model = self
            .artifacts
            .get(&served.version.sha256)
            .await
            .map_err(|e| format!("The reference data cannot be read: the model file: {e}"))?;
        // The model's kind is judged first: a model that cannot be explained says so, whatever
        // its reference data.
        let explainer = tokio::task::spawn_blocking(move || {
            plinth_inference::explain::Explainer::from_onnx(&model).map(Arc::new)
        })
        .await
        .map_err(|e| format!("reading the model's trees failed: {e}"))??;
        let csv = self
            .reference_csv(&served.version)
            .await
            .map_err(|e| format!("The reference data cannot be read: {e}"))?
            .ok_or_else(|| {
                format!(
                    "Version {} has no reference data (reference.csv), which explanations need to \
                     count how often each branch of its trees is taken; upload one with the version.",
                    served.version.version
                )
            })?;
        let (card, loaded) = (served.card.clone(), served.loaded.clone());
        tokio::task::spawn_blocking(move || count_on_reference(explainer, &csv, &card, &loaded))
            .await
            .map_err(|e| format!("counting the covers failed: {e}"))?
    }

    /// The reference data stored with a version, if it has any.
    pub async fn reference_csv(&self, version: &VersionRow) -> anyhow::Result<Option<Vec<u8>>> {
        let Some(sha) = &version.reference_sha256 else {
            return Ok(None);
        };
        Ok(Some(self.artifacts.get(sha).await?))
    }
}

/// The explainer with what it needs of the reference data (CSV with the card's features): the
/// trees' covers or the linear model's means, counted on the reference rows. Blocking.
pub fn count_on_reference(
    explainer: Arc<plinth_inference::explain::Explainer>,
    reference_csv: &[u8],
    card: &Card,
    loaded: &plinth_inference::LoadedModel,
) -> Result<Explanation, String> {
    let rows = reference::rows(reference_csv, card);
    let (x, width) = encode::explained_input(card, loaded, &explainer, &rows)?;
    let covers = explainer.covers(&x, rows.len(), width)?;
    Ok((explainer, covers))
}

/// The card stored with a version; a default card if it cannot be read.
pub fn card_of(version: &VersionRow) -> Card {
    Card::from_stored(Some(&version.card.0))
}

/// The signature stored with a version.
pub fn signature_of(version: &VersionRow) -> Option<Signature> {
    serde_json::from_value(version.signature.0.clone()).ok()
}
