//! CPU-heavy work a request can cause (decoding a picture, a drift check's statistics): run on
//! the blocking pool, never on an async worker, and at most a few at a time so a burst of them
//! queues instead of taking every thread.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::error::AppError;

#[derive(Clone)]
pub struct Heavy {
    slots: Arc<Semaphore>,
}

impl Heavy {
    /// At most `slots` jobs at once.
    pub fn new(slots: usize) -> Self {
        Heavy {
            slots: Arc::new(Semaphore::new(slots.max(1))),
        }
    }

    /// Runs `work` on the blocking pool once a slot is free.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AppError> {
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(AppError::internal)?;
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            work()
        })
        .await
        .map_err(AppError::internal)
    }
}
