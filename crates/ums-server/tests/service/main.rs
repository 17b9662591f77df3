//! Service tests: `ums_server::run` inside the test process on port 0, driven through its APIs
//! with the real clients (tonic over TLS, the device simulator's library), on SQLite and on a
//! real PostgreSQL (`ums_testkit::shared_database`; under `cargo xtask test` the one it starts).
//! Shared Workplace logins run swp-auth in process too, against a real slapd.
//!
//! What needs real processes (signals, kill -9, the watchdog, the broker, exit codes, the command
//! lines' own output) is tested end to end in `tests/e2e`.

mod harness;
mod monitor;
mod network;
mod release;
mod server;
mod swp;
mod update;
mod version;
