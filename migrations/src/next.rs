//! Test-only steps: the next release's migrations, so tests run one binary as that release.
//! Compiled into debug builds and builds with the `test-migrations` feature only, and active
//! only when `UMS_TEST_SCHEMA_NEXT` names them:
//!
//! - `minor`: an expand step (a nullable column `devices.upgrade_probe`) then a contract step
//!   (the column filled and older binaries locked out), the two halves of a rolling upgrade;
//! - `major`: a new major version (always contract), an update with downtime.

use sea_orm::sea_query::{Alias, Table};
use sea_orm::{DbBackend, Statement};

use crate::{Migration, Phase, RELEASED, SchemaVersion};

/// The environment variable that makes this build play the next release.
pub const ENV: &str = "UMS_TEST_SCHEMA_NEXT";

/// `minor` or `major`, when set.
pub fn tag() -> Option<&'static str> {
    match std::env::var(ENV).ok().as_deref() {
        Some("minor") => Some("next-minor"),
        Some("major") => Some("next-major"),
        _ => None,
    }
}

/// The steps `UMS_TEST_SCHEMA_NEXT` asks for, numbered after the released ones.
pub fn from_env() -> Vec<Migration> {
    let last = RELEASED
        .last()
        .map(|m| m.version)
        .unwrap_or(SchemaVersion::new(1, 0));
    match tag() {
        Some("next-minor") => vec![
            Migration {
                version: SchemaVersion::new(last.major, last.minor + 1),
                name: "test_upgrade_probe",
                phase: Phase::Expand,
                statements: expand,
            },
            Migration {
                version: SchemaVersion::new(last.major, last.minor + 2),
                name: "test_upgrade_probe_required",
                phase: Phase::Contract,
                statements: contract,
            },
        ],
        Some("next-major") => vec![Migration {
            version: SchemaVersion::new(last.major + 1, 0),
            name: "test_major",
            phase: Phase::Contract,
            statements: major,
        }],
        _ => Vec::new(),
    }
}

fn expand(backend: DbBackend) -> Vec<Statement> {
    vec![
        backend.build(
            &Table::alter()
                .table(Alias::new("devices"))
                .add_column(crate::col::text_null("upgrade_probe"))
                .to_owned(),
        ),
    ]
}

fn contract(backend: DbBackend) -> Vec<Statement> {
    vec![Statement::from_string(
        backend,
        "UPDATE devices SET upgrade_probe = 'contracted' WHERE upgrade_probe IS NULL",
    )]
}

fn major(backend: DbBackend) -> Vec<Statement> {
    vec![
        backend.build(
            &crate::col::table("upgrade_major_probe")
                .col(crate::col::text("note"))
                .to_owned(),
        ),
    ]
}
