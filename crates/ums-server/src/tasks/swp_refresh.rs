//! The Shared Workplace session refresh: directory changes (a user added to or removed from a
//! group, moved to another OU) reach a logged-in user without a new login. The server that runs
//! the network scheduler asks swp-auth again about the users of sessions older than
//! `[swp] refresh_s`; an answer that differs is stored under a new session tag, so the device's
//! next check-in sees its settings changed (on whichever server it checks in).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::network::stopped;
use crate::state::AppState;

/// Sessions looked at per round.
const BATCH: u64 = 100;

/// Runs until `stop` flips; does nothing with a refresh of zero.
pub async fn run(state: Arc<AppState>, stop: watch::Receiver<bool>) {
    let refresh = state.info.swp_refresh;
    if refresh.is_zero() {
        return;
    }
    let stopping = stopped(stop);
    tokio::pin!(stopping);
    let every = (refresh / 4).clamp(Duration::from_secs(1), Duration::from_secs(30));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = &mut stopping => break,
        }
        if !state.network.is_scheduler() || !state.network.available() {
            continue;
        }
        if let Err(e) = round(&state, refresh).await {
            tracing::warn!(error = %e, "Shared Workplace session refresh");
        }
    }
}

async fn round(state: &AppState, refresh: Duration) -> Result<(), crate::error::ApiError> {
    let now = ums_db::now_ms();
    let before = now - i64::try_from(refresh.as_millis()).unwrap_or(i64::MAX);
    let stale = state.db.stale_swp_sessions(before, BATCH).await?;
    let mut changed = 0;
    for s in stale {
        let model = state.settings();
        let Some(directory) = model.swp.directories.get(&s.directory_id) else {
            continue;
        };
        let dir = state.swp_directory(directory)?;
        let json = match state.swp.lookup(dir, s.login.clone()).await {
            Ok(user) => serde_json::to_string(&user).ok(),
            Err(e) => {
                // The session keeps what the login resolved; asked again after the next interval.
                tracing::warn!(device_id = s.device_id, user = %s.login, error = %e, "cannot refresh the user of a session");
                None
            }
        };
        if state
            .db
            .refresh_swp_session(s.device_id, s.tag, json.as_deref(), rand::random(), now)
            .await?
        {
            changed += 1;
            tracing::info!(device_id = s.device_id, user = %s.login, "the directory changed a logged-in user's groups or OUs");
        }
    }
    if changed > 0 {
        tracing::debug!(changed, "Shared Workplace sessions refreshed");
    }
    Ok(())
}
