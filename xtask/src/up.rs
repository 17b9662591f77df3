//! `cargo xtask up`: build the binaries and run a local server in the foreground.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::Context;
use clap::Args;

use crate::util::{self, step};

/// Arguments of `cargo xtask up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Server data directory [default: .ums/data under the workspace root].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Build and run release binaries.
    #[arg(long)]
    release: bool,
}

/// Runs `cargo xtask up`.
pub fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    let data_dir = match args.data_dir {
        Some(dir) if dir.is_absolute() => dir,
        Some(dir) => std::env::current_dir()
            .context("could not determine the current directory")?
            .join(dir),
        None => util::workspace_root().join(".ums").join("data"),
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("could not create {}", data_dir.display()))?;

    let mut build = util::cargo();
    build.args([
        "build",
        "--bins",
        "-p",
        "ums-server",
        "-p",
        "umsctl",
        "-p",
        "ums-devsim",
    ]);
    if args.release {
        build.arg("--release");
    }
    util::run(&mut build)?;

    let bins = util::profile_dir(args.release);
    let server = bins.join("ums-server");
    let umsctl = util::display_path(&bins.join("umsctl"));
    let devsim = util::display_path(&bins.join("ums-devsim"));
    let data = util::display_path(&data_dir);
    eprintln!();
    eprintln!("next steps, in another terminal:");
    eprintln!("  # log in as admin; the password is in {data}/initial-admin-password");
    eprintln!(
        "  {umsctl} init --server https://127.0.0.1:8443 --ca {data}/tls/ca.pem --user admin"
    );
    eprintln!("  # connect simulated devices");
    eprintln!("  {devsim} --addr https://127.0.0.1:30001 --ca {data}/tls/ca.pem --devices 1000");
    eprintln!("press Ctrl-C to stop the server");
    eprintln!();

    let mut cmd = Command::new(&server);
    cmd.arg("run").env("UMS_DATA_DIR", &data_dir);
    step!("UMS_DATA_DIR={} {}", data_dir.display(), util::render(&cmd));
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start {}", server.display()))?;
    // Ctrl-C reaches the server directly; just wait for it to shut down.
    let status = child.wait().context("could not wait for ums-server")?;
    step!("ums-server exited ({status})");
    Ok(util::exit_code(status))
}
