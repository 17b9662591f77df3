//! End-to-end tests: the real `ums-server`, `umsctl` and `ums-devsim` binaries over real sockets
//! and TLS, on SQLite and on a real PostgreSQL started by the harness: what needs real processes
//! (signals, kill -9, the watchdog, the broker, exit codes, the command lines' own output). The
//! APIs' behaviour is tested in process, in `crates/ums-server/tests/service`.
//!
//! The binaries must be built first (`cargo build --bins`; `cargo xtask test` does it).

mod backup;
mod broker;
mod failover;
mod harness;
mod monitor;
mod network;
mod readme;
mod release;
mod server;
mod swp;
mod update_mode;
mod upgrade;
mod watchdog;
mod web;
mod webdriver;
