//! Content-addressed storage for model files and reference data: a file's name is its SHA-256,
//! so every instance that reaches the store can load any version.
//!
//! `PLINTH_ARTIFACTS` is either a directory (the default, `data/artifacts`) or an object-store
//! URL: `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix` (also `s3a://`,
//! `gcs://`, `abfs://`, `abfss://`, `adl://`, `azure://`). An object store is configured by the
//! clouds' usual variables, read by the `object_store` crate's builders: `AWS_*` (with the SDKs'
//! `AWS_ENDPOINT_URL` as well as `AWS_ENDPOINT`, and instance or web-identity credentials when
//! no keys are given), `GOOGLE_*` (`GOOGLE_APPLICATION_CREDENTIALS`, or the metadata server),
//! `AZURE_*` (`AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`, managed identity).
//! Each instance then keeps what it fetched in a local cache (`PLINTH_CACHE_DIR`) laid out like
//! a directory store; every file read, from the cache or the store, is checked against its hash.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::Instrument;

use object_store::{ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};

mod remote;

pub use remote::{check_object_url, download_to_file, fetch_tree, upload_stream};
use remote::{object_store_for, Remote};

/// Files at least this large go to an object store in parts.
const MULTIPART_FROM: usize = 8 << 20;
/// The size of each part (S3 wants at least 5 MiB for all but the last).
const PART_BYTES: usize = 8 << 20;

#[derive(Clone)]
pub struct ArtifactStore {
    backend: Arc<Backend>,
}

enum Backend {
    Dir(PathBuf),
    Remote(Remote),
}

impl std::fmt::Debug for ArtifactStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ArtifactStore({})", self.describe())
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Whether `location` names an object store rather than a directory.
pub fn is_url(location: &str) -> bool {
    location.contains("://") && !location.starts_with("file://")
}

/// Checks a `PLINTH_ARTIFACTS` value without reaching anything: a directory, or a URL with a
/// scheme Plinth knows and a bucket.
pub fn check_location(location: &str) -> Result<(), String> {
    if location.trim().is_empty() {
        return Err(
            "PLINTH_ARTIFACTS is empty: give a directory or s3://, gs://, az:// URL".into(),
        );
    }
    if !is_url(location) {
        return Ok(());
    }
    let (scheme, rest) = location.split_once("://").unwrap_or_default();
    if Kind::of(scheme).is_none() {
        return Err(format!(
            "PLINTH_ARTIFACTS={location:?}: {scheme}:// is not a store Plinth knows \
             (a directory, s3://, gs:// or az://)"
        ));
    }
    if rest.split('/').next().is_none_or(str::is_empty) {
        return Err(format!(
            "PLINTH_ARTIFACTS={location:?} names no bucket (s3://bucket/prefix)"
        ));
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Kind {
    S3,
    Gcs,
    Azure,
}

impl Kind {
    fn of(scheme: &str) -> Option<Kind> {
        match scheme {
            "s3" | "s3a" => Some(Kind::S3),
            "gs" | "gcs" => Some(Kind::Gcs),
            "az" | "azure" | "abfs" | "abfss" | "adl" => Some(Kind::Azure),
            _ => None,
        }
    }
}

impl ArtifactStore {
    /// A directory store.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ArtifactStore {
            backend: Arc::new(Backend::Dir(root.into())),
        }
    }

    /// The store `PLINTH_ARTIFACTS` names, with `cache` as the local cache when it is an object
    /// store, configured from the process's variables. Reaches nothing yet: a store that is
    /// down shows on first use (and in `plinth check`).
    pub fn open(location: &str, cache: &Path) -> Result<Self, String> {
        Self::open_with(location, cache, std::env::vars())
    }

    /// As [`open`](Self::open), with the variables given (`AWS_*`, `GOOGLE_*`, `AZURE_*`; the
    /// others are ignored).
    pub fn open_with(
        location: &str,
        cache: &Path,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, String> {
        check_location(location)?;
        if !is_url(location) {
            let dir = location.strip_prefix("file://").unwrap_or(location);
            return Ok(Self::new(dir));
        }
        let (store, prefix) = object_store_for(location, vars)?;
        Ok(ArtifactStore {
            backend: Arc::new(Backend::Remote(Remote {
                store,
                prefix,
                url: location.to_string(),
                cache: cache.to_path_buf(),
            })),
        })
    }

    /// The store for messages: its directory or URL (and cache).
    pub fn describe(&self) -> String {
        match &*self.backend {
            Backend::Dir(root) => format!("directory {}", root.display()),
            Backend::Remote(r) => format!("{} (cache {})", r.url, r.cache.display()),
        }
    }

    /// Stores `bytes` (idempotently) and returns their SHA-256. With an object store, the call
    /// returns once the object exists in the store (multipart for large files).
    pub async fn put(&self, bytes: &[u8]) -> std::io::Result<String> {
        let sha = sha256_hex(bytes);
        match &*self.backend {
            Backend::Dir(root) => {
                if !tokio::fs::try_exists(file_in(root, &sha))
                    .await
                    .unwrap_or(false)
                {
                    write_file(root, &sha, bytes).await?;
                }
            }
            Backend::Remote(remote) => {
                remote.upload(&sha, bytes).await?;
                // The uploading instance serves the version next: keep it in the cache too.
                if let Err(e) = write_file(&remote.cache, &sha, bytes).await {
                    tracing::warn!(sha256 = %sha, error = %e, "could not cache an artifact");
                }
            }
        }
        Ok(sha)
    }

    /// The bytes stored under `sha`, checked against it. An object store's file is fetched on
    /// first use and cached; a corrupt cached copy is fetched again.
    pub async fn get(&self, sha: &str) -> std::io::Result<Vec<u8>> {
        match &*self.backend {
            Backend::Dir(root) => {
                let bytes = tokio::fs::read(file_in(root, sha)).await?;
                if sha256_hex(&bytes) != sha {
                    return Err(std::io::Error::other(format!("artifact {sha} is corrupt")));
                }
                Ok(bytes)
            }
            Backend::Remote(remote) => {
                let cached = file_in(&remote.cache, sha);
                if let Ok(bytes) = tokio::fs::read(&cached).await {
                    if sha256_hex(&bytes) == sha {
                        return Ok(bytes);
                    }
                    tracing::warn!(
                        sha256 = sha,
                        "a cached artifact was corrupt; fetching it again"
                    );
                    let _ = tokio::fs::remove_file(&cached).await;
                }
                let bytes = remote
                    .download(sha)
                    .instrument(tracing::info_span!("object_store.get", sha256 = sha))
                    .await?;
                if sha256_hex(&bytes) != sha {
                    return Err(std::io::Error::other(format!(
                        "artifact {sha} in {} is corrupt (its content has another hash)",
                        remote.url
                    )));
                }
                if let Err(e) = write_file(&remote.cache, sha, &bytes).await {
                    tracing::warn!(sha256 = sha, error = %e, "could not cache an artifact");
                }
                Ok(bytes)
            }
        }
    }

    /// Whether the store can be written and read, for `plinth check`: a small probe object is
    /// written, read back and deleted. The description of what was reached.
    pub async fn check(&self) -> Result<String, String> {
        let probe = format!("plinth-check-{}", uuid::Uuid::new_v4().simple());
        match &*self.backend {
            Backend::Dir(root) => {
                let path = root.join(&probe);
                let fail = |e: std::io::Error| format!("{} is not writable: {e}", root.display());
                tokio::fs::create_dir_all(root).await.map_err(fail)?;
                tokio::fs::write(&path, b"plinth").await.map_err(fail)?;
                let _ = tokio::fs::remove_file(&path).await;
                Ok(self.describe())
            }
            Backend::Remote(remote) => {
                let key = remote.key(&[&probe]);
                let fail = |e: object_store::Error| unreachable(&remote.url, &e);
                remote
                    .store
                    .put(&key, PutPayload::from_static(b"plinth"))
                    .await
                    .map_err(fail)?;
                let read = remote.store.get(&key).await.map_err(fail)?;
                let body = read.bytes().await.map_err(fail)?;
                let _ = remote.store.delete(&key).await;
                if body.as_ref() != b"plinth" {
                    return Err(format!("{} gave back other bytes than written", remote.url));
                }
                let cache = &remote.cache;
                tokio::fs::create_dir_all(cache)
                    .await
                    .map_err(|e| format!("the cache {} cannot be made: {e}", cache.display()))?;
                Ok(self.describe())
            }
        }
    }
}

/// A store error as a sentence: the store, then the crate's own account of it.
fn unreachable(url: &str, e: &object_store::Error) -> String {
    format!("the artifact store {url} cannot be reached or refused the request: {e}")
}

fn file_in(root: &Path, sha: &str) -> PathBuf {
    let prefix = sha.get(..2).unwrap_or("xx");
    root.join(prefix).join(sha)
}

/// Writes under a temporary name, then renames: readers never see half a file.
async fn write_file(root: &Path, sha: &str, bytes: &[u8]) -> std::io::Result<()> {
    let path = file_in(root, sha);
    let dir = path.parent().unwrap_or(Path::new("."));
    tokio::fs::create_dir_all(dir).await?;
    let tmp = dir.join(format!(".{sha}.{}", uuid::Uuid::new_v4().simple()));
    tokio::fs::write(&tmp, bytes).await?;
    tokio::fs::rename(&tmp, &path).await
}

/// Every `model.onnx` and `reference.csv` under `dir/<name>/<version>/`, by SHA-256.
pub fn index_repository(dir: &Path) -> std::collections::HashMap<String, PathBuf> {
    let mut index = std::collections::HashMap::new();
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

#[cfg(test)]
mod tests;
