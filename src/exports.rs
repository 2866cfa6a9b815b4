//! How many CSV exports each user has running: a few at a time, so one account cannot tie up
//! the server with exports nobody reads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::AppError;

/// Exports one user may have running at once.
pub const PER_USER: usize = 2;

#[derive(Clone, Default)]
pub struct Exports {
    running: Arc<Mutex<HashMap<i64, usize>>>,
}

/// One running export; dropping it (the export finished, failed or was abandoned) frees the slot.
pub struct ExportSlot {
    running: Arc<Mutex<HashMap<i64, usize>>>,
    user_id: i64,
}

impl Exports {
    /// A slot for `user_id`'s new export, or 429 when they have [`PER_USER`] running.
    pub fn start(&self, user_id: i64) -> Result<ExportSlot, AppError> {
        let mut running = self
            .running
            .lock()
            .map_err(|_| AppError::internal(anyhow::anyhow!("export counter poisoned")))?;
        let n = running.entry(user_id).or_default();
        if *n >= PER_USER {
            return Err(AppError::TooManyRequests(format!(
                "You have {PER_USER} exports running; wait for one to finish, then try again."
            )));
        }
        *n += 1;
        Ok(ExportSlot {
            running: self.running.clone(),
            user_id,
        })
    }
}

impl Drop for ExportSlot {
    fn drop(&mut self) {
        if let Ok(mut running) = self.running.lock() {
            if let Some(n) = running.get_mut(&self.user_id) {
                *n -= 1;
                if *n == 0 {
                    running.remove(&self.user_id);
                }
            }
        }
    }
}
