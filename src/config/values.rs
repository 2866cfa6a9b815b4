//! The values settings take: sign-up policies, platforms, numbers, booleans, and secrets read
//! from _FILE variables.

use super::ConfigError;

/// Who may create an account through the sign-up page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignupPolicy {
    Open,
    Closed,
}

/// The ML platform whose serving contract the process speaks, from the variables the platform
/// sets (or `PLINTH_PLATFORM`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    /// Amazon SageMaker (bring your own container): `/ping`, `/invocations` on port 8080 (or
    /// `SAGEMAKER_BIND_TO_PORT`), the model in `/opt/ml/model` (or `SM_MODEL_DIR`).
    SageMaker,
    /// Vertex AI custom container: `AIP_HTTP_PORT`, `AIP_HEALTH_ROUTE`, `AIP_PREDICT_ROUTE`,
    /// `AIP_STORAGE_URI`.
    Vertex,
    /// Azure Machine Learning online endpoint: `AZUREML_MODEL_DIR`, `/score`.
    AzureMl,
}

impl Platform {
    /// The name stored as a prediction's source.
    pub fn source(self) -> &'static str {
        match self {
            Platform::SageMaker => "sagemaker",
            Platform::Vertex => "vertex",
            Platform::AzureMl => "azureml",
        }
    }
}

/// Variables that may be given instead as the path of a file holding the value, in
/// `NAME_FILE` (secrets mounted as files by Docker, Kubernetes and the clouds' services).
pub const FILE_VARIABLES: [(&str, &str); 4] = [
    ("PLINTH_ADMIN_PASSWORD", "PLINTH_ADMIN_PASSWORD_FILE"),
    ("PLINTH_SECRET_KEY", "PLINTH_SECRET_KEY_FILE"),
    ("PLINTH_DATABASE_URL", "PLINTH_DATABASE_URL_FILE"),
    (
        "PLINTH_KAFKA_SASL_PASSWORD",
        "PLINTH_KAFKA_SASL_PASSWORD_FILE",
    ),
];

/// `lookup`, with each of [`FILE_VARIABLES`] read from its `_FILE` when it is itself unset (the
/// file's content without its final line break).
pub fn with_files(lookup: impl Fn(&str) -> Option<String>) -> impl Fn(&str) -> Option<String> {
    move |name| {
        let direct = lookup(name).filter(|v| !v.trim().is_empty());
        let Some((_, file_var)) = FILE_VARIABLES.iter().find(|(n, _)| *n == name) else {
            return direct;
        };
        if direct.is_some() {
            return direct;
        }
        let path = lookup(file_var).filter(|v| !v.trim().is_empty())?;
        std::fs::read_to_string(path.trim())
            .ok()
            .map(|text| text.trim_end_matches(['\r', '\n']).to_string())
    }
}

pub(super) fn parse_or<T>(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: Option<T>,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    match get(name) {
        Some(v) => parse(v.trim()).map_err(|message| ConfigError { name, message }),
        None => default.ok_or(ConfigError {
            name,
            message: "is required".into(),
        }),
    }
}

pub(super) fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("expected 1 or 0".into()),
    }
}

pub(super) fn positive(v: &str) -> Result<u64, String> {
    match v.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("expected a positive whole number".into()),
    }
}
