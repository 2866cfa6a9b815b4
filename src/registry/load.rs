//! Serving: aliases resolved to versions, versions loaded once (single-flight, LRU, with a
//! timeout) and lost artifacts restored from the repository.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::artifacts::sha256_hex;
use super::card::Card;

use super::{card_of, Ready, Registry, Selector, ServeError, Served, Slot};
use plinth_inference::{self as inference, LoadedModel};
use plinth_store as db;
use plinth_store::models::VersionRow;

impl Registry {
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
    pub(super) async fn load_bytes(&self, bytes: Arc<Vec<u8>>) -> Result<LoadedModel, String> {
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
                tokio::task::spawn_blocking(move || super::artifacts::index_repository(&dir))
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

    pub(super) fn remember(&self, version_id: i64, card: Arc<Card>, loaded: Arc<LoadedModel>) {
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
}

/// What is wrong with an artifact, for the person running Plinth.
fn artifact_problem(sha: &str, e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::NotFound {
        format!("its file {sha} is missing from the artifact store (PLINTH_ARTIFACTS)")
    } else {
        format!("its file {sha} cannot be read from the artifact store: {e}")
    }
}
