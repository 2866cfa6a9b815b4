use std::time::Duration;

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
