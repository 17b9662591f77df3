//! The server's background tasks, each running until the stop signal: the heartbeat (registry,
//! running servers, scheduler lease), the event listener, and the file replicator.

pub mod events;
pub mod heartbeat;
pub mod replicator;

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::state::AppState;

/// Starts every background task.
pub fn spawn(state: &Arc<AppState>, stop: &watch::Sender<bool>) -> Vec<JoinHandle<()>> {
    vec![
        tokio::spawn(heartbeat::run(state.clone(), stop.subscribe())),
        tokio::spawn(events::run(state.clone(), stop.subscribe())),
        tokio::spawn(replicator::run(state.clone(), stop.subscribe())),
    ]
}
