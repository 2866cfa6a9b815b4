//! Each partition's committed position, and the stuck-consumer check that rejoins the group.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix_web::web::Data;
use rdkafka::consumer::Consumer;
use rdkafka::message::{Message, OwnedMessage};

use super::Reader;
use crate::state::AppState;
use plinth_store::streams::{self as db, StreamRow};

/// Where this consumer is in each partition: the last offset read, and how many times in a row
/// the partition was read again after records were left out.
#[derive(Default)]
pub(super) struct Positions {
    pub(super) delivered: HashMap<i32, i64>,
    pub(super) retries: HashMap<i32, u32>,
}

impl Positions {
    /// Follows a batch: each partition's records must carry on from the last one read (or from
    /// the offset stored in Postgres, `expected`). A forward jump is legal in Kafka (compaction,
    /// transaction markers), but a broker can also leave records out of a fetch (tansu 0.6 on
    /// S3 after a restart leaves out those of a fetch that starts inside one of its stored
    /// batches, and serves them to a fetch that starts before it). Such a partition is read
    /// again, from further back on each of three tries (what is read twice is below the stored
    /// offset and skipped as seen), before the jump is taken as the log's own. Returns the
    /// partitions to read again and from where; their records in this batch are to be dropped.
    pub(super) fn follow(
        &mut self,
        batch: &[OwnedMessage],
        expected: &HashMap<i32, i64>,
        topic: &str,
    ) -> HashMap<i32, i64> {
        let before = self.delivered.clone();
        let mut reread: HashMap<i32, i64> = HashMap::new();
        for m in batch {
            let p = m.partition();
            if reread.contains_key(&p) {
                continue;
            }
            let want = self
                .delivered
                .get(&p)
                .map(|l| l + 1)
                .or(expected.get(&p).copied());
            if let Some(want) = want.filter(|w| m.offset() > *w) {
                let tries = self.retries.entry(p).or_insert(0);
                if *tries < 3 {
                    *tries += 1;
                    tracing::info!(
                        topic,
                        partition = p,
                        want,
                        got = m.offset(),
                        "records left out of a fetch; reading the partition again"
                    );
                    // From where this batch's records of the partition start: all are dropped.
                    let first = batch
                        .iter()
                        .find(|r| r.partition() == p)
                        .map(|r| r.offset());
                    let start = before
                        .get(&p)
                        .map(|l| l + 1)
                        .or(expected.get(&p).copied())
                        .or(first)
                        .unwrap_or(want);
                    let back = 1_000 * 10i64.pow(*tries - 1);
                    reread.insert(p, (start.min(want) - back).max(0));
                    match before.get(&p) {
                        Some(&l) => self.delivered.insert(p, l),
                        None => self.delivered.remove(&p),
                    };
                    continue;
                }
                tracing::warn!(
                    topic,
                    partition = p,
                    from = want,
                    to = m.offset(),
                    "the partition's offsets jump; taken as the log's own gap"
                );
            }
            self.retries.remove(&p);
            self.delivered.insert(p, m.offset());
        }
        reread
    }
}

/// A consumer that holds no partition while no instance stores anything for the stream: the
/// group may be stuck (a coordinator still waiting on a member that died while leading it) or
/// the topic idle. Rejoining the group after `REJOIN_AFTER` gets the partitions handed out
/// again; on an idle topic it costs one rebalance.
pub(super) const REJOIN_AFTER: Duration = Duration::from_secs(20);

pub(super) async fn check_stuck(
    state: &Data<AppState>,
    consumer: &Reader,
    stream: &StreamRow,
    idle: &mut Option<(Instant, i64)>,
) -> Result<(), String> {
    let holds = consumer
        .assignment()
        .map(|a| a.count() > 0)
        .unwrap_or(false);
    if holds {
        *idle = None;
        return Ok(());
    }
    let stored: i64 = db::watermarks(&state.pool, stream.id)
        .await
        .map_err(|e| e.to_string())?
        .values()
        .sum();
    match idle {
        Some((since, then)) if *then == stored => {
            if since.elapsed() >= REJOIN_AFTER {
                return Err(format!(
                    "no partition of {} assigned for {} s while nothing was stored; rejoining the consumer group",
                    stream.input_topic,
                    since.elapsed().as_secs()
                ));
            }
        }
        _ => *idle = Some((Instant::now(), stored)),
    }
    Ok(())
}
