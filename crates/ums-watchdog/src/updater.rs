//! The node's software updates: every `release.check_interval_ms` the watchdog asks a server
//! for the network's newest release. When its revision differs from the installed one, the
//! manifest is verified with this node's pinned keys (a refusal is reported and stops the
//! rollout), the update slot is asked for, and with it the node compares, downloads (from the
//! servers' `ReadFile`, resuming, hash-checked), installs into a new version directory, switches
//! the `current` link, restarts its children in order and checks they keep running. On failure
//! it switches back, restarts them again and reports. Every step goes to `update.log` and to the
//! database through `ReportRelease`.
//!
//! An older revision is taken only when the server marks it as an administrator's rollback and
//! it is the release this node ran before its current one (revision and digest as
//! `installed.json` recorded them), its manifest verified again with the pinned keys; its
//! version directory, kept beside the current one, is used as it is when every file still
//! matches.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::sync::watch;
use tonic::transport::Channel;
use ums_proto::network::v1 as pb;
use ums_proto::network::v1::network_service_client::NetworkServiceClient;
use ums_tls::NodeIdentity;

use crate::Node;
use crate::config::ReleaseSettings;
use crate::release::{self, Installed, Layout, Source};

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A server's `ReadFile`: the content of a replicated file from an offset.
struct Servers {
    client: NetworkServiceClient<Channel>,
}

impl Source for Servers {
    async fn fetch(
        &self,
        sha256: &str,
        offset: u64,
        out: &mut tokio::fs::File,
    ) -> Result<(), String> {
        let mut client = self.client.clone();
        let mut stream = client
            .read_file(pb::ReadFileRequest {
                sha256: sha256.to_owned(),
                offset,
            })
            .await
            .map_err(|s| s.message().to_owned())?
            .into_inner();
        while let Some(chunk) = stream.message().await.map_err(|s| s.message().to_owned())? {
            out.write_all(&chunk.data)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// The updates of one node.
pub struct Updater {
    node: Arc<Node>,
    identity: NodeIdentity,
    servers: Vec<String>,
    settings: ReleaseSettings,
    layout: Layout,
}

impl Updater {
    pub fn new(
        node: Arc<Node>,
        identity: &NodeIdentity,
        servers: &[String],
        settings: ReleaseSettings,
    ) -> Self {
        Self {
            layout: Layout::new(&settings.dir),
            node,
            identity: identity.clone(),
            servers: servers.to_vec(),
            settings,
        }
    }

    /// A client of some server's internal port.
    async fn client(&self) -> Option<NetworkServiceClient<Channel>> {
        for admin in &self.servers {
            let got = tokio::time::timeout(
                CALL_TIMEOUT,
                ums_network::internal_channel_via(&self.identity, admin),
            )
            .await;
            if let Ok(Ok((_, channel))) = got {
                return Some(NetworkServiceClient::new(channel));
            }
        }
        None
    }

    fn installed_revision(&self) -> u64 {
        match self.layout.installed() {
            Ok(i) => i.map(|i| i.revision).unwrap_or(0),
            Err(e) => {
                tracing::warn!(error = %e, "unreadable state file: taken as nothing installed");
                0
            }
        }
    }

    /// Checks until `stop`.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut waiting = String::new();
        let mut refused = LastRefusal::default();
        loop {
            tokio::select! {
                () = crate::stopped(&mut stop) => return,
                () = tokio::time::sleep(self.settings.check_interval) => {}
            }
            if let Some(reason) = self.check(&mut refused).await
                && reason != waiting
            {
                tracing::info!(reason = %reason, "software update waits");
                waiting = reason;
            }
        }
    }

    /// One check; the reason when the node waits.
    async fn check(&self, refused: &mut LastRefusal) -> Option<String> {
        let mut client = self.client().await?;
        let installed = self.installed_revision();
        let offer = client
            .get_release(pb::GetReleaseRequest {
                installed_revision: installed,
                want_slot: false,
            })
            .await
            .ok()?
            .into_inner();
        if offer.revision == 0 || offer.revision == installed {
            refused.clear();
            return None;
        }
        // Verified with this node's own keys before anything else happens. An older revision
        // only on a rollback, and only the release this node ran before.
        let rollback = offer.rollback && offer.revision < installed;
        let now = crate::supervisor::now_ms();
        let verified = if rollback {
            let state = self.layout.installed().ok().flatten();
            release::verify_rollback(&offer.manifest, &self.settings.keys, now, state.as_ref())
        } else {
            release::verify_offer(&offer.manifest, &self.settings.keys, now, installed)
        };
        let signed = match verified {
            Ok(s) => s,
            Err(e) => {
                let error = e.to_string();
                if !refused.is(offer.revision, &offer.manifest, &error) {
                    let mut r = Report::new(self, installed, offer.revision);
                    if r.fail(&mut client, "verify", &error, true).await {
                        refused.remember(offer.revision, &offer.manifest, &error);
                    }
                }
                return Some(format!("revision {} refused: {error}", offer.revision));
            }
        };
        refused.clear();
        let slot = client
            .get_release(pb::GetReleaseRequest {
                installed_revision: installed,
                want_slot: true,
            })
            .await
            .ok()?
            .into_inner();
        if !slot.slot {
            return Some(slot.waiting_for);
        }
        if slot.revision != offer.revision || slot.manifest != offer.manifest {
            // A newer release arrived meanwhile: give the slot back, take it next time.
            let mut r = Report::new(self, installed, 0);
            r.state = "idle";
            r.send(&mut client, "", "", true).await;
            return None;
        }
        self.update(&mut client, installed, &signed, &offer.manifest)
            .await;
        None
    }

    async fn update(
        &self,
        client: &mut NetworkServiceClient<Channel>,
        installed: u64,
        signed: &ums_release::SignedManifest,
        manifest_json: &str,
    ) {
        let m = &signed.signed;
        let rollback = m.revision < installed;
        let mut r = Report::new(self, installed, m.revision);
        let plan = release::plan(&self.layout, m, &self.settings.roles);
        r.state = "downloading";
        r.send(
            client,
            "compare",
            &format!(
                "{}revision {installed} -> {} ({}): {} files for roles {}, {} on disk, {} to download ({} bytes)",
                if rollback {
                    "rollback to the release this node ran before, its manifest verified again with the pinned key: "
                } else {
                    ""
                },
                m.revision,
                m.version,
                plan.keep.len() + plan.download.len(),
                self.settings.roles.join(","),
                plan.keep.len(),
                plan.download.len(),
                plan.download_bytes()
            ),
            false,
        )
        .await;
        let source = Servers {
            client: client.clone(),
        };
        for f in &plan.download {
            if let Err(e) = release::download(&self.layout, &source, f).await {
                r.fail(client, "download", &e.to_string(), true).await;
                return;
            }
            r.send(
                client,
                "download",
                &format!("{} ({} bytes, sha256 {})", f.name, f.size, f.sha256),
                false,
            )
            .await;
        }
        r.state = "installing";
        if plan.in_place(&self.layout, m.revision) {
            // Kept from when this revision ran before, every file checked against the manifest.
            let dest = self.layout.version_dir(m.revision);
            r.send(
                client,
                "install",
                &format!("{} (in place, every file as signed)", dest.display()),
                false,
            )
            .await;
        } else {
            let dest = match release::stage(&self.layout, m.revision, &plan) {
                Ok(d) => d,
                Err(e) => {
                    r.fail(client, "install", &e.to_string(), true).await;
                    return;
                }
            };
            r.send(client, "install", &dest.display().to_string(), false)
                .await;
        }
        let before = match self.layout.switch_to(m.revision) {
            Ok(b) => b,
            Err(e) => {
                r.fail(client, "switch", &e.to_string(), true).await;
                return;
            }
        };
        r.state = "restarting";
        r.send(
            client,
            "switch",
            &format!(
                "current -> versions/{} (was {})",
                m.revision,
                before.map_or("none".to_owned(), |b| format!("versions/{b}"))
            ),
            false,
        )
        .await;
        match self.restart_and_check(client, &mut r).await {
            Ok(()) => {
                let previous = self.layout.installed().ok().flatten();
                let state = Installed {
                    revision: m.revision,
                    version: m.version.clone(),
                    digest: m.digest(),
                    installed_at_ms: crate::supervisor::now_ms(),
                    manifest: manifest_json.to_owned(),
                    previous: previous.as_ref().map(Installed::as_previous),
                };
                if let Err(e) = self.layout.write_installed(&state) {
                    // Running the new release, but it would be taken for the old one: back.
                    self.roll_back(client, &mut r, before, &e.to_string()).await;
                    return;
                }
                let keep: Vec<u64> = std::iter::once(m.revision).chain(before).collect();
                release::prune(&self.layout, &keep);
                r.installed = m.revision;
                r.target = 0;
                r.state = "updated";
                let detail = if rollback {
                    format!(
                        "revision {} ({}) running again: rolled back from revision {installed}",
                        m.revision, m.version
                    )
                } else {
                    format!("revision {} ({}) installed", m.revision, m.version)
                };
                r.send(client, "done", &detail, true).await;
                tracing::info!(revision = m.revision, version = %m.version, "software updated");
                self.update_self(client, &mut r).await;
            }
            Err(e) => self.roll_back(client, &mut r, before, &e).await,
        }
    }

    /// Last, the watchdog itself: when the release's watchdog binary differs from the running
    /// one, it re-executes into it (same pid) and the children keep running. Returns only when
    /// there was nothing to do or that failed (reported; the old binary runs on).
    async fn update_self(&self, client: &mut NetworkServiceClient<Channel>, r: &mut Report<'_>) {
        let binary = match crate::reexec::new_binary(&self.layout.current()) {
            Ok(Some(b)) => b,
            Ok(None) => return,
            Err(e) => {
                r.error = e.clone();
                r.send(client, "reexec", &format!("failed: {e}"), true)
                    .await;
                return;
            }
        };
        let running = std::fs::read_link("/proc/self/exe").unwrap_or_default();
        let children: Vec<String> = self
            .node
            .children()
            .iter()
            .map(|c| {
                let pid = c.state().pid.map_or("none".to_owned(), |p| p.to_string());
                format!("{} pid {pid}", c.id)
            })
            .collect();
        r.send(
            client,
            "reexec",
            &format!(
                "watchdog pid {}: {} -> {}; its children keep running: {}",
                std::process::id(),
                running.display(),
                binary.display(),
                children.join(", ")
            ),
            true,
        )
        .await;
        let error = crate::reexec::exec(&self.node, &binary).await;
        tracing::error!(binary = %binary.display(), error = %error, "re-exec failed; the old watchdog binary runs on");
        r.error = error.clone();
        r.send(
            client,
            "reexec",
            &format!("failed: {error}; still running {}", running.display()),
            true,
        )
        .await;
    }

    /// Restarts the children in start order, each once the one before runs, then checks that
    /// all keep running for `healthy_for`.
    async fn restart_and_check(
        &self,
        client: &mut NetworkServiceClient<Channel>,
        r: &mut Report<'_>,
    ) -> Result<(), String> {
        for child in self.node.children() {
            child.stop().await;
            child.start().await;
            if !child.wait_running().await {
                let exit = child.state().last_exit.unwrap_or_default();
                return Err(format!("{} did not come back ({exit})", child.id));
            }
            r.send(client, "restart", &format!("{} running", child.id), false)
                .await;
        }
        r.state = "checking";
        let restarts: Vec<u64> = self
            .node
            .children()
            .iter()
            .map(|c| c.state().restarts)
            .collect();
        tokio::time::sleep(self.settings.healthy_for).await;
        for (child, before) in self.node.children().iter().zip(restarts) {
            let s = child.state();
            if s.phase != crate::supervisor::Phase::Running || s.restarts != before {
                return Err(format!(
                    "{} did not keep running ({})",
                    child.id,
                    s.last_exit.unwrap_or_default()
                ));
            }
        }
        r.send(
            client,
            "check",
            &format!(
                "every process kept running for {} ms",
                self.settings.healthy_for.as_millis()
            ),
            false,
        )
        .await;
        Ok(())
    }

    async fn roll_back(
        &self,
        client: &mut NetworkServiceClient<Channel>,
        r: &mut Report<'_>,
        before: Option<u64>,
        error: &str,
    ) {
        tracing::error!(revision = r.target, error = %error, "update failed: switching back");
        let back = self.layout.switch_back(before);
        for child in self.node.children() {
            child.stop().await;
            child.start().await;
            child.wait_running().await;
        }
        let detail = match back {
            Ok(()) => format!(
                "{error}; switched back to {} and restarted",
                before.map_or("the configured binaries".to_owned(), |b| format!(
                    "revision {b}"
                ))
            ),
            Err(e) => format!("{error}; switching back failed: {e}"),
        };
        r.state = "rolled-back";
        r.error = error.to_owned();
        r.send(client, "rollback", &detail, true).await;
    }
}

/// What the node reports of its update, step by step, to `update.log` and the database.
struct Report<'a> {
    updater: &'a Updater,
    installed: u64,
    target: u64,
    state: &'static str,
    error: String,
}

impl<'a> Report<'a> {
    fn new(updater: &'a Updater, installed: u64, target: u64) -> Self {
        Self {
            updater,
            installed,
            target,
            state: "idle",
            error: String::new(),
        }
    }

    async fn fail(
        &mut self,
        client: &mut NetworkServiceClient<Channel>,
        step: &str,
        error: &str,
        release_slot: bool,
    ) -> bool {
        tracing::error!(step, error, "software update failed");
        self.state = "failed";
        self.error = error.to_owned();
        self.send(client, step, &format!("failed: {error}"), release_slot)
            .await
    }

    async fn send(
        &mut self,
        client: &mut NetworkServiceClient<Channel>,
        step: &str,
        detail: &str,
        release_slot: bool,
    ) -> bool {
        let revision = if self.target != 0 {
            self.target
        } else {
            self.installed
        };
        if !step.is_empty() {
            self.updater.layout.log(revision, step, detail);
            tracing::info!(revision, step, detail, "software update");
        }
        let req = pb::ReportReleaseRequest {
            roles: self.updater.settings.roles.clone(),
            installed_revision: self.installed,
            target_revision: self.target,
            state: self.state.to_owned(),
            error: self.error.clone(),
            step: step.to_owned(),
            detail: detail.to_owned(),
            release_slot,
        };
        // The log on disk has it; the database gets it when a server answers.
        for _ in 0..3 {
            let mut call = tonic::Request::new(req.clone());
            call.set_timeout(CALL_TIMEOUT);
            if client.report_release(call).await.is_ok() {
                return true;
            }
            if let Some(c) = self.updater.client().await {
                *client = c;
            }
        }
        tracing::warn!(step, "no server took the update report");
        false
    }
}

/// The offer this node last refused, once a server took the report of it. The same offer
/// refused for the same reason is not reported again at every check: for as long as the offer
/// stands, each node would add a line to its `update.log` and to the network's release log
/// every `check_interval` (8,640 a day at the default). A report no server took is sent again
/// at the next check; another offer, another reason, or an offer taken, ends the silence.
#[derive(Debug, Default)]
struct LastRefusal(Option<(u64, String, String)>);

impl LastRefusal {
    /// Whether this refusal was reported already.
    fn is(&self, revision: u64, manifest: &str, error: &str) -> bool {
        self.0
            .as_ref()
            .is_some_and(|(r, m, e)| *r == revision && m == manifest && e == error)
    }

    fn remember(&mut self, revision: u64, manifest: &str, error: &str) {
        self.0 = Some((revision, manifest.to_owned(), error.to_owned()));
    }

    fn clear(&mut self) {
        self.0 = None;
    }
}

#[cfg(test)]
mod tests {
    use super::LastRefusal;

    #[test]
    fn a_refusal_is_reported_once_until_the_offer_or_its_reason_changes() {
        let mut refused = LastRefusal::default();
        assert!(!refused.is(2, "manifest-2", "signed by no pinned key"));
        refused.remember(2, "manifest-2", "signed by no pinned key");
        assert!(refused.is(2, "manifest-2", "signed by no pinned key"));
        // The same revision offered with another manifest, for another reason, or another
        // revision: reported.
        assert!(!refused.is(2, "manifest-2b", "signed by no pinned key"));
        assert!(!refused.is(2, "manifest-2", "expired"));
        assert!(!refused.is(3, "manifest-2", "signed by no pinned key"));
        // Once an offer is taken (or none stands), the same refusal later is news again.
        refused.clear();
        assert!(!refused.is(2, "manifest-2", "signed by no pinned key"));
    }
}
