//! The server's background tasks, each running until the stop signal: the heartbeat (registry,
//! running servers, scheduler lease), the event listener, the file replicator, and the Shared
//! Workplace session refresh.

pub mod events;
pub mod heartbeat;
pub mod replicator;
pub mod swp_refresh;

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
        tokio::spawn(swp_refresh::run(state.clone(), stop.subscribe())),
    ]
}
