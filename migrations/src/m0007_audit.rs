//! 1.6: the audit log of administrators' changes (who, when, what, from where), and the hash of
//! the cluster-relevant settings each process reports in its heartbeat, so the network check
//! finds servers configured differently. Additive only: a new table and one nullable column
//! (NULL: a process of an older version that reports no hash), so a 1.5 server keeps working.

use sea_orm::sea_query::{Alias, Table};
use sea_orm::{DbBackend, Statement};

use crate::col::{big, id, index, table, text, text_null};

pub fn statements(backend: DbBackend) -> Vec<Statement> {
    let audit = table("audit_log")
        .if_not_exists()
        .col(id())
        .col(big("at"))
        // The administrator's user name (empty for a step the server took on its own).
        .col(text("admin"))
        // The operation, e.g. `UpdateProfileParams`.
        .col(text("action"))
        // What it changed, e.g. `profile 7`.
        .col(text("target"))
        // The request, with secrets redacted (JSON text).
        .col(text("detail"))
        // The client's address, or `server <id>` for a server's own step.
        .col(text("source"))
        .to_owned();
    let by_time = index("audit_log_at", "audit_log", &["at"], false);
    let by_admin = index("audit_log_admin", "audit_log", &["admin", "at"], false);
    let config_hash = Table::alter()
        .table(Alias::new("processes"))
        .add_column(text_null("config_hash"))
        .to_owned();
    vec![
        backend.build(&audit),
        backend.build(&by_time),
        backend.build(&by_admin),
        backend.build(&config_hash),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_for_both_backends() {
        for backend in [DbBackend::Sqlite, DbBackend::Postgres] {
            let sql: Vec<String> = statements(backend).iter().map(|s| s.sql.clone()).collect();
            assert_eq!(sql.len(), 4);
            assert!(
                sql[0].contains("CREATE TABLE IF NOT EXISTS \"audit_log\""),
                "{sql:?}"
            );
            assert!(
                sql[3].contains("ALTER TABLE \"processes\" ADD COLUMN \"config_hash\""),
                "{sql:?}"
            );
        }
    }
}
