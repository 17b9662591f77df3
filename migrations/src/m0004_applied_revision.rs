//! 1.3: the settings revision a device reports applying at check-in (its `known_revision`), so
//! administrators see whether it picked up its settings. One nullable column (NULL: no check-in
//! since): a 1.2 server keeps working, it never writes the column.

use sea_orm::sea_query::{Alias, Table};
use sea_orm::{DbBackend, Statement};

use crate::col::big_null;

pub fn statements(backend: DbBackend) -> Vec<Statement> {
    let add = Table::alter()
        .table(Alias::new("devices"))
        .add_column(big_null("applied_revision"))
        .to_owned();
    vec![backend.build(&add)]
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
                sql[0].contains("ALTER TABLE \"devices\" ADD COLUMN \"applied_revision\""),
                "{sql:?}"
            );
        }
    }
}
