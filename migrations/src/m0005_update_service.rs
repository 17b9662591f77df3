//! 1.4 (expand): what the migration service records. The schema history gains each step's
//! name, phase, the binary that applied it, by which process and how long it took (older rows
//! are filled in: every step before 1.4 only expanded); the registry gains the range of schema
//! versions each process runs on; `update_log` keeps every step of an update (backups,
//! migrations, drains, mode changes) for `umsctl update status`.

use sea_orm::sea_query::{Alias, Table};
use sea_orm::{DbBackend, Statement};

use crate::col::{big, big_null, id, index, table, text, text_null};

pub fn statements(backend: DbBackend) -> Vec<Statement> {
    let mut out = Vec::new();
    let add = |table_name: &str, col: sea_orm::sea_query::ColumnDef| {
        backend.build(
            &Table::alter()
                .table(Alias::new(table_name))
                .add_column(col)
                .to_owned(),
        )
    };
    for c in ["name", "phase", "binary_version", "applied_by"] {
        out.push(add("schema_history", text_null(c)));
    }
    out.push(add("schema_history", big_null("duration_ms")));
    out.push(Statement::from_string(
        backend,
        "UPDATE schema_history SET phase = 'expand', name = CASE version \
         WHEN '1.0' THEN 'initial' WHEN '1.1' THEN 'cluster' \
         WHEN '1.2' THEN 'shared_workplace' WHEN '1.3' THEN 'applied_revision' END \
         WHERE phase IS NULL",
    ));
    out.push(add("processes", text_null("schema_min")));
    out.push(add("processes", text_null("schema_max")));
    out.push(
        backend.build(
            &table("update_log")
                .col(id())
                // The database's clock.
                .col(big("at"))
                // The process that took the step ("server/3f2a..."), or the admin.
                .col(text("actor"))
                // "backup", "migrate", "drain", "mode", "contract", "end-update-mode", ...
                .col(text("step"))
                .col(text("detail"))
                // "ok" or "failed".
                .col(text("outcome"))
                .to_owned(),
        ),
    );
    out.push(backend.build(&index("update_log_at", "update_log", &["at"], false)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_for_both_backends() {
        for backend in [DbBackend::Sqlite, DbBackend::Postgres] {
            let sql: Vec<String> = statements(backend).iter().map(|s| s.sql.clone()).collect();
            assert!(
                sql.iter()
                    .any(|s| s.contains("ADD COLUMN \"phase\"") && s.contains("schema_history")),
                "{sql:?}"
            );
            assert!(
                sql.iter()
                    .any(|s| s.contains("CREATE TABLE \"update_log\""))
            );
        }
    }
}
