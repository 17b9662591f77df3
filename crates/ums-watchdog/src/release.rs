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
    #[error(
        "revision {revision} is older than revision {installed} installed here and is not the release this node ran before it ({previous}): a node goes back only to the release it ran last; sign the old files as a new, higher revision"
    )]
    NotPrevious {
        revision: u64,
        installed: u64,
        previous: String,
    },
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
    /// The release this node ran before this one (without its own previous): the one older
    /// revision it goes back to when the network is rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Box<Installed>>,
}

impl Installed {
    /// This state as the previous one of the next: without its own previous.
    pub fn as_previous(&self) -> Box<Installed> {
        Box::new(Installed {
            previous: None,
            ..self.clone()
        })
    }
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

/// Verifies a manifest a server offered for a rollback: signed by a key this node pinned and
/// not expired, like any other, and exactly the release this node ran before the installed
/// one (its revision and digest as `installed.json` recorded them). That is the one older
/// revision a node accepts, and only when the server marks the offer as a rollback.
pub fn verify_rollback(
    manifest: &str,
    keys: &[PublicKey],
    now_ms: i64,
    installed: Option<&Installed>,
) -> Result<SignedManifest, UpdateError> {
    let signed = SignedManifest::from_json(manifest.as_bytes())?;
    let m = signed.verify(keys, now_ms)?;
    let previous = installed.and_then(|i| i.previous.as_deref());
    match previous {
        Some(p) if p.revision == m.revision && p.digest == m.digest() => Ok(signed),
        _ => Err(UpdateError::NotPrevious {
            revision: m.revision,
            installed: installed.map_or(0, |i| i.revision),
            previous: previous.map_or("none recorded".to_owned(), |p| {
                format!("revision {}", p.revision)
            }),
        }),
    }
}

/// What an update of this node does with each of its files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// On disk with the same size and hash (in the revision's own directory, kept from an
    /// earlier install, or in the running one): copied from there.
    pub keep: Vec<FileEntry>,
    /// Where each kept file is, in the order of `keep`.
    pub keep_from: Vec<PathBuf>,
    /// New or changed: downloaded.
    pub download: Vec<FileEntry>,
}

impl Plan {
    pub fn download_bytes(&self) -> u64 {
        self.download.iter().map(|f| f.size).sum()
    }

    /// Every file is in `revision`'s own directory already, as signed: nothing to install.
    pub fn in_place(&self, layout: &Layout, revision: u64) -> bool {
        let dir = layout.version_dir(revision);
        self.download.is_empty() && self.keep_from.iter().all(|p| p.starts_with(&dir))
    }
}

/// Compares the files `roles` need with what is on disk, by size and hash: the revision's own
/// directory (left by an earlier install, as after a rollback) first, then the running one's.
pub fn plan(layout: &Layout, manifest: &Manifest, roles: &[String]) -> Plan {
    let mut plan = Plan::default();
    let dirs = [layout.version_dir(manifest.revision), layout.current()];
    for f in manifest.files_for(roles) {
        let found = dirs.iter().map(|d| d.join(&f.name)).find(|local| {
            matches!(ums_release::hash_file(local), Ok((size, sha)) if size == f.size && sha == f.sha256)
        });
        match found {
            Some(local) => {
                plan.keep.push(f.clone());
                plan.keep_from.push(local);
            }
            None => plan.download.push(f.clone()),
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
    for (f, from) in plan.keep.iter().zip(&plan.keep_from) {
        place(f, from, false)?;
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
            previous: None,
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

    #[tokio::test]
    async fn a_rollback_goes_only_to_the_previous_release_verified_with_the_pinned_key() {
        let key = SigningKey::generate().expect("key");
        let pinned = [key.public_key()];
        let signed = |m: Manifest| ums_release::sign(m, &key).expect("sign").to_json();
        let one = signed(manifest(
            1,
            vec![entry("bin/ums-server", &["server"], b"s1")],
        ));
        let two = signed(manifest(
            2,
            vec![entry("bin/ums-server", &["server"], b"s2")],
        ));
        let state = |json: &str, previous: Option<Box<Installed>>| {
            let m = SignedManifest::from_json(json.as_bytes())
                .expect("parse")
                .signed;
            Installed {
                revision: m.revision,
                version: m.version.clone(),
                digest: m.digest(),
                installed_at_ms: 1,
                manifest: json.to_owned(),
                previous,
            }
        };
        let first = state(&one, None);
        let now = state(&two, Some(first.as_previous()));
        let back = verify_rollback(&one, &pinned, 2, Some(&now)).expect("the previous one");
        assert_eq!(back.signed.revision, 1);

        // An older revision this node never ran before the current one: refused.
        let other_one = signed(manifest(
            1,
            vec![entry("bin/ums-server", &["server"], b"x")],
        ));
        let err = verify_rollback(&other_one, &pinned, 2, Some(&now)).expect_err("other");
        assert!(matches!(err, UpdateError::NotPrevious { .. }), "{err}");
        assert!(err.to_string().contains("ran before"), "{err}");
        let err = verify_rollback(&one, &pinned, 2, Some(&first)).expect_err("no previous");
        assert!(err.to_string().contains("none recorded"), "{err}");
        let err = verify_rollback(&one, &pinned, 2, None).expect_err("nothing installed");
        assert!(matches!(err, UpdateError::NotPrevious { .. }), "{err}");
        // The previous release's manifest signed by a key this node does not pin: refused,
        // whatever the database says.
        let other = SigningKey::generate().expect("key");
        let forged = ums_release::sign(
            manifest(1, vec![entry("bin/ums-server", &["server"], b"s1")]),
            &other,
        )
        .expect("sign")
        .to_json();
        let err = verify_rollback(&forged, &pinned, 2, Some(&now)).expect_err("forged");
        assert!(err.to_string().contains("none of the pinned"), "{err}");

        // The previous revision's directory is used as it is: nothing to download or install.
        let dir = tempfile::tempdir().expect("dir");
        let store = dir.path().join("store");
        std::fs::create_dir_all(&store).expect("store");
        for c in [&b"s1"[..], b"s2"] {
            put(&store, c);
        }
        let store = Dir(store);
        let layout = Layout::new(dir.path().join("release"));
        let r = roles(&["server"]);
        let m1 = SignedManifest::from_json(one.as_bytes())
            .expect("parse")
            .signed;
        let m2 = SignedManifest::from_json(two.as_bytes())
            .expect("parse")
            .signed;
        install(&layout, &store, &m1, &r).await;
        install(&layout, &store, &m2, &r).await;
        let p = plan(&layout, &m1, &r);
        assert!(p.in_place(&layout, 1), "{p:?}");
        assert!(!plan(&layout, &m2, &r).in_place(&layout, 1));
    }
}
