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

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use ums_proto::network::v1 as cpb;
use ums_proto::network::v1::network_service_client::NetworkServiceClient;
use ums_tls::NodeIdentity;

use crate::error::ApiError;

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

    /// Where a copy in progress is kept, so it resumes after an interruption.
    pub fn partial_path(&self, sha256: &str) -> PathBuf {
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
            .join(format!("upload-{}", crate::secrets::random_token(16)));
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

/// The framing of an upload: the first message names the file and may announce its size and
/// sha256; every chunk keeps the total within [`MAX_FILE`]; at the end what arrived must be
/// what was announced. Pure, so it is tested (and fuzzed) without a server.
#[derive(Debug, Clone)]
pub struct UploadFraming {
    pub path: String,
    /// 0: not announced.
    announced_size: u64,
    /// Lower-case hex; empty: not announced.
    announced_sha256: String,
    received: u64,
}

impl UploadFraming {
    /// Checks what the first message announces.
    pub fn start(path: &str, size: u64, sha256: &str) -> Result<Self, ApiError> {
        validate_path(path).map_err(ApiError::Invalid)?;
        let sha256 = sha256.to_ascii_lowercase();
        if !sha256.is_empty()
            && (sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(ApiError::Invalid("sha256 must be 64 hex digits".into()));
        }
        if size > MAX_FILE {
            return Err(too_large());
        }
        Ok(Self {
            path: path.to_owned(),
            announced_size: size,
            announced_sha256: sha256,
            received: 0,
        })
    }

    /// Counts a chunk of `len` bytes.
    pub fn chunk(&mut self, len: usize) -> Result<(), ApiError> {
        let total = self.received.saturating_add(len as u64);
        if total > MAX_FILE {
            return Err(too_large());
        }
        self.received = total;
        Ok(())
    }

    /// Bytes counted so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Compares what arrived (`size` bytes hashing to `sha256`) with what was announced.
    pub fn finish(&self, size: u64, sha256: &str) -> Result<(), ApiError> {
        let mismatch = if self.announced_size != 0 && self.announced_size != size {
            Some(format!(
                "the upload has {size} bytes, {} were announced",
                self.announced_size
            ))
        } else if !self.announced_sha256.is_empty() && self.announced_sha256 != sha256 {
            Some(format!(
                "the upload's sha256 is {sha256}, {} was announced",
                self.announced_sha256
            ))
        } else {
            None
        };
        match mismatch {
            Some(m) => Err(ApiError::DataLoss(format!("{m}: nothing was stored"))),
            None => Ok(()),
        }
    }
}

fn too_large() -> ApiError {
    ApiError::Invalid(format!("files are limited to {MAX_FILE} bytes"))
}

impl FileStore {
    /// Receives an upload: the first message's data, then the rest of the stream, hashed while
    /// written to a temporary file, checked against the framing, and only then moved into place
    /// under its hash. Nothing is left behind on any error. Returns the sha256 and the size.
    pub async fn receive<S>(
        &self,
        mut framing: UploadFraming,
        first: Vec<u8>,
        mut rest: S,
    ) -> Result<(String, u64), ApiError>
    where
        S: futures_util::Stream<Item = Result<Vec<u8>, ApiError>> + Unpin,
    {
        use futures_util::StreamExt;
        let mut upload = self.begin().await.map_err(ApiError::internal)?;
        let tmp = upload.tmp.clone();
        let received: Result<(PathBuf, String, u64), ApiError> = async {
            framing.chunk(first.len())?;
            upload.write(&first).await.map_err(ApiError::internal)?;
            while let Some(chunk) = rest.next().await {
                let chunk = chunk?;
                framing.chunk(chunk.len())?;
                upload.write(&chunk).await.map_err(ApiError::internal)?;
            }
            upload.finish().await.map_err(ApiError::internal)
        }
        .await;
        let checked = received.and_then(|(tmp, sha, size)| {
            framing.finish(size, &sha)?;
            Ok((tmp, sha, size))
        });
        match checked {
            Ok((tmp, sha, size)) => {
                self.commit(&tmp, &sha).await.map_err(ApiError::internal)?;
                Ok((sha, size))
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(e)
            }
        }
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
) -> impl futures_util::Stream<Item = Result<(u64, Vec<u8>), ApiError>> + Send + 'static {
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
                                Err(ApiError::internal(format!("seek {}: {e}", path.display()))),
                                (None, pos, path, true),
                            ));
                        }
                        f
                    }
                    Err(e) => {
                        tracing::warn!(file = %path.display(), error = %e, "cannot open a stored file");
                        return Some((
                            Err(ApiError::Unavailable(
                                "the file's content is not on this server: retry shortly".into(),
                            )),
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
                            Err(ApiError::internal(format!("read {}: {e}", path.display()))),
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

/// Copies one file's content from the server `holder` (its registry entry) over the internal
/// port, resuming a partial copy, and checks its hash before it counts as present.
pub async fn fetch(
    store: &FileStore,
    identity: &NodeIdentity,
    holder: &cpb::ProcessInfo,
    sha256: &str,
    size: u64,
) -> anyhow::Result<()> {
    let partial = store.partial_path(sha256);
    let mut offset = tokio::fs::metadata(&partial)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    if offset > size {
        let _ = tokio::fs::remove_file(&partial).await;
        offset = 0;
    }
    let channel = ums_network::internal_channel(
        identity,
        &crate::clients::host_port(&holder.host, holder.internal_port),
    )?;
    let mut stream = NetworkServiceClient::new(channel)
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

    #[test]
    fn the_framing_refuses_what_was_not_announced() {
        assert!(UploadFraming::start("../etc/passwd", 0, "").is_err());
        assert!(UploadFraming::start("a.bin", 0, "abc").is_err());
        assert!(UploadFraming::start("a.bin", MAX_FILE + 1, "").is_err());
        let sha = hex::encode(Sha256::digest(b"hello"));
        let mut f = UploadFraming::start("a.bin", 5, &sha.to_ascii_uppercase()).expect("start");
        f.chunk(5).expect("chunk");
        f.finish(5, &sha).expect("as announced");
        let e = f.finish(4, &sha).expect_err("short");
        assert!(matches!(e, ApiError::DataLoss(_)), "{e}");
        let e = f.finish(5, &"0".repeat(64)).expect_err("other hash");
        assert!(e.to_string().contains("nothing was stored"), "{e}");
        let mut f = UploadFraming::start("a.bin", 0, "").expect("start");
        f.chunk(usize::MAX).expect_err("past the limit");
        assert_eq!(f.received(), 0);
    }

    #[tokio::test]
    async fn a_refused_upload_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileStore::open(dir.path()).expect("store");
        let framing = UploadFraming::start("a.bin", 3, "").expect("start");
        let rest = futures_util::stream::iter(vec![Ok(b"more".to_vec())]);
        let e = store
            .receive(framing, b"ab".to_vec(), rest)
            .await
            .expect_err("size mismatch");
        assert!(matches!(e, ApiError::DataLoss(_)), "{e}");
        let left: Vec<_> = std::fs::read_dir(dir.path().join("files/tmp"))
            .expect("tmp")
            .collect();
        assert!(left.is_empty(), "{left:?}");
        let framing = UploadFraming::start("a.bin", 6, "").expect("start");
        let rest = futures_util::stream::iter(vec![Ok(b"more".to_vec())]);
        let (sha, size) = store
            .receive(framing, b"ab".to_vec(), rest)
            .await
            .expect("stored");
        assert_eq!(size, 6);
        assert!(store.has(&sha, 6).await);
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
