//! `umsctl files`: the files devices download, replicated to every server.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use sha2::Digest as _;
use tokio::io::AsyncReadExt as _;
use ums_proto::admin::v1 as pb;

use super::show;
use crate::client::{Admin, ok};
use crate::output::{table, time};

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

pub async fn run(json: bool, admin: &mut Admin, command: FilesCommand) -> anyhow::Result<()> {
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
            let info = send_file(admin, &file, path).await?;
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

/// Uploads a local file to `path` in the file store, with a progress bar; the server refuses it
/// unless what arrives has the size and sha256 computed here first.
pub async fn send_file(
    admin: &mut Admin,
    file: &std::path::Path,
    path: String,
) -> anyhow::Result<pb::FileInfo> {
    let file = file.to_path_buf();
    // Hash first, so the server can refuse a file that changed while it was sent.
    let (size, sha256) = hash(&file).await?;
    let mut f = tokio::fs::File::open(&file)
        .await
        .with_context(|| format!("open {}", file.display()))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::UploadFileChunk>(4);
    let bar = crate::output::byte_bar(size, &format!("uploading {}", file.display()));
    let progress = bar.clone();
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
            progress.inc(n as u64);
        }
        Ok::<_, std::io::Error>(())
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let info = ok(admin.upload_file(stream).await);
    bar.finish_and_clear();
    let info = info?;
    reader.await??;
    Ok(info)
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
