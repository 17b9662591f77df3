//! `umsctl token`: the network token a component needs to join, exported again or rotated.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use ums_proto::admin::v1 as pb;

use super::show;
use crate::client::{Admin, ok};
use crate::output::time;

/// `token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print the network token (treat it as a secret: it lets a component join).
    Export {
        /// Write it to this file (mode 0600) instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Issue a new token; the old one stays valid for the grace period.
    Rotate {
        /// Seconds the previous token stays valid [default: one day].
        #[arg(long, value_name = "SECONDS", default_value_t = 86_400)]
        grace: u64,
        /// Write the new token to this file (mode 0600) instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

fn write_token(out: Option<&PathBuf>, token: &pb::TokenResponse) -> anyhow::Result<Option<String>> {
    let Some(path) = out else { return Ok(None) };
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("write {}", path.display()))?;
    writeln!(f, "{}", token.token)?;
    Ok(Some(format!(
        "wrote the network token to {} (mode 0600)",
        path.display()
    )))
}

pub async fn run(json: bool, admin: &mut Admin, command: TokenCommand) -> anyhow::Result<()> {
    let (reply, out) = match command {
        TokenCommand::Export { out } => (
            ok(admin.export_token(pb::ExportTokenRequest {}).await)?,
            out,
        ),
        TokenCommand::Rotate { grace, out } => (
            ok(admin
                .rotate_token(pb::RotateTokenRequest {
                    grace_seconds: grace,
                })
                .await)?,
            out,
        ),
    };
    if let Some(message) = write_token(out.as_ref(), &reply)? {
        eprintln!("{message}");
        if reply.previous_expires_at_ms > 0 {
            eprintln!(
                "the previous token is accepted until {} UTC",
                time(reply.previous_expires_at_ms)
            );
        }
        return Ok(());
    }
    show(json, &reply, |r| r.token.clone())
}
