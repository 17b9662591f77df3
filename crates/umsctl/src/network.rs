//! `umsctl network`, `umsctl token` and `umsctl files`: the HA network's processes, its token,
//! and the files replicated to every server.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use sha2::Digest as _;
use tokio::io::AsyncReadExt as _;
use ums_proto::admin::v1 as pb;
use ums_proto::cluster::v1::ProcessInfo;

use crate::client::{Admin, ok};
use crate::output::{table, time};
use crate::show;

/// `network` subcommands.
#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Every process of the network: servers, brokers, watchdogs, swp-auth, with status, last
    /// heartbeat and clock offset. Clocks more than 60 s from the servers' are flagged.
    List,
    /// Delete an orphaned registry entry (a process that shows as stopped).
    Rm { id: String },
    /// Ask a process's watchdog to stop it (the broker drains, the server finishes its work).
    Stop { id: String },
    /// Ask a process's watchdog to start it again.
    Start { id: String },
}

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

/// `files` subcommands.
#[derive(Debug, Subcommand)]
pub enum FilesCommand {
    /// Files with size, sha256 and on which servers they are present.
    List,
    /// Upload a file; every server gets a copy.
    Upload {
        /// The local file.
        file: PathBuf,
        /// Its path in the file store, such as firmware/12.01.100.bin [default: its name].
        #[arg(long = "as", value_name = "PATH")]
        path: Option<String>,
    },
    /// Delete a file from every server.
    Rm { id: i64 },
}

fn processes_table(ps: &[ProcessInfo]) -> String {
    let mut t = table([
        "ID",
        "TYPE",
        "HOST",
        "PORTS",
        "STATUS",
        "MODE",
        "VERSION",
        "SCHEMA",
        "HEARTBEAT (UTC)",
        "CLOCK",
        "NOTES",
    ]);
    for p in ps {
        let ports = [
            ("dev", p.device_port),
            ("adm", p.admin_port),
            ("int", p.internal_port),
        ]
        .iter()
        .filter(|(_, port)| *port != 0)
        .map(|(n, port)| format!("{n} {port}"))
        .collect::<Vec<_>>()
        .join(", ");
        let mut notes = Vec::new();
        if p.scheduler {
            notes.push("scheduler".to_owned());
        }
        if p.clock_skewed {
            notes.push("CLOCK SKEW".to_owned());
        }
        if !p.supervisor_id.is_empty() {
            notes.push(format!("watched by {}", p.supervisor_id));
        }
        t.add_row([
            p.id.clone(),
            p.kind.clone(),
            p.host.clone(),
            ports,
            p.status.clone(),
            p.mode.clone(),
            p.version.clone(),
            p.schema_version.clone(),
            time(p.last_heartbeat_ms),
            format!("{:+.1}s", p.clock_offset_ms as f64 / 1000.0),
            notes.join("; "),
        ]);
    }
    t.to_string()
}

pub async fn network(json: bool, admin: &mut Admin, command: NetworkCommand) -> anyhow::Result<()> {
    match command {
        NetworkCommand::List => {
            let list = ok(admin.list_processes(pb::ListProcessesRequest {}).await)?;
            show(json, &list, |l| processes_table(&l.processes))
        }
        NetworkCommand::Rm { id } => {
            let done = ok(admin
                .remove_process(pb::ProcessRequest { id: id.clone() })
                .await)?;
            show(json, &done, |_| format!("removed {id} from the registry"))
        }
        NetworkCommand::Stop { id } => {
            let p = ok(admin.stop_process(pb::ProcessRequest { id }).await)?;
            show(json, &p, |p| format!("{} is {}", p.id, p.status))
        }
        NetworkCommand::Start { id } => {
            let p = ok(admin.start_process(pb::ProcessRequest { id }).await)?;
            show(json, &p, |p| format!("{} is {}", p.id, p.status))
        }
    }
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

pub async fn token(json: bool, admin: &mut Admin, command: TokenCommand) -> anyhow::Result<()> {
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

fn files_table(files: &[pb::FileInfo]) -> String {
    let mut t = table(["ID", "PATH", "SIZE", "SHA256", "CREATED (UTC)", "SERVERS"]);
    for f in files {
        let servers = f
            .replicas
            .iter()
            .map(|r| {
                if r.error.is_empty() {
                    format!("{} {}", r.server_id, r.status)
                } else {
                    format!("{} {} ({})", r.server_id, r.status, r.error)
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        t.add_row([
            f.id.to_string(),
            f.path.clone(),
            f.size.to_string(),
            f.sha256.get(..16).unwrap_or_default().to_owned() + "…",
            time(f.created_at_ms),
            servers,
        ]);
    }
    t.to_string()
}

pub async fn files(json: bool, admin: &mut Admin, command: FilesCommand) -> anyhow::Result<()> {
    match command {
        FilesCommand::List => {
            let list = ok(admin.list_files(pb::ListFilesRequest {}).await)?;
            show(json, &list, |l| files_table(&l.files))
        }
        FilesCommand::Upload { file, path } => {
            let path = match path {
                Some(p) => p,
                None => file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .context("the file has no usable name: pass --as PATH")?
                    .to_owned(),
            };
            // Hash first, so the server can refuse a file that changed while it was sent.
            let (size, sha256) = hash(&file).await?;
            let mut f = tokio::fs::File::open(&file)
                .await
                .with_context(|| format!("open {}", file.display()))?;
            let (tx, rx) = tokio::sync::mpsc::channel::<pb::UploadFileChunk>(4);
            let reader = tokio::spawn(async move {
                let mut first = Some((path, size, sha256));
                loop {
                    let mut buf = vec![0u8; 256 * 1024];
                    let n = f.read(&mut buf).await?;
                    buf.truncate(n);
                    let (path, size, sha256) = first.take().unwrap_or_default();
                    if n == 0 && path.is_empty() {
                        break;
                    }
                    let chunk = pb::UploadFileChunk {
                        path,
                        size,
                        sha256,
                        data: buf,
                    };
                    if tx.send(chunk).await.is_err() || n == 0 {
                        break;
                    }
                }
                Ok::<_, std::io::Error>(())
            });
            let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
            let info = ok(admin.upload_file(stream).await)?;
            reader.await??;
            show(json, &info, |f| {
                format!(
                    "uploaded {} as file {} ({} bytes, sha256 {})",
                    f.path, f.id, f.size, f.sha256
                )
            })
        }
        FilesCommand::Rm { id } => {
            let done = ok(admin.delete_file(pb::FileRequest { id }).await)?;
            show(json, &done, |_| {
                format!("deleted file {id} from every server")
            })
        }
    }
}

async fn hash(path: &PathBuf) -> anyhow::Result<(u64, String)> {
    let mut f = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("open {}", path.display()))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((size, hex::encode(hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skewed_clock_is_flagged_in_the_table() {
        let broker = |clock_skewed| ProcessInfo {
            id: "broker-1".into(),
            kind: "broker".into(),
            status: "running".into(),
            clock_offset_ms: if clock_skewed { 120_000 } else { 0 },
            clock_skewed,
            ..Default::default()
        };
        let table = processes_table(&[broker(false)]);
        assert!(table.contains("broker-1"), "{table}");
        assert!(!table.contains("CLOCK SKEW"), "{table}");
        let table = processes_table(&[broker(true)]);
        assert!(table.contains("CLOCK SKEW"), "{table}");
    }
}
