//! What the prediction path would otherwise ask Postgres on every request: whose an API token
//! is, and which version a model's alias serves. (Sessions have their own cache, in
//! `db::sessions`, told by the same listener which session changed.)
//!
//! Entries live at most [`TTL`]. Anything that changes them bumps the cache's [`Epoch`], and an
//! entry from an older epoch is never served: a revoked token, a disabled user, a change of staff
//! rights or password; a moved alias or a new version. This process bumps the epoch itself where
//! it makes those changes; other processes' changes arrive through Postgres `NOTIFY` (the
//! triggers of migration 0008) on the connection [`listen`] keeps, and when that connection is
//! lost both epochs are bumped, since a notice may have been missed.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sqlx::postgres::PgListener;
use sqlx::PgPool;

/// The longest an entry is trusted without asking Postgres again.
pub const TTL: Duration = Duration::from_secs(60);
/// Entries kept before the cache starts over (a bound, not an expected size).
const MAX_ENTRIES: usize = 10_000;

/// The channels the triggers notify.
pub const AUTH_CHANNEL: &str = "plinth_auth";
pub const REGISTRY_CHANNEL: &str = "plinth_registry";
/// Carries the hash of a session that changed or ended (migration 0012).
pub const SESSION_CHANNEL: &str = "plinth_session";

/// A generation counter: bumping it retires every entry stored before.
#[derive(Clone, Debug, Default)]
pub struct Epoch(Arc<AtomicU64>);

impl Epoch {
    pub fn bump(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

struct Entry<V> {
    value: V,
    epoch: u64,
    stored: Instant,
}

/// A map whose entries die with their epoch or after [`TTL`].
pub struct Cache<K, V> {
    epoch: Epoch,
    map: RwLock<HashMap<K, Entry<V>>>,
}

impl<K: Eq + Hash, V: Clone> Cache<K, V> {
    pub fn new() -> Self {
        Self::with_epoch(Epoch::default())
    }

    /// A cache retired together with others sharing `epoch`.
    pub fn with_epoch(epoch: Epoch) -> Self {
        Cache {
            epoch,
            map: RwLock::new(HashMap::new()),
        }
    }

    /// The epoch to pass to [`Cache::insert`]: read it before asking Postgres, so a change made
    /// while the question was in flight makes the answer stale at once.
    pub fn epoch(&self) -> u64 {
        self.epoch.now()
    }

    /// Something the entries depend on changed: none of them is served again.
    pub fn changed(&self) {
        self.epoch.bump();
    }

    /// The epoch, for [`listen`] to bump when another process makes a change.
    pub fn epoch_handle(&self) -> Epoch {
        self.epoch.clone()
    }

    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let now = self.epoch();
        let map = self.map.read().ok()?;
        let entry = map.get(key)?;
        (entry.epoch == now && entry.stored.elapsed() < TTL).then(|| entry.value.clone())
    }

    /// The entry for `key`, or what `fetch` finds (kept unless a change came meanwhile).
    /// Nothing is kept when `fetch` finds nothing, so a new token or model is seen at once.
    pub async fn get_or_fetch<E, Fut>(
        &self,
        key: K,
        fetch: impl FnOnce() -> Fut,
    ) -> Result<Option<V>, E>
    where
        Fut: std::future::Future<Output = Result<Option<V>, E>>,
    {
        if let Some(value) = self.get(&key) {
            return Ok(Some(value));
        }
        let epoch = self.epoch();
        let found = fetch().await?;
        if let Some(value) = &found {
            self.insert(key, value.clone(), epoch);
        }
        Ok(found)
    }

    pub fn insert(&self, key: K, value: V, epoch: u64) {
        if epoch != self.epoch() {
            return;
        }
        if let Ok(mut map) = self.map.write() {
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
            map.insert(
                key,
                Entry {
                    value,
                    epoch,
                    stored: Instant::now(),
                },
            );
        }
    }
}

impl<K: Eq + Hash, V: Clone> Default for Cache<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

/// Keeps a connection listening for the triggers' notices, for as long as the runtime lives,
/// bumping `auth` or `registry` as they arrive.
pub fn listen(pool: PgPool, auth: Epoch, registry: Epoch) -> tokio::task::JoinHandle<()> {
    use plinth_store::{database_of, sessions::cache as sessions};
    let db = database_of(&pool);
    tokio::spawn(async move {
        loop {
            let mut listener = loop {
                match PgListener::connect_with(&pool).await {
                    Ok(mut l) => match l
                        .listen_all([AUTH_CHANNEL, REGISTRY_CHANNEL, SESSION_CHANNEL])
                        .await
                    {
                        Ok(()) => break l,
                        Err(e) => tracing::debug!(error = %e, "cannot listen for cache notices"),
                    },
                    Err(e) => tracing::debug!(error = %e, "cannot listen for cache notices"),
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            };
            // Notices sent while nobody was listening are lost: start afresh. (While the
            // connection is down the entries keep being served; with Postgres itself down
            // nothing can change them, and the TTL bounds any other gap.)
            auth.bump();
            registry.bump();
            sessions::forget_all(&db);
            loop {
                match listener.try_recv().await {
                    Ok(Some(notice)) if notice.channel() == AUTH_CHANNEL => auth.bump(),
                    Ok(Some(notice)) if notice.channel() == SESSION_CHANNEL => {
                        sessions::forget(&db, notice.payload())
                    }
                    Ok(Some(_)) => registry.bump(),
                    // The connection was lost: listen again on a new one.
                    Ok(None) | Err(_) => break,
                }
            }
            tracing::debug!("cache notice connection lost; reconnecting");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_die_with_their_epoch() {
        let cache: Cache<String, i32> = Cache::new();
        let e = cache.epoch();
        cache.insert("a".into(), 1, e);
        assert_eq!(cache.get("a"), Some(1));
        cache.epoch_handle().bump();
        assert_eq!(cache.get("a"), None);
        // An answer fetched before a change is not kept.
        cache.insert("b".into(), 2, e);
        assert_eq!(cache.get("b"), None);
        cache.insert("b".into(), 2, cache.epoch());
        assert_eq!(cache.get("b"), Some(2));
    }
}
