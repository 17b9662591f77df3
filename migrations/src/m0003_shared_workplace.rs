//! 1.2: Shared Workplace. Directories users log in against, the users, groups and OUs profiles
//! are assigned to, per-device licence and switch, and who is logged in on which device.
//!
//! Numbered 1.2 so that the HA network's 1.1 (`m0002_cluster`) comes before it.

use sea_orm::sea_query::ForeignKeyAction;
use sea_orm::{DbBackend, Statement};

use crate::col::{big, boolean, id, index, table, text};

fn fk(
    from_table: &str,
    from_col: &str,
    to_table: &str,
    to_col: &str,
) -> sea_orm::sea_query::ForeignKeyCreateStatement {
    crate::col::fk(
        from_table,
        from_col,
        to_table,
        to_col,
        ForeignKeyAction::Cascade,
    )
}

pub fn statements(backend: DbBackend) -> Vec<Statement> {
    let tables = [
        // A directory (Active Directory or generic LDAP) users log in against.
        table("swp_directories")
            .col(id())
            .col(text("name"))
            // "ad" or "ldap"
            .col(text("kind"))
            // DNS domain (UPN suffix), e.g. ad.example.org
            .col(text("domain"))
            // NetBIOS domain for DOMAIN\user logins; may be empty
            .col(text("netbios"))
            // ldaps:// or ldap:// URLs of the controllers, newline-separated, tried in order
            .col(text("urls"))
            .col(text("base_dn"))
            .col(text("bind_dn"))
            // The bind account's password: needed in clear to bind; never returned by the API
            // and never logged.
            .col(text("bind_password"))
            // PEM of the CA that signed the controllers' certificates; empty: system roots
            .col(text("ca_pem"))
            // Upgrade ldap:// connections with StartTLS (ldaps:// is TLS from the start)
            .col(boolean("starttls"))
            .col(big("page_size"))
            // Generic LDAP: the attribute users log in with (uid)
            .col(text("login_attribute"))
            // Extra filter users must match, e.g. (objectClass=person)
            .col(text("user_filter"))
            // "memberof" (read memberOf) or "member" (search groups with member=DN)
            .col(text("group_membership"))
            .col(big("rev"))
            .col(big("created_at"))
            .to_owned(),
        // A user, group or OU of a directory that profiles are assigned to, by name.
        table("swp_principals")
            .col(id())
            .col(big("directory_id"))
            // "user", "group" or "ou"
            .col(text("kind"))
            // As the administrator wrote it
            .col(text("name"))
            // Normalised for matching: lowercase; a DN without spaces around separators
            .col(text("key"))
            .col(big("rev"))
            .foreign_key(&mut fk(
                "swp_principals",
                "directory_id",
                "swp_directories",
                "id",
            ))
            .to_owned(),
        table("swp_assignments")
            .col(id())
            .col(big("profile_id"))
            .col(big("principal_id"))
            .foreign_key(&mut fk("swp_assignments", "profile_id", "profiles", "id"))
            .foreign_key(&mut fk(
                "swp_assignments",
                "principal_id",
                "swp_principals",
                "id",
            ))
            .to_owned(),
        // Per-device licence and switch: a licensed device keeps its licence while the
        // function is disabled on it.
        table("swp_devices")
            .col(big("device_id").primary_key())
            .col(boolean("licensed"))
            .col(boolean("enabled"))
            .col(big("updated_at"))
            .foreign_key(&mut fk("swp_devices", "device_id", "devices", "id"))
            .to_owned(),
        // Who is logged in on a device.
        table("swp_sessions")
            .col(big("device_id").primary_key())
            .col(big("directory_id"))
            .col(text("login"))
            // The directory's answer (groups, OUs) as JSON, so the device's settings can be
            // merged again without asking the directory
            .col(text("user_json"))
            // sha256 of the session token given to the device, hex
            .col(text("token_hash"))
            .col(big("started_at"))
            .foreign_key(&mut fk("swp_sessions", "device_id", "devices", "id"))
            .to_owned(),
    ];
    let indexes = [
        index("swp_directories_name", "swp_directories", &["name"], true),
        index(
            "swp_principals_key",
            "swp_principals",
            &["directory_id", "kind", "key"],
            true,
        ),
        index(
            "swp_assignments_principal",
            "swp_assignments",
            &["principal_id", "profile_id"],
            true,
        ),
        index(
            "swp_assignments_profile",
            "swp_assignments",
            &["profile_id"],
            false,
        ),
    ];
    let mut out: Vec<Statement> = tables.iter().map(|t| backend.build(t)).collect();
    out.extend(indexes.iter().map(|i| backend.build(i)));
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
                    .any(|s| s.contains("CREATE TABLE \"swp_directories\""))
            );
        }
    }
}
