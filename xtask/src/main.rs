//! Project automation, run as `cargo xtask <command>`.
//!
//! * `test`: installs what the tests need, starts PostgreSQL, builds the
//!   binaries and runs every test with nextest.
//! * `up`: builds the binaries and runs a local server.
//! * `network`: a local HA network: PostgreSQL and two nodes of watchdog, server and broker.
//! * `bench`: end-to-end benchmarks against release builds.

mod bench;
mod network;
mod test;
mod up;
mod util;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Project automation for the UMS workspace.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Set up what the tests need (PostgreSQL, cargo-nextest, binaries), then run every test.
    Test(test::TestArgs),
    /// Build the binaries and run a local server in the foreground.
    Up(up::UpArgs),
    /// Run a local HA network: PostgreSQL and two nodes, each a watchdog supervising a server
    /// and a broker, until Ctrl-C.
    Network(network::NetworkArgs),
    /// Run a benchmark against release builds.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Ctrl-C reaches every process in the foreground group: the children stop by themselves,
    // and this process outlives it to wait for them and clean up.
    util::outlive_interrupt();
    let result = match cli.command {
        Command::Test(args) => test::run(args),
        Command::Up(args) => up::run(args),
        Command::Network(args) => network::run(args),
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
