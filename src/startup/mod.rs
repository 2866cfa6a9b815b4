//! Builds the application from its settings and runs it.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_session::config::{BrowserSession, CookieContentSecurity, TtlExtensionPolicy};
use actix_session::SessionMiddleware;
use actix_web::cookie::{Key, SameSite};
use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpResponse, HttpServer};
use rand::RngCore;
use sqlx::PgPool;

use crate::auth::password;
use crate::auth::session_store::PgSessionStore;
use crate::config::Settings;
use crate::monitoring::metrics::Metrics;
use crate::prediction_log::PredictionLog;
use crate::state::AppState;
use crate::urls;
use crate::web::errors as web_errors;
use crate::web::middleware;
use plinth_store as db;

mod setup;

pub use setup::{bootstrap_admin, import_repository, registry_for};
use setup::{instance_name, wait_for_migrations};

/// A bound, not yet running server.
pub struct Application {
    port: u16,
    server: Server,
    /// `/metrics` alone on `PLINTH_METRICS_ADDR`, when set.
    metrics_server: Option<(u16, Server)>,
    pool: PgPool,
    settings: Settings,
    /// The task listening for cache notices, stopped with the server.
    listener: tokio::task::JoinHandle<()>,
    draining: Arc<std::sync::atomic::AtomicBool>,
    /// What the handlers share, for the batch workers.
    state: web::Data<AppState>,
}

impl Application {
    /// Connects (creating the database if needed), migrates, makes sure an admin exists and binds.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let pool = db::connect(&settings.database_url).await?;
        if settings.migrate {
            db::migrate(&pool).await?;
        } else {
            wait_for_migrations(&pool).await?;
        }
        bootstrap_admin(&pool, &settings).await?;
        import_repository(&pool, &settings).await?;
        Self::build_with_pool(settings, pool).await
    }

    /// Binds a server on an existing pool, without migrating: what tests use.
    pub async fn build_with_pool(settings: Settings, pool: PgPool) -> anyhow::Result<Self> {
        let key = match &settings.secret_key {
            Some(key) => key.clone(),
            None => {
                db::secrets::get_or_create(&pool, "session_signing_key", || {
                    let mut key = vec![0u8; 64];
                    rand::rng().fill_bytes(&mut key);
                    key
                })
                .await?
            }
        };
        let key = Key::try_from(key.as_slice())
            .map_err(|e| anyhow::anyhow!("the session key is unusable: {e}"))?;
        let metrics = Arc::new(Metrics::default());
        let log = if settings.prediction_log {
            PredictionLog::start(db::log_pool(&pool), metrics.clone()).0
        } else {
            tracing::warn!(
                "PLINTH_PREDICTION_LOG=off: predictions are NOT stored (for benchmarks only)"
            );
            PredictionLog::disabled(metrics.clone())
        };
        let tokens = crate::cache::Cache::new();
        let users = crate::cache::Cache::with_epoch(tokens.epoch_handle());
        let registry = registry_for(&pool, &settings)?;
        let notices = crate::cache::listen(pool.clone(), tokens.epoch_handle(), registry.changes());
        let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let state = web::Data::new(AppState {
            tokens,
            users,
            metrics: metrics.clone(),
            pool: pool.clone(),
            registry,
            log,
            settings: settings.clone(),
            dummy_hash: password::dummy_hash().await?,
            heavy: crate::heavy::Heavy::new(settings.workers),
            exports: Default::default(),
            draining: draining.clone(),
            shadow: crate::shadow::Queue::new(settings.shadow_queue),
        });
        let listener = TcpListener::bind(settings.addr)?;
        let port = listener.local_addr()?.port();
        let store = PgSessionStore::new(pool.clone(), settings.session_max_age);
        let secure = !settings.insecure_cookies;
        let idle =
            actix_web::cookie::time::Duration::seconds(settings.session_idle.as_secs() as i64);
        let max_body = settings.max_body_bytes;
        let platform_settings = settings.clone();
        let app_state = state.clone();
        let server = HttpServer::new(move || {
            let sessions = SessionMiddleware::builder(store.clone(), key.clone())
                .cookie_name("plinth_session".into())
                .cookie_secure(secure)
                .cookie_http_only(true)
                .cookie_same_site(SameSite::Lax)
                .cookie_content_security(CookieContentSecurity::Signed)
                .session_lifecycle(
                    BrowserSession::default()
                        .state_ttl(idle)
                        .state_ttl_extension_policy(TtlExtensionPolicy::OnEveryRequest),
                )
                .build();
            App::new()
                .app_data(state.clone())
                .app_data(web::PayloadConfig::new(max_body))
                .app_data(web::FormConfig::default().limit(max_body))
                .app_data(web::JsonConfig::default().limit(max_body))
                .wrap(from_fn(web_errors::error_pages))
                .wrap(sessions)
                .wrap(from_fn(middleware::request_context))
                .configure(|cfg| urls::platform(cfg, &platform_settings))
                .configure(urls::configure)
                .default_service(web::to(HttpResponse::NotFound))
        })
        .workers(settings.workers)
        .shutdown_timeout(30)
        // Signals are handled in `run_until_stopped`: drain first, then stop.
        .disable_signals()
        .listen(listener)?
        .run();
        let metrics_server = match settings.metrics_addr {
            None => None,
            Some(addr) => {
                let listener = TcpListener::bind(addr)?;
                let port = listener.local_addr()?.port();
                let metrics = web::Data::from(metrics.clone());
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(metrics.clone())
                        .configure(urls::metrics_listener)
                })
                .workers(1)
                .listen(listener)?
                .run();
                Some((port, server))
            }
        };
        Ok(Application {
            port,
            server,
            metrics_server,
            pool,
            settings,
            listener: notices,
            draining,
            state: app_state,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of the separate metrics listener, when there is one.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_server.as_ref().map(|(port, _)| *port)
    }

    /// Serves until SIGTERM or Ctrl-C; in-flight requests finish first.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let instance = instance_name();
        let pool = self.pool.clone();
        let max_age = self.settings.session_max_age;
        let sweep_instance = instance.clone();
        let sweeper = tokio::spawn(async move {
            let every = Duration::from_secs(600);
            let mut ticks = tokio::time::interval(every / 4);
            loop {
                ticks.tick().await;
                match db::jobs::claim(&pool, "session_sweep", every, &sweep_instance).await {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not claim the session sweep");
                        continue;
                    }
                }
                if let Err(e) = db::sessions::delete_expired(&pool, max_age).await {
                    tracing::warn!(error = %e, "could not sweep expired sessions");
                }
                if let Err(e) = db::login_failures::delete_old(&pool).await {
                    tracing::warn!(error = %e, "could not sweep old login failures");
                }
            }
        });
        let metrics = self.metrics_server.map(|(_, server)| {
            let handle = server.handle();
            (tokio::spawn(server), handle)
        });
        // The production versions' latest drift verdicts, on every instance's /metrics (whichever
        // instance ran the check), read every 10 s (one row per model).
        let verdict_pool = self.pool.clone();
        let verdict_metrics = self.state.metrics.clone();
        let verdicts = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(10));
            loop {
                ticks.tick().await;
                match db::drift::production_verdicts(&verdict_pool).await {
                    Ok(found) => verdict_metrics.drift_verdicts(&found),
                    Err(e) => tracing::debug!(error = %e, "could not read the drift verdicts"),
                }
            }
        });
        // The drift job: every production version, on a schedule.
        let drift_pool = self.pool.clone();
        let drift_settings = self.settings.clone();
        let drift_instance = instance.clone();
        let drift = tokio::spawn(async move {
            let registry = match registry_for(&drift_pool, &drift_settings) {
                Ok(registry) => registry,
                Err(e) => {
                    tracing::error!(error = %e, "the drift job cannot reach the artifact store");
                    return;
                }
            };
            let heavy = crate::heavy::Heavy::new(1);
            // Every instance ticks four times an interval; the one that finds the job due runs it
            // (so it runs once an interval, and within a quarter of one after its runner died).
            let every = Duration::from_secs(drift_settings.drift_interval_minutes * 60);
            let mut ticks =
                tokio::time::interval_at(tokio::time::Instant::now() + every / 4, every / 4);
            loop {
                ticks.tick().await;
                match db::jobs::claim(&drift_pool, "drift", every, &drift_instance).await {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not claim the drift job");
                        continue;
                    }
                }
                match crate::monitoring::drift::check_all(
                    &registry,
                    &heavy,
                    drift_settings.drift_window_hours,
                    drift_settings.drift_window_rows,
                )
                .await
                {
                    Ok(n) => tracing::info!(versions = n, "drift checked"),
                    Err(e) => tracing::warn!(error = %e, "drift check failed"),
                }
            }
        });
        // Batch jobs: this instance's workers claim chunks of any instance's jobs.
        let batch_workers = crate::batch::worker::start(&self.state, &instance);
        // Kafka streams, when a broker is configured.
        let streams = tokio::spawn(crate::stream::supervise(self.state.clone()));
        // The shadow versions' worker.
        let shadows = tokio::spawn(crate::shadow::worker::work(self.state.clone()));
        // The promotion and rollback rules, on one instance at a time; webhook deliveries, on all.
        let automation = tokio::spawn(crate::automation::schedule(
            self.state.clone(),
            self.settings.automation_interval,
            instance.clone(),
        ));
        let webhooks = tokio::spawn(crate::automation::webhooks::deliver(
            self.pool.clone(),
            crate::automation::webhooks::Policy {
                first_retry: self.settings.webhook_first_retry,
                attempts: self.settings.webhook_attempts,
                timeout: Duration::from_secs(10),
            },
        ));
        // The prediction log's partitions and retention, now and on a schedule.
        let maintenance = tokio::spawn(crate::prediction_log::maintenance::schedule(
            self.pool.clone(),
            crate::prediction_log::maintenance::Policy {
                retention_days: self.settings.retention_days,
                days_ahead: 3,
                interval: Duration::from_secs(self.settings.maintenance_minutes * 60),
            },
            instance,
        ));
        // SIGTERM or Ctrl-C: `/readyz` says 503 for the drain period (balancers take the
        // instance out), then the server stops accepting, closes idle keep-alive connections,
        // lets in-flight requests finish (up to 30 s) and the log flush.
        let handle = self.server.handle();
        let draining = self.draining.clone();
        let drain = Duration::from_secs(self.settings.drain_seconds);
        let signals = tokio::spawn(async move {
            stop_signal().await;
            draining.store(true, std::sync::atomic::Ordering::SeqCst);
            if !drain.is_zero() {
                tracing::info!(seconds = drain.as_secs(), "draining: /readyz answers 503");
                tokio::time::sleep(drain).await;
            }
            tracing::info!("stopping: finishing in-flight requests");
            handle.stop(true).await;
        });
        let result = self.server.await;
        // The batch workers stop claiming once draining; a chunk being scored gets a few seconds
        // to commit (else its lease runs out and another instance scores it).
        self.draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if tokio::time::timeout(Duration::from_secs(15), streams)
            .await
            .is_err()
        {
            tracing::warn!("the streams did not stop in time");
        }
        for worker in batch_workers {
            let abort = worker.abort_handle();
            if tokio::time::timeout(Duration::from_secs(10), worker)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        signals.abort();
        drift.abort();
        verdicts.abort();
        shadows.abort();
        automation.abort();
        webhooks.abort();
        maintenance.abort();
        if let Some((task, handle)) = metrics {
            handle.stop(true).await;
            let _ = task.await;
        }
        sweeper.abort();
        self.listener.abort();
        // Connections end cleanly before the database may stop (a private cluster stops next).
        let _ = tokio::time::timeout(Duration::from_secs(5), self.pool.close()).await;
        tracing::info!("stopped");
        result
    }
}

/// The first SIGTERM or Ctrl-C.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
