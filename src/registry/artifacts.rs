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
use std::time::Duration;

use futures_util::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use sha2::{Digest, Sha256};

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

struct Remote {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    /// The URL as configured, for messages.
    url: String,
    cache: PathBuf,
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
                let bytes = remote.download(sha).await?;
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

impl Remote {
    /// `parts` under the store's prefix.
    fn key(&self, parts: &[&str]) -> ObjectPath {
        ObjectPath::from_iter(
            self.prefix
                .parts()
                .chain(parts.iter().map(|p| object_store::path::PathPart::from(*p))),
        )
    }

    /// Where a file lives: `prefix/ab/abcd…`, as in a directory store.
    fn artifact_key(&self, sha: &str) -> ObjectPath {
        self.key(&[sha.get(..2).unwrap_or("xx"), sha])
    }

    async fn upload(&self, sha: &str, bytes: &[u8]) -> std::io::Result<()> {
        let key = self.artifact_key(sha);
        let fail = |e: object_store::Error| std::io::Error::other(unreachable(&self.url, &e));
        // Content-addressed: an object already there holds these bytes (checked on every read).
        match self.store.head(&key).await {
            Ok(meta) if meta.size == bytes.len() as u64 => return Ok(()),
            Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(fail(e)),
        }
        if bytes.len() < MULTIPART_FROM {
            let payload = PutPayload::from(bytes.to_vec());
            self.store.put(&key, payload).await.map_err(fail)?;
        } else {
            let upload = self.store.put_multipart(&key).await.map_err(fail)?;
            let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
            for chunk in bytes.chunks(PART_BYTES) {
                writer.wait_for_capacity(2).await.map_err(fail)?;
                writer.write(chunk);
            }
            writer.finish().await.map_err(fail)?;
        }
        Ok(())
    }

    async fn download(&self, sha: &str) -> std::io::Result<Vec<u8>> {
        let key = self.artifact_key(sha);
        let fail = |e: object_store::Error| match e {
            object_store::Error::NotFound { .. } => std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{sha} is not in {}", self.url),
            ),
            e => std::io::Error::other(unreachable(&self.url, &e)),
        };
        let found = self.store.get(&key).await.map_err(fail)?;
        let mut bytes = Vec::with_capacity(usize::try_from(found.meta.size).unwrap_or(0));
        let mut stream = found.into_stream();
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk.map_err(fail)?);
        }
        Ok(bytes)
    }
}

/// The object store a URL names and the prefix within it, configured from `vars` (`AWS_*`,
/// `GOOGLE_*`, `AZURE_*`).
fn object_store_for(
    location: &str,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<(Arc<dyn ObjectStore>, ObjectPath), String> {
    check_location(location)?;
    let vars: Vec<(String, String)> = vars.into_iter().collect();
    let var = |name: &str| {
        vars.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let configs = |prefix: &str| {
        vars.iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect::<Vec<_>>()
    };
    let (scheme, rest) = location.split_once("://").unwrap_or_default();
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let bucket_url = format!("{scheme}://{bucket}");
    // Short retries: a request waiting for a missing file should hear that the store is
    // down in seconds, not after the crate's default three minutes.
    let retry = RetryConfig {
        max_retries: 2,
        retry_timeout: Duration::from_secs(10),
        ..Default::default()
    };
    let client = ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(Duration::from_secs(300));
    let failed = |e: object_store::Error| format!("PLINTH_ARTIFACTS={location:?}: {e}");
    let store: Arc<dyn ObjectStore> = match Kind::of(scheme) {
        Some(Kind::S3) => {
            use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
            let mut builder = AmazonS3Builder::new();
            for (key, value) in configs("AWS_") {
                if let Ok(key) = key.parse::<AmazonS3ConfigKey>() {
                    builder = builder.with_config(key, value);
                }
            }
            builder = builder
                .with_url(&bucket_url)
                .with_retry(retry)
                .with_client_options(client);
            // A plain-http endpoint (a local S3 server) is allowed because it was asked for.
            let endpoint = var("AWS_ENDPOINT_URL_S3")
                .or_else(|| var("AWS_ENDPOINT_URL"))
                .or_else(|| var("AWS_ENDPOINT"))
                .unwrap_or_default();
            if endpoint.starts_with("http://") {
                builder = builder.with_allow_http(true);
            }
            if var("AWS_REGION").is_none() && var("AWS_DEFAULT_REGION").is_none() {
                builder = builder.with_region("us-east-1");
            }
            Arc::new(builder.build().map_err(failed)?)
        }
        Some(Kind::Gcs) => {
            use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
            let mut builder = GoogleCloudStorageBuilder::new();
            for (key, value) in configs("GOOGLE_") {
                if let Ok(key) = key.parse::<GoogleConfigKey>() {
                    builder = builder.with_config(key, value);
                }
            }
            let builder = builder
                .with_url(&bucket_url)
                .with_retry(retry)
                .with_client_options(client);
            Arc::new(builder.build().map_err(failed)?)
        }
        Some(Kind::Azure) => {
            use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
            let mut builder = MicrosoftAzureBuilder::new();
            for (key, value) in configs("AZURE_") {
                if let Ok(key) = key.parse::<AzureConfigKey>() {
                    builder = builder.with_config(key, value);
                }
            }
            if let Some(endpoint) = var("IDENTITY_ENDPOINT").or_else(|| var("MSI_ENDPOINT")) {
                builder = builder.with_msi_endpoint(endpoint);
            }
            let builder = builder
                .with_url(&bucket_url)
                .with_retry(retry)
                .with_client_options(client);
            Arc::new(builder.build().map_err(failed)?)
        }
        None => return Err(format!("PLINTH_ARTIFACTS={location:?}: unknown scheme")),
    };
    let prefix = ObjectPath::parse(prefix.trim_matches('/')).map_err(|e| {
        format!("PLINTH_ARTIFACTS={location:?}: the prefix is not a valid key: {e}")
    })?;
    Ok((store, prefix))
}

/// Copies every object under the URL `location` (a model repository in a bucket) into `dest`,
/// keeping their relative paths; how many files. Used for Vertex AI's `AIP_STORAGE_URI`.
pub async fn fetch_tree(location: &str, dest: &Path) -> Result<usize, String> {
    let (store, prefix) = object_store_for(location, std::env::vars())?;
    let fail = |e: object_store::Error| unreachable(location, &e);
    let mut listing = store.list(Some(&prefix));
    let mut count = 0;
    while let Some(meta) = listing.next().await {
        let meta = meta.map_err(fail)?;
        let Some(relative) = meta.location.prefix_match(&prefix) else {
            continue;
        };
        let parts: Vec<String> = relative.map(|p| p.as_ref().to_string()).collect();
        if parts.is_empty() || parts.iter().any(|p| p == ".." || p.starts_with('.')) {
            continue;
        }
        let path = parts.iter().fold(dest.to_path_buf(), |dir, p| dir.join(p));
        let bytes = store
            .get(&meta.location)
            .await
            .map_err(fail)?
            .bytes()
            .await
            .map_err(fail)?;
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        tokio::fs::write(&path, &bytes)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
        count += 1;
    }
    Ok(count)
}

/// The store and key an object URL (`s3://bucket/key`, `gs://…`, `az://…`) names, with the
/// process's credentials (the same variables as `PLINTH_ARTIFACTS`).
fn object_at(url: &str) -> Result<(Arc<dyn ObjectStore>, ObjectPath), String> {
    if !is_url(url) {
        return Err(format!(
            "{url:?} is not an object-store URL (s3://bucket/key, gs://bucket/key, az://container/key)."
        ));
    }
    let (store, key) = object_store_for(url, std::env::vars())
        .map_err(|e| e.replacen("PLINTH_ARTIFACTS=", "", 1))?;
    if key.as_ref().is_empty() {
        return Err(format!("{url:?} names a bucket but no object in it."));
    }
    Ok((store, key))
}

/// Copies the object at `url` into the file `dest`, a piece at a time; refuses an object
/// larger than `max_bytes`.
pub async fn download_to_file(url: &str, dest: &Path, max_bytes: u64) -> Result<u64, String> {
    use tokio::io::AsyncWriteExt;
    let (store, key) = object_at(url)?;
    let fail = |e: object_store::Error| match e {
        object_store::Error::NotFound { .. } => format!("There is no object at {url}."),
        e => format!("{url} could not be read: {e}"),
    };
    let found = store.get(&key).await.map_err(fail)?;
    if found.meta.size > max_bytes {
        return Err(format!(
            "The object at {url} is {} MiB; at most {} MiB is accepted (PLINTH_MAX_JOB_BYTES).",
            found.meta.size >> 20,
            max_bytes >> 20
        ));
    }
    let mut file = tokio::fs::File::create(dest)
        .await
        .map_err(|e| format!("{}: {e}", dest.display()))?;
    let mut stream = found.into_stream();
    let mut written = 0u64;
    while let Some(piece) = stream.next().await {
        let piece = piece.map_err(fail)?;
        written += piece.len() as u64;
        if written > max_bytes {
            return Err(format!(
                "The object at {url} is larger than {} MiB.",
                max_bytes >> 20
            ));
        }
        file.write_all(&piece)
            .await
            .map_err(|e| format!("{}: {e}", dest.display()))?;
    }
    file.flush()
        .await
        .map_err(|e| format!("{}: {e}", dest.display()))?;
    Ok(written)
}

/// Checks that `url` names an object Plinth could write (the store can be configured); does
/// not reach it.
pub fn check_object_url(url: &str) -> Result<(), String> {
    object_at(url).map(|_| ())
}

/// Writes the pieces `rx` receives to the object at `url` (a multipart upload, so nothing
/// holds the whole object); an error piece aborts the upload.
pub async fn upload_stream(
    url: &str,
    mut rx: tokio::sync::mpsc::Receiver<Result<actix_web::web::Bytes, String>>,
) -> Result<u64, String> {
    let (store, key) = object_at(url)?;
    let fail = |e: object_store::Error| format!("{url} could not be written: {e}");
    let upload = store.put_multipart(&key).await.map_err(fail)?;
    let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
    let mut written = 0u64;
    while let Some(piece) = rx.recv().await {
        match piece {
            Ok(bytes) => {
                writer.wait_for_capacity(2).await.map_err(fail)?;
                written += bytes.len() as u64;
                writer.write(&bytes);
            }
            Err(e) => {
                let _ = writer.abort().await;
                return Err(e);
            }
        }
    }
    writer.finish().await.map_err(fail)?;
    Ok(written)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stored_bytes_come_back_by_their_hash() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::new(dir.path());
        let sha = store.put(b"hello").await.unwrap();
        assert_eq!(sha, sha256_hex(b"hello"));
        assert_eq!(store.put(b"hello").await.unwrap(), sha);
        assert_eq!(store.get(&sha).await.unwrap(), b"hello");
        std::fs::write(file_in(dir.path(), &sha), b"tampered").unwrap();
        assert!(store.get(&sha).await.is_err());
        assert!(store.check().await.is_ok());
    }

    #[test]
    fn locations_are_checked_before_anything_is_reached() {
        assert!(check_location("data/artifacts").is_ok());
        assert!(check_location("file:///srv/plinth").is_ok());
        assert!(check_location("s3://models/plinth").is_ok());
        assert!(check_location("gs://models").is_ok());
        assert!(check_location("az://container/prefix").is_ok());
        let e = check_location("ftp://host/x").unwrap_err();
        assert!(e.contains("ftp://"), "{e}");
        let e = check_location("s3://").unwrap_err();
        assert!(e.contains("no bucket"), "{e}");
        assert!(check_location(" ").is_err());
    }

    #[tokio::test]
    async fn an_unreachable_store_says_which_and_why_quickly() {
        let cache = tempfile::tempdir().unwrap();
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let vars = [
            ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}")),
            ("AWS_ACCESS_KEY_ID", "plinth".into()),
            ("AWS_SECRET_ACCESS_KEY", "plinth".into()),
        ]
        .map(|(k, v)| (k.to_string(), v));
        let store = ArtifactStore::open_with("s3://bucket/prefix", cache.path(), vars).unwrap();
        let started = std::time::Instant::now();
        let e = store.get(&sha256_hex(b"x")).await.unwrap_err();
        assert!(e.to_string().contains("s3://bucket/prefix"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(15));
        let e = store.check().await.unwrap_err();
        assert!(e.contains("cannot be reached"), "{e}");
    }
}
