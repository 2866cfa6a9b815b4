//! What a start does before it serves: the registry built, the migrations applied or waited
//! for, the model repository imported, the first admin created.

use std::time::Duration;

use sqlx::PgPool;

use crate::auth::{password, Password};
use crate::config::Settings;
use crate::registry::artifacts::ArtifactStore;
use crate::registry::Registry;
use plinth_store as db;
use plinth_store::domain::Username;

/// The registry over the configured artifact store; fails when `PLINTH_ARTIFACTS` names a store
/// that cannot be configured (a bucket URL without the credentials its builder needs, say).
pub fn registry_for(pool: &PgPool, settings: &Settings) -> anyhow::Result<Registry> {
    let artifacts = ArtifactStore::open(&settings.artifacts, &settings.cache_dir)
        .map_err(anyhow::Error::msg)?;
    Ok(Registry::with_policy(
        pool.clone(),
        artifacts,
        settings.max_upload_bytes,
        crate::registry::LoadPolicy {
            timeout: settings.model_load_timeout,
            max_loaded: settings.max_loaded_versions,
            repository: Some(settings.models_dir.clone()),
        },
    ))
}

/// With `PLINTH_MIGRATE=0`: waits until a separate `plinth migrate` (a Kubernetes Job, a
/// release step) has brought the database to this binary's migrations.
pub(super) async fn wait_for_migrations(pool: &PgPool) -> anyhow::Result<()> {
    let mut told = false;
    loop {
        if db::migrations_current(pool).await? {
            return Ok(());
        }
        if !told {
            tracing::warn!(
                "PLINTH_MIGRATE=0 and migrations are pending: waiting for `plinth migrate`"
            );
            told = true;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Imports the model repository (`PLINTH_MODELS`) when it exists: idempotent, by file hash. A
/// repository in a bucket (`AIP_STORAGE_URI`) is fetched into the cache first; a platform's
/// model directory holding one `model.onnx` (SageMaker's `/opt/ml/model`, Azure ML's
/// `AZUREML_MODEL_DIR`) is imported as one model.
pub async fn import_repository(pool: &PgPool, settings: &Settings) -> anyhow::Result<()> {
    if let Some(uri) = &settings.models_uri {
        let files = crate::registry::artifacts::fetch_tree(uri, &settings.models_dir)
            .await
            .map_err(|e| anyhow::anyhow!("the model repository {uri} cannot be fetched: {e}"))?;
        tracing::info!(%uri, files, "fetched the model repository");
    }
    let single = crate::registry::single_model_dir(&settings.models_dir);
    if let Some(dir) = single {
        let name = settings
            .default_model
            .clone()
            .unwrap_or_else(|| "model".into());
        let registry = registry_for(pool, settings)?;
        let imported = registry.import_single(&dir, &name).await?;
        if let crate::registry::Imported::New { model, version } = imported {
            tracing::info!(%model, version, dir = %dir.display(), "imported the platform's model");
        }
        return Ok(());
    }
    if !settings.models_dir.is_dir() {
        tracing::info!(dir = %settings.models_dir.display(), "no model repository to import");
        return Ok(());
    }
    let registry = registry_for(pool, settings)?;
    let report = registry.import_repository(&settings.models_dir).await?;
    for imported in report.imported {
        if let crate::registry::Imported::New { model, version } = imported {
            tracing::info!(%model, version, "imported from the model repository");
        }
    }
    // A refused version does not stop the server: the rest of the repository serves.
    for (dir, reason) in &report.refused {
        tracing::error!(dir = %dir.display(), %reason, "model version refused at import");
    }
    Ok(())
}

/// On first start, creates the admin account: the password from `PLINTH_ADMIN_PASSWORD`, or a
/// generated one written once to the log.
pub async fn bootstrap_admin(pool: &PgPool, settings: &Settings) -> anyhow::Result<()> {
    if db::users::any_staff(pool).await? {
        return Ok(());
    }
    let username = Username::parse(&settings.admin_username)
        .map_err(|e| anyhow::anyhow!("PLINTH_ADMIN_USERNAME: {e}"))?;
    let (password, generated) = match &settings.admin_password {
        Some(p) => (
            Password::parse(p, username.as_str())
                .map_err(|e| anyhow::anyhow!("PLINTH_ADMIN_PASSWORD: {e}"))?,
            false,
        ),
        None => {
            let raw = rand::distr::SampleString::sample_string(
                &rand::distr::Alphanumeric,
                &mut rand::rng(),
                20,
            );
            (
                Password::parse(&raw, username.as_str()).map_err(anyhow::Error::msg)?,
                true,
            )
        }
    };
    let hash = password::hash(&password).await?;
    match db::users::create(pool, &username, &hash, true).await {
        Ok(user) if generated => {
            // A password that went through a log must be replaced at the first login.
            db::users::set_password(pool, user.id, &hash, true).await?;
            tracing::warn!(
                "created the admin account {:?} with the generated password {:?}; it is shown only once and must be changed at the first login",
                username.as_str(),
                password.expose()
            )
        }
        Ok(_) => tracing::info!(username = username.as_str(), "created the admin account"),
        Err(e) => tracing::warn!(error = %e, "could not create the admin account"),
    }
    Ok(())
}

/// This instance as the maintenance log names it: host and process id.
pub(super) fn instance_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "plinth".into());
    format!("{host}:{}", std::process::id())
}
