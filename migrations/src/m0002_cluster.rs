//! 1.1: the HA network. The network CA and network tokens, the process registry, leases for
//! network-wide singletons, and replicated files. Only new tables: a 1.0 server keeps working.

use sea_orm::sea_query::{Alias, Index};
use sea_orm::{DbBackend, Statement};

use crate::col::{big, big_null, boolean, id, index, table, text, text_null};

pub fn statements(backend: DbBackend) -> Vec<Statement> {
    let tables = [
        // One row (id 1): the network CA certificate every component trusts.
        table("cluster")
            .col(big("id").primary_key())
            .col(text("ca_cert_pem"))
            // Hex sha256 of the CA certificate: what a network token pins.
            .col(text("ca_sha256"))
            .col(big("created_at"))
            .to_owned(),
        // Network tokens: the current one (expires_at NULL) and rotated ones in their grace period.
        table("network_tokens")
            .col(id())
            // sha256 of the token's secret, hex.
            .col(text("secret_sha256"))
            // The CA private key sealed with a key derived from the token's secret (hex): a server
            // that joins with the token and the database URL recovers the CA from it.
            .col(text("ca_key_sealed"))
            // The token's secret sealed with a key derived from the CA private key (hex): any
            // server can export the token again.
            .col(text("secret_sealed"))
            .col(big("created_at"))
            .col(big_null("expires_at"))
            .to_owned(),
        // The process registry: every server, broker, watchdog and swp-auth of the network.
        table("processes")
            .col(text("id").primary_key())
            .col(text("kind"))
            .col(text("host"))
            .col(text("version"))
            .col(text("schema_version"))
            .col(big("device_port"))
            .col(big("admin_port"))
            .col(big("internal_port"))
            // "running" or "stopped" as last reported; "running" rows silent past the timeout
            // read as stopped.
            .col(text("status"))
            .col(text("mode"))
            // The database's clock at the last heartbeat.
            .col(big("last_heartbeat"))
            // The process's clock at the last heartbeat, and its offset from the database's.
            .col(big("clock_ms"))
            .col(big("clock_offset_ms"))
            .col(text("cert_fingerprint"))
            .col(text_null("supervisor_id"))
            .col(big("pid"))
            .col(big("started_at"))
            .to_owned(),
        // Leases of network-wide singletons. `fence` grows with every change of holder; writes of
        // the holder check it in the same transaction, so a holder that lost the lease cannot
        // write.
        table("leases")
            .col(text("name").primary_key())
            .col(text("holder"))
            .col(big("fence"))
            .col(big("expires_at"))
            .to_owned(),
        table("files")
            .col(id())
            .col(text("path"))
            .col(text("sha256"))
            .col(big("size"))
            .col(big("created_at"))
            .col(text("origin_server"))
            .col(boolean("deleted"))
            .to_owned(),
        // Which servers hold which file.
        table("file_replicas")
            .col(big("file_id"))
            .col(text("server_id"))
            // "present", "pending" or "failed".
            .col(text("status"))
            .col(text("error"))
            .col(big("updated_at"))
            .primary_key(
                Index::create()
                    .col(Alias::new("file_id"))
                    .col(Alias::new("server_id")),
            )
            .to_owned(),
    ];
    let indexes = [
        index("files_sha256", "files", &["sha256"], false),
        index("files_path", "files", &["path", "deleted"], false),
        index("processes_kind", "processes", &["kind", "status"], false),
    ];
    let mut out: Vec<Statement> = tables.iter().map(|t| backend.build(t)).collect();
    out.extend(indexes.iter().map(|i| backend.build(i)));
    out.push(Statement::from_string(
        backend,
        "INSERT INTO counters (name, value) VALUES ('files_revision', 1)",
    ));
    out
}
