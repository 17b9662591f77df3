//! End-to-end tests: the real `ums-server`, `umsctl` and `ums-devsim` binaries over real sockets
//! and TLS, on SQLite and on a real PostgreSQL started by the harness.
//!
//! The binaries must be built first (`cargo build --bins`; `cargo xtask test` does it).

mod broker;
mod harness;
mod network;
mod readme;
mod server;
mod swp;
mod watchdog;
