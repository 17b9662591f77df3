//! 1.7: software releases of the suite. `releases` holds every accepted release (its signed
//! manifest as uploaded, verified by the server against its pinned keys, and verified again by
//! every node against the key it pinned); the newest revision is the network's software
//! revision. `release_nodes` is what each node reports of its update (installed revision,
//! state, last error), `release_log` every step a node took. Only new tables: a 1.6 server keeps
//! working.

use sea_orm::{DbBackend, Statement};

use crate::col::{big, id, index, table, text};

pub fn statements(backend: DbBackend) -> Vec<Statement> {
    let releases = table("releases")
        .if_not_exists()
        .col(id())
        // The signed revision number; unique, so one revision names one release.
        .col(big("revision"))
        .col(text("version"))
        // sha256 of the manifest's canonical form.
        .col(text("digest"))
        // The signed manifest (JSON), exactly as uploaded.
        .col(text("manifest"))
        .col(big("uploaded_at"))
        .col(text("uploaded_by"))
        .to_owned();
    let by_revision = index("releases_revision", "releases", &["revision"], true);
    let nodes = table("release_nodes")
        .if_not_exists()
        // The node's watchdog id.
        .col(text("node_id").primary_key())
        .col(text("host"))
        // Comma-separated roles the node installs.
        .col(text("roles"))
        // 0: nothing installed through releases yet.
        .col(big("installed_revision"))
        // The revision the node works on (installing or failed), 0 when idle.
        .col(big("target_revision"))
        // idle, downloading, installing, restarting, checking, updated, failed, rolled-back.
        .col(text("state"))
        .col(text("error"))
        .col(big("updated_at"))
        .to_owned();
    let log = table("release_log")
        .if_not_exists()
        .col(id())
        .col(big("at"))
        .col(text("node_id"))
        .col(big("revision"))
        // compare, download, install, switch, restart, check, done, rollback, error.
        .col(text("step"))
        .col(text("detail"))
        .to_owned();
    let log_by_node = index("release_log_node", "release_log", &["node_id", "at"], false);
    vec![
        backend.build(&releases),
        backend.build(&by_revision),
        backend.build(&nodes),
        backend.build(&log),
        backend.build(&log_by_node),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_for_both_backends() {
        for backend in [DbBackend::Sqlite, DbBackend::Postgres] {
            let sql: Vec<String> = statements(backend).iter().map(|s| s.sql.clone()).collect();
            assert_eq!(sql.len(), 5);
            assert!(
                sql[0].contains("CREATE TABLE IF NOT EXISTS \"releases\""),
                "{sql:?}"
            );
            assert!(sql[1].contains("UNIQUE"), "{sql:?}");
        }
    }
}
