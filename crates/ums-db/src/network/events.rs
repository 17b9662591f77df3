//! Database messaging between servers: events sent with NOTIFY and received on a LISTEN
//! connection (PostgreSQL only), and the change counters servers poll so that an event lost
//! while the listener reconnected is still applied.

use sea_orm::ConnectionTrait;
use sea_orm::sqlx::postgres::PgListener;

use crate::{Backend, Db, DbError, Result};

/// The database channel servers exchange events on.
pub const EVENTS_CHANNEL: &str = "ums_events";

/// A listener on [`EVENTS_CHANNEL`], from [`Db::listen`].
pub struct EventListener {
    inner: PgListener,
}

impl EventListener {
    /// Waits for the next event and returns its payload. An error means the connection to the
    /// database was lost and could not be opened again.
    pub async fn recv(&mut self) -> Result<String> {
        let notification = self
            .inner
            .recv()
            .await
            .map_err(|e| DbError::Invalid(format!("listen: {e}")))?;
        Ok(notification.payload().to_owned())
    }
}

impl Db {
    /// Sends an event to every server listening on [`EVENTS_CHANNEL`] (PostgreSQL NOTIFY,
    /// delivered on commit). A no-op on SQLite, where there is one server.
    pub async fn notify(&self, payload: &str) -> Result<()> {
        if self.backend == Backend::Postgres {
            self.conn()
                .execute_raw(self.stmt(
                    "SELECT pg_notify($1, $2)",
                    vec![EVENTS_CHANNEL.into(), payload.into()],
                ))
                .await?;
        }
        Ok(())
    }

    /// A listener on [`EVENTS_CHANNEL`], on PostgreSQL. It reconnects by itself after the
    /// database restarts; events sent while it was disconnected are lost, which is why servers
    /// also poll the counters.
    pub async fn listen(&self) -> Result<Option<EventListener>> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        let mut listener = PgListener::connect(&self.url)
            .await
            .map_err(|e| DbError::Invalid(format!("listen: {e}")))?;
        listener
            .listen(EVENTS_CHANNEL)
            .await
            .map_err(|e| DbError::Invalid(format!("listen: {e}")))?;
        Ok(Some(EventListener { inner: listener }))
    }

    /// The current values of the settings generation and the files revision.
    pub async fn change_counters(&self) -> Result<(i64, i64)> {
        let rows = self
            .conn()
            .query_all_raw(self.stmt(
                "SELECT name, value FROM counters WHERE name IN ('settings_generation', 'files_revision')",
                vec![],
            ))
            .await?;
        let mut out = (0, 0);
        for r in rows {
            let name: String = r.try_get("", "name")?;
            let value: i64 = r.try_get("", "value")?;
            match name.as_str() {
                "settings_generation" => out.0 = value,
                _ => out.1 = value,
            }
        }
        Ok(out)
    }
}
