//! 1.8: how the network's rollout of releases goes, set by administrators: paused or not, how
//! many nodes may update at once, and a rollback (the release the network wants again, and the
//! newest release it was made from: a newer upload ends it). One row, absent until an
//! administrator first changes something. Only a new table: a 1.7 server keeps working.

use sea_orm::sea_query::{Alias, ColumnDef};
use sea_orm::{DbBackend, Statement};

use crate::col::{big, table, text};

pub fn statements(backend: DbBackend) -> Vec<Statement> {
    let rollout = table("release_rollout")
        .if_not_exists()
        // Always 1: the network has one rollout.
        .col(
            ColumnDef::new(Alias::new("id"))
                .big_integer()
                .not_null()
                .primary_key()
                .to_owned(),
        )
        // 1: no update slot is handed out.
        .col(big("paused"))
        .col(text("paused_by"))
        .col(big("paused_at"))
        // How many nodes may hold an update slot at once.
        .col(big("concurrency"))
        // The revision the network wants again after a rollback; 0: the newest release.
        .col(big("rollback_to"))
        // The newest revision when the rollback was made: a newer upload ends the rollback.
        .col(big("rollback_from"))
        .col(text("rollback_by"))
        .col(big("rollback_at"))
        .to_owned();
    vec![backend.build(&rollout)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_for_both_backends() {
        for backend in [DbBackend::Sqlite, DbBackend::Postgres] {
            let sql: Vec<String> = statements(backend).iter().map(|s| s.sql.clone()).collect();
            assert_eq!(sql.len(), 1);
            assert!(
                sql[0].contains("CREATE TABLE IF NOT EXISTS \"release_rollout\""),
                "{sql:?}"
            );
        }
    }
}
