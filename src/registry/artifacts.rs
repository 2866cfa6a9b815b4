//! Content-addressed storage for model files and reference data: a file's name is its SHA-256,
//! so every instance that reaches the directory can load any version.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

#[derive(Clone, Debug)]
pub struct ArtifactStore {
    root: PathBuf,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl ArtifactStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ArtifactStore { root: root.into() }
    }

    fn path(&self, sha: &str) -> PathBuf {
        let prefix = sha.get(..2).unwrap_or("xx");
        self.root.join(prefix).join(sha)
    }

    /// Stores `bytes` (idempotently) and returns their SHA-256.
    pub async fn put(&self, bytes: &[u8]) -> std::io::Result<String> {
        let sha = sha256_hex(bytes);
        let path = self.path(&sha);
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(sha);
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        tokio::fs::create_dir_all(dir).await?;
        // Write under a temporary name, then rename: readers never see half a file.
        let tmp = dir.join(format!(".{sha}.{}", uuid::Uuid::new_v4().simple()));
        tokio::fs::write(&tmp, bytes).await?;
        tokio::fs::rename(&tmp, &path).await?;
        Ok(sha)
    }

    pub async fn get(&self, sha: &str) -> std::io::Result<Vec<u8>> {
        let bytes = tokio::fs::read(self.path(sha)).await?;
        if sha256_hex(&bytes) != sha {
            return Err(std::io::Error::other(format!("artifact {sha} is corrupt")));
        }
        Ok(bytes)
    }
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
        std::fs::write(store.path(&sha), b"tampered").unwrap();
        assert!(store.get(&sha).await.is_err());
    }
}
