//! Artifacts in an object store (S3, GCS, Azure) or a shared directory: the store built from a
//! URL, files fetched into the local cache and checked by hash, uploads streamed in parts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};

use super::{check_location, is_url, unreachable, Kind, MULTIPART_FROM, PART_BYTES};

pub(super) struct Remote {
    pub(super) store: Arc<dyn ObjectStore>,
    pub(super) prefix: ObjectPath,
    /// The URL as configured, for messages.
    pub(super) url: String,
    pub(super) cache: PathBuf,
}

impl Remote {
    /// `parts` under the store's prefix.
    pub(super) fn key(&self, parts: &[&str]) -> ObjectPath {
        ObjectPath::from_iter(
            self.prefix
                .parts()
                .chain(parts.iter().map(|p| object_store::path::PathPart::from(*p))),
        )
    }

    /// Where a file lives: `prefix/ab/abcd…`, as in a directory store.
    pub(super) fn artifact_key(&self, sha: &str) -> ObjectPath {
        self.key(&[sha.get(..2).unwrap_or("xx"), sha])
    }

    pub(super) async fn upload(&self, sha: &str, bytes: &[u8]) -> std::io::Result<()> {
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

    pub(super) async fn download(&self, sha: &str) -> std::io::Result<Vec<u8>> {
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
pub(super) fn object_store_for(
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
pub(super) fn object_at(url: &str) -> Result<(Arc<dyn ObjectStore>, ObjectPath), String> {
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
