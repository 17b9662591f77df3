//! 1.0: the initial schema. Times are milliseconds since the epoch in BIGINT columns, which both
//! backends store alike.

use sea_orm::sea_query::{Alias, ForeignKeyAction, Index};
use sea_orm::{DbBackend, Statement};

use crate::col::{big, big_null, boolean, id, index, table, text, text_null};

fn fk(
    from_table: &str,
    from_col: &str,
    to_table: &str,
    on_delete: ForeignKeyAction,
) -> sea_orm::sea_query::ForeignKeyCreateStatement {
    crate::col::fk(from_table, from_col, to_table, "id", on_delete)
}

pub fn statements(backend: DbBackend) -> Vec<Statement> {
    let tables = [
        table("schema_version")
            .col(big("id").primary_key())
            .col(big("major"))
            .col(big("minor"))
            .col(big("updated_at"))
            .to_owned(),
        table("schema_history")
            .col(text("version"))
            .col(big("applied_at"))
            .to_owned(),
        // Monotonic counters, such as the settings generation that stamps every settings change.
        table("counters")
            .col(text("name").primary_key())
            .col(big("value"))
            .to_owned(),
        table("folders")
            .col(id())
            .col(text("name"))
            .col(big_null("parent_id"))
            .col(big("rev"))
            .col(big("created_at"))
            .foreign_key(&mut fk(
                "folders",
                "parent_id",
                "folders",
                ForeignKeyAction::Restrict,
            ))
            .to_owned(),
        table("devices")
            .col(id())
            .col(text("unit_id"))
            .col(text("name"))
            .col(text("firmware"))
            .col(text("state"))
            .col(big_null("folder_id"))
            // sha256 of the device's secret, hex; NULL after an administrator reset it.
            .col(text_null("secret_hash"))
            .col(big("rev"))
            .col(big("registered_at"))
            .col(big_null("last_contact"))
            // Earliest scheduled time of the device's pending jobs, so a check-in learns whether
            // jobs are due from the row it updates anyway.
            .col(big_null("next_job_at"))
            .foreign_key(&mut fk(
                "devices",
                "folder_id",
                "folders",
                ForeignKeyAction::Restrict,
            ))
            .to_owned(),
        table("profiles")
            .col(id())
            .col(text("name"))
            .col(text("description"))
            .col(boolean("priority"))
            .col(big("rev"))
            .col(big("created_at"))
            .to_owned(),
        table("profile_params")
            .col(big("profile_id"))
            .col(text("key"))
            .col(text("value"))
            .primary_key(
                Index::create()
                    .col(Alias::new("profile_id"))
                    .col(Alias::new("key")),
            )
            .foreign_key(&mut fk(
                "profile_params",
                "profile_id",
                "profiles",
                ForeignKeyAction::Cascade,
            ))
            .to_owned(),
        table("assignments")
            .col(id())
            .col(big("profile_id"))
            .col(big_null("device_id"))
            .col(big_null("folder_id"))
            .foreign_key(&mut fk(
                "assignments",
                "profile_id",
                "profiles",
                ForeignKeyAction::Cascade,
            ))
            .foreign_key(&mut fk(
                "assignments",
                "device_id",
                "devices",
                ForeignKeyAction::Cascade,
            ))
            .foreign_key(&mut fk(
                "assignments",
                "folder_id",
                "folders",
                ForeignKeyAction::Cascade,
            ))
            .to_owned(),
        table("jobs")
            .col(id())
            .col(big("device_id"))
            .col(text("kind"))
            .col(text("state"))
            .col(big("scheduled_at"))
            .col(big("created_at"))
            .col(big_null("sent_at"))
            .col(big_null("finished_at"))
            .col(text("result"))
            .foreign_key(&mut fk(
                "jobs",
                "device_id",
                "devices",
                ForeignKeyAction::Cascade,
            ))
            .to_owned(),
        table("admins")
            .col(id())
            .col(text("username"))
            // argon2id PHC string.
            .col(text("password_hash"))
            // Comma-separated permissions.
            .col(text("permissions"))
            .col(big("created_at"))
            .to_owned(),
        table("admin_sessions")
            // sha256 of the bearer token, hex.
            .col(text("token_hash").primary_key())
            .col(big("admin_id"))
            .col(big("expires_at"))
            .foreign_key(&mut fk(
                "admin_sessions",
                "admin_id",
                "admins",
                ForeignKeyAction::Cascade,
            ))
            .to_owned(),
    ];
    let indexes = [
        index("devices_unit_id", "devices", &["unit_id"], true),
        index("devices_folder", "devices", &["folder_id", "id"], false),
        index(
            "folders_parent_name",
            "folders",
            &["parent_id", "name"],
            false,
        ),
        index("profiles_name", "profiles", &["name"], true),
        index(
            "assignments_device",
            "assignments",
            &["device_id", "profile_id"],
            true,
        ),
        index(
            "assignments_folder",
            "assignments",
            &["folder_id", "profile_id"],
            true,
        ),
        index("assignments_profile", "assignments", &["profile_id"], false),
        index(
            "jobs_due",
            "jobs",
            &["device_id", "state", "scheduled_at"],
            false,
        ),
        index("admins_username", "admins", &["username"], true),
    ];
    let mut out: Vec<Statement> = tables.iter().map(|t| backend.build(t)).collect();
    out.extend(indexes.iter().map(|i| backend.build(i)));
    out.push(Statement::from_string(
        backend,
        "INSERT INTO counters (name, value) VALUES ('settings_generation', 1)",
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_for_both_backends() {
        for backend in [DbBackend::Sqlite, DbBackend::Postgres] {
            let sql: Vec<String> = statements(backend).iter().map(|s| s.sql.clone()).collect();
            assert!(sql.iter().any(|s| s.contains("CREATE TABLE \"devices\"")));
            if backend == DbBackend::Sqlite {
                println!("{}", sql.join(";\n"));
            }
        }
    }
}
