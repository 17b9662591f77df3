//! `cargo xtask images`: the container images, built from the release binaries without pulling
//! anything. Each image starts `FROM scratch`; its root file system is staged here from this
//! machine: the binaries, the shared libraries `ldd` lists for them (with the symlinks on the
//! way, as Debian lays them out), an `/etc/passwd` naming the non-root user, and the
//! directories the services write to. The Containerfiles are in `deploy/images/`.
//!
//! The PostgreSQL image of the compose `ha` profile is staged the same way from the machine's
//! Debian `postgresql` packages, with the machine's `/bin/sh` (dash; initdb runs the server through it).

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use clap::Args;

use crate::podman::Podman;
use crate::util::{self, step};

/// Arguments of `cargo xtask images`.
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Use the release binaries already built instead of running `cargo build --release`.
    #[arg(long)]
    pub no_build: bool,
    /// Image tag, besides the package version.
    #[arg(long, default_value = "latest")]
    pub tag: String,
}

/// The user every UMS service runs as, and PostgreSQL's.
pub const UMS_UID: u32 = 10001;
pub const POSTGRES_UID: u32 = 10002;

/// One image of the suite.
struct Spec {
    name: &'static str,
    bins: &'static [&'static str],
}

/// The service images. `ums-devsim` is not among them: devices are not deployed.
const SPECS: [Spec; 3] = [
    Spec {
        name: "ums-server",
        bins: &["ums-server", "umsctl"],
    },
    Spec {
        name: "ums-broker",
        bins: &["ums-broker"],
    },
    Spec {
        name: "swp-auth",
        bins: &["swp-auth"],
    },
];

/// Release binaries the images and the deployment tests use.
pub const RELEASE_BINS: [&str; 5] = [
    "ums-server",
    "ums-broker",
    "swp-auth",
    "umsctl",
    "ums-devsim",
];

/// A built image.
#[derive(Debug, Clone)]
pub struct Image {
    pub name: String,
    /// `localhost/NAME:TAG`.
    pub reference: String,
    pub size_bytes: u64,
}

/// Runs `cargo xtask images`.
pub fn run(args: ImagesArgs) -> anyhow::Result<ExitCode> {
    let podman = Podman::ensure()?;
    if !args.no_build {
        build_release()?;
    }
    let images = build_all(&podman, &args.tag)?;
    print_sizes(&images);
    Ok(ExitCode::SUCCESS)
}

/// `cargo build --release` of the binaries the images hold.
pub fn build_release() -> anyhow::Result<()> {
    crate::bench::build_release(&RELEASE_BINS)
}

/// Prints a table of the images and their sizes.
pub fn print_sizes(images: &[Image]) {
    for i in images {
        step!(
            "image {:<14} {:>6.1} MB  ({})",
            i.name,
            i.size_bytes as f64 / 1e6,
            i.reference
        );
    }
}

/// Stages and builds every image (the service images and PostgreSQL's) with the given tag.
pub fn build_all(podman: &Podman, tag: &str) -> anyhow::Result<Vec<Image>> {
    let bins = util::profile_dir(true);
    let root = util::target_dir().join("images");
    let mut images = Vec::new();
    for spec in &SPECS {
        let ctx = root.join(spec.name);
        stage_service(&ctx, spec, &bins)?;
        images.push(build(podman, spec.name, &ctx, tag)?);
    }
    let ctx = root.join("ums-postgres");
    stage_postgres(&ctx)?;
    images.push(build(podman, "ums-postgres", &ctx, tag)?);
    Ok(images)
}

fn build(podman: &Podman, name: &str, ctx: &Path, tag: &str) -> anyhow::Result<Image> {
    let reference = format!("localhost/{name}:{tag}");
    let versioned = format!("localhost/{name}:{}", env!("CARGO_PKG_VERSION"));
    let previous = podman
        .output(&["image", "inspect", "--format", "{{.Id}}", &reference])
        .ok();
    // The docker format keeps HEALTHCHECK, which the OCI image format has no field for.
    let mut cmd = podman.cmd();
    cmd.args(["build", "--quiet", "--format", "docker", "--tag"])
        .arg(&reference)
        .arg("--tag")
        .arg(&versioned)
        .arg("--file")
        .arg(ctx.join("Containerfile"))
        .arg(ctx);
    let out = cmd.output().context("run podman build")?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}):\n{}",
            util::render(&cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let size = podman
        .output(&["image", "inspect", "--format", "{{.Size}}", &reference])?
        .trim()
        .parse()
        .context("image size")?;
    // The image this build replaced, now without a tag: removed, so rebuilds do not pile up.
    // Podman refuses while a container still uses it, which is fine.
    let current = podman.output(&["image", "inspect", "--format", "{{.Id}}", &reference])?;
    if let Some(old) = previous.filter(|old| old.trim() != current.trim()) {
        let _ = podman.output(&["rmi", old.trim()]);
    }
    Ok(Image {
        name: name.to_owned(),
        reference,
        size_bytes: size,
    })
}

/// Empties `ctx` and lays out the Containerfile and the directories every image has.
fn fresh_context(ctx: &Path, containerfile: &str) -> anyhow::Result<PathBuf> {
    if ctx.exists() {
        std::fs::remove_dir_all(ctx).with_context(|| format!("empty {}", ctx.display()))?;
    }
    let rootfs = ctx.join("rootfs");
    for d in ["etc", "tmp", "var/lib", "run"] {
        std::fs::create_dir_all(rootfs.join(d))?;
    }
    std::fs::set_permissions(rootfs.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
    // The directories owned by the service user, copied with --chown by the Containerfile.
    std::fs::create_dir_all(ctx.join("state"))?;
    let src = util::workspace_root()
        .join("deploy/images")
        .join(containerfile);
    std::fs::copy(&src, ctx.join("Containerfile"))
        .with_context(|| format!("copy {}", src.display()))?;
    std::fs::write(
        rootfs.join("etc/nsswitch.conf"),
        "passwd: files\ngroup: files\nhosts: files dns\n",
    )?;
    Ok(rootfs)
}

fn stage_service(ctx: &Path, spec: &Spec, bins: &Path) -> anyhow::Result<()> {
    step!("staging {}", spec.name);
    let rootfs = fresh_context(ctx, &format!("{}.Containerfile", spec.name))?;
    std::fs::write(
        rootfs.join("etc/passwd"),
        format!(
            "root:x:0:0:root:/:/nonexistent\nums:x:{UMS_UID}:{UMS_UID}:UMS:/var/lib/ums:/nonexistent\n"
        ),
    )?;
    std::fs::write(
        rootfs.join("etc/group"),
        format!("root:x:0:\nums:x:{UMS_UID}:\n"),
    )?;
    std::fs::create_dir_all(rootfs.join("usr/bin"))?;
    std::fs::create_dir_all(rootfs.join("run/ums"))?;
    let mut elfs = Vec::new();
    for bin in spec.bins {
        let src = bins.join(bin);
        if !src.exists() {
            bail!(
                "{} is not built; run `cargo xtask images` without --no-build",
                src.display()
            );
        }
        let dst = rootfs.join("usr/bin").join(bin);
        std::fs::copy(&src, &dst).with_context(|| format!("copy {}", src.display()))?;
        // The release profile keeps line tables for backtraces on the developer's machine;
        // the image keeps the symbols (names in a panic's backtrace) but not the DWARF.
        util::run(Command::new("strip").arg("--strip-debug").arg(&dst))
            .context("strip the binary (Debian package binutils)")?;
        elfs.push(src);
    }
    copy_libraries(&rootfs, &elfs)?;
    std::fs::create_dir_all(ctx.join("state/ums"))?;
    Ok(())
}

fn stage_postgres(ctx: &Path) -> anyhow::Result<()> {
    step!("staging ums-postgres from the machine's postgresql packages");
    let found = ums_testkit::pg_bin_dir().context(
        "postgresql server binaries not found; install the `postgresql` package (cargo xtask test does)",
    )?;
    // The directory may hold links to the binaries (/usr/local/bin): take the real one.
    let postgres = std::fs::canonicalize(found.join("postgres"))?;
    let bin_dir = postgres
        .parent()
        .context("postgres binary has no directory")?
        .to_path_buf();
    // /usr/lib/postgresql/<major>/bin
    let version_dir = bin_dir
        .parent()
        .context("postgresql bin directory has no parent")?
        .to_path_buf();
    let major = version_dir
        .file_name()
        .and_then(|n| n.to_str())
        .context("postgresql version directory")?
        .to_owned();
    let share = PathBuf::from("/usr/share/postgresql").join(&major);
    let rootfs = fresh_context(ctx, "ums-postgres.Containerfile")?;
    std::fs::write(
        rootfs.join("etc/passwd"),
        format!(
            "root:x:0:0:root:/:/nonexistent\npostgres:x:{POSTGRES_UID}:{POSTGRES_UID}:PostgreSQL:/var/lib/postgresql:/nonexistent\n"
        ),
    )?;
    std::fs::write(
        rootfs.join("etc/group"),
        format!("root:x:0:\npostgres:x:{POSTGRES_UID}:\n"),
    )?;
    let mut elfs = Vec::new();
    for bin in ["postgres", "initdb", "pg_isready"] {
        let src = bin_dir.join(bin);
        copy_path(&rootfs, &src)?;
        elfs.push(src);
        std::fs::create_dir_all(rootfs.join("usr/bin"))?;
        std::os::unix::fs::symlink(
            Path::new("../lib/postgresql")
                .join(&major)
                .join("bin")
                .join(bin),
            rootfs.join("usr/bin").join(bin),
        )?;
    }
    // Server modules, without the JIT (it links LLVM, 100 MB) and its bitcode.
    let lib_dir = version_dir.join("lib");
    for entry in
        std::fs::read_dir(&lib_dir).with_context(|| format!("read {}", lib_dir.display()))?
    {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with("llvmjit") || name == "bitcode" {
            continue;
        }
        copy_tree(&rootfs, &path)?;
        if name.ends_with(".so") {
            elfs.push(path);
        }
    }
    copy_tree(&rootfs, &share)?;
    // Time zones, without the duplicate trees.
    for entry in std::fs::read_dir("/usr/share/zoneinfo").context("read /usr/share/zoneinfo")? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if !matches!(name, "posix" | "right") {
            copy_tree(&rootfs, &path)?;
        }
    }
    // initdb starts the server through /bin/sh, and the entrypoint is a script: the machine's
    // /bin/sh (dash on Debian), with the links on the way.
    copy_path(&rootfs, Path::new("/bin/sh"))?;
    elfs.push(std::fs::canonicalize("/bin/sh").context("/bin/sh")?);
    copy_libraries(&rootfs, &elfs)?;
    std::fs::create_dir_all(rootfs.join("usr/local/bin"))?;
    let entry = rootfs.join("usr/local/bin/ums-postgres-entrypoint");
    std::fs::copy(
        util::workspace_root().join("deploy/images/ums-postgres-entrypoint"),
        &entry,
    )?;
    std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o755))?;
    std::fs::create_dir_all(ctx.join("state/postgresql"))?;
    Ok(())
}

/// Copies the shared libraries (and the dynamic loader) that `ldd` lists for `elfs`.
fn copy_libraries(rootfs: &Path, elfs: &[PathBuf]) -> anyhow::Result<()> {
    let mut libs = BTreeSet::new();
    for elf in elfs {
        let out = Command::new("ldd")
            .arg(elf)
            .output()
            .context("run ldd (Debian package libc-bin)")?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "ldd {}: {}",
                elf.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for line in text.lines() {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)", "/lib64/ld-linux-x86-64.so.2 (0x...)"
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(p) = path.filter(|p| p.starts_with('/')) {
                libs.insert(PathBuf::from(p));
            } else if line.contains("not found") {
                bail!("{}: {}", elf.display(), line.trim());
            }
        }
    }
    for lib in &libs {
        copy_path(rootfs, lib)?;
    }
    Ok(())
}

/// Removes `.` and `..` from an absolute path without looking at the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Copies the file at the absolute `path` into `rootfs` at the same path, recreating every
/// symlink on the way (directories or the file itself) as a symlink and copying its target.
fn copy_path(rootfs: &Path, path: &Path) -> anyhow::Result<()> {
    let path = normalize(path);
    let parts: Vec<_> = path.components().skip(1).collect();
    let mut host = PathBuf::from("/");
    for (i, part) in parts.iter().enumerate() {
        host.push(part);
        let inside = rootfs.join(host.strip_prefix("/")?);
        let meta =
            std::fs::symlink_metadata(&host).with_context(|| format!("stat {}", host.display()))?;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&host)?;
            if std::fs::symlink_metadata(&inside).is_err() {
                if let Some(parent) = inside.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::os::unix::fs::symlink(&target, &inside)?;
            }
            let base = host.parent().unwrap_or(Path::new("/"));
            let mut resolved = if target.is_absolute() {
                target
            } else {
                base.join(target)
            };
            for rest in &parts[i + 1..] {
                resolved.push(rest);
            }
            return copy_path(rootfs, &resolved);
        }
        if i + 1 < parts.len() || meta.is_dir() {
            std::fs::create_dir_all(&inside)?;
        } else if std::fs::symlink_metadata(&inside).is_err() {
            if let Some(parent) = inside.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::copy(&host, &inside).with_context(|| format!("copy {}", host.display()))?;
        }
    }
    Ok(())
}

/// Copies a file or a directory tree into `rootfs` at the same path; symlinks inside the tree
/// are copied as symlinks.
fn copy_tree(rootfs: &Path, path: &Path) -> anyhow::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.is_dir() {
        if meta.file_type().is_symlink() {
            let inside = rootfs.join(path.strip_prefix("/")?);
            if let Some(parent) = inside.parent() {
                std::fs::create_dir_all(parent)?;
            }
            if std::fs::symlink_metadata(&inside).is_err() {
                std::os::unix::fs::symlink(std::fs::read_link(path)?, &inside)?;
            }
            return Ok(());
        }
        return copy_path(rootfs, path);
    }
    std::fs::create_dir_all(rootfs.join(path.strip_prefix("/")?))?;
    for entry in std::fs::read_dir(path)? {
        copy_tree(rootfs, &entry?.path())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_is_lexical() {
        assert_eq!(
            normalize(Path::new("/usr/lib64/../lib/x86_64-linux-gnu/./libc.so.6")),
            PathBuf::from("/usr/lib/x86_64-linux-gnu/libc.so.6")
        );
    }

    #[test]
    fn copy_path_keeps_symlinks() -> anyhow::Result<()> {
        let host = tempfile::tempdir()?;
        let root = tempfile::tempdir()?;
        let real = host.path().join("real");
        std::fs::create_dir_all(&real)?;
        std::fs::write(real.join("lib.so"), "x")?;
        std::os::unix::fs::symlink("real", host.path().join("link"))?;
        copy_path(root.path(), &host.path().join("link/lib.so"))?;
        let inside = root.path().join(host.path().strip_prefix("/")?);
        assert!(
            std::fs::symlink_metadata(inside.join("link"))?
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read_to_string(inside.join("real/lib.so"))?, "x");
        Ok(())
    }
}
