//! Large files go up in parts, and every fetch is checked against its hash.

use super::*;

#[tokio::test]
#[ignore = "needs SeaweedFS's weed (tests/requirements.txt; .ci/run installs it)"]
async fn large_files_go_up_in_parts_and_every_fetch_is_checked_against_its_hash() {
    use plinth::registry::artifacts::{sha256_hex, ArtifactStore};
    let scratch = tempfile::tempdir().unwrap();
    let weed = Weed::start(&scratch.path().join("weed")).await;
    let open = |cache: &str| {
        let vars = weed
            .env("parts", &scratch.path().join(cache))
            .into_iter()
            .map(|(k, v)| (k.to_string(), v));
        ArtifactStore::open_with("s3://plinth/parts", &scratch.path().join(cache), vars).unwrap()
    };
    // 20 MiB of varied bytes: three parts of 8 MiB at most.
    let big: Vec<u8> = (0..20u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let sha = open("up").put(&big).await.unwrap();
    assert_eq!(sha, sha256_hex(&big));

    // Another instance, with an empty cache, gets the same bytes back.
    let fetched = open("down").get(&sha).await.unwrap();
    assert!(fetched == big, "the multipart object reassembles exactly");
    assert!(scratch
        .path()
        .join("down")
        .join(&sha[..2])
        .join(&sha)
        .exists());

    // An object whose bytes changed in the store is refused, not served.
    let small = b"a small file".to_vec();
    let small_sha = open("up").put(&small).await.unwrap();
    let key = format!(
        "{}/plinth/parts/{}/{small_sha}",
        weed.endpoint(),
        &small_sha[..2]
    );
    let res = reqwest::Client::new()
        .put(&key)
        .body("tampered")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    let err = open("third").get(&small_sha).await.unwrap_err();
    assert!(err.to_string().contains("corrupt"), "{err}");
    // A cached copy that went bad is fetched again (and refused again here).
    let cached = scratch
        .path()
        .join("up")
        .join(&small_sha[..2])
        .join(&small_sha);
    std::fs::write(&cached, "bad").unwrap();
    assert!(open("up").get(&small_sha).await.is_err());
}
