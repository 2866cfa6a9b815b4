//! The shadow worker: takes live copies off the [`super::Queue`], has each shadow version answer
//! on the idle thread, and hands the answers to the prediction log's second lane.

use crate::registry::decode::decode;
use crate::registry::encode::stored_outputs;
use crate::registry::Selector;
use crate::state::AppState;
use plinth_inference as inference;
use plinth_store::predictions::NewPredictions;
use std::sync::atomic::Ordering;

use super::LiveCopy;

/// Copies being answered at once (they queue for the idle thread).
const IN_FLIGHT: usize = 8;

/// Runs the shadow worker until the queue closes (the state is dropped) or the task is aborted.
pub async fn work(state: actix_web::web::Data<AppState>) {
    use futures_util::stream::{FuturesUnordered, StreamExt};
    let Some(mut rx) = state.shadow.take_receiver() else {
        return;
    };
    let mut running = FuturesUnordered::new();
    loop {
        tokio::select! {
            copy = rx.recv(), if running.len() < IN_FLIGHT => {
                let Some(copy) = copy else { break };
                let state = state.clone();
                running.push(async move {
                    for &number in copy.shadows.iter() {
                        if let Err(e) = answer(&state, &copy, number).await {
                            tracing::debug!(model = %copy.model, version = number, error = %e, "a shadow did not answer");
                        }
                    }
                });
            }
            Some(()) = running.next(), if !running.is_empty() => {}
        }
    }
    while running.next().await.is_some() {}
}

/// One shadow version's answer to one copy, stored.
async fn answer(state: &AppState, copy: &LiveCopy, number: i32) -> anyhow::Result<()> {
    let served = crate::serving::served(state, &copy.model, &Selector::Number(number))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if served.version.id == copy.live_version_id {
        return Ok(());
    }
    // No room to store an answer: drop the copy before computing it.
    if !state.log.later_has_room() {
        state.shadow.dropped.fetch_add(1, Ordering::Relaxed);
        state.metrics.shadow_dropped(&copy.model);
        anyhow::bail!("the prediction log's queue for shadow answers is full");
    }
    let started = std::time::Instant::now();
    // Everything a shadow computes, its answer and its stored form, runs on the idle thread.
    let (model, card, tensors, n) = (
        served.loaded.clone(),
        served.card.clone(),
        copy.tensors.clone(),
        copy.n,
    );
    let work = move || {
        model.run(tensors).map(|outputs| {
            let outcomes = decode(&card, &model.signature, &outputs, n);
            stored_outputs(&card, &outcomes)
        })
    };
    let Some(ran) = state.shadow.idle.run(work).await else {
        anyhow::bail!("the shadows' thread is gone");
    };
    let outputs = match ran {
        Ok(outputs) => outputs,
        Err(e) => {
            let reason = match e {
                inference::RunError::BadInput(_) => "invalid_input",
                inference::RunError::Failed(_) => "model_error",
            };
            crate::serving::failed(state, &served, "shadow", reason);
            anyhow::bail!("{e:?}");
        }
    };
    let latency_us =
        (started.elapsed().as_micros() / copy.n.max(1) as u128).min(i32::MAX as u128) as i32;
    // Handed to the prediction log's second lane: nobody waits for a shadow's answer, so its rows
    // are gathered and written a few times a second, apart from the live requests' commits.
    let handed = state.log.record_later(NewPredictions {
        model_id: served.model.id,
        version_id: served.version.id,
        // Nobody's: a caller's history and API list never show what a shadow answered (the
        // live row, through `shadow_of`, says whose request it was).
        user_id: None,
        token_id: None,
        source: "shadow",
        latency_us,
        n: copy.n,
        inputs: copy.stored.clone(),
        outputs,
        shadow_of: Some(copy.live_first_id),
    });
    if !handed {
        state.shadow.dropped.fetch_add(1, Ordering::Relaxed);
        state.metrics.shadow_dropped(&copy.model);
        anyhow::bail!("the prediction log's queue for shadow answers is full");
    }
    state
        .metrics
        .version(served.version.id, &served.model.name, number)
        .success(copy.n);
    Ok(())
}
