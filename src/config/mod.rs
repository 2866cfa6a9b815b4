//! Settings from the environment (`PLINTH_*`), each with a documented default.

use std::net::SocketAddr;
use std::time::Duration;

mod kafka;
mod values;

pub use kafka::redacted as redacted_kafka_config;
use values::{parse_bool, parse_or, positive};
pub use values::{with_files, Platform, SignupPolicy, FILE_VARIABLES};

/// Everything Plinth can be told, read once at start.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `PLINTH_ADDR`, default `127.0.0.1:8000`; `0.0.0.0:$PORT` when a platform sets `PORT`
    /// (Cloud Run, App Runner), `AIP_HTTP_PORT` (Vertex AI) or runs SageMaker (8080).
    pub addr: SocketAddr,
    /// The ML platform detected (`PLINTH_PLATFORM=sagemaker|vertex|azureml|none` overrides).
    pub platform: Option<Platform>,
    /// `PLINTH_MIGRATE`, default on: apply pending migrations at start. Off, an instance waits
    /// for a separate `plinth migrate` (a Kubernetes Job) instead.
    pub migrate: bool,
    /// `PLINTH_DEFAULT_MODEL`: the model `/invocations`, `/score` and Vertex's predict route
    /// serve; unset, the only model there is.
    pub default_model: Option<String>,
    /// `AIP_HEALTH_ROUTE` and `AIP_PREDICT_ROUTE` (Vertex AI).
    pub vertex_routes: (String, String),
    /// A URL the model repository is fetched from at start (`AIP_STORAGE_URI`, or
    /// `PLINTH_MODELS` given as `s3://`, `gs://`, `az://`).
    pub models_uri: Option<String>,
    /// `PLINTH_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/plinth`.
    pub database_url: String,
    /// `PLINTH_ADMIN_USERNAME`, default `admin`: the account created on first start.
    pub admin_username: String,
    /// `PLINTH_ADMIN_PASSWORD`: its password; generated and logged once when unset.
    pub admin_password: Option<String>,
    /// `PLINTH_SIGNUP=open|closed`, default `open`.
    pub signup: SignupPolicy,
    /// `PLINTH_TRUSTED_PROXIES`: comma-separated networks (`10.0.0.0/8,127.0.0.1`) of the
    /// balancers in front of Plinth; only from those is `X-Forwarded-For` believed.
    pub trusted_proxies: Vec<plinth_store::domain::proxies::Cidr>,
    /// `PLINTH_INSECURE_COOKIES=1` drops the `Secure` cookie attribute (plain-HTTP development).
    pub insecure_cookies: bool,
    /// `PLINTH_SECRET_KEY`: at least 64 bytes signing the session cookie. When unset a key is
    /// generated on first start and kept in the database, shared by every instance.
    pub secret_key: Option<Vec<u8>>,
    /// `PLINTH_SESSION_IDLE_MINUTES`, default 30.
    pub session_idle: Duration,
    /// `PLINTH_SESSION_MAX_HOURS`, default 12: a session ends this long after login regardless.
    pub session_max_age: Duration,
    /// `PLINTH_MAX_BODY_BYTES`, default 1 MiB: the largest form or JSON body accepted.
    pub max_body_bytes: usize,
    /// `PLINTH_WORKERS`, default: one per core.
    pub workers: usize,
    /// `PLINTH_MODELS`, default `models`: the model repository imported at start (skipped when
    /// the directory does not exist).
    pub models_dir: std::path::PathBuf,
    /// `PLINTH_ARTIFACTS`, default `data/artifacts`: where model files are stored by hash, a
    /// directory or an object-store URL (`s3://bucket/prefix`, `gs://…`, `az://…`).
    pub artifacts: String,
    /// `PLINTH_CACHE_DIR`, default `data/cache`: each instance's copy of the files it fetched
    /// from an object store (unused with a directory store).
    pub cache_dir: std::path::PathBuf,
    /// `PLINTH_MAX_UPLOAD_BYTES`, default 64 MiB: the largest model upload accepted.
    pub max_upload_bytes: usize,
    /// `PLINTH_PUBLIC_INFERENCE=1` lets anonymous callers use the inference endpoints.
    pub public_inference: bool,
    /// `PLINTH_MAX_BATCH_ROWS`, default 1000: the most rows one API request may carry.
    pub max_batch_rows: usize,
    /// `PLINTH_METRICS_ADDR`: when set, `/metrics` is also served there, without a token (for a
    /// Prometheus scraper on a private network).
    pub metrics_addr: Option<SocketAddr>,
    /// `PLINTH_DRIFT_WINDOW_HOURS`, default 24: how far back a drift check looks.
    pub drift_window_hours: i64,
    /// `PLINTH_DRIFT_WINDOW_ROWS`, default 1000: at most this many recent predictions are compared.
    pub drift_window_rows: i64,
    /// `PLINTH_DRIFT_INTERVAL_MINUTES`, default 60: how often the drift job runs.
    pub drift_interval_minutes: u64,
    /// `PLINTH_DRAIN_SECONDS`, default 0: after SIGTERM, how long `/readyz` answers 503 (while
    /// requests are still served) before the server stops accepting.
    pub drain_seconds: u64,
    /// `PLINTH_RETENTION_DAYS`: predictions (and failed-prediction records) older than this many
    /// days are dropped, a day's partition at a time. Unset keeps everything. Rollups, drift
    /// runs and feedback are kept either way.
    pub retention_days: Option<u32>,
    /// `PLINTH_MAINTENANCE_MINUTES`, default 60: how often the prediction log's maintenance job
    /// (partitions ahead, retention) runs; at most one instance runs it at a time.
    pub maintenance_minutes: u64,
    /// `PLINTH_PREDICTION_LOG=off` stores no predictions. It exists only so the benchmark can
    /// measure what durable logging costs; never use it in production.
    pub prediction_log: bool,
    /// `PLINTH_MAX_PICTURE_BYTES`, default 2 MiB: the largest picture the prediction form takes
    /// (the form's own limit, separate from model uploads).
    pub max_picture_bytes: usize,
    /// `PLINTH_HSTS=1` sends `Strict-Transport-Security`, for deployments served over HTTPS.
    pub hsts: bool,
    /// `PLINTH_MODEL_LOAD_SECONDS`, default 60: loading one model version takes at most this long.
    pub model_load_timeout: Duration,
    /// `PLINTH_MAX_LOADED_VERSIONS`, default 32: loaded versions kept in memory at once.
    pub max_loaded_versions: usize,
    /// `PLINTH_AUTOMATION_SECONDS`, default 60: how often the promotion and rollback rules are
    /// evaluated (by one instance at a time).
    pub automation_interval: Duration,
    /// `PLINTH_WEBHOOK_RETRY_SECONDS`, default 10: the wait before a failed webhook delivery's
    /// first retry; each later retry waits twice as long (at most an hour).
    pub webhook_first_retry: Duration,
    /// `PLINTH_WEBHOOK_ATTEMPTS`, default 8: attempts before a delivery is given up.
    pub webhook_attempts: i32,
    /// `PLINTH_SHADOW_QUEUE`, default 1024: live requests waiting for the shadow versions; a copy
    /// that finds the queue full is dropped and counted.
    pub shadow_queue: usize,
    /// `PLINTH_JOB_WORKERS`, default half the cores (at least one): batch-job chunks this
    /// instance scores at once, so jobs never take every core from interactive requests.
    /// 0 runs no jobs here.
    pub job_workers: usize,
    /// `PLINTH_JOB_CHUNK_ROWS`, default 8192: rows per chunk of a batch job.
    pub job_chunk_rows: usize,
    /// `PLINTH_JOB_LEASE_SECONDS`, default 30: a worker that stops renewing its chunk for this
    /// long (it died) loses it to another.
    pub job_lease: Duration,
    /// `PLINTH_MAX_JOB_BYTES`, default 1 GiB: the largest file a batch job takes.
    pub max_job_bytes: u64,
    /// `PLINTH_JOB_MAX_ERRORS`, default 1000: refused rows a job tolerates before it stops,
    /// unless the submission says otherwise.
    pub job_max_errors: i64,
    /// `PLINTH_JOB_URLS`: comma-separated object-store prefixes (`s3://bucket/in/`) that batch
    /// jobs may read their input from and write results to. Unset, jobs take uploads only.
    pub job_urls: Vec<String>,
    /// `PLINTH_KAFKA_BROKERS`: the Kafka bootstrap servers (`host:9092,host2:9092`). When set,
    /// this instance runs the streams defined on the models' admin pages.
    pub kafka_brokers: Option<String>,
    /// The streams' librdkafka properties: TLS and SASL from `PLINTH_KAFKA_SECURITY_PROTOCOL`,
    /// `_SASL_MECHANISM`, `_SASL_USERNAME`, `_SASL_PASSWORD` (or `_FILE`), `_CA_FILE`,
    /// `_CERT_FILE` and `_KEY_FILE`, then `PLINTH_KAFKA_CONFIG`'s comma-separated `key=value`
    /// (which win). Log them with [`redacted_kafka_config`].
    pub kafka_config: Vec<(String, String)>,
}

/// A variable that is set but cannot be understood.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {message}")]
pub struct ConfigError {
    pub name: &'static str,
    pub message: String,
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup`, so tests can supply their own variables.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        // A secret file that is named but cannot be read is an error, not an unset variable.
        for (name, file_var) in FILE_VARIABLES {
            let set = |n: &str| lookup(n).filter(|v| !v.trim().is_empty());
            if let (None, Some(path)) = (set(name), set(file_var)) {
                if let Err(e) = std::fs::read_to_string(path.trim()) {
                    return Err(ConfigError {
                        name: file_var,
                        message: format!("cannot read {path}: {e}"),
                    });
                }
            }
        }
        let lookup = with_files(lookup);
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let platform = parse_or(&get, "PLINTH_PLATFORM", Some(None), |v| {
            match v.to_ascii_lowercase().as_str() {
                "sagemaker" => Ok(Some(Platform::SageMaker)),
                "vertex" | "vertexai" => Ok(Some(Platform::Vertex)),
                "azureml" | "azure" => Ok(Some(Platform::AzureMl)),
                "none" => Ok(None),
                _ => Err("expected sagemaker, vertex, azureml or none".to_string()),
            }
        })?
        .or_else(|| {
            if get("PLINTH_PLATFORM").is_some() {
                None
            } else if get("AIP_HTTP_PORT").is_some() || get("AIP_PREDICT_ROUTE").is_some() {
                Some(Platform::Vertex)
            } else if get("AZUREML_MODEL_DIR").is_some() {
                Some(Platform::AzureMl)
            } else if get("SAGEMAKER_BIND_TO_PORT").is_some()
                || get("SM_MODEL_DIR").is_some()
                || std::path::Path::new("/opt/ml/model").is_dir()
            {
                Some(Platform::SageMaker)
            } else {
                None
            }
        });
        let port_from = |name: &'static str| -> Result<Option<SocketAddr>, ConfigError> {
            match get(name) {
                None => Ok(None),
                Some(v) => v
                    .trim()
                    .parse::<u16>()
                    .map(|port| Some(SocketAddr::from(([0, 0, 0, 0], port))))
                    .map_err(|_| ConfigError {
                        name,
                        message: "expected a port number".into(),
                    }),
            }
        };
        // A platform's port, then `PORT`; listening on every interface, as containers must.
        let platform_addr = match platform {
            Some(Platform::Vertex) => port_from("AIP_HTTP_PORT")?,
            Some(Platform::SageMaker) => Some(
                port_from("SAGEMAKER_BIND_TO_PORT")?
                    .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 8080))),
            ),
            _ => None,
        };
        let default_addr = match platform_addr {
            Some(addr) => addr,
            None => port_from("PORT")?.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8000))),
        };
        let addr = parse_or(&get, "PLINTH_ADDR", Some(default_addr), |v| {
            v.parse::<SocketAddr>()
                .map_err(|_| "expected host:port, for example 127.0.0.1:8000".to_string())
        })?;
        let migrate = parse_or(&get, "PLINTH_MIGRATE", Some(true), parse_bool)?;
        let vertex_routes = (
            get("AIP_HEALTH_ROUTE").unwrap_or_else(|| "/health".into()),
            get("AIP_PREDICT_ROUTE").unwrap_or_else(|| "/predict".into()),
        );
        for (name, route) in [
            ("AIP_HEALTH_ROUTE", &vertex_routes.0),
            ("AIP_PREDICT_ROUTE", &vertex_routes.1),
        ] {
            if !route.starts_with('/') || route.contains(['{', '}']) {
                return Err(ConfigError {
                    name,
                    message: "expected a path starting with /".into(),
                });
            }
        }
        // Where the models are: a platform's model directory, else PLINTH_MODELS.
        let platform_models = match platform {
            Some(Platform::SageMaker) => {
                Some(get("SM_MODEL_DIR").unwrap_or_else(|| "/opt/ml/model".into()))
            }
            Some(Platform::AzureMl) => get("AZUREML_MODEL_DIR"),
            Some(Platform::Vertex) => get("AIP_STORAGE_URI"),
            None => None,
        };
        let models = get("PLINTH_MODELS")
            .or(platform_models)
            .unwrap_or_else(|| "models".into());
        let models_uri = crate::registry::artifacts::is_url(&models).then(|| models.clone());
        if let Some(uri) = &models_uri {
            crate::registry::artifacts::check_location(uri).map_err(|message| ConfigError {
                name: "PLINTH_MODELS",
                message,
            })?;
        }
        let database_url = get("PLINTH_DATABASE_URL")
            .or_else(|| get("DATABASE_URL"))
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/plinth".to_string());
        if !database_url.starts_with("postgres://") && !database_url.starts_with("postgresql://") {
            return Err(ConfigError {
                name: if get("PLINTH_DATABASE_URL").is_some() {
                    "PLINTH_DATABASE_URL"
                } else {
                    "DATABASE_URL"
                },
                message: "expected a postgres:// URL".into(),
            });
        }
        let signup = parse_or(&get, "PLINTH_SIGNUP", Some(SignupPolicy::Open), |v| match v
            .to_ascii_lowercase()
            .as_str()
        {
            "open" => Ok(SignupPolicy::Open),
            "closed" => Ok(SignupPolicy::Closed),
            _ => Err("expected open or closed".to_string()),
        })?;
        let insecure_cookies = parse_or(&get, "PLINTH_INSECURE_COOKIES", Some(false), parse_bool)?;
        let trusted_proxies = parse_or(
            &get,
            "PLINTH_TRUSTED_PROXIES",
            Some(Vec::new()),
            plinth_store::domain::proxies::Cidr::parse_list,
        )?;
        let secret_key = match get("PLINTH_SECRET_KEY") {
            None => None,
            Some(v) if v.len() >= 64 => Some(v.into_bytes()),
            Some(_) => {
                return Err(ConfigError {
                    name: "PLINTH_SECRET_KEY",
                    message: "must be at least 64 characters".into(),
                })
            }
        };
        let idle_minutes = parse_or(&get, "PLINTH_SESSION_IDLE_MINUTES", Some(30), positive)?;
        let max_hours = parse_or(&get, "PLINTH_SESSION_MAX_HOURS", Some(12), positive)?;
        let max_body_bytes = parse_or(&get, "PLINTH_MAX_BODY_BYTES", Some(1 << 20), |v| {
            positive(v).map(|n| n as usize)
        })?;
        let default_workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let workers = parse_or(&get, "PLINTH_WORKERS", Some(default_workers), |v| {
            positive(v).map(|n| n as usize)
        })?;
        let max_upload_bytes = parse_or(&get, "PLINTH_MAX_UPLOAD_BYTES", Some(64 << 20), |v| {
            positive(v).map(|n| n as usize)
        })?;
        // Behind an ML platform, the platform authenticates callers (IAM, its endpoint keys).
        let public_inference = parse_or(
            &get,
            "PLINTH_PUBLIC_INFERENCE",
            Some(platform.is_some()),
            parse_bool,
        )?;
        let max_batch_rows = parse_or(&get, "PLINTH_MAX_BATCH_ROWS", Some(1000), |v| {
            positive(v).map(|n| n as usize)
        })?;
        let metrics_addr = match get("PLINTH_METRICS_ADDR") {
            None => None,
            Some(v) => Some(v.trim().parse::<SocketAddr>().map_err(|_| ConfigError {
                name: "PLINTH_METRICS_ADDR",
                message: "expected host:port, for example 127.0.0.1:9090".into(),
            })?),
        };
        let drift_window_hours =
            parse_or(&get, "PLINTH_DRIFT_WINDOW_HOURS", Some(24), positive)? as i64;
        let drift_window_rows =
            parse_or(&get, "PLINTH_DRIFT_WINDOW_ROWS", Some(1000), positive)? as i64;
        let drift_interval_minutes =
            parse_or(&get, "PLINTH_DRIFT_INTERVAL_MINUTES", Some(60), positive)?;
        let prediction_log = parse_or(&get, "PLINTH_PREDICTION_LOG", Some(true), parse_bool)?;
        let retention_days = parse_or(&get, "PLINTH_RETENTION_DAYS", Some(None), |v| {
            positive(v).and_then(|n| {
                u32::try_from(n)
                    .ok()
                    .filter(|n| *n <= 36_500)
                    .map(Some)
                    .ok_or_else(|| "expected a number of days up to 36500".to_string())
            })
        })?;
        let drain_seconds = parse_or(&get, "PLINTH_DRAIN_SECONDS", Some(0), |v| {
            v.parse::<u64>()
                .ok()
                .filter(|n| *n <= 3600)
                .ok_or_else(|| "expected a number of seconds from 0 to 3600".to_string())
        })?;
        let artifacts = parse_or(
            &get,
            "PLINTH_ARTIFACTS",
            Some("data/artifacts".into()),
            |v| crate::registry::artifacts::check_location(v).map(|()| v.to_string()),
        )?;
        let maintenance_minutes = parse_or(&get, "PLINTH_MAINTENANCE_MINUTES", Some(60), positive)?;
        let max_picture_bytes = parse_or(&get, "PLINTH_MAX_PICTURE_BYTES", Some(2 << 20), |v| {
            positive(v).map(|n| n as usize)
        })?;
        let hsts = parse_or(&get, "PLINTH_HSTS", Some(false), parse_bool)?;
        let load_seconds = parse_or(&get, "PLINTH_MODEL_LOAD_SECONDS", Some(60), positive)?;
        let max_loaded_versions = parse_or(&get, "PLINTH_MAX_LOADED_VERSIONS", Some(32), |v| {
            positive(v).map(|n| n as usize)
        })?;
        let shadow_queue = parse_or(&get, "PLINTH_SHADOW_QUEUE", Some(1024), |v| {
            positive(v).map(|n| n as usize)
        })?;
        let automation_seconds = parse_or(&get, "PLINTH_AUTOMATION_SECONDS", Some(60), positive)?;
        let webhook_retry_seconds =
            parse_or(&get, "PLINTH_WEBHOOK_RETRY_SECONDS", Some(10), positive)?;
        let webhook_attempts = parse_or(&get, "PLINTH_WEBHOOK_ATTEMPTS", Some(8), |v| {
            positive(v)
                .ok()
                .filter(|n| *n <= 20)
                .map(|n| n as i32)
                .ok_or_else(|| "expected a number of attempts from 1 to 20".to_string())
        })?;
        let default_job_workers =
            (std::thread::available_parallelism().map_or(2, |n| n.get()) / 2).max(1);
        let job_workers = parse_or(&get, "PLINTH_JOB_WORKERS", Some(default_job_workers), |v| {
            v.parse::<usize>()
                .ok()
                .filter(|n| *n <= 256)
                .ok_or_else(|| "expected a number of workers from 0 to 256".to_string())
        })?;
        let job_chunk_rows = parse_or(&get, "PLINTH_JOB_CHUNK_ROWS", Some(8192), |v| {
            positive(v)
                .ok()
                .filter(|n| *n <= 1 << 20)
                .map(|n| n as usize)
                .ok_or_else(|| "expected a number of rows from 1 to 1048576".to_string())
        })?;
        let job_lease = parse_or(&get, "PLINTH_JOB_LEASE_SECONDS", Some(30), positive)?;
        let max_job_bytes = parse_or(&get, "PLINTH_MAX_JOB_BYTES", Some(1 << 30), positive)?;
        let job_max_errors = parse_or(&get, "PLINTH_JOB_MAX_ERRORS", Some(1000), |v| {
            v.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| "expected a number of rows, 0 or more".to_string())
        })?;
        let job_urls = parse_or(&get, "PLINTH_JOB_URLS", Some(Vec::new()), |v| {
            v.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| {
                    crate::registry::artifacts::check_object_url(p)
                        .map(|()| p.to_string())
                        .map_err(|e| format!("{p}: {e}"))
                })
                .collect()
        })?;
        Ok(Settings {
            kafka_brokers: get("PLINTH_KAFKA_BROKERS").map(|v| v.trim().to_string()),
            kafka_config: kafka::properties(&get)?,
            job_workers,
            job_chunk_rows,
            job_lease: Duration::from_secs(job_lease),
            max_job_bytes,
            job_max_errors,
            job_urls,
            max_picture_bytes,
            hsts,
            model_load_timeout: Duration::from_secs(load_seconds),
            max_loaded_versions,
            shadow_queue,
            automation_interval: Duration::from_secs(automation_seconds),
            webhook_first_retry: Duration::from_secs(webhook_retry_seconds),
            webhook_attempts,
            prediction_log,
            retention_days,
            maintenance_minutes,
            drain_seconds,
            drift_window_hours,
            drift_window_rows,
            drift_interval_minutes,
            metrics_addr,
            public_inference,
            max_batch_rows,
            models_dir: if models_uri.is_some() {
                // Fetched into the cache at start.
                std::path::PathBuf::from(
                    get("PLINTH_CACHE_DIR").unwrap_or_else(|| "data/cache".into()),
                )
                .join("repository")
            } else {
                models.into()
            },
            models_uri,
            platform,
            migrate,
            default_model: get("PLINTH_DEFAULT_MODEL"),
            vertex_routes,
            artifacts,
            cache_dir: get("PLINTH_CACHE_DIR")
                .unwrap_or_else(|| "data/cache".into())
                .into(),
            max_upload_bytes,
            addr,
            database_url,
            admin_username: get("PLINTH_ADMIN_USERNAME").unwrap_or_else(|| "admin".into()),
            admin_password: get("PLINTH_ADMIN_PASSWORD"),
            signup,
            insecure_cookies,
            trusted_proxies,
            secret_key,
            session_idle: Duration::from_secs(idle_minutes * 60),
            session_max_age: Duration::from_secs(max_hours * 3600),
            max_body_bytes,
            workers,
        })
    }
}

#[cfg(test)]
mod tests;
