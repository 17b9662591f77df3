//! 1.5: Shared Workplace at scale. Additive only (new tables, nullable columns), so a server of
//! an earlier 1.x version keeps working on it:
//!
//! - `devices.swp_session`: the tag of the session of the user logged in on the device (NULL:
//!   nobody), returned by the check-in's `UPDATE ... RETURNING`, so a check-in knows without
//!   another read whether a user is logged in and whether it is the session it knows;
//! - `swp_sessions.tag`, `.server_id`, `.refreshed_at`: the same tag, the server that took the
//!   login, when the directory was last asked about the user;
//! - `swp_folders`: Shared Workplace switched on or off for a folder and the folders below it;
//! - `swp_licences`: the licence pool (seats and expiry), `swp_seats`: which device holds a seat
//!   of which licence.

use sea_orm::sea_query::{Alias, ForeignKeyAction, Table};
use sea_orm::{DbBackend, Statement};

use crate::col::{big, big_null, boolean, id, index, table, text, text_null};

pub fn statements(backend: DbBackend) -> Vec<Statement> {
    let alters = [
        Table::alter()
            .table(Alias::new("devices"))
            .add_column(big_null("swp_session"))
            .to_owned(),
        Table::alter()
            .table(Alias::new("swp_sessions"))
            .add_column(big_null("tag"))
            .to_owned(),
        Table::alter()
            .table(Alias::new("swp_sessions"))
            .add_column(text_null("server_id"))
            .to_owned(),
        Table::alter()
            .table(Alias::new("swp_sessions"))
            .add_column(big_null("refreshed_at"))
            .to_owned(),
    ];
    let fk = |from_table: &str, from_col: &str, to_table: &str| {
        crate::col::fk(
            from_table,
            from_col,
            to_table,
            "id",
            ForeignKeyAction::Cascade,
        )
    };
    let tables = [
        table("swp_folders")
            .col(big("folder_id").primary_key())
            .col(boolean("enabled"))
            .col(big("updated_at"))
            .foreign_key(&mut fk("swp_folders", "folder_id", "folders"))
            .to_owned(),
        table("swp_licences")
            .col(id())
            .col(text("name"))
            // Seats: devices that may hold one at a time
            .col(big("seats"))
            // Milliseconds since the epoch after which the licence admits no new login
            .col(big("expires_at"))
            .col(big("created_at"))
            .to_owned(),
        table("swp_seats")
            .col(big("device_id").primary_key())
            .col(big("licence_id"))
            .col(big("taken_at"))
            .foreign_key(&mut fk("swp_seats", "device_id", "devices"))
            .foreign_key(&mut fk("swp_seats", "licence_id", "swp_licences"))
            .to_owned(),
    ];
    let mut out: Vec<Statement> = alters.iter().map(|a| backend.build(a)).collect();
    out.extend(tables.iter().map(|t| backend.build(t)));
    out.push(backend.build(&index("swp_licences_name", "swp_licences", &["name"], true)));
    out.push(backend.build(&index(
        "swp_seats_licence",
        "swp_seats",
        &["licence_id"],
        false,
    )));
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
                sql[0].contains("ALTER TABLE \"devices\" ADD COLUMN \"swp_session\""),
                "{sql:?}"
            );
            assert!(
                sql.iter()
                    .any(|s| s.contains("CREATE TABLE \"swp_licences\""))
            );
            // Additive only: nothing dropped, nothing renamed.
            assert!(
                sql.iter()
                    .all(|s| !s.contains("DROP") && !s.contains("RENAME")),
                "{sql:?}"
            );
        }
    }
}
