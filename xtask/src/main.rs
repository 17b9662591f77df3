//! Project automation, run as `cargo xtask <command>`.
//!
//! * `test`: installs what the tests need, starts PostgreSQL, builds the
//!   binaries and runs every test with nextest.
//! * `up`: builds the binaries and runs a local server.
//! * `network`: a local HA network: PostgreSQL and two nodes of watchdog, server and broker.
//! * `bench`: end-to-end benchmarks against release builds.
//! * `chaos`: faults under device load on a local HA network, then an audit of the database.
//! * `fuzz`: the libFuzzer targets of every parser fed from outside.
//! * `images`: the container images, from the release binaries, with podman.
//! * `deploy-test`: the compose `ha` stack and the Kubernetes manifests, for real.

mod bench;
mod chaos;
mod deploy;
mod fuzz;
mod images;
mod kube;
mod network;
mod podman;
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
    /// Faults under load: PostgreSQL, three servers under watchdogs, two brokers and swp-auth on
    /// loopback, devices registering, checking in, downloading and reporting job results while
    /// processes are killed and paused, PostgreSQL restarts and connections are cut; then an
    /// audit of every acknowledged write. Report in target/chaos/report.json.
    Chaos(chaos::ChaosArgs),
    /// Run the libFuzzer targets (cargo-fuzz on the stable toolchain) and merge new inputs into
    /// the corpus in fuzz/corpus.
    Fuzz(fuzz::FuzzArgs),
    /// Build the container images (localhost/ums-server, ums-broker, swp-auth, ums-postgres)
    /// from the release binaries with podman, pulling nothing.
    Images(images::ImagesArgs),
    /// Build the images, run the compose `ha` stack with 1,000 devices and a stopped server,
    /// validate the Kubernetes manifests and start the server pod with `podman kube play`.
    DeployTest(deploy::DeployTestArgs),
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
        Command::Chaos(args) => chaos::run(args),
        Command::Fuzz(args) => fuzz::run(args),
        Command::Images(args) => images::run(args),
        Command::DeployTest(args) => deploy::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
