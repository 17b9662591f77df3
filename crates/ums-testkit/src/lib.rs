//! Test harness for the UMS workspace.
//!
//! * [`Postgres`]: a real PostgreSQL cluster in a temporary directory, started
//!   with the stock `initdb`/`pg_ctl` binaries and stopped on drop.
//! * [`shared_database`]: a fresh database for one test, on the server provided
//!   by `cargo xtask test` (`UMS_TEST_PG_URL`) or on one cluster per process.
//! * Process helpers: [`free_port`], [`wait_for_tcp`], [`workspace_root`],
//!   [`bin_path`] and [`ChildGuard`].
//! * [`ldap::Slapd`]: a real OpenLDAP server with TLS and a generated directory.
//! * [`samba::SambaDc`]: a real Active Directory (a Samba AD DC) on a loopback address.
//!
//! Everything here is blocking std code so it can be used from any test,
//! synchronous or not. `postgres` holds the PostgreSQL harness, `process` the
//! child guards and paths of binaries, `net` free ports and waiting for TCP.

pub mod ldap;
mod net;
mod postgres;
mod process;
pub mod samba;

pub use net::{TcpSwitch, free_port, wait_for_tcp};
pub use postgres::{
    PG_BIN_DIR_ENV, Postgres, TEST_PG_URL_ENV, pg_bin_dir, psql_path, shared_database,
};
pub use process::{ChildGuard, bin_path, chromedriver_path, chromium_path, workspace_root};
