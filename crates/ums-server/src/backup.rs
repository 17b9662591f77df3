//! Backup and restore of a server's data: the database rows (a snapshot of one moment, see
//! `ums_db::archive`) and the content-addressed files of the file store, in one archive file.
//!
//! [`create_backup`] is what `ums-server backup` runs, and what a migration calls before it
//! changes the schema. [`restore_backup`] is `ums-server restore`: it reads the whole archive and
//! checks every part against the manifest before it touches anything, so a corrupt or truncated
//! archive leaves the target as it was.
//!
//! The archive (mode 0600: it holds the network CA key and token sealed as the database keeps
//! them, and the password and secret hashes) is a sequence of parts, each a name and its bytes:
//!
//! ```text
//! "UMSBAK1\n"
//! part*: u16 name length (big endian), name (UTF-8), u64 length (big endian), bytes
//!   manifest.json    format, suite and schema version, taken at, rows per table, every
//!                    other part's name, size and sha256
//!   database.json    the rows of every table (`ums_db::archive::Snapshot`)
//!   files/<sha256>   one per stored file, its content
//!   end              the hex sha256 of manifest.json: a cut archive has no end
//! ```
//!
//! The CA key opens only with the network token, which is not in the archive: a restored server
//! on a fresh data directory needs the token in its token file, as any server joining the
//! network does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use ums_db::archive::Snapshot;
use ums_db::{Db, SchemaVersion};

use crate::config::Config;
use crate::files::FileStore;

/// The first bytes of every archive.
const MAGIC: &[u8; 8] = b"UMSBAK1\n";
/// The archive format [`create_backup`] writes and [`restore_backup`] reads.
pub const FORMAT: u32 = 1;
const MANIFEST: &str = "manifest.json";
const DATABASE: &str = "database.json";
const END: &str = "end";
/// A manifest larger than this is not one.
const MAX_MANIFEST: u64 = 64 << 20;
const MAX_NAME: usize = 512;

/// What the archive says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// The version of the ums-server that took the backup.
    pub suite_version: String,
    /// `major.minor` of the database schema.
    pub schema_version: String,
    /// UTC, RFC 3339.
    pub taken_at: String,
    pub taken_at_ms: i64,
    /// The backend the rows were read from.
    pub backend: String,
    /// Rows per table.
    pub tables: BTreeMap<String, u64>,
    /// Every part after the manifest but `end`, in order.
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// What [`create_backup`] wrote.
#[derive(Debug, Clone)]
pub struct BackupSummary {
    /// The archive.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Rows per table.
    pub tables: BTreeMap<String, u64>,
    /// Files of the file store in the archive, and their bytes.
    pub files: usize,
    pub file_bytes: u64,
    pub schema_version: SchemaVersion,
    /// UTC, RFC 3339.
    pub taken_at: String,
}

/// What [`restore_backup`] restored.
#[derive(Debug, Clone)]
pub struct RestoreSummary {
    pub tables: BTreeMap<String, u64>,
    pub files: usize,
    pub file_bytes: u64,
    pub schema_version: SchemaVersion,
    /// When the backup was taken (UTC, RFC 3339).
    pub taken_at: String,
    /// Whether the target's rows were replaced (`--force`).
    pub replaced: bool,
    /// Set when the server cannot open the restored network CA yet: the network token must be
    /// put in this file before it starts.
    pub token_needed: Option<PathBuf>,
}

/// Progress of a backup or restore, for a terminal.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// A table was read or written.
    Table { name: &'a str, rows: u64 },
    /// Bytes of a file copied so far.
    File {
        sha256: &'a str,
        done: u64,
        total: u64,
    },
}

/// The name of an archive taken at `taken_at_ms` of a database of schema `schema`:
/// `ums-<UTC timestamp>-schema<major.minor>.umsbak`.
pub fn archive_name(taken_at_ms: i64, schema: SchemaVersion) -> String {
    format!("ums-{}-schema{schema}.umsbak", utc(taken_at_ms).0)
}

/// Where backups go when no output is given: `<data_dir>/backups`.
pub fn default_dir(config: &Config) -> PathBuf {
    config.data_dir.join("backups")
}

/// Backs up the configured database and the file store into one archive, mode 0600.
///
/// `output` is the archive's path, or a directory to create it in under [`archive_name`];
/// `None` is [`default_dir`]. An existing file is never overwritten. The database is read
/// as it is, without migrating it, in one read transaction; servers may keep running. The
/// returned summary names the archive, its size, the rows per table, the files and the schema
/// version.
pub async fn create_backup(
    config: &Config,
    output: Option<&Path>,
) -> anyhow::Result<BackupSummary> {
    create_backup_with(config, output, &mut |_| {}).await
}

/// [`create_backup`], telling `progress` about every table and file.
pub async fn create_backup_with(
    config: &Config,
    output: Option<&Path>,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> anyhow::Result<BackupSummary> {
    let url = &config.database_url;
    let db = Db::connect(url)
        .await
        .with_context(|| format!("open database {}", ums_db::redact(url)))?;
    let taken_at_ms = ums_db::now_ms();
    let snapshot = db
        .export_snapshot(|name, rows| progress(Progress::Table { name, rows }))
        .await
        .context("read the database");
    db.close().await.ok();
    let snapshot = snapshot?;
    let schema: SchemaVersion = snapshot
        .schema_version
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;

    let path = match output {
        Some(p) if p.is_dir() => p.join(archive_name(taken_at_ms, schema)),
        Some(p) => p.to_owned(),
        None => {
            let dir = default_dir(config);
            ums_tls::create_private_dir(&dir)
                .with_context(|| format!("create backup directory {}", dir.display()))?;
            dir.join(archive_name(taken_at_ms, schema))
        }
    };
    if path.exists() {
        bail!(
            "{} exists: a backup never overwrites a file",
            path.display()
        );
    }

    let store = FileStore::open(&config.data_dir)
        .with_context(|| format!("open the file store in {}", config.data_dir.display()))?;
    let blobs = stored_files(&snapshot)?;
    for (sha256, size) in &blobs {
        if !store.has(sha256, *size).await {
            bail!(
                "file {sha256} ({size} bytes) is recorded in the database but not in this server's file store ({}); back up on a server that holds every file, or wait for replication",
                store.path_of(sha256).display()
            );
        }
    }

    let database = serde_json::to_vec(&snapshot).context("encode the database rows")?;
    let mut parts = vec![Part {
        name: DATABASE.into(),
        size: database.len() as u64,
        sha256: hex::encode(Sha256::digest(&database)),
    }];
    parts.extend(blobs.iter().map(|(sha256, size)| Part {
        name: format!("files/{sha256}"),
        size: *size,
        sha256: sha256.clone(),
    }));
    let (_, taken_at) = utc(taken_at_ms);
    let manifest = Manifest {
        format: FORMAT,
        suite_version: env!("CARGO_PKG_VERSION").into(),
        schema_version: schema.to_string(),
        taken_at: taken_at.clone(),
        taken_at_ms,
        backend: snapshot.backend.clone(),
        tables: snapshot.row_counts(),
        parts,
    };

    let partial = PathBuf::from(format!("{}.partial", path.display()));
    let written = write_archive(&partial, &manifest, &database, &blobs, &store, progress).await;
    let bytes = match written {
        Ok(bytes) => bytes,
        Err(e) => {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e);
        }
    };
    tokio::fs::rename(&partial, &path)
        .await
        .with_context(|| format!("move the archive to {}", path.display()))?;
    record_backup(url, &path, bytes, schema).await;
    Ok(BackupSummary {
        path,
        bytes,
        tables: manifest.tables,
        files: blobs.len(),
        file_bytes: blobs.iter().map(|(_, s)| s).sum(),
        schema_version: schema,
        taken_at,
    })
}

/// Records the backup in the update log, where `umsctl update plan` finds the most recent
/// one. The archive is written whatever happens here: a failure to record is only logged.
async fn record_backup(url: &str, path: &Path, bytes: u64, schema: SchemaVersion) {
    if schema < ums_db::schema::UPDATE_SERVICE {
        return;
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "localhost".into());
    let detail = format!("{} ({bytes} bytes, schema {schema})", path.display());
    let recorded = async {
        let db = Db::connect(url).await?;
        let done = db
            .log_update_step(&format!("backup/{host}"), "backup", &detail, true)
            .await;
        db.close().await.ok();
        done
    }
    .await;
    if let Err(e) = recorded {
        tracing::warn!(error = %e, "could not record the backup in the update log");
    }
}

/// The files the database holds (not deleted), each content once: (sha256, size).
fn stored_files(snapshot: &Snapshot) -> anyhow::Result<Vec<(String, u64)>> {
    let Some(files) = snapshot.table("files") else {
        return Ok(Vec::new());
    };
    let col = |name: &str| {
        files
            .columns
            .iter()
            .position(|c| c == name)
            .with_context(|| format!("the files table has no column {name}"))
    };
    let (sha, size, deleted) = (col("sha256")?, col("size")?, col("deleted")?);
    let mut out = BTreeMap::new();
    for row in &files.rows {
        let is_deleted =
            row[deleted].as_bool().unwrap_or(false) || row[deleted].as_i64() == Some(1);
        if is_deleted {
            continue;
        }
        let sha256 = row[sha].as_str().context("a file's sha256 is not text")?;
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("the database records a file with an invalid sha256 `{sha256}`");
        }
        let size = row[size]
            .as_u64()
            .context("a file's size is not a number")?;
        out.insert(sha256.to_ascii_lowercase(), size);
    }
    Ok(out.into_iter().collect())
}

async fn write_archive(
    path: &Path,
    manifest: &Manifest,
    database: &[u8],
    blobs: &[(String, u64)],
    store: &FileStore,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> anyhow::Result<u64> {
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .await
        .with_context(|| format!("create {}", path.display()))?;
    let mut out = BufWriter::with_capacity(crate::files::CHUNK, file);
    let manifest_bytes = serde_json::to_vec_pretty(manifest).context("encode the manifest")?;
    let write = async {
        out.write_all(MAGIC).await?;
        write_part(&mut out, MANIFEST, &manifest_bytes).await?;
        write_part(&mut out, DATABASE, database).await?;
        anyhow::Ok(())
    };
    write
        .await
        .with_context(|| format!("write {}", path.display()))?;
    let mut buf = vec![0u8; crate::files::CHUNK];
    for (sha256, size) in blobs {
        let source = store.path_of(sha256);
        let mut input = tokio::fs::File::open(&source)
            .await
            .with_context(|| format!("open {}", source.display()))?;
        write_header(&mut out, &format!("files/{sha256}"), *size).await?;
        let mut hasher = Sha256::new();
        let mut done = 0u64;
        while done < *size {
            let want = buf.len().min((*size - done) as usize);
            let n = input
                .read(&mut buf[..want])
                .await
                .with_context(|| format!("read {}", source.display()))?;
            if n == 0 {
                bail!(
                    "file {} changed while it was backed up: it ends after {done} of {size} bytes",
                    source.display()
                );
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).await?;
            done += n as u64;
            progress(Progress::File {
                sha256,
                done,
                total: *size,
            });
        }
        let got = hex::encode(hasher.finalize());
        if &got != sha256 {
            bail!(
                "file {} is corrupt in this server's file store: its content has sha256 {got}",
                source.display()
            );
        }
    }
    let end = hex::encode(Sha256::digest(&manifest_bytes));
    write_part(&mut out, END, end.as_bytes()).await?;
    out.flush().await?;
    let file = out.into_inner();
    file.sync_all().await?;
    Ok(file.metadata().await?.len())
}

async fn write_header<W: AsyncWriteExt + Unpin>(
    out: &mut W,
    name: &str,
    len: u64,
) -> std::io::Result<()> {
    out.write_all(&(name.len() as u16).to_be_bytes()).await?;
    out.write_all(name.as_bytes()).await?;
    out.write_all(&len.to_be_bytes()).await
}

async fn write_part<W: AsyncWriteExt + Unpin>(
    out: &mut W,
    name: &str,
    data: &[u8],
) -> std::io::Result<()> {
    write_header(out, name, data.len() as u64).await?;
    out.write_all(data).await
}

/// Reads archives part by part, naming the archive in every error.
struct Reader {
    path: PathBuf,
    input: BufReader<tokio::fs::File>,
}

impl Reader {
    async fn open(path: &Path) -> anyhow::Result<Self> {
        let file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("open archive {}", path.display()))?;
        let mut r = Self {
            path: path.to_owned(),
            input: BufReader::with_capacity(crate::files::CHUNK, file),
        };
        let mut magic = [0u8; 8];
        r.exact(&mut magic, "the archive header").await?;
        if &magic != MAGIC {
            bail!(
                "{} is not a ums-server backup archive (it does not start with {:?})",
                path.display(),
                String::from_utf8_lossy(MAGIC).trim_end()
            );
        }
        Ok(r)
    }

    async fn exact(&mut self, buf: &mut [u8], what: &str) -> anyhow::Result<()> {
        match self.input.read_exact(buf).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => bail!(
                "archive {} is truncated: it ends inside {what}; nothing was restored",
                self.path.display()
            ),
            Err(e) => Err(e).with_context(|| format!("read archive {}", self.path.display())),
        }
    }

    /// The next part's name and length.
    async fn header(&mut self) -> anyhow::Result<(String, u64)> {
        let mut len = [0u8; 2];
        self.exact(&mut len, "a part header").await?;
        let len = usize::from(u16::from_be_bytes(len));
        if len == 0 || len > MAX_NAME {
            bail!(
                "archive {} is corrupt: a part header names {len} bytes; nothing was restored",
                self.path.display()
            );
        }
        let mut name = vec![0u8; len];
        self.exact(&mut name, "a part header").await?;
        let name = String::from_utf8(name).map_err(|_| {
            anyhow::anyhow!(
                "archive {} is corrupt: a part name is not UTF-8; nothing was restored",
                self.path.display()
            )
        })?;
        let mut size = [0u8; 8];
        self.exact(&mut size, &format!("the header of part `{name}`"))
            .await?;
        Ok((name, u64::from_be_bytes(size)))
    }

    /// Reads a whole part into memory.
    async fn all(&mut self, name: &str, size: u64) -> anyhow::Result<Vec<u8>> {
        let mut data = Vec::new();
        let got = (&mut self.input)
            .take(size)
            .read_to_end(&mut data)
            .await
            .with_context(|| format!("read archive {}", self.path.display()))?;
        if (got as u64) < size {
            bail!(
                "archive {} is truncated: part `{name}` ends after {got} of {size} bytes; nothing was restored",
                self.path.display()
            );
        }
        Ok(data)
    }

    /// Streams a part through `sink` in chunks; returns its sha256.
    async fn stream(
        &mut self,
        name: &str,
        size: u64,
        mut sink: impl AsyncSink,
    ) -> anyhow::Result<String> {
        let mut buf = vec![0u8; crate::files::CHUNK];
        let mut hasher = Sha256::new();
        let mut done = 0u64;
        while done < size {
            let want = buf.len().min((size - done) as usize);
            let n = self
                .input
                .read(&mut buf[..want])
                .await
                .with_context(|| format!("read archive {}", self.path.display()))?;
            if n == 0 {
                bail!(
                    "archive {} is truncated: part `{name}` ends after {done} of {size} bytes; nothing was restored",
                    self.path.display()
                );
            }
            hasher.update(&buf[..n]);
            done += n as u64;
            sink.take(&buf[..n], done, size).await?;
        }
        Ok(hex::encode(hasher.finalize()))
    }

    fn corrupt(&self, part: &str, got: &str, want: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "archive {} is corrupt: part `{part}` has sha256 {got}, the manifest records {want}; nothing was restored",
            self.path.display()
        )
    }
}

/// Where [`Reader::stream`] puts what it reads.
trait AsyncSink {
    async fn take(&mut self, data: &[u8], done: u64, total: u64) -> anyhow::Result<()>;
}

struct Discard;
impl AsyncSink for Discard {
    async fn take(&mut self, _: &[u8], _: u64, _: u64) -> anyhow::Result<()> {
        Ok(())
    }
}

/// An archive whose every part matches its manifest.
pub struct Verified {
    pub manifest: Manifest,
    pub snapshot: Snapshot,
}

/// Reads the whole archive and checks it: the header, the manifest, every part's name, size and
/// sha256 in the manifest's order, and the end part. Nothing is written.
pub async fn verify_archive(path: &Path) -> anyhow::Result<Verified> {
    let mut r = Reader::open(path).await?;
    let (name, size) = r.header().await?;
    if name != MANIFEST || size > MAX_MANIFEST {
        bail!(
            "archive {} is corrupt: it starts with part `{name}` ({size} bytes) instead of the manifest; nothing was restored",
            path.display()
        );
    }
    let manifest_bytes = r.all(MANIFEST, size).await?;
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes).map_err(|e| {
        anyhow::anyhow!(
            "archive {} is corrupt: its manifest does not parse ({e}); nothing was restored",
            path.display()
        )
    })?;
    if manifest.format != FORMAT {
        bail!(
            "archive {} has format {}, this ums-server reads format {FORMAT}",
            path.display(),
            manifest.format
        );
    }
    let mut snapshot = None;
    for part in &manifest.parts {
        let (name, size) = r.header().await?;
        if name != part.name || size != part.size {
            bail!(
                "archive {} is corrupt: found part `{name}` ({size} bytes) where the manifest records `{}` ({} bytes); nothing was restored",
                path.display(),
                part.name,
                part.size
            );
        }
        if name == DATABASE {
            let data = r.all(&name, size).await?;
            let got = hex::encode(Sha256::digest(&data));
            if got != part.sha256 {
                return Err(r.corrupt(&name, &got, &part.sha256));
            }
            snapshot = Some(serde_json::from_slice::<Snapshot>(&data).map_err(|e| {
                anyhow::anyhow!(
                    "archive {} is corrupt: its database part does not parse ({e}); nothing was restored",
                    path.display()
                )
            })?);
        } else {
            let got = r.stream(&name, size, Discard).await?;
            if got != part.sha256 {
                return Err(r.corrupt(&name, &got, &part.sha256));
            }
        }
    }
    let (name, size) = r.header().await?;
    let end = r.all(&name, size.min(64)).await?;
    let want = hex::encode(Sha256::digest(&manifest_bytes));
    if name != END || end != want.as_bytes() {
        bail!(
            "archive {} is corrupt: its end does not match its manifest; nothing was restored",
            path.display()
        );
    }
    let snapshot = snapshot.with_context(|| {
        format!(
            "archive {} is corrupt: it has no database part; nothing was restored",
            path.display()
        )
    })?;
    if snapshot.schema_version != manifest.schema_version
        || snapshot.row_counts() != manifest.tables
    {
        bail!(
            "archive {} is corrupt: its database part does not match its manifest; nothing was restored",
            path.display()
        );
    }
    Ok(Verified { manifest, snapshot })
}

/// Restores an archive into the configured database and data directory.
///
/// The whole archive is checked first ([`verify_archive`]); then its schema version must be this
/// server's, and the database must hold no data unless `force`, which replaces it. The files are
/// written to the file store (each verified against its sha256 as it is written), then the rows
/// in one transaction: a failure leaves the database as it was and removes the files it added.
pub async fn restore_backup(
    config: &Config,
    archive: &Path,
    force: bool,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> anyhow::Result<RestoreSummary> {
    let Verified { manifest, snapshot } = verify_archive(archive).await?;
    let theirs: SchemaVersion = manifest
        .schema_version
        .parse()
        .map_err(|e: String| anyhow::anyhow!("archive {}: {e}", archive.display()))?;
    let ours = ums_db::latest_schema();
    if theirs != ours {
        bail!(
            "archive {} holds schema version {theirs}, this ums-server uses schema version {ours}: restore it with an ums-server of schema {theirs}; nothing was restored",
            archive.display()
        );
    }

    let url = &config.database_url;
    let redacted = ums_db::redact(url);
    ums_tls::create_private_dir(&config.data_dir)
        .with_context(|| format!("create data directory {}", config.data_dir.display()))?;
    {
        let db = Db::connect(url)
            .await
            .with_context(|| format!("open database {redacted}"))?;
        if !force && db.schema_version().await?.is_some() {
            let held: Vec<String> = db
                .data_row_counts()
                .await?
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|(t, n)| format!("{n} {t}"))
                .collect();
            if !held.is_empty() {
                db.close().await.ok();
                bail!(
                    "the database {redacted} is not empty (it holds {}): restore into an empty database, or pass --force to replace its data; nothing was restored",
                    held.join(", ")
                );
            }
        }
        db.close().await.ok();
    }
    let (db, _) = Db::open(url)
        .await
        .with_context(|| format!("open database {redacted}"))?;

    let store = FileStore::open(&config.data_dir)
        .with_context(|| format!("open the file store in {}", config.data_dir.display()))?;
    let mut added = Vec::new();
    let restored = async {
        let (files, file_bytes) =
            restore_files(archive, &manifest, &store, &mut added, progress).await?;
        db.import_snapshot(&snapshot, force, |name, rows| {
            progress(Progress::Table { name, rows })
        })
        .await
        .with_context(|| format!("write the rows into {redacted}"))?;
        anyhow::Ok((files, file_bytes))
    }
    .await;
    db.close().await.ok();
    let (files, file_bytes) = match restored {
        Ok(v) => v,
        Err(e) => {
            for sha256 in &added {
                store.remove(sha256).await;
            }
            return Err(e);
        }
    };

    let ca_here = crate::tls_dir(&config.data_dir).join("ca.pem").exists();
    let has_network = snapshot
        .table("cluster")
        .is_some_and(|t| !t.rows.is_empty());
    let token_needed = (has_network && !ca_here && !config.network.token_file.exists())
        .then(|| config.network.token_file.clone());
    Ok(RestoreSummary {
        tables: manifest.tables,
        files,
        file_bytes,
        schema_version: theirs,
        taken_at: manifest.taken_at,
        replaced: force,
        token_needed,
    })
}

/// Writes the archive's files to the store, each checked against its sha256 before it is moved
/// into place. `added` collects the ones that were not there before.
async fn restore_files(
    archive: &Path,
    manifest: &Manifest,
    store: &FileStore,
    added: &mut Vec<String>,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> anyhow::Result<(usize, u64)> {
    let mut r = Reader::open(archive).await?;
    let (_, size) = r.header().await?;
    r.all(MANIFEST, size).await?;
    let (mut files, mut bytes) = (0, 0);
    for part in &manifest.parts {
        let (name, size) = r.header().await?;
        if name != part.name || size != part.size {
            bail!(
                "archive {} changed while it was restored",
                archive.display()
            );
        }
        let Some(sha256) = name.strip_prefix("files/") else {
            r.stream(&name, size, Discard).await?;
            continue;
        };
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!(
                "archive {} is corrupt: part `{name}` is not named by a sha256",
                archive.display()
            );
        }
        files += 1;
        bytes += size;
        if store.has(sha256, size).await {
            r.stream(&name, size, Discard).await?;
            continue;
        }
        let upload = store
            .begin()
            .await
            .context("create a file in the file store")?;
        let mut sink = StoreSink {
            upload: Some(upload),
            sha256,
            progress: &mut *progress,
        };
        let got = r.stream(&name, size, &mut sink).await;
        let Some(upload) = sink.upload.take() else {
            bail!("the file store write of {sha256} was lost");
        };
        let (tmp, written, _) = upload.finish().await.context("write the file store")?;
        let got = match got {
            Ok(g) => g,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        };
        if got != sha256 || written != sha256 {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(r.corrupt(&name, &got, sha256));
        }
        store
            .commit(&tmp, sha256)
            .await
            .context("move a restored file into the file store")?;
        added.push(sha256.to_owned());
    }
    Ok((files, bytes))
}

struct StoreSink<'a, 'p> {
    upload: Option<crate::files::Upload>,
    sha256: &'a str,
    progress: &'a mut (dyn FnMut(Progress<'_>) + Send + 'p),
}

impl AsyncSink for &mut StoreSink<'_, '_> {
    async fn take(&mut self, data: &[u8], done: u64, total: u64) -> anyhow::Result<()> {
        if let Some(upload) = self.upload.as_mut() {
            upload.write(data).await.context("write the file store")?;
        }
        (self.progress)(Progress::File {
            sha256: self.sha256,
            done,
            total,
        });
        Ok(())
    }
}

/// The backup a server writes before it changes the schema of a database that holds data
/// (`[update] backup_before_migrate`): an archive of [`create_backup`] in [`default_dir`]
/// named `ums-<UTC time>-schema<from>-before-<to>.umsbak`, recorded in the update log like
/// every backup. Only the last `[update] keep_backups` of these are kept; archives of
/// `ums-server backup` are never removed.
#[derive(Debug, Clone)]
pub struct AutoBackup {
    config: std::sync::Arc<Config>,
}

impl AutoBackup {
    pub fn new(config: &Config) -> Self {
        Self {
            config: std::sync::Arc::new(config.clone()),
        }
    }

    /// Writes the backup before a migration from `from` to `to`, then removes the oldest
    /// automatic backups beyond the configured number. `None` when backups before a
    /// migration are switched off. An error names the cause and the switch.
    pub async fn before(
        &self,
        from: SchemaVersion,
        to: SchemaVersion,
    ) -> anyhow::Result<Option<BackupSummary>> {
        let config = &self.config;
        if !config.backup_before_migrate {
            tracing::warn!(%from, %to, "migrating without a backup: [update] backup_before_migrate is false");
            return Ok(None);
        }
        let dir = default_dir(config);
        let taken = async {
            ums_tls::create_private_dir(&dir)
                .with_context(|| format!("create backup directory {}", dir.display()))?;
            let stem = format!("ums-{}-schema{from}-before-{to}", utc(ums_db::now_ms()).0);
            let mut path = dir.join(format!("{stem}.umsbak"));
            let mut n = 1;
            while path.exists() {
                n += 1;
                path = dir.join(format!("{stem}-{n}.umsbak"));
            }
            create_backup(config, Some(&path)).await
        }
        .await;
        let summary = taken.map_err(|e| {
            anyhow::anyhow!(
                "the backup before migrating schema {from} -> {to} failed, so the schema was not changed: {e:#}. Fix the cause and start again, or set [update] backup_before_migrate = false to migrate without a backup"
            )
        })?;
        tracing::info!(
            path = %summary.path.display(),
            bytes = summary.bytes,
            %from,
            %to,
            "backup before migrating the schema"
        );
        match prune_automatic(&dir, config.keep_backups) {
            Ok(removed) => {
                for p in removed {
                    tracing::info!(path = %p.display(), "removed an old backup taken before a migration");
                }
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), dir = %dir.display(), "could not remove old backups")
            }
        }
        Ok(Some(summary))
    }
}

impl crate::network::update::BeforeMigrate for AutoBackup {
    fn before_migrate<'a>(
        &'a self,
        from: SchemaVersion,
        steps: &'a [SchemaVersion],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send + 'a>> {
        Box::pin(async move {
            let to = steps.last().copied().unwrap_or(from);
            self.before(from, to).await.map(|_| ())
        })
    }
}

/// Whether `name` is an archive [`AutoBackup`] wrote.
fn is_automatic(name: &str) -> bool {
    name.starts_with("ums-") && name.contains("-before-") && name.ends_with(".umsbak")
}

/// The age order of an automatic backup's name: its UTC time, then the number a second backup
/// within the same second got (`...-before-1.6-2.umsbak`).
fn age_key(name: &str) -> (String, u32) {
    let stem = name.trim_end_matches(".umsbak");
    let n = stem
        .rsplit_once('-')
        .filter(|(head, _)| !head.ends_with("-before"))
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(1);
    (stem.get(4..20).unwrap_or(stem).to_owned(), n)
}

/// Removes the oldest automatic backups in `dir` beyond the newest `keep` (their names start
/// with the UTC time, so they sort by age); returns what it removed.
pub fn prune_automatic(dir: &Path, keep: usize) -> anyhow::Result<Vec<PathBuf>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("list {}", dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| is_automatic(n))
        .collect();
    names.sort_by_key(|n| age_key(n));
    let excess = names.len().saturating_sub(keep);
    let mut removed = Vec::new();
    for name in names.into_iter().take(excess) {
        let path = dir.join(name);
        std::fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))?;
        removed.push(path);
    }
    Ok(removed)
}

/// `(compact, RFC 3339)` forms of a UTC time in milliseconds since the epoch:
/// `20261202T183000Z`, `2026-12-02T18:30:00Z`.
pub fn utc(ms: i64) -> (String, String) {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    (
        format!("{y:04}{mo:02}{d:02}T{h:02}{m:02}{s:02}Z"),
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_names_are_utc() {
        assert_eq!(
            utc(0),
            ("19700101T000000Z".into(), "1970-01-01T00:00:00Z".into())
        );
        // 2024-02-29 23:59:59.999 UTC, a leap day.
        assert_eq!(utc(1_709_251_199_999).1, "2024-02-29T23:59:59Z");
        assert_eq!(
            archive_name(1_796_236_200_000, SchemaVersion::new(1, 3)),
            "ums-20261202T183000Z-schema1.3.umsbak"
        );
    }

    #[test]
    fn only_the_newest_automatic_backups_are_kept() {
        let dir = tempfile::tempdir().expect("dir");
        let names = [
            "ums-20261201T100000Z-schema1.4-before-1.5.umsbak",
            "ums-20261202T100000Z-schema1.5-before-1.6.umsbak",
            "ums-20261202T100000Z-schema1.5-before-1.6-2.umsbak",
            "ums-20261203T100000Z-schema1.6-before-1.7.umsbak",
            // Taken by an administrator, and an unrelated file: never removed.
            "ums-20261130T100000Z-schema1.4.umsbak",
            "notes.txt",
        ];
        for n in names {
            std::fs::write(dir.path().join(n), b"x").expect("write");
        }
        let removed = prune_automatic(dir.path(), 2).expect("prune");
        let removed: Vec<String> = removed
            .iter()
            .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
            .collect();
        assert_eq!(removed, [names[0], names[1]]);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["notes.txt", names[4], names[2], names[3]]);
        assert!(prune_automatic(dir.path(), 2).expect("again").is_empty());
    }
}
