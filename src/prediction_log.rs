//! The prediction log: every prediction is committed to Postgres before its result goes out.
//!
//! Handlers hand their rows to one writer task and wait for the commit. The writer takes
//! whatever has queued up while the previous statement ran and writes it in one `INSERT` and
//! one commit, so under load durability costs a fraction of a round trip per prediction.

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use crate::db::predictions::{self, NewPrediction};

/// Most rows written by one statement.
const MAX_BATCH_ROWS: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("The prediction could not be stored, so it was not shown. The database is unavailable; try again shortly.")]
    Unavailable,
}

struct Pending {
    rows: Vec<NewPrediction>,
    reply: oneshot::Sender<Result<Vec<i64>, LogError>>,
}

/// A handle on the writer; cheap to clone.
#[derive(Clone)]
pub struct PredictionLog {
    tx: mpsc::Sender<Pending>,
}

impl PredictionLog {
    /// Starts the writer on the current Tokio runtime. It stops, after writing what is queued,
    /// when every handle has been dropped.
    pub fn start(pool: PgPool) -> (PredictionLog, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(8192);
        let handle = tokio::spawn(writer(pool, rx));
        (PredictionLog { tx }, handle)
    }

    /// Stores `rows` and returns their ids once committed.
    pub async fn record(&self, rows: Vec<NewPrediction>) -> Result<Vec<i64>, LogError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending { rows, reply })
            .await
            .map_err(|_| LogError::Unavailable)?;
        answer.await.map_err(|_| LogError::Unavailable)?
    }
}

async fn writer(pool: PgPool, mut rx: mpsc::Receiver<Pending>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let mut rows: usize = batch[0].rows.len();
        while rows < MAX_BATCH_ROWS {
            match rx.try_recv() {
                Ok(next) => {
                    rows += next.rows.len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let all: Vec<NewPrediction> = batch.iter().flat_map(|p| p.rows.iter().cloned()).collect();
        match predictions::insert_batch(&pool, &all).await {
            Ok(ids) => {
                let mut ids = ids.into_iter();
                for pending in batch {
                    let mine: Vec<i64> = ids.by_ref().take(pending.rows.len()).collect();
                    let _ = pending.reply.send(Ok(mine));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, rows = all.len(), "prediction log write failed");
                for pending in batch {
                    let _ = pending.reply.send(Err(LogError::Unavailable));
                }
            }
        }
    }
}
