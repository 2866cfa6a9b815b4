//! Kafka streams: a model scores the JSON records of a topic and produces one result per record
//! to an output topic, storing every prediction (source `stream`).
//!
//! Streams are defined on a model's admin page and run by every instance with
//! `PLINTH_KAFKA_BROKERS` set: each joins the stream's consumer group, so Kafka shares the
//! topic's partitions between instances and moves them when one dies. A batch of records is
//! scored, its results and dead letters produced (and acknowledged by the broker), then its
//! predictions and each partition's next offset committed to Postgres in one transaction, and
//! only then the group's offsets committed to Kafka. A record seen again after a crash is below
//! its partition's stored offset: it is recognised and not stored twice (its result may be
//! produced twice: the output topic is at least once).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::web::Data;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;
use tokio::sync::watch;
use tracing::Instrument;

use crate::state::AppState;
use plinth_store::streams::{self as db, StreamRow};

mod positions;
mod process;
mod trouble;

use positions::{check_stuck, Positions};
use process::process;
use trouble::{ProducerTrouble, Trouble};

/// Most records scored together.
const MAX_BATCH: usize = 2000;
/// How long a batch waits for more records once it has one.
const BATCH_WAIT: Duration = Duration::from_millis(10);
/// The header a dead letter's reason travels in.
pub const ERROR_HEADER: &str = "plinth-error";

/// Runs the streams while the instance runs: starts a consumer for every running stream,
/// stops those paused or removed, and restarts one that failed (a broker away) after a pause.
pub async fn supervise(state: Data<AppState>) {
    let Some(brokers) = state.settings.kafka_brokers.clone() else {
        return;
    };
    let mut running: HashMap<i64, (watch::Sender<bool>, tokio::task::JoinHandle<()>)> =
        HashMap::new();
    // Streams that failed and have not run a minute since: a broker away alerts once, not at
    // every restart.
    let failing: Arc<Mutex<HashSet<i64>>> = Arc::default();
    loop {
        if state.draining.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        match db::all(&state.pool).await {
            Ok(streams) => {
                let wanted: HashMap<i64, StreamRow> = streams
                    .into_iter()
                    .filter(|s| s.state == "running")
                    .map(|s| (s.id, s))
                    .collect();
                running.retain(|id, (stop, task)| {
                    let keep = wanted.contains_key(id) && !task.is_finished();
                    if !keep {
                        let _ = stop.send(true);
                    }
                    keep
                });
                for (id, stream) in wanted {
                    if running.contains_key(&id) {
                        continue;
                    }
                    let (stop, stopped) = watch::channel(false);
                    let (state, brokers) = (state.clone(), brokers.clone());
                    let failing = failing.clone();
                    let task = tokio::spawn(async move {
                        let name = stream.input_topic.clone();
                        let (id, model_id, model) =
                            (stream.id, stream.model_id, stream.model.clone());
                        let started = Instant::now();
                        let outcome = run(&state, &brokers, stream, stopped).await;
                        let first_failure = {
                            let mut failing = failing.lock().unwrap_or_else(|p| p.into_inner());
                            if outcome.is_ok() || started.elapsed() > Duration::from_secs(60) {
                                failing.remove(&id);
                            }
                            outcome.is_err() && failing.insert(id)
                        };
                        match outcome {
                            Ok(()) => tracing::info!(topic = %name, "stream stopped"),
                            Err(e) => {
                                tracing::warn!(topic = %name, error = %e, "stream failed; it restarts shortly");
                                if let Err(e) = db::set_error(&state.pool, id, Some(&e)).await {
                                    tracing::warn!(error = %e, "could not record a stream's error");
                                }
                                if first_failure {
                                    crate::automation::webhooks::alert(
                                        &state.pool,
                                        "stream.failed",
                                        Some((model_id, &model)),
                                        format!("{model}: the stream from {name} failed ({e}); it restarts and keeps trying."),
                                        json!({"stream": id, "input_topic": name, "error": e.to_string()}),
                                    )
                                    .await;
                                }
                                tokio::time::sleep(Duration::from_secs(2)).await;
                            }
                        }
                    });
                    running.insert(id, (stop, task));
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not read the streams"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for (_, (stop, task)) in running {
        let _ = stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
}

/// Where each partition's next record to store is, as Postgres last said (shared between the
/// stream's loop, which refreshes it, and the consumer's rebalance callback, which reads it).
type Stored = Arc<Mutex<HashMap<i32, i64>>>;

/// The consumer's context: a partition assigned to this instance starts at the offset stored
/// in Postgres with the predictions, not at the group's offset in Kafka. Postgres is the
/// record of what was stored (the Kafka commit after it is for lag and tools); a broker whose
/// group offsets are behind, ahead or lost cannot make a record be skipped or stored twice.
struct StreamContext {
    topic: String,
    stored: Stored,
    trouble: Trouble,
}

impl ClientContext for StreamContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.trouble.note(&error, reason);
    }
}

impl ConsumerContext for StreamContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS {
            let partitions: Vec<i32> = tpl
                .elements_for_topic(&self.topic)
                .iter()
                .map(|e| e.partition())
                .collect();
            if let Ok(stored) = self.stored.lock() {
                for p in partitions {
                    if let Some(&next) = stored.get(&p) {
                        let _ = tpl.set_partition_offset(&self.topic, p, Offset::Offset(next));
                    }
                }
            }
            tracing::debug!(topic = %self.topic, assigned = ?tpl.to_topic_map(), "partitions assigned");
            if let Err(e) = consumer.assign(tpl) {
                tracing::warn!(topic = %self.topic, error = %e, "could not take the partitions assigned");
            }
        } else if let Err(e) = consumer.unassign() {
            tracing::warn!(topic = %self.topic, error = %e, "could not give the partitions back");
        }
    }
}

type Reader = StreamConsumer<StreamContext>;
type Writer = FutureProducer<ProducerTrouble>;

/// The clients of one stream.
fn clients(
    brokers: &str,
    extra: &[(String, String)],
    stream: &StreamRow,
    stored: Stored,
    trouble: &Trouble,
) -> Result<(Reader, Writer), String> {
    let base = || {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", brokers);
        for (k, v) in extra {
            config.set(k, v);
        }
        config
    };
    let consumer: Reader = base()
        .set("group.id", &stream.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("isolation.level", "read_uncommitted")
        .create_with_context(StreamContext {
            topic: stream.input_topic.clone(),
            stored,
            trouble: trouble.clone(),
        })
        .map_err(|e| format!("the Kafka consumer could not be created: {e}"))?;
    consumer
        .subscribe(&[&stream.input_topic])
        .map_err(|e| format!("could not subscribe to {}: {e}", stream.input_topic))?;
    let producer: Writer = base()
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .create_with_context(ProducerTrouble(trouble.clone()))
        .map_err(|e| format!("the Kafka producer could not be created: {e}"))?;
    Ok((consumer, producer))
}

async fn run(
    state: &Data<AppState>,
    brokers: &str,
    stream: StreamRow,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let stored: Stored = Arc::new(Mutex::new(
        db::watermarks(&state.pool, stream.id)
            .await
            .map_err(|e| e.to_string())?,
    ));
    let trouble = Trouble::default();
    let (consumer, producer) = clients(
        brokers,
        &state.settings.kafka_config,
        &stream,
        stored.clone(),
        &trouble,
    )?;
    let consumer = Arc::new(consumer);
    let config = crate::config::redacted_kafka_config(&state.settings.kafka_config).join(",");
    tracing::info!(topic = %stream.input_topic, model = %stream.model, %config, "stream started");
    let mut last_lag = Instant::now();
    // Whether the stream's row shows an error this loop has not seen cleared.
    let mut showing = stream.last_error.is_some();
    let mut positions = Positions::default();
    // Since when this consumer has held no partition, and the stream's stored offsets then.
    let mut idle: Option<(Instant, i64)> = None;
    loop {
        let first = tokio::select! {
            _ = stop.changed() => return Ok(()),
            m = consumer.recv() => m.map_err(|e| trouble.reading(&stream.input_topic, &e))?.detach(),
            _ = tokio::time::sleep(Duration::from_secs(2)) => {
                if report(state, &stream, &trouble).await? {
                    showing = true;
                } else if showing && consumer.assignment().is_ok_and(|a| a.count() > 0) {
                    // Partitions assigned: the brokers answer again.
                    showing = false;
                    if let Err(e) = db::set_error(&state.pool, stream.id, None).await {
                        tracing::warn!(error = %e, "could not clear a stream's error");
                    }
                }
                check_stuck(state, &consumer, &stream, &mut idle).await?;
                continue;
            }
        };
        idle = None;
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + BATCH_WAIT;
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Ok(Ok(m)) => batch.push(m.detach()),
                Ok(Err(e)) => return Err(trouble.reading(&stream.input_topic, &e)),
                Err(_) => break,
            }
        }
        let expected: HashMap<i32, i64> = match stored.lock() {
            Ok(s) => s.clone(),
            Err(_) => HashMap::new(),
        };
        let reread = positions.follow(&batch, &expected, &stream.input_topic);
        if !reread.is_empty() {
            batch.retain(|m| !reread.contains_key(&m.partition()));
            for (&p, &at) in &reread {
                let (consumer, topic) = (consumer.clone(), stream.input_topic.clone());
                tokio::task::spawn_blocking(move || {
                    consumer.seek(&topic, p, Offset::Offset(at), Duration::from_secs(5))
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("could not read partition {p} again: {e}"))?;
            }
            if batch.is_empty() {
                continue;
            }
        }
        let span = tracing::info_span!(
            "stream.batch",
            stream = stream.id,
            model = %stream.model,
            records = batch.len()
        );
        process(state, &consumer, &producer, &stream, batch, &stored)
            .instrument(span)
            .await?;
        if last_lag.elapsed() > Duration::from_secs(2) {
            last_lag = Instant::now();
            measure_lag(state, &consumer, &stream).await;
        }
    }
}

/// Puts what the clients reported since the last look on the stream's row and in the log; a
/// refusal (credentials, certificate) ends the clients with it, to be made again after a pause.
/// Whether it put an error on the row.
async fn report(
    state: &Data<AppState>,
    stream: &StreamRow,
    trouble: &Trouble,
) -> Result<bool, String> {
    let Some(reported) = trouble.take() else {
        return Ok(false);
    };
    if reported.fatal {
        return Err(reported.message);
    }
    tracing::warn!(topic = %stream.input_topic, error = %reported.message, "stream waiting for the brokers");
    if let Err(e) = db::set_error(&state.pool, stream.id, Some(&reported.message)).await {
        tracing::warn!(error = %e, "could not record a stream's error");
    }
    Ok(true)
}

/// Records behind on the partitions this instance holds: to `/metrics` and the stream's row.
async fn measure_lag(state: &Data<AppState>, consumer: &Arc<Reader>, stream: &StreamRow) {
    let consumer = consumer.clone();
    let topic = stream.input_topic.clone();
    let lag = tokio::task::spawn_blocking(move || -> Option<i64> {
        let assigned = consumer.assignment().ok()?;
        let committed = consumer
            .committed_offsets(assigned.clone(), Duration::from_secs(2))
            .ok()?;
        let mut lag = 0;
        for e in assigned.elements_for_topic(&topic) {
            let (_, high) = consumer
                .fetch_watermarks(&topic, e.partition(), Duration::from_secs(2))
                .ok()?;
            let at = committed
                .find_partition(&topic, e.partition())
                .and_then(|p| match p.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                })
                .unwrap_or(0);
            lag += (high - at).max(0);
        }
        Some(lag)
    })
    .await
    .ok()
    .flatten();
    if let Some(lag) = lag {
        state
            .metrics
            .stream_lag(&stream.model, &stream.input_topic, lag);
        if let Err(e) = db::set_lag(&state.pool, stream.id, lag).await {
            tracing::warn!(error = %e, "could not record a stream's lag");
        }
    }
}
