//! The node's side of software releases, on disk: the files of each installed revision side by
//! side (`<dir>/versions/<revision>/`), the `current` symbolic link the children's binaries are
//! started through (switched atomically by a rename), the state file of the installed revision
//! (`installed.json`, written only after a successful update), partial downloads that resume
//! (`downloads/<sha256>.part`), and the node's `update.log`.
//!
//! A manifest is verified here with the keys pinned in this node's own configuration, never a
//! key from the network: what a server hands out is only a candidate.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt as _;
use ums_release::{FileEntry, Manifest, PublicKey, SignedManifest};

/// Why a step of an update failed.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("{0}")]
    Refused(#[from] ums_release::ReleaseError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error(
        "{name}: downloaded {size} bytes with sha256 {got}, the manifest signs {want_size} bytes with sha256 {want}"
    )]
    HashMismatch {
        name: String,
        size: u64,
        got: String,
        want_size: u64,
        want: String,
    },
    #[error("{name}: download failed: {error}")]
    Download { name: String, error: String },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> UpdateError {
    let what = what.into();
    move |source| UpdateError::Io { what, source }
}

/// What this node installed last, in `installed.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    pub revision: u64,
    pub version: String,
    pub digest: String,
    pub installed_at_ms: i64,
    /// The signed manifest the revision was installed from.
    pub manifest: String,
}

/// Where a node keeps its releases.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn version_dir(&self, revision: u64) -> PathBuf {
        self.root.join("versions").join(revision.to_string())
    }

    /// The link to the running revision's directory.
    pub fn current(&self) -> PathBuf {
        self.root.join("current")
    }

    pub fn state_file(&self) -> PathBuf {
        self.root.join("installed.json")
    }

    pub fn log_file(&self) -> PathBuf {
        self.root.join("update.log")
    }

    fn partial(&self, sha256: &str) -> PathBuf {
        self.root.join("downloads").join(format!("{sha256}.part"))
    }

    /// The installed revision, `None` when nothing was installed through a release.
    pub fn installed(&self) -> Result<Option<Installed>, UpdateError> {
        let path = self.state_file();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| UpdateError::Io {
                    what: format!("read {}", path.display()),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(format!("read {}", path.display()))(e)),
        }
    }

    /// Records the installed revision: written to a temporary file, synced, then renamed over
    /// the state file, so a crash leaves the old state or the new one.
    pub fn write_installed(&self, installed: &Installed) -> Result<(), UpdateError> {
        let path = self.state_file();
        let tmp = self.root.join("installed.json.tmp");
        let what = format!("write {}", path.display());
        let text = serde_json::to_vec_pretty(installed).unwrap_or_default();
        let mut f = File::create(&tmp).map_err(io(what.clone()))?;
        f.write_all(&text).map_err(io(what.clone()))?;
        f.sync_all().map_err(io(what.clone()))?;
        fs::rename(&tmp, &path).map_err(io(what.clone()))?;
        sync_dir(&self.root).map_err(io(what))
    }

    /// The revision `current` points at, if any.
    pub fn current_revision(&self) -> Option<u64> {
        fs::read_link(self.current())
            .ok()?
            .file_name()?
            .to_str()?
            .parse()
            .ok()
    }

    /// Points `current` at `revision`'s directory in one rename; returns the revision it
    /// pointed at before.
    pub fn switch_to(&self, revision: u64) -> Result<Option<u64>, UpdateError> {
        let before = self.current_revision();
        let link = self.root.join("current.new");
        let what = format!("switch {} to revision {revision}", self.current().display());
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(Path::new("versions").join(revision.to_string()), &link)
            .map_err(io(what.clone()))?;
        fs::rename(&link, self.current()).map_err(io(what.clone()))?;
        sync_dir(&self.root).map_err(io(what))?;
        Ok(before)
    }

    /// Points `current` back at `before` (or removes it when there was none).
    pub fn switch_back(&self, before: Option<u64>) -> Result<(), UpdateError> {
        match before {
            Some(r) => self.switch_to(r).map(|_| ()),
            None => fs::remove_file(self.current())
                .map_err(io(format!("remove {}", self.current().display()))),
        }
    }

    /// Appends a line to `update.log` (time, revision, step, detail).
    pub fn log(&self, revision: u64, step: &str, detail: &str) {
        let line = format!(
            "{} revision={revision} step={step} {detail}\n",
            crate::supervisor::now_ms()
        );
        let written = fs::create_dir_all(&self.root).and_then(|()| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.log_file())?
                .write_all(line.as_bytes())
        });
        if let Err(e) = written {
            tracing::warn!(error = %e, "cannot write update.log");
        }
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Verifies a manifest a server offered: signed by a key this node pinned, not expired, not
/// older than the installed revision.
pub fn verify_offer(
    manifest: &str,
    keys: &[PublicKey],
    now_ms: i64,
    installed: u64,
) -> Result<SignedManifest, UpdateError> {
    let signed = SignedManifest::from_json(manifest.as_bytes())?;
    signed.verify_not_older(keys, now_ms, installed)?;
    Ok(signed)
}

/// What an update of this node does with each of its files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// In the running revision with the same size and hash: copied from there.
    pub keep: Vec<FileEntry>,
    /// New or changed: downloaded.
    pub download: Vec<FileEntry>,
}

impl Plan {
    pub fn download_bytes(&self) -> u64 {
        self.download.iter().map(|f| f.size).sum()
    }
}

/// Compares the files `roles` need with the running revision's on disk, by size and hash.
pub fn plan(layout: &Layout, manifest: &Manifest, roles: &[String]) -> Plan {
    let mut plan = Plan::default();
    let current = layout.current();
    for f in manifest.files_for(roles) {
        let local = current.join(&f.name);
        let same = matches!(ums_release::hash_file(&local), Ok((size, sha)) if size == f.size && sha == f.sha256);
        if same {
            plan.keep.push(f.clone());
        } else {
            plan.download.push(f.clone());
        }
    }
    plan
}

/// Where a node gets a file's content: a server's `ReadFile` in the network; a directory in
/// tests.
pub trait Source {
    /// Appends the content with this hash from `offset` on to `out`.
    fn fetch(
        &self,
        sha256: &str,
        offset: u64,
        out: &mut tokio::fs::File,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send;
}

/// Downloads a file into its partial file, resuming what an earlier attempt left, and checks
/// size and hash; a mismatch removes the partial file so the next attempt starts over.
pub async fn download(
    layout: &Layout,
    source: &impl Source,
    entry: &FileEntry,
) -> Result<PathBuf, UpdateError> {
    let part = layout.partial(&entry.sha256);
    let what = format!("download {}", entry.name);
    if let Some(dir) = part.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(io(what.clone()))?;
    }
    let mut offset = tokio::fs::metadata(&part)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    if offset > entry.size {
        // Longer than the file can be: start over.
        tokio::fs::remove_file(&part)
            .await
            .map_err(io(what.clone()))?;
        offset = 0;
    }
    if offset < entry.size {
        let mut out = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&part)
            .await
            .map_err(io(what.clone()))?;
        source
            .fetch(&entry.sha256, offset, &mut out)
            .await
            .map_err(|error| UpdateError::Download {
                name: entry.name.clone(),
                error,
            })?;
        out.flush().await.map_err(io(what.clone()))?;
        out.sync_all().await.map_err(io(what.clone()))?;
    }
    let hashed = part.clone();
    let (size, sha) = tokio::task::spawn_blocking(move || ums_release::hash_file(&hashed))
        .await
        .map_err(|e| io(what.clone())(std::io::Error::other(e)))?
        .map_err(io(what.clone()))?;
    if size != entry.size || sha != entry.sha256 {
        let _ = tokio::fs::remove_file(&part).await;
        return Err(UpdateError::HashMismatch {
            name: entry.name.clone(),
            size,
            got: sha,
            want_size: entry.size,
            want: entry.sha256.clone(),
        });
    }
    Ok(part)
}

/// Assembles `revision`'s directory from the kept files of the running revision and the
/// downloaded ones, each with its mode, in a temporary directory renamed into place once
/// complete.
pub fn stage(layout: &Layout, revision: u64, plan: &Plan) -> Result<PathBuf, UpdateError> {
    let dest = layout.version_dir(revision);
    let tmp = layout.root.join("versions").join(format!("{revision}.tmp"));
    let what = format!("install revision {revision} into {}", dest.display());
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(io(what.clone()))?;
    let place = |entry: &FileEntry, from: &Path, rename: bool| -> Result<(), UpdateError> {
        let to = tmp.join(&entry.name);
        let what = format!("install {}", entry.name);
        if let Some(dir) = to.parent() {
            fs::create_dir_all(dir).map_err(io(what.clone()))?;
        }
        if rename {
            fs::rename(from, &to).map_err(io(what.clone()))?;
        } else {
            fs::copy(from, &to).map_err(io(what.clone()))?;
        }
        fs::set_permissions(&to, fs::Permissions::from_mode(entry.mode))
            .map_err(io(what.clone()))?;
        File::open(&to).and_then(|f| f.sync_all()).map_err(io(what))
    };
    for f in &plan.keep {
        place(f, &layout.current().join(&f.name), false)?;
    }
    for f in &plan.download {
        place(f, &layout.partial(&f.sha256), true)?;
    }
    let _ = fs::remove_dir_all(&dest);
    fs::rename(&tmp, &dest).map_err(io(what.clone()))?;
    sync_dir(&layout.root.join("versions")).map_err(io(what))?;
    Ok(dest)
}

/// Removes version directories other than `keep`.
pub fn prune(layout: &Layout, keep: &[u64]) {
    let Ok(entries) = fs::read_dir(layout.root.join("versions")) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let revision = name.to_str().and_then(|n| n.parse::<u64>().ok());
        if revision.is_some_and(|r| !keep.contains(&r)) {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use sha2::Digest as _;
    use tokio::io::AsyncWriteExt as _;
    use ums_release::{FORMAT, SigningKey};

    use super::*;

    /// Content by hash from a directory: stands in for a server's `ReadFile` so these tests
    /// run without a network; the network source is exercised end to end.
    struct Dir(PathBuf);

    impl Source for Dir {
        async fn fetch(
            &self,
            sha256: &str,
            offset: u64,
            out: &mut tokio::fs::File,
        ) -> Result<(), String> {
            let data = std::fs::read(self.0.join(sha256)).map_err(|e| e.to_string())?;
            let rest = data.get(offset as usize..).ok_or("offset past the end")?;
            out.write_all(rest).await.map_err(|e| e.to_string())
        }
    }

    fn entry(name: &str, roles: &[&str], content: &[u8]) -> FileEntry {
        FileEntry {
            name: name.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            size: content.len() as u64,
            sha256: hex::encode(sha2::Sha256::digest(content)),
            mode: 0o755,
        }
    }

    fn manifest(revision: u64, files: Vec<FileEntry>) -> Manifest {
        Manifest {
            format: FORMAT,
            version: format!("0.{revision}.0"),
            revision,
            created_at_ms: 1,
            expires_at_ms: i64::MAX,
            files,
        }
    }

    fn put(store: &Path, content: &[u8]) {
        let sha = hex::encode(sha2::Sha256::digest(content));
        std::fs::write(store.join(sha), content).expect("store");
    }

    fn roles(r: &[&str]) -> Vec<String> {
        r.iter().map(|s| s.to_string()).collect()
    }

    async fn install(layout: &Layout, store: &Dir, m: &Manifest, r: &[String]) -> Plan {
        let plan = plan(layout, m, r);
        for f in &plan.download {
            download(layout, store, f).await.expect("download");
        }
        stage(layout, m.revision, &plan).expect("stage");
        layout.switch_to(m.revision).expect("switch");
        plan
    }

    #[tokio::test]
    async fn only_changed_files_of_the_nodes_roles_are_downloaded() {
        let dir = tempfile::tempdir().expect("dir");
        let store = dir.path().join("store");
        std::fs::create_dir_all(&store).expect("store");
        let layout = Layout::new(dir.path().join("release"));
        for c in [&b"server 1"[..], b"broker 1", b"server 2", b"swp 1"] {
            put(&store, c);
        }
        let store = Dir(store);
        let node = roles(&["broker", "server", "watchdog"]);
        let r1 = manifest(
            1,
            vec![
                entry("bin/ums-broker", &["broker"], b"broker 1"),
                entry("bin/ums-server", &["server"], b"server 1"),
                entry("bin/swp-auth", &["swp-auth"], b"swp 1"),
            ],
        );
        let p1 = install(&layout, &store, &r1, &node).await;
        assert_eq!(p1.download.len(), 2, "swp-auth is not this node's role");
        assert_eq!(layout.current_revision(), Some(1));
        let bin = layout.current().join("bin/ums-server");
        assert_eq!(std::fs::read(&bin).expect("read"), b"server 1");
        let mode = std::fs::metadata(&bin).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        assert!(!layout.current().join("bin/swp-auth").exists());

        let r2 = manifest(
            2,
            vec![
                entry("bin/ums-broker", &["broker"], b"broker 1"),
                entry("bin/ums-server", &["server"], b"server 2"),
            ],
        );
        let p2 = install(&layout, &store, &r2, &node).await;
        let names: Vec<_> = p2.download.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["bin/ums-server"]);
        assert_eq!(p2.keep.len(), 1);
        assert_eq!(std::fs::read(&bin).expect("read"), b"server 2");
        // The previous revision stays beside it, for switching back.
        assert!(layout.version_dir(1).join("bin/ums-server").exists());
        assert_eq!(layout.switch_to(1).expect("back"), Some(2));
        assert_eq!(std::fs::read(&bin).expect("read"), b"server 1");
        prune(&layout, &[1]);
        assert!(!layout.version_dir(2).exists());
    }

    #[tokio::test]
    async fn a_download_resumes_and_a_tampered_one_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let store = dir.path().join("store");
        std::fs::create_dir_all(&store).expect("store");
        let layout = Layout::new(dir.path().join("release"));
        let content = vec![7u8; 100_000];
        put(&store, &content);
        let e = entry("bin/ums-server", &["server"], &content);
        // Half of it arrived before an interruption.
        let part = layout.partial(&e.sha256);
        std::fs::create_dir_all(part.parent().expect("parent")).expect("dir");
        std::fs::write(&part, &content[..50_000]).expect("part");
        let got = download(&layout, &Dir(store.clone()), &e)
            .await
            .expect("resume");
        assert_eq!(std::fs::read(got).expect("read"), content);

        // What the server sends is not what was signed: refused, nothing kept.
        let mut tampered = content.clone();
        tampered[99_999] = 8;
        std::fs::write(store.join(&e.sha256), &tampered).expect("tamper");
        std::fs::remove_file(&part).expect("rm");
        let err = download(&layout, &Dir(store), &e)
            .await
            .expect_err("tampered");
        assert!(matches!(err, UpdateError::HashMismatch { .. }), "{err}");
        assert!(err.to_string().contains(&e.sha256), "{err}");
        assert!(!part.exists());
    }

    #[test]
    fn the_state_file_is_replaced_whole_and_offers_are_verified_locally() {
        let dir = tempfile::tempdir().expect("dir");
        let layout = Layout::new(dir.path());
        assert_eq!(layout.installed().expect("read"), None);
        let key = SigningKey::generate().expect("key");
        let signed = ums_release::sign(
            manifest(5, vec![entry("bin/ums-server", &["server"], b"s")]),
            &key,
        )
        .expect("sign")
        .to_json();
        let pinned = [key.public_key()];
        let offer = verify_offer(&signed, &pinned, 2, 4).expect("newer");
        let installed = Installed {
            revision: 5,
            version: offer.signed.version.clone(),
            digest: offer.signed.digest(),
            installed_at_ms: 3,
            manifest: signed.clone(),
        };
        layout.write_installed(&installed).expect("write");
        assert_eq!(layout.installed().expect("read"), Some(installed));
        assert!(!dir.path().join("installed.json.tmp").exists());

        let err = verify_offer(&signed, &pinned, 2, 6).expect_err("older");
        assert!(err.to_string().contains("older than revision 6"), "{err}");
        let other = SigningKey::generate().expect("key");
        let err = verify_offer(&signed, &[other.public_key()], 2, 0).expect_err("other key");
        assert!(err.to_string().contains("none of the pinned"), "{err}");

        layout.log(5, "done", "revision 5 installed");
        let log = std::fs::read_to_string(layout.log_file()).expect("log");
        assert!(
            log.contains("revision=5 step=done revision 5 installed"),
            "{log}"
        );
    }
}
