//! One batch of records: each read against the card, scored, committed to the prediction log,
//! answered on the output topic or dead-lettered, in order.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::web::Data;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};

use super::{Reader, Stored, Writer, ERROR_HEADER};
use crate::registry::decode::decode;
use crate::registry::{Selector, Served};
use crate::serving;
use crate::state::AppState;
use plinth_store::predictions::{self, NewPredictions, ID_BLOCK};
use plinth_store::streams::{self as db, StreamRow};

/// A record to produce: topic, value, key, headers.
pub(super) type Outgoing<'a> = (&'a str, Vec<u8>, Option<&'a [u8]>, Option<OwnedHeaders>);

/// What one record became.
pub(super) enum Fate {
    /// Already stored (seen before a crash or a rebalance).
    Seen,
    /// Its rows, at these positions of the batch's rows.
    Rows {
        first: usize,
        n: usize,
        many: bool,
    },
    Dead(String),
}

/// A record's rows: one JSON object of the card's features, or a list of them.
pub(super) fn rows_of(
    served: &Served,
    payload: Option<&[u8]>,
    limit: usize,
) -> Result<(Vec<Vec<f64>>, bool), String> {
    let payload = payload.ok_or("The record has no value.")?;
    let value: Value = serde_json::from_slice(payload)
        .map_err(|e| format!("The record is not valid JSON: {e}."))?;
    match &value {
        Value::Array(items) => {
            if items.is_empty() || items.len() > limit {
                return Err(format!(
                    "A record holds 1 to {limit} rows; this one holds {}.",
                    items.len()
                ));
            }
            let rows = items
                .iter()
                .enumerate()
                .map(|(i, item)| crate::api::v1::row_from_json(&served.card, item, Some(i)))
                .collect::<Result<_, _>>()?;
            Ok((rows, true))
        }
        one => Ok((
            vec![crate::api::v1::row_from_json(&served.card, one, None)?],
            false,
        )),
    }
}

pub(super) async fn process(
    state: &Data<AppState>,
    consumer: &Arc<Reader>,
    producer: &Writer,
    stream: &StreamRow,
    batch: Vec<OwnedMessage>,
    stored: &Stored,
) -> Result<(), String> {
    let pool = &state.pool;
    let served = serving::served(state, &stream.model, &Selector::Alias(stream.alias.clone()))
        .await
        .map_err(|e| format!("the model cannot serve: {e}"))?;
    let seen = db::watermarks(pool, stream.id)
        .await
        .map_err(|e| e.to_string())?;
    if let Ok(mut s) = stored.lock() {
        s.clone_from(&seen);
    }
    // Each record's rows, or why it cannot be scored.
    let mut rows: Vec<Vec<f64>> = Vec::new();
    let mut fates = Vec::with_capacity(batch.len());
    // A record delivered twice within one batch (re-fetched after a rebalance) counts once.
    let mut in_batch: HashSet<(i32, i64)> = HashSet::new();
    for m in &batch {
        let again = !in_batch.insert((m.partition(), m.offset()));
        if again
            || seen
                .get(&m.partition())
                .is_some_and(|next| m.offset() < *next)
        {
            fates.push(Fate::Seen);
            continue;
        }
        match rows_of(&served, m.payload(), state.settings.max_batch_rows) {
            Ok((mut r, many)) => {
                fates.push(Fate::Rows {
                    first: rows.len(),
                    n: r.len(),
                    many,
                });
                rows.append(&mut r);
            }
            Err(reason) => fates.push(Fate::Dead(reason)),
        }
    }
    // Scored together; a run that fails is retried a record at a time, and the records the
    // model cannot score become dead letters.
    let started = Instant::now();
    let outcomes = match score(&served, &rows).await {
        Ok(o) => o.into_iter().map(Some).collect::<Vec<_>>(),
        Err(_) => {
            let mut all = vec![None; rows.len()];
            for fate in &mut fates {
                if let Fate::Rows { first, n, .. } = *fate {
                    match score(&served, &rows[first..first + n]).await {
                        Ok(o) => {
                            for (k, o) in o.into_iter().enumerate() {
                                all[first + k] = Some(o);
                            }
                        }
                        Err(e) => {
                            *fate =
                                Fate::Dead(format!("The model could not score this record: {e}"))
                        }
                    }
                }
            }
            all
        }
    };
    let latency_us =
        (started.elapsed().as_micros() / rows.len().max(1) as u128).min(i32::MAX as u128) as i32;
    // Ids for the rows stored, consecutive per log row.
    let kept: Vec<usize> = fates
        .iter()
        .filter_map(|f| match f {
            Fate::Rows { first, n, .. } => Some(*first..*first + *n),
            _ => None,
        })
        .flatten()
        .collect();
    let blocks = if kept.is_empty() {
        Vec::new()
    } else {
        predictions::reserve_id_blocks(pool, (kept.len() as i64 + ID_BLOCK - 1) / ID_BLOCK)
            .await
            .map_err(|e| e.to_string())?
    };
    let mut ids = vec![0i64; rows.len()];
    for (k, &row) in kept.iter().enumerate() {
        ids[row] = blocks[k / ID_BLOCK as usize] + (k as i64 % ID_BLOCK);
    }
    // Results and dead letters, acknowledged by the broker before anything is committed.
    let mut outgoing: Vec<Outgoing> = Vec::new();
    let mut dead = 0i64;
    let mut scored = 0i64;
    for (m, fate) in batch.iter().zip(&fates) {
        let (topic, payload, headers) = match fate {
            Fate::Seen => continue,
            Fate::Dead(reason) => {
                dead += 1;
                let mut headers = OwnedHeaders::new().insert(Header {
                    key: ERROR_HEADER,
                    value: Some(reason.as_str()),
                });
                // The original record's headers travel with it.
                if let Some(h) = m.headers() {
                    for i in 0..h.count() {
                        let header = h.get(i);
                        headers = headers.insert(Header {
                            key: header.key,
                            value: header.value,
                        });
                    }
                }
                (
                    &stream.dead_letter_topic,
                    m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    Some(headers),
                )
            }
            Fate::Rows { first, n, many } => {
                scored += *n as i64;
                let answers: Vec<Value> = (*first..first + n)
                    .map(|r| {
                        let o = outcomes[r].as_ref();
                        let mut v = o.map_or(Value::Null, |o| o.to_json());
                        if let Value::Object(map) = &mut v {
                            map.insert("prediction_id".into(), ids[r].into());
                        }
                        v
                    })
                    .collect();
                let mut body = json!({
                    "model": served.model.name,
                    "version": served.version.version,
                    "source": {"topic": m.topic(), "partition": m.partition(), "offset": m.offset()},
                });
                if *many {
                    body["predictions"] = Value::Array(answers);
                } else if let Some(Value::Object(one)) = answers.into_iter().next() {
                    for (k, v) in one {
                        body[k] = v;
                    }
                }
                (&stream.output_topic, body.to_string().into_bytes(), None)
            }
        };
        outgoing.push((topic.as_str(), payload, m.key(), headers));
    }
    let mut deliveries = Vec::with_capacity(outgoing.len());
    for (topic, payload, key, headers) in &outgoing {
        let mut record = FutureRecord::to(topic).payload(payload);
        if let Some(key) = key {
            record = record.key(*key);
        }
        if let Some(h) = headers {
            record = record.headers(h.clone());
        }
        deliveries.push(producer.send(record, Duration::from_secs(30)));
    }
    for delivery in futures_util::future::join_all(deliveries).await {
        delivery.map_err(|(e, _)| format!("a result could not be produced: {e}"))?;
    }
    // The predictions and the partitions' offsets, in one transaction.
    let mut partitions: BTreeMap<i32, (Option<i64>, i64)> = BTreeMap::new();
    for m in &batch {
        let p = m.partition();
        let stored = seen.get(&p).copied();
        let entry = partitions.entry(p).or_insert((stored, 0));
        entry.1 = entry.1.max(m.offset() + 1);
    }
    let partitions: Vec<(i32, Option<i64>, i64)> = partitions
        .into_iter()
        .filter(|(_, (seen, next))| seen.is_none_or(|s| *next > s))
        .map(|(p, (seen, next))| (p, seen, next))
        .collect();
    let parts = if kept.is_empty() {
        Vec::new()
    } else {
        let kept_rows: Vec<Vec<f64>> = kept.iter().map(|&r| rows[r].clone()).collect();
        let outcomes: Vec<_> = kept.iter().filter_map(|&r| outcomes[r].clone()).collect();
        crate::prediction_log::split(
            NewPredictions {
                model_id: served.model.id,
                version_id: served.version.id,
                user_id: None,
                token_id: None,
                source: "stream",
                latency_us,
                n: kept.len(),
                inputs: crate::registry::encode::stored_inputs(
                    &served.card,
                    &served.loaded.signature.inputs,
                    &kept_rows,
                    &[],
                ),
                outputs: crate::registry::encode::stored_outputs(&served.card, &outcomes),
                shadow_of: None,
            },
            ID_BLOCK as usize,
        )
    };
    let firsts: Vec<i64> = (0..parts.len()).map(|i| blocks[i]).collect();
    let predictions: Vec<(i64, &NewPredictions)> = firsts.iter().copied().zip(&parts).collect();
    if !partitions.is_empty() {
        let stored = db::commit(
            pool,
            &db::Batch {
                stream_id: stream.id,
                partitions: &partitions,
                predictions: &predictions,
                records: scored,
                dead_letters: dead,
            },
        )
        .await
        .map_err(|e| format!("the predictions could not be stored: {e}"))?;
        if !stored {
            return Err("another consumer stored these records first (a rebalance); starting again from the committed offsets".into());
        }
    }
    // Only now the consumer group's offsets.
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    for m in &batch {
        let at = next.entry(m.partition()).or_insert(0);
        *at = (*at).max(m.offset() + 1);
    }
    let mut offsets = TopicPartitionList::new();
    for (partition, at) in next {
        offsets
            .add_partition_offset(&stream.input_topic, partition, Offset::Offset(at))
            .map_err(|e| e.to_string())?;
    }
    // Asynchronously: the offsets stored in Postgres already keep a record from being stored
    // twice, so a commit lost in a crash only means reading a few records again.
    consumer
        .commit(&offsets, CommitMode::Async)
        .map_err(|e| format!("the offsets could not be committed: {e}"))?;
    let series = state.metrics.version(
        served.version.id,
        &served.model.name,
        served.version.version,
    );
    series.success(scored as usize);
    state.metrics.stream_records(
        &stream.model,
        &stream.input_topic,
        scored as u64,
        dead as u64,
    );
    Ok(())
}

/// Runs the model on rows (off the async workers).
pub(super) async fn score(
    served: &Served,
    rows: &[Vec<f64>],
) -> Result<Vec<crate::registry::decode::Outcome>, String> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let tensors = crate::registry::encode::input_tensors(
        &served.card,
        &served.loaded.signature.inputs,
        rows,
        &[],
    );
    let (outputs, _) = plinth_inference::run_async(served.loaded.clone(), tensors)
        .await
        .map_err(|e| e.to_string())?;
    Ok(decode(
        &served.card,
        &served.loaded.signature,
        &outputs,
        rows.len(),
    ))
}
