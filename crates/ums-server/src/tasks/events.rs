//! Applying events from the other servers: from NOTIFY when the database is PostgreSQL, and
//! from a poll of the change counters every `poll` (which also covers events lost while the
//! listener reconnected, and SQLite, which has no NOTIFY).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::network::{Event, stopped};
use crate::state::AppState;

/// Runs until `stop` flips.
pub async fn run(state: Arc<AppState>, stop: watch::Receiver<bool>) {
    let network = state.network.clone();
    let db = state.db.clone();
    // Local events (this server's own writes) are applied where they are made; remote ones here.
    let (remote_tx, mut remote_rx) = tokio::sync::mpsc::channel::<Event>(1024);
    let notify_task = {
        let db = db.clone();
        let own = network.process_id.clone();
        tokio::spawn(async move {
            loop {
                match db.listen().await {
                    Ok(Some(mut listener)) => loop {
                        match listener.recv().await {
                            Ok(n) => match serde_json::from_str::<Event>(&n) {
                                Ok(e) if e.origin() != own => {
                                    let _ = remote_tx.send(e).await;
                                }
                                Ok(_) => {}
                                Err(err) => tracing::warn!(error = %err, "unreadable event"),
                            },
                            Err(e) => {
                                tracing::warn!(error = %e, "event listener lost the database; reconnecting");
                                break;
                            }
                        }
                    },
                    Ok(None) => return,
                    Err(e) => tracing::warn!(error = %e, "cannot listen for events; retrying"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    let mut poll = tokio::time::interval(network.config.poll);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut files_seen = db.change_counters().await.map(|c| c.1).unwrap_or_default();
    let stopping = stopped(stop);
    tokio::pin!(stopping);
    loop {
        tokio::select! {
            () = &mut stopping => break,
            Some(event) = remote_rx.recv() => {
                state.metrics.events.inc(&[event.kind()]);
                apply(&state, &event).await;
                network.deliver(event);
            }
            _ = poll.tick() => {
                let Ok(now) = db.change_counters().await else { continue };
                if let Err(e) = state.reload_settings_if_newer(now.0).await
                {
                    tracing::warn!(error = %e, "settings reload failed");
                }
                if now.1 != files_seen {
                    network.deliver(Event::FilesChanged { origin: String::new() });
                }
                files_seen = now.1;
            }
        }
    }
    notify_task.abort();
}

async fn apply(state: &AppState, event: &Event) {
    match event {
        Event::SettingsChanged { .. } => {
            if let Err(e) = state.reload_settings().await {
                tracing::warn!(error = %e, "settings reload failed");
            }
        }
        Event::DeviceForgotten { device_id, .. } => state.forget_device(*device_id),
        Event::ProcessesChanged { .. } => {
            // A server draining leaves the brokers' rotation now, not at the next heartbeat.
            if let Ok((rows, now)) = state.db.list_processes().await {
                let silent = state.network.config.silent_after.as_millis() as i64;
                state
                    .network
                    .set_servers(crate::network::registry::running_servers(
                        &rows, now, silent,
                    ));
            }
        }
        Event::FilesChanged { .. } => {}
        Event::Reconnect { .. } => {
            tracing::info!("asked to reconnect to the database");
        }
        Event::Probe { id, sent_at_ms, .. } => {
            state.network.note_probe(id);
            let lag = (ums_db::now_ms() - sent_at_ms).max(0) as f64 / 1000.0;
            state.metrics.event_lag.observe(&[], lag);
        }
    }
}
