//! `umsctl release`: software releases of the suite. `keygen` and `sign` run offline, on the
//! machine that holds the release key; the other commands talk to the network (`pause`,
//! `resume`, `rollback` and `config` steer the rollout).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::Subcommand;
use ums_release::{MANIFEST_FILE, SigningKey};

use ums_proto::admin::v1 as pb;
use ums_release::SignedManifest;

use super::show;
use crate::client::{Admin, ok};
use crate::output::{table, time};

/// `release` subcommands.
#[derive(Debug, Subcommand)]
pub enum ReleaseCommand {
    /// Generate a release key (offline): writes the private key to OUT (mode 0600, never
    /// overwritten) and prints the public key, which every server and watchdog pins in its
    /// `[release] public_keys`.
    Keygen {
        /// The private key file to create.
        out: PathBuf,
    },
    /// Sign a release bundle (offline): reads every file of the bundle's role directories
    /// (server/, broker/, watchdog/, swp-auth/, umsctl/, or a custom role) with its size,
    /// sha256 and mode, and writes the signed BUNDLE/manifest.json.
    Sign {
        /// The bundle directory.
        bundle: PathBuf,
        /// The private release key file.
        #[arg(long, value_name = "PATH")]
        key: PathBuf,
        /// The release version, such as 0.5.0.
        #[arg(long, value_name = "VERSION")]
        release_version: String,
        /// The revision number: higher than every revision released before on the network.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        revision: u64,
        /// Days until nodes refuse to install it.
        #[arg(long, value_name = "DAYS", default_value_t = 30,
              value_parser = clap::value_parser!(u32).range(1..=3650))]
        expires_in_days: u32,
    },
    /// Upload a signed bundle: checks every file against the manifest, uploads the files the
    /// file store lacks (under releases/REVISION/), then stores the release. The server verifies
    /// the signature against its pinned keys; its revision becomes the network's.
    Upload {
        /// The bundle directory (signed by `umsctl release sign`).
        bundle: PathBuf,
    },
    /// The network's software revision, the rollout (paused, rolling back or rolled back, how
    /// many nodes at once, the nodes updating now), its releases, and per node: installed
    /// revision, update state, last error.
    Status,
    /// Pause the rollout: no node starts an update until `resume` (a node updating finishes
    /// its own).
    Pause,
    /// Resume a paused rollout: nodes take update slots again.
    Resume,
    /// Roll the network back to its previous good release (the newest older revision a node
    /// installed): nodes on a newer revision switch back to the release they ran before, one
    /// at a time, each verifying its signature again with its pinned key. Uploading a newer
    /// release ends the rollback.
    Rollback,
    /// Set how the rollout goes.
    Config {
        /// How many nodes may update at once (1 to 100; 1 when never set).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
        concurrency: u32,
    },
    /// The steps nodes took to update (compared, downloaded, installed, restarted, rolled
    /// back), oldest first.
    Log {
        /// Only this node's (watchdog id).
        #[arg(long, value_name = "ID")]
        node: Option<String>,
        /// The last this many steps.
        #[arg(long, value_name = "N", default_value_t = 200)]
        limit: u32,
    },
}

impl ReleaseCommand {
    /// Whether the command runs without a server (on the offline signing machine).
    pub fn offline(&self) -> bool {
        matches!(self, Self::Keygen { .. } | Self::Sign { .. })
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Runs `keygen` and `sign`.
pub fn run_offline(json: bool, command: ReleaseCommand) -> anyhow::Result<()> {
    match command {
        ReleaseCommand::Keygen { out } => keygen(json, &out),
        ReleaseCommand::Sign {
            bundle,
            key,
            release_version,
            revision,
            expires_in_days,
        } => sign(
            json,
            &bundle,
            &key,
            &release_version,
            revision,
            expires_in_days,
        ),
        other => anyhow::bail!("{other:?} needs a server"),
    }
}

fn keygen(json: bool, out: &Path) -> anyhow::Result<()> {
    let key = SigningKey::generate()?;
    key.write_new(out).with_context(|| {
        format!(
            "create {} (an existing key file is never overwritten)",
            out.display()
        )
    })?;
    let public = key.public_key();
    let value = serde_json::json!({
        "private_key_file": out.display().to_string(),
        "public_key": public.to_string(),
        "key_id": public.key_id(),
    });
    show(json, &value, |_| {
        format!(
            "wrote the private release key to {} (mode 0600): keep it offline\n\
             public key (key id {}), to pin in every server's and watchdog's configuration:\n\n\
             [release]\npublic_keys = [\"{public}\"]\n",
            out.display(),
            public.key_id()
        )
    })
}

fn sign(
    json: bool,
    bundle: &Path,
    key: &Path,
    version: &str,
    revision: u64,
    expires_in_days: u32,
) -> anyhow::Result<()> {
    let key = SigningKey::load(key)?;
    let created = now_ms();
    let expires = created + i64::from(expires_in_days) * 86_400_000;
    let manifest = ums_release::pack(bundle, version, revision, created, expires)?;
    let signed = ums_release::sign(manifest, &key)?;
    let out = bundle.join(MANIFEST_FILE);
    std::fs::write(&out, signed.to_json() + "\n")
        .with_context(|| format!("write {}", out.display()))?;
    let m = &signed.signed;
    show(json, &signed, |_| {
        let mut t = table(["FILE", "ROLES", "SIZE", "SHA256", "MODE"]);
        for f in &m.files {
            t.add_row([
                f.name.clone(),
                f.roles.join(", "),
                f.size.to_string(),
                f.sha256.get(..16).unwrap_or_default().to_owned() + "…",
                format!("{:o}", f.mode),
            ]);
        }
        format!(
            "{t}\nsigned release {} revision {} ({} files, {} bytes; key id {}; expires {} UTC) into {}",
            m.version,
            m.revision,
            m.files.len(),
            m.total_size(),
            key.public_key().key_id(),
            time(m.expires_at_ms),
            out.display()
        )
    })
}

/// Runs a `release` command.
pub async fn run(json: bool, admin: &mut Admin, command: ReleaseCommand) -> anyhow::Result<()> {
    match command {
        ReleaseCommand::Upload { bundle } => upload(json, admin, &bundle).await,
        ReleaseCommand::Status => {
            let status = ok(admin.release_status(pb::ReleaseStatusRequest {}).await)?;
            show(json, &status, status_text)
        }
        ReleaseCommand::Pause => {
            let r = ok(admin.pause_release(pb::PauseReleaseRequest {}).await)?;
            show(json, &r, |r| {
                format!(
                    "rollout paused: no node starts an update until `umsctl release resume`{}",
                    updating(r)
                )
            })
        }
        ReleaseCommand::Resume => {
            let r = ok(admin.resume_release(pb::ResumeReleaseRequest {}).await)?;
            show(json, &r, |r| {
                format!(
                    "rollout resumed: nodes update, at most {} at once",
                    r.concurrency
                )
            })
        }
        ReleaseCommand::Rollback => {
            let r = ok(admin.rollback_release(pb::RollbackReleaseRequest {}).await)?;
            show(json, &r, |r| {
                format!(
                    "rolled back to revision {} (from {}): nodes on a newer revision switch back to it, at most {} at once{}; `umsctl release status` shows them",
                    r.rollback_to,
                    r.rollback_from,
                    r.concurrency,
                    if r.paused {
                        " once the rollout is resumed (it is paused)"
                    } else {
                        ""
                    }
                )
            })
        }
        ReleaseCommand::Config { concurrency } => {
            let r = ok(admin
                .configure_release(pb::ConfigureReleaseRequest { concurrency })
                .await)?;
            show(json, &r, |r| {
                format!("at most {} nodes update at once", r.concurrency)
            })
        }
        ReleaseCommand::Log { node, limit } => {
            let log = ok(admin
                .release_log(pb::ReleaseLogRequest {
                    node_id: node.unwrap_or_default(),
                    limit,
                })
                .await)?;
            show(json, &log, |l| {
                if l.entries.is_empty() {
                    return "no node has logged an update step".to_owned();
                }
                let mut t = table(["TIME (UTC)", "NODE", "REVISION", "STEP", "DETAIL"]);
                for e in &l.entries {
                    t.add_row([
                        time(e.at_ms),
                        e.node_id.clone(),
                        e.revision.to_string(),
                        e.step.clone(),
                        e.detail.clone(),
                    ]);
                }
                t.to_string()
            })
        }
        offline => run_offline(json, offline),
    }
}

/// ", node X is updating" when nodes hold update slots.
fn updating(r: &pb::ReleaseRollout) -> String {
    if r.updating.is_empty() {
        String::new()
    } else {
        format!(
            "; updating now (finishing their own): {}",
            r.updating.join(", ")
        )
    }
}

fn status_text(s: &pb::ReleaseStatusResponse) -> String {
    let mut out = if s.revision == 0 {
        "no release uploaded yet: the network's software revision is 0\n".to_owned()
    } else {
        format!(
            "the network's software revision is {} (version {})\n",
            s.revision, s.version
        )
    };
    if let Some(r) = &s.rollout {
        if r.rollback_to != 0 {
            out.push_str(&format!(
                "{} to revision {} from {} by {} at {} UTC (uploading a newer release ends it)\n",
                if s.rolling_back {
                    "rolling back"
                } else {
                    "rolled back"
                },
                r.rollback_to,
                r.rollback_from,
                r.rollback_by,
                time(r.rollback_at_ms)
            ));
        }
        if r.paused {
            out.push_str(&format!(
                "paused by {} at {} UTC: no node starts an update (`umsctl release resume` continues){}\n",
                r.paused_by,
                time(r.paused_at_ms),
                updating(r)
            ));
        } else {
            out.push_str(&format!(
                "rollout running: at most {} node(s) at once{}\n",
                r.concurrency,
                updating(r)
            ));
        }
    }
    let mut nodes = table([
        "NODE",
        "HOST",
        "ROLES",
        "INSTALLED",
        "TARGET",
        "STATE",
        "PROCESS",
        "UPDATED (UTC)",
        "LAST ERROR",
    ]);
    for n in &s.nodes {
        nodes.add_row([
            n.node_id.clone(),
            n.host.clone(),
            n.roles.join(", "),
            n.installed_revision.to_string(),
            if n.target_revision == 0 {
                "-".to_owned()
            } else {
                n.target_revision.to_string()
            },
            n.state.clone(),
            n.process_status.clone(),
            time(n.updated_at_ms),
            n.error.clone(),
        ]);
    }
    out.push_str(&nodes.to_string());
    if !s.releases.is_empty() {
        let mut rel = table([
            "REVISION",
            "VERSION",
            "FILES",
            "SIZE",
            "UPLOADED (UTC)",
            "BY",
            "EXPIRES (UTC)",
        ]);
        for r in &s.releases {
            rel.add_row([
                r.revision.to_string(),
                r.version.clone(),
                r.files.to_string(),
                r.size.to_string(),
                time(r.uploaded_at_ms),
                r.uploaded_by.clone(),
                time(r.expires_at_ms),
            ]);
        }
        out.push('\n');
        out.push_str(&rel.to_string());
    }
    out
}

async fn upload(json: bool, admin: &mut Admin, bundle: &Path) -> anyhow::Result<()> {
    let path = bundle.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "read {} (sign the bundle first with `umsctl release sign`)",
            path.display()
        )
    })?;
    let signed = SignedManifest::from_json(text.as_bytes())
        .with_context(|| format!("{}", path.display()))?;
    // Every file as signed, before anything is sent.
    for f in &signed.signed.files {
        let local = ums_release::bundle_path(bundle, f);
        let (size, sha256) = {
            let path = local.clone();
            tokio::task::spawn_blocking(move || ums_release::hash_file(&path))
                .await?
                .with_context(|| format!("read {}", local.display()))?
        };
        if size != f.size || sha256 != f.sha256 {
            anyhow::bail!(
                "{} does not match the signed manifest ({size} bytes, sha256 {sha256}; signed: {} bytes, sha256 {}): the file changed after signing; nothing was uploaded",
                local.display(),
                f.size,
                f.sha256
            );
        }
    }
    let check = ok(admin
        .upload_release(pb::UploadReleaseRequest {
            manifest: text.clone(),
            check_only: true,
        })
        .await)?;
    let total = check.missing.len();
    for (i, f) in check.missing.iter().enumerate() {
        let entry = signed
            .signed
            .files
            .iter()
            .find(|e| e.name == f.name)
            .context("the server listed a file the manifest does not hold")?;
        if !json {
            eprintln!("[{}/{total}] uploading {}", i + 1, f.store_path);
        }
        crate::commands::files::send_file(
            admin,
            &ums_release::bundle_path(bundle, entry),
            f.store_path.clone(),
        )
        .await?;
    }
    let stored = ok(admin
        .upload_release(pb::UploadReleaseRequest {
            manifest: text,
            check_only: false,
        })
        .await)?;
    show(json, &stored, |s| {
        format!(
            "stored release {} revision {} ({} files, {total} uploaded now): it is the network's software revision now (`umsctl release status` shows the nodes)",
            s.version,
            s.revision,
            s.files.len()
        )
    })
}
