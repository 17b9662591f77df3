//! Files devices download (firmware, custom files): content-addressed on every server's disk
//! (`<data_dir>/files/<sha256[..2]>/<sha256>`), recorded in the database (path, sha256, size), and
//! copied to every server.
//!
//! A file uploaded to one server is written to a temporary file while its sha256 is computed,
//! checked against what the uploader announced, and only then moved into place and recorded. Every
//! server runs a replicator that copies what it lacks from a server that has it (resuming a partial
//! copy at its offset, verifying the hash before the file counts as present) and removes what was
//! deleted; it runs at start, on every files event and every 10 s, so a failed copy is retried.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::watch;
use tonic::Status;
use ums_proto::cluster::v1 as cpb;
use ums_proto::cluster::v1::cluster_service_client::ClusterServiceClient;

use crate::network::{Event, Network};
use crate::state::AppState;

/// Size of the chunks files are streamed in.
pub const CHUNK: usize = 256 * 1024;
/// Largest file accepted.
pub const MAX_FILE: u64 = 8 << 30;

/// The local content store.
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    pub fn open(data_dir: &Path) -> std::io::Result<Self> {
        let dir = data_dir.join("files");
        std::fs::create_dir_all(dir.join("tmp"))?;
        Ok(Self { dir })
    }

    /// Where the content with this hash lives.
    pub fn path_of(&self, sha256: &str) -> PathBuf {
        let prefix = sha256.get(..2).unwrap_or("00");
        self.dir.join(prefix).join(sha256)
    }

    fn partial_path(&self, sha256: &str) -> PathBuf {
        self.dir.join("tmp").join(format!("{sha256}.part"))
    }

    /// Whether the content is here with the expected size.
    pub async fn has(&self, sha256: &str, size: u64) -> bool {
        tokio::fs::metadata(self.path_of(sha256))
            .await
            .map(|m| m.len() == size)
            .unwrap_or(false)
    }

    /// A new upload: a temporary file that computes the hash as it is written.
    pub async fn begin(&self) -> std::io::Result<Upload> {
        let tmp = self
            .dir
            .join("tmp")
            .join(format!("upload-{}", crate::admin_api::random_token(16)));
        let file = tokio::fs::File::create(&tmp).await?;
        Ok(Upload {
            tmp,
            file,
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Moves a finished upload into place under its hash.
    pub async fn commit(&self, tmp: &Path, sha256: &str) -> std::io::Result<()> {
        let dest = self.path_of(sha256);
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        tokio::fs::rename(tmp, dest).await
    }

    pub async fn remove(&self, sha256: &str) {
        let _ = tokio::fs::remove_file(self.path_of(sha256)).await;
        let _ = tokio::fs::remove_file(self.partial_path(sha256)).await;
    }
}

/// A file being written.
pub struct Upload {
    pub tmp: PathBuf,
    file: tokio::fs::File,
    hasher: Sha256,
    pub size: u64,
}

impl Upload {
    pub async fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.size += data.len() as u64;
        self.hasher.update(data);
        self.file.write_all(data).await
    }

    /// Flushes to disk; returns the hex sha256.
    pub async fn finish(mut self) -> std::io::Result<(PathBuf, String, u64)> {
        self.file.flush().await?;
        self.file.sync_all().await?;
        Ok((self.tmp, hex::encode(self.hasher.finalize()), self.size))
    }
}

/// Checks a file path of the store: relative, `/`-separated, no empty, `.` or `..` parts,
/// printable, at most 255 bytes.
pub fn validate_path(path: &str) -> Result<(), String> {
    let ok_chars = path
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | '+'));
    if path.is_empty() || path.len() > 255 || !ok_chars {
        return Err(format!(
            "file path {path:?} must be 1 to 255 characters of letters, digits, . _ - + and /"
        ));
    }
    if path
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(format!(
            "file path {path:?} must be relative, without empty, `.` or `..` parts"
        ));
    }
    Ok(())
}

/// Reads a local file from `offset` as a stream of chunks.
pub fn read_chunks(
    path: PathBuf,
    offset: u64,
) -> impl futures_util::Stream<Item = Result<(u64, Vec<u8>), Status>> + Send + 'static {
    futures_util::stream::unfold(
        (None::<tokio::fs::File>, offset, path, false),
        |(file, pos, path, done)| async move {
            if done {
                return None;
            }
            let mut file = match file {
                Some(f) => f,
                None => match tokio::fs::File::open(&path).await {
                    Ok(mut f) => {
                        if let Err(e) = f.seek(std::io::SeekFrom::Start(pos)).await {
                            return Some((
                                Err(Status::internal(format!("seek: {e}"))),
                                (None, pos, path, true),
                            ));
                        }
                        f
                    }
                    Err(e) => {
                        return Some((
                            Err(Status::unavailable(format!(
                                "file content not on this server: {e}"
                            ))),
                            (None, pos, path, true),
                        ));
                    }
                },
            };
            let mut buf = vec![0u8; CHUNK];
            let mut filled = 0;
            while filled < CHUNK {
                match file.read(&mut buf[filled..]).await {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) => {
                        return Some((
                            Err(Status::internal(format!("read: {e}"))),
                            (None, pos, path, true),
                        ));
                    }
                }
            }
            if filled == 0 {
                return None;
            }
            buf.truncate(filled);
            let at = pos;
            Some((
                Ok((at, buf)),
                (Some(file), pos + filled as u64, path, false),
            ))
        },
    )
}

/// Copies what this server lacks and removes what was deleted, until `stop`.
pub async fn replicate(network: Arc<Network>, state: Arc<AppState>, stop: watch::Receiver<bool>) {
    let mut events = network.subscribe();
    let stopping = crate::network::stopped(stop);
    tokio::pin!(stopping);
    let mut failures = 0u32;
    loop {
        let outcome = replicate_once(&network, &state).await;
        let wait = match outcome {
            Ok(true) => {
                failures = 0;
                Duration::from_secs(10)
            }
            Ok(false) | Err(_) => {
                if let Err(e) = &outcome {
                    tracing::warn!(error = %e, "file replication round failed");
                }
                failures = (failures + 1).min(5);
                Duration::from_millis(500 << failures)
            }
        };
        let deadline = tokio::time::sleep(wait);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut stopping => return,
                () = &mut deadline => break,
                e = events.recv() => match e {
                    Ok(Event::FilesChanged { .. }) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                    Ok(_) => {}
                    Err(_) => return,
                },
            }
        }
    }
}

/// One pass; `Ok(true)` when everything is in place.
async fn replicate_once(network: &Network, state: &AppState) -> anyhow::Result<bool> {
    let db = &state.db;
    let me = &network.process_id;
    let files = db.list_files(true).await?;
    let replicas = db.file_replicas().await?;
    let live_hashes: std::collections::HashSet<&str> = files
        .iter()
        .filter(|f| !f.deleted)
        .map(|f| f.sha256.as_str())
        .collect();
    let mut complete = true;
    for f in files.iter().filter(|f| f.deleted) {
        let mine = replicas
            .iter()
            .any(|r| r.file_id == f.id && r.server_id == *me);
        if mine {
            if !live_hashes.contains(f.sha256.as_str()) {
                state.files.remove(&f.sha256).await;
            }
            db.remove_replica(f.id, me).await?;
        }
    }
    let mut peers: Option<Vec<cpb::ProcessInfo>> = None;
    for f in files.iter().filter(|f| !f.deleted) {
        let status = replicas
            .iter()
            .find(|r| r.file_id == f.id && r.server_id == *me)
            .map(|r| r.status.as_str());
        if state.files.has(&f.sha256, f.size as u64).await {
            if status != Some("present") {
                db.set_replica(f.id, me, "present", "").await?;
            }
            continue;
        }
        if peers.is_none() {
            peers = Some(network.processes(db).await?);
        }
        let holders: Vec<&cpb::ProcessInfo> = peers
            .iter()
            .flatten()
            .filter(|p| {
                p.kind == "server"
                    && p.status == "running"
                    && p.id != *me
                    && p.internal_port != 0
                    && replicas
                        .iter()
                        .any(|r| r.file_id == f.id && r.server_id == p.id && r.status == "present")
            })
            .collect();
        if status != Some("pending") && status != Some("failed") {
            db.set_replica(f.id, me, "pending", "").await?;
        }
        let mut last_error = String::from("no running server holds the file");
        let mut copied = false;
        for holder in holders {
            match fetch(network, state, holder, &f.sha256, f.size as u64).await {
                Ok(()) => {
                    copied = true;
                    break;
                }
                Err(e) => {
                    tracing::warn!(file = %f.path, from = %holder.id, error = %e, "file copy failed");
                    last_error = format!("from {}: {e}", holder.id);
                }
            }
        }
        if copied {
            db.set_replica(f.id, me, "present", "").await?;
            tracing::info!(file = %f.path, sha256 = %f.sha256, size = f.size, "file replicated");
        } else {
            complete = false;
            db.set_replica(f.id, me, "failed", &last_error).await?;
        }
    }
    Ok(complete)
}

/// Copies one file's content from `holder`, resuming a partial copy, and checks its hash.
async fn fetch(
    network: &Network,
    state: &AppState,
    holder: &cpb::ProcessInfo,
    sha256: &str,
    size: u64,
) -> anyhow::Result<()> {
    let store = &state.files;
    let partial = store.partial_path(sha256);
    let mut offset = tokio::fs::metadata(&partial)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    if offset > size {
        let _ = tokio::fs::remove_file(&partial).await;
        offset = 0;
    }
    let channel = ums_cluster::internal_channel(
        &network.identity,
        &format!("{}:{}", host_for_uri(&holder.host), holder.internal_port),
    )?;
    let mut stream = ClusterServiceClient::new(channel)
        .read_file(cpb::ReadFileRequest {
            sha256: sha256.to_owned(),
            offset,
        })
        .await?
        .into_inner();
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&partial)
        .await?;
    while let Some(chunk) = stream.message().await? {
        offset += chunk.data.len() as u64;
        if offset > size {
            drop(file);
            let _ = tokio::fs::remove_file(&partial).await;
            anyhow::bail!("the peer sent more than the file's {size} bytes");
        }
        file.write_all(&chunk.data).await?;
    }
    file.sync_all().await?;
    drop(file);
    if offset != size {
        anyhow::bail!("the copy stopped at {offset} of {size} bytes; it resumes there");
    }
    let actual = hash_file(&partial).await?;
    if actual != sha256 {
        let _ = tokio::fs::remove_file(&partial).await;
        anyhow::bail!("the copy's sha256 {actual} is not the file's {sha256}; discarded");
    }
    store.commit(&partial, sha256).await?;
    Ok(())
}

/// `[::1]` for IPv6 literals, the host as is otherwise.
pub fn host_for_uri(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// The hex sha256 of a file.
pub async fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_store() {
        for ok in ["a.bin", "firmware/12.01/a-b_c+d.bin"] {
            validate_path(ok).expect(ok);
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a//b",
            "a/./b",
            "a/..",
            "sp ace",
            "a\nb",
        ] {
            assert!(validate_path(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[tokio::test]
    async fn an_upload_is_hashed_and_stored_under_its_hash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileStore::open(dir.path()).expect("store");
        let mut up = store.begin().await.expect("begin");
        up.write(b"hello ").await.expect("write");
        up.write(b"world").await.expect("write");
        let (tmp, sha, size) = up.finish().await.expect("finish");
        assert_eq!(size, 11);
        assert_eq!(sha, hex::encode(Sha256::digest(b"hello world")));
        store.commit(&tmp, &sha).await.expect("commit");
        assert!(store.has(&sha, 11).await);
        assert!(!store.has(&sha, 12).await);
        use futures_util::StreamExt;
        let chunks: Vec<_> = read_chunks(store.path_of(&sha), 6).collect().await;
        assert_eq!(chunks.len(), 1);
        let (at, data) = chunks[0].as_ref().expect("chunk");
        assert_eq!((*at, data.as_slice()), (6, &b"world"[..]));
        store.remove(&sha).await;
        assert!(!store.has(&sha, 11).await);
    }
}
