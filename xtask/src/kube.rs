//! The Kubernetes manifests of `deploy/kubernetes`: validated against the schemas of a current
//! Kubernetes release (kubernetes-validate, strict: unknown fields are errors), the
//! CloudNativePG `Cluster` against the vendored schema of its CRD (check-jsonschema), and the
//! server pod of the StatefulSet started with `podman kube play` as a smoke test.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::deploy::KUBERNETES_VERSION;
use crate::podman::Podman;
use crate::util::{self, step};

/// Kinds kubernetes-validate has no schema for, each validated against a vendored schema:
/// (kind, apiVersion, schema file under `deploy/kubernetes/schemas`).
const CUSTOM_KINDS: [(&str, &str, &str); 1] = [(
    "Cluster",
    "postgresql.cnpg.io/v1",
    "cluster-postgresql.cnpg.io-v1.json",
)];

/// The manifests the kustomization lists; fails when a YAML file of the directory is not among
/// them or a listed one is missing.
pub fn manifest_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let kustomization: Value = read_yaml(&dir.join("kustomization.yaml"))?
        .into_iter()
        .next()
        .context("kustomization.yaml is empty")?;
    let listed: Vec<String> = kustomization["resources"]
        .as_array()
        .context("kustomization.yaml has no resources")?
        .iter()
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect();
    let mut present = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".yaml") && name != "kustomization.yaml" {
            present.push(name);
        }
    }
    present.sort();
    let mut wanted = listed.clone();
    wanted.sort();
    if present != wanted {
        bail!(
            "deploy/kubernetes: the kustomization lists {wanted:?}, the directory holds {present:?}"
        );
    }
    Ok(listed.iter().map(|f| dir.join(f)).collect())
}

fn read_yaml(path: &Path) -> anyhow::Result<Vec<Value>> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v = Value::deserialize(doc).with_context(|| format!("parse {}", path.display()))?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

/// Validates every manifest strictly; kinds without a Kubernetes schema only when a vendored
/// schema covers them.
pub fn validate(podman: &Podman, dir: &Path, files: &[PathBuf]) -> anyhow::Result<()> {
    let mut documents = 0;
    let mut custom = Vec::new();
    for f in files {
        for doc in read_yaml(f)? {
            let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
            let api = doc["apiVersion"].as_str().unwrap_or_default().to_owned();
            match CUSTOM_KINDS
                .iter()
                .find(|(k, a, _)| *k == kind && *a == api)
            {
                Some((_, _, schema)) => {
                    custom.push((f.clone(), doc, dir.join("schemas").join(schema)))
                }
                None => documents += 1,
            }
        }
    }
    let mut cmd = podman.tool("kubernetes-validate");
    cmd.args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
        .args(files)
        .stdin(Stdio::null());
    step!("{}", util::render(&cmd));
    let out = cmd.output().context("run kubernetes-validate")?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let mut passed = 0;
    let mut problems = Vec::new();
    for line in text.lines() {
        if line.starts_with("INFO") && line.contains(" passed for resource ") {
            passed += 1;
        } else if line.starts_with("WARN")
            && line.contains("Couldn't find schema")
            && CUSTOM_KINDS
                .iter()
                .any(|(k, a, _)| line.contains(&format!("kind {k} with api version {a} ")))
        {
            // Validated below against the vendored schema.
        } else if !line.trim().is_empty() {
            problems.push(line.to_owned());
        }
    }
    if !out.status.success() || !problems.is_empty() || passed != documents {
        bail!(
            "the Kubernetes manifests do not validate against Kubernetes {KUBERNETES_VERSION} ({} of {documents} resources passed):\n{}",
            passed,
            problems.join("\n")
        );
    }
    step!("{passed} resources valid for Kubernetes {KUBERNETES_VERSION} (strict)");

    let scratch = util::target_dir().join("deploy-test");
    std::fs::create_dir_all(&scratch)?;
    for (file, doc, schema) in &custom {
        let name = doc["metadata"]["name"].as_str().unwrap_or("unnamed");
        check_schema(podman, schema, &scratch.join(format!("{name}.json")), doc)
            .with_context(|| format!("{}: {} {name}", file.display(), doc["kind"]))?;
        // The schema must refuse what the operator would: an unknown field is an error.
        let mut wrong = doc.clone();
        wrong["spec"]["instancez"] = json!(3);
        if check_schema(
            podman,
            schema,
            &scratch.join(format!("{name}-wrong.json")),
            &wrong,
        )
        .is_ok()
        {
            bail!(
                "{} accepts an unknown field: it is not strict",
                schema.display()
            );
        }
        step!(
            "{} {name} valid against {} (strict)",
            doc["kind"].as_str().unwrap_or_default(),
            util::display_path(schema)
        );
    }
    Ok(())
}

fn check_schema(
    podman: &Podman,
    schema: &Path,
    instance: &Path,
    doc: &Value,
) -> anyhow::Result<()> {
    std::fs::write(instance, serde_json::to_vec_pretty(doc)?)?;
    let out = podman
        .tool("check-jsonschema")
        .arg("--schemafile")
        .arg(schema)
        .arg(instance)
        .stdin(Stdio::null())
        .output()
        .context("run check-jsonschema")?;
    if !out.status.success() {
        bail!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The pod of the server StatefulSet as a stand-alone pod for `podman kube play`: the same
/// image, security context, probes and mounts, but one server on the embedded database, on the
/// host's network at `ip`, its volumes in directories under `state`.
///
/// The ConfigMap's variables are written out as `env` (podman 4.3 lets `envFrom` win over
/// `env`, the reverse of Kubernetes), followed by the pod's own and the overrides.
fn smoke_pod(statefulset: &Value, config: &Value, ip: &str, state: &Path) -> anyhow::Result<Value> {
    let template = &statefulset["spec"]["template"];
    let mut spec = template["spec"].clone();
    spec["hostNetwork"] = json!(true);
    spec["restartPolicy"] = json!("Never");
    let containers = spec["containers"]
        .as_array_mut()
        .context("the StatefulSet's pod has no containers")?;
    let container = containers.first_mut().context("no container")?;
    // On the host's network the container's ports are the host's: podman refuses mappings.
    if let Some(c) = container.as_object_mut() {
        c.remove("ports");
    }
    let overrides = [
        ("UMS_NETWORK__MODE", "single".to_owned()),
        ("UMS_DATABASE_URL", String::new()),
        ("UMS_NETWORK__TOKEN_FILE", String::new()),
        ("UMS_NETWORK__ADVERTISE_HOST", ip.to_owned()),
        ("UMS_TLS__NAMES", format!("[{ip}]")),
        ("UMS_DEVICE__LISTEN", format!("{ip}:30002")),
        ("UMS_ADMIN__LISTEN", format!("{ip}:8443")),
        ("UMS_NETWORK__INTERNAL_LISTEN", format!("{ip}:61616")),
    ];
    let from_config: Vec<Value> = config["data"]
        .as_object()
        .context("the ConfigMap has no data")?
        .iter()
        .map(|(k, v)| json!({ "name": k, "value": v }))
        .collect();
    if let Some(c) = container.as_object_mut() {
        c.remove("envFrom");
    }
    let mut env: Vec<Value> = from_config
        .into_iter()
        .chain(container["env"].as_array().cloned().unwrap_or_default())
        .filter(|e| overrides.iter().all(|(k, _)| e["name"] != *k))
        .collect();
    env.extend(
        overrides
            .iter()
            .map(|(k, v)| json!({ "name": k, "value": v })),
    );
    container["env"] = Value::Array(env);
    // The network token only exists in an HA network.
    let mounts: Vec<Value> = container["volumeMounts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m["name"] != "network-token")
        .collect();
    container["volumeMounts"] = Value::Array(mounts.clone());
    let mut volumes = Vec::new();
    for m in &mounts {
        let name = m["name"].as_str().unwrap_or_default();
        let dir = state.join(name);
        volumes.push(json!({
            "name": name,
            "hostPath": { "path": dir.display().to_string(), "type": "Directory" },
        }));
    }
    spec["volumes"] = Value::Array(volumes);
    Ok(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "ums-smoke",
            "labels": template["metadata"]["labels"],
        },
        "spec": spec,
    }))
}

/// `podman kube play` of the server pod: every probe's command must succeed in it, then it is
/// taken down with its state.
pub fn smoke(podman: &Podman, dir: &Path, ip: [u8; 4]) -> anyhow::Result<()> {
    let ip = std::net::Ipv4Addr::from(ip).to_string();
    let statefulset = read_yaml(&dir.join("server.yaml"))?
        .into_iter()
        .find(|d| d["kind"] == "StatefulSet")
        .context("server.yaml has no StatefulSet")?;
    let scratch = util::target_dir().join("deploy-test");
    let state = scratch.join("kube-smoke");
    if state.exists() {
        std::fs::remove_dir_all(&state)?;
    }
    let config = read_yaml(&dir.join("config.yaml"))?
        .into_iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "ums-server-env")
        .context("config.yaml has no ConfigMap ums-server-env")?;
    let pod = smoke_pod(&statefulset, &config, &ip, &state)?;
    let uid = statefulset["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
        .as_u64()
        .context("the server pod names no runAsUser")?;
    for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let path = PathBuf::from(v["hostPath"]["path"].as_str().unwrap_or_default());
        std::fs::create_dir_all(&path)?;
        let id = Some(nix::unistd::Uid::from_raw(uid as u32));
        nix::unistd::chown(&path, id, Some(nix::unistd::Gid::from_raw(uid as u32)))
            .with_context(|| format!("chown {} to {uid}", path.display()))?;
    }
    let file = scratch.join("kube-smoke.yaml");
    std::fs::write(&file, serde_yaml::to_string(&pod)?)?;

    let mut play = podman.cmd();
    play.args(["kube", "play"]).arg(&file).stdin(Stdio::null());
    step!("{}", util::render(&play));
    let out = play.output().context("run podman kube play")?;
    let guard = KubeDown {
        podman,
        file: file.clone(),
    };
    if !out.status.success() {
        bail!(
            "podman kube play failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let container = format!(
        "ums-smoke-{}",
        statefulset["spec"]["template"]["spec"]["containers"][0]["name"]
            .as_str()
            .unwrap_or_default()
    );
    let probes = &pod["spec"]["containers"][0];
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let command: Vec<String> = probes[probe]["exec"]["command"]
            .as_array()
            .with_context(|| format!("the server container has no exec {probe}"))?
            .iter()
            .filter_map(|c| c.as_str().map(str::to_owned))
            .collect();
        let started = Instant::now();
        step!(
            "waiting for the {probe} of the kube play pod: {}",
            command.join(" ")
        );
        loop {
            let out = podman
                .cmd()
                .args(["exec", &container])
                .args(&command)
                .stdin(Stdio::null())
                .output()?;
            if out.status.success() {
                step!("  {}", String::from_utf8_lossy(&out.stdout).trim());
                break;
            }
            if started.elapsed() > Duration::from_secs(90) {
                let logs = podman.cmd().args(["logs", &container]).output()?;
                bail!(
                    "the {probe} of the server pod under podman kube play never passed: {}\npod log:\n{}{}",
                    String::from_utf8_lossy(&out.stderr).trim(),
                    String::from_utf8_lossy(&logs.stdout),
                    String::from_utf8_lossy(&logs.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let read_only = podman.output(&[
        "inspect",
        "--format",
        "{{.HostConfig.ReadonlyRootfs}} {{.Config.User}}",
        &container,
    ])?;
    step!(
        "kube play pod: read-only root file system, user: {}",
        read_only.trim()
    );
    if !read_only.starts_with("true") {
        bail!("the kube play container's root file system is writable: {read_only}");
    }
    drop(guard);
    std::fs::remove_dir_all(&state)?;
    Ok(())
}

/// `podman kube down` when dropped.
struct KubeDown<'a> {
    podman: &'a Podman,
    file: PathBuf,
}

impl Drop for KubeDown<'_> {
    fn drop(&mut self) {
        let down = self
            .podman
            .cmd()
            .args(["kube", "down"])
            .arg(&self.file)
            .stdin(Stdio::null())
            .output();
        if !down.is_ok_and(|o| o.status.success()) {
            eprintln!(
                "xtask: warning: podman kube down {} failed",
                self.file.display()
            );
        }
    }
}
