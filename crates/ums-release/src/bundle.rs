//! A release bundle on disk: one directory per role (`server/`, `broker/`, `watchdog/`,
//! `swp-auth/`, `umsctl/`, or a custom role) holding that role's files under the names they get
//! in the installed release, and the signed `manifest.json` beside them. A file several roles
//! need appears in each of their directories with the same content (the file store keeps it
//! once).

use std::collections::BTreeMap;
use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{FORMAT, FileEntry, Manifest, validate_name, validate_role};

/// The signed manifest's name in a bundle.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Why a bundle could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Layout(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The size and lower-case hex sha256 of a file.
pub fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((size, hex::encode(hasher.finalize())))
}

/// Where a manifest's file lies in its bundle (under its first role's directory).
pub fn bundle_path(dir: &Path, entry: &FileEntry) -> PathBuf {
    let role = entry.roles.first().map(String::as_str).unwrap_or_default();
    dir.join(role).join(&entry.name)
}

/// Reads a bundle directory into an (unsigned) manifest of `version` and `revision`: every
/// file of every role directory with its size, sha256 and mode (0755 when the owner may run
/// it). Refuses symbolic links, files outside a role directory, invalid names and a name whose
/// content differs between roles.
pub fn pack(
    dir: &Path,
    version: &str,
    revision: u64,
    created_at_ms: i64,
    expires_at_ms: i64,
) -> Result<Manifest, BundleError> {
    let mut files: BTreeMap<String, FileEntry> = BTreeMap::new();
    let mut roles: Vec<(String, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let kind = entry.file_type().map_err(io(&path))?;
        if kind.is_dir() {
            validate_role(&name).map_err(|e| {
                BundleError::Layout(format!("{}: not a role directory: {e}", path.display()))
            })?;
            roles.push((name, path));
        } else if name != MANIFEST_FILE {
            return Err(BundleError::Layout(format!(
                "{}: files go in a role directory (server/, broker/, watchdog/, swp-auth/, umsctl/ or a custom role)",
                path.display()
            )));
        }
    }
    roles.sort();
    for (role, root) in &roles {
        let mut stack = vec![root.clone()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).map_err(io(&d))? {
                let entry = entry.map_err(io(&d))?;
                let path = entry.path();
                let kind = entry.file_type().map_err(io(&path))?;
                if kind.is_dir() {
                    stack.push(path);
                    continue;
                }
                if !kind.is_file() {
                    return Err(BundleError::Layout(format!(
                        "{}: only regular files go in a bundle (no symbolic links)",
                        path.display()
                    )));
                }
                let rel = path
                    .strip_prefix(root)
                    .ok()
                    .and_then(|p| p.to_str())
                    .ok_or_else(|| {
                        BundleError::Layout(format!("{}: name is not UTF-8", path.display()))
                    })?
                    .to_owned();
                validate_name(&rel)
                    .map_err(|e| BundleError::Layout(format!("{}: {e}", path.display())))?;
                let (size, sha256) = hash_file(&path).map_err(io(&path))?;
                let exec = entry.metadata().map_err(io(&path))?.permissions().mode() & 0o100 != 0;
                let mode = if exec { 0o755 } else { 0o644 };
                match files.get_mut(&rel) {
                    Some(f) if f.sha256 == sha256 && f.mode == mode => f.roles.push(role.clone()),
                    Some(f) => {
                        return Err(BundleError::Layout(format!(
                            "`{rel}` differs between the roles {} and {role}: a name has one content in a release",
                            f.roles.join(", ")
                        )));
                    }
                    None => {
                        files.insert(
                            rel.clone(),
                            FileEntry {
                                name: rel,
                                roles: vec![role.clone()],
                                size,
                                sha256,
                                mode,
                            },
                        );
                    }
                }
            }
        }
    }
    if files.is_empty() {
        return Err(BundleError::Layout(format!(
            "{}: the bundle holds no file (put each role's files in a directory named after it, such as server/bin/ums-server)",
            dir.display()
        )));
    }
    Ok(Manifest {
        format: FORMAT,
        version: version.to_owned(),
        revision,
        created_at_ms,
        expires_at_ms,
        files: files.into_values().collect(),
    })
}
