//! `umsctl support-bundle FILE`: one archive (`.tar.gz`) with what helps find what is wrong in a
//! network: the network check's report (text, JSON and HTML), and of every running server,
//! watchdog and swp-auth its configuration with secrets redacted and its recent logs. The
//! archive is written with mode 0600 (logs name hosts and users) and appears only when whole.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;
use ums_proto::admin::v1 as pb;

use crate::client::{Admin, ok};

/// The largest bundle accepted from the server.
const MAX_BUNDLE: usize = 256 * 1024 * 1024;

#[derive(Debug, clap::Args)]
pub struct BundleArgs {
    /// The archive to write, e.g. `ums-support.tar.gz`.
    pub file: PathBuf,
    /// Run the network check now instead of using a report less than a minute old.
    #[arg(long)]
    pub fresh: bool,
    /// Replace FILE when it exists.
    #[arg(long)]
    pub force: bool,
}

/// What `manifest.json` in the archive says, and what `--json` prints.
#[derive(Debug, Serialize)]
struct Manifest {
    file: String,
    created_at_ms: i64,
    created_by: String,
    umsctl_version: &'static str,
    check_failed: u32,
    check_warnings: u32,
    processes: Vec<ProcessEntry>,
    missing: Vec<MissingEntry>,
}

#[derive(Debug, Serialize)]
struct ProcessEntry {
    id: String,
    kind: String,
    version: String,
    dir: String,
    logs: Vec<String>,
}

#[derive(Debug, Serialize)]
struct MissingEntry {
    id: String,
    kind: String,
    reason: String,
}

/// A name safe as one path component of the archive.
fn component(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match s.trim_start_matches('.') {
        "" => "_".to_owned(),
        t => t.to_owned(),
    }
}

pub async fn run(json: bool, admin: &mut Admin, args: BundleArgs) -> anyhow::Result<()> {
    if args.file.exists() && !args.force {
        anyhow::bail!(
            "{} exists: choose another name, or pass --force to replace it",
            args.file.display()
        );
    }
    let spinner = crate::output::spinner("gathering the network check, configurations and logs");
    let reply = ok(admin
        .clone()
        .max_decoding_message_size(MAX_BUNDLE)
        .support_bundle(pb::SupportBundleRequest { fresh: args.fresh })
        .await);
    spinner.finish_and_clear();
    let bundle = reply?;
    let manifest = write(&args.file, &bundle)?;
    if json {
        return super::print_json(&manifest);
    }
    println!(
        "wrote {}: the network check ({} failed, {} warnings), {} processes",
        args.file.display(),
        manifest.check_failed,
        manifest.check_warnings,
        manifest.processes.len()
    );
    for m in &manifest.missing {
        println!("  not in it: {} {}: {}", m.kind, m.id, m.reason);
    }
    Ok(())
}

/// Writes the archive next to `file` under a temporary name, then renames it into place.
fn write(file: &Path, bundle: &pb::SupportBundleResponse) -> anyhow::Result<Manifest> {
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .context("the bundle needs a file name")?;
    let tmp = dir.join(format!(".{name}.{}.partial", std::process::id()));
    let result = write_archive(&tmp, file, bundle).and_then(|m| {
        std::fs::rename(&tmp, file)
            .with_context(|| format!("move the bundle into place at {}", file.display()))?;
        Ok(m)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn write_archive(
    tmp: &Path,
    file: &Path,
    bundle: &pb::SupportBundleResponse,
) -> anyhow::Result<Manifest> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .with_context(|| format!("create {}", tmp.display()))?;
    let gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    let mut archive = tar::Builder::new(gz);
    let root = format!("ums-support-{}", bundle.created_at_ms);
    let mtime = u64::try_from(bundle.created_at_ms / 1000).unwrap_or(0);
    let mut add = |path: &str, data: &[u8]| -> anyhow::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(mtime);
        header.set_entry_type(tar::EntryType::Regular);
        archive
            .append_data(&mut header, format!("{root}/{path}"), data)
            .with_context(|| format!("add {path} to the bundle"))
    };
    let mut manifest = Manifest {
        file: file.display().to_string(),
        created_at_ms: bundle.created_at_ms,
        created_by: bundle.created_by.clone(),
        umsctl_version: env!("CARGO_PKG_VERSION"),
        check_failed: 0,
        check_warnings: 0,
        processes: Vec::new(),
        missing: bundle
            .missing
            .iter()
            .map(|m| MissingEntry {
                id: m.process_id.clone(),
                kind: m.kind.clone(),
                reason: m.reason.clone(),
            })
            .collect(),
    };
    if let Some(report) = &bundle.check {
        manifest.check_failed = report.failed;
        manifest.check_warnings = report.warnings;
        add(
            "check/report.txt",
            super::check::report_table(report).as_bytes(),
        )?;
        add(
            "check/report.json",
            serde_json::to_string_pretty(report)?.as_bytes(),
        )?;
        add(
            "check/report.html",
            super::check::report_html(report).as_bytes(),
        )?;
    }
    for p in &bundle.processes {
        let dir = format!(
            "processes/{}-{}",
            component(&p.kind),
            component(&p.process_id)
        );
        let mut about = format!(
            "id = {:?}\nkind = {:?}\nversion = {:?}\nclock_ms = {}\n",
            p.process_id, p.kind, p.version, p.clock_ms
        );
        let mut logs = Vec::new();
        for l in &p.logs {
            let name = format!("{}.log", component(&l.name));
            let mut text = String::new();
            if l.dropped_lines > 0 {
                text.push_str(&format!(
                    "({} older lines are no longer kept)\n",
                    l.dropped_lines
                ));
            }
            text.push_str(&l.text);
            add(&format!("{dir}/{name}"), text.as_bytes())?;
            logs.push(name);
        }
        about.push_str(&format!("logs = {logs:?}\n"));
        add(&format!("{dir}/process.toml"), about.as_bytes())?;
        add(&format!("{dir}/config.toml"), p.config_toml.as_bytes())?;
        manifest.processes.push(ProcessEntry {
            id: p.process_id.clone(),
            kind: p.kind.clone(),
            version: p.version.clone(),
            dir,
            logs,
        });
    }
    add(
        "manifest.json",
        serde_json::to_string_pretty(&manifest)?.as_bytes(),
    )?;
    let gz = archive.into_inner().context("finish the archive")?;
    let mut out = gz.finish().context("finish the compression")?;
    out.flush()?;
    out.sync_all().context("write the bundle to disk")?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_one_safe_path_component() {
        assert_eq!(component("server-1"), "server-1");
        assert_eq!(component("../etc/passwd"), "_etc_passwd");
        assert_eq!(component(""), "_");
        assert_eq!(component("a b/c"), "a_b_c");
    }

    #[test]
    fn the_archive_holds_the_report_and_each_process_and_is_private() {
        let dir = std::env::temp_dir().join(format!("umsctl-bundle-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("test file");
        let file = dir.join("b.tar.gz");
        let bundle = pb::SupportBundleResponse {
            created_at_ms: 1_700_000_000_000,
            created_by: "s1".into(),
            check: Some(pb::NetworkCheckReport::default()),
            processes: vec![ums_proto::network::v1::DiagnosticsResponse {
                process_id: "s1".into(),
                kind: "server".into(),
                version: "1.0.0".into(),
                config_toml: "database_url = \"sqlite://x\"\n".into(),
                logs: vec![ums_proto::network::v1::RecentLog {
                    name: "log".into(),
                    text: "hello\n".into(),
                    dropped_lines: 0,
                }],
                clock_ms: 0,
            }],
            missing: vec![],
        };
        let m = write(&file, &bundle).expect("test file");
        assert_eq!(m.processes[0].logs, ["log.log"]);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file)
            .expect("test file")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let gz = flate2::read::GzDecoder::new(std::fs::File::open(&file).expect("test file"));
        let mut names: Vec<String> = tar::Archive::new(gz)
            .entries()
            .expect("test file")
            .map(|e| {
                e.expect("test file")
                    .path()
                    .expect("test file")
                    .display()
                    .to_string()
            })
            .collect();
        names.sort();
        let root = "ums-support-1700000000000";
        assert_eq!(
            names,
            [
                format!("{root}/check/report.html"),
                format!("{root}/check/report.json"),
                format!("{root}/check/report.txt"),
                format!("{root}/manifest.json"),
                format!("{root}/processes/server-s1/config.toml"),
                format!("{root}/processes/server-s1/log.log"),
                format!("{root}/processes/server-s1/process.toml"),
            ]
        );
        // Nothing is left under a temporary name.
        assert_eq!(std::fs::read_dir(&dir).expect("test file").count(), 1);
        std::fs::remove_dir_all(&dir).expect("test file");
    }
}
