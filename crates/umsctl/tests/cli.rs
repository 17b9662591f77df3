//! Runs the `umsctl` binary against a small in-process admin API over TLS.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Output;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};
use ums_proto::admin::v1::admin_service_server::{AdminService, AdminServiceServer};
use ums_proto::admin::v1::*;

const TOKEN: &str = "tok-1";
const DEVICES: i64 = 250;

struct Fake;

fn authorize<T>(request: &Request<T>) -> Result<(), Status> {
    let header = request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    if header == Some(&format!("Bearer {TOKEN}")) {
        Ok(())
    } else {
        Err(Status::unauthenticated("invalid session"))
    }
}

/// Implements the admin service with the given methods; the listed others answer Unimplemented.
macro_rules! admin_service {
    ({ $($body:tt)* } $($name:ident($req:ty) -> $resp:ty;)*) => {
        #[tonic::async_trait]
        impl AdminService for Fake {
            $($body)*
            $(
                async fn $name(&self, request: Request<$req>) -> Result<Response<$resp>, Status> {
                    authorize(&request)?;
                    Err(Status::unimplemented("not in this test"))
                }
            )*
        }
    };
}

admin_service! {
{
    async fn login(
        &self,
        request: Request<LoginRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        let r = request.into_inner();
        if r.username == "root" && r.password == "pw" {
            Ok(Response::new(LoginResponse {
                token: TOKEN.into(),
                expires_at_ms: 1,
                permissions: vec!["*".into()],
            }))
        } else {
            Err(Status::unauthenticated("invalid user name or password"))
        }
    }

    async fn who_am_i(
        &self,
        request: Request<WhoAmIRequest>,
    ) -> Result<Response<WhoAmIResponse>, Status> {
        authorize(&request)?;
        Ok(Response::new(WhoAmIResponse {
            username: "root".into(),
            permissions: vec!["*".into()],
        }))
    }

    async fn list_devices(
        &self,
        request: Request<ListDevicesRequest>,
    ) -> Result<Response<ListDevicesResponse>, Status> {
        authorize(&request)?;
        let r = request.into_inner();
        // Pages of at most 100, whatever the limit asks.
        let limit = i64::from(r.limit.clamp(1, 100));
        let devices = (r.after_id + 1..=DEVICES)
            .take(limit as usize)
            .map(|id| Device {
                id,
                unit_id: format!("00:11:22:33:44:{id:02x}"),
                name: format!("dev {id}"),
                folder_id: (id % 2 == 0).then_some(3),
                last_contact_ms: if id == 1 { 0 } else { 1_767_225_600_000 },
                ..Device::default()
            })
            .collect();
        Ok(Response::new(ListDevicesResponse {
            devices,
            total: DEVICES as u64,
        }))
    }

    async fn get_device(
        &self,
        request: Request<GetDeviceRequest>,
    ) -> Result<Response<Device>, Status> {
        authorize(&request)?;
        Ok(Response::new(Device {
            id: request.get_ref().id,
            unit_id: "00:11:22:33:44:04".into(),
            name: "dev 4".into(),
            last_contact_ms: 1_767_225_600_000,
            settings_revision: 12,
            applied_revision: 11,
            online: true,
            ..Device::default()
        }))
    }

    async fn delete_profile(
        &self,
        request: Request<DeleteProfileRequest>,
    ) -> Result<Response<Empty>, Status> {
        authorize(&request)?;
        let r = request.into_inner();
        // Profile 5 is assigned; the others are not.
        if r.id == 5 && !r.force {
            return Err(Status::failed_precondition(
                "profile 5 `base` is assigned to device 4, folder 3 \"lab\": unassign it first, or delete it with force",
            ));
        }
        Ok(Response::new(Empty {}))
    }

    async fn explain_settings(
        &self,
        request: Request<ExplainSettingsRequest>,
    ) -> Result<Response<ExplainSettingsResponse>, Status> {
        authorize(&request)?;
        let origin = |id: i64, name: &str, kind: &str| Origin {
            profile_id: id,
            profile_name: name.into(),
            object_kind: kind.into(),
            object_id: 3,
            object_name: "lab".into(),
            priority: false,
        };
        Ok(Response::new(ExplainSettingsResponse {
            user: None,
            device_id: request.get_ref().device_id,
            revision: 9,
            values: vec![ExplainedValue {
                key: "ntp.server".into(),
                value: "pool.ntp.org".into(),
                r#type: "string".into(),
                origin: Some(origin(1, "base", "folder")),
                overridden: vec![OverriddenValue {
                    value: "10.0.0.1".into(),
                    origin: Some(origin(2, "old", "folder")),
                }],
            }],
            conflicts: Vec::new(),
            warnings: vec!["profile 2 sets an unknown key".into()],
        }))
    }

}
        list_processes(ListProcessesRequest) -> ListProcessesResponse;
        remove_process(ProcessRequest) -> Empty;
        stop_process(ProcessRequest) -> ums_proto::network::v1::ProcessInfo;
        start_process(ProcessRequest) -> ums_proto::network::v1::ProcessInfo;
        export_token(ExportTokenRequest) -> TokenResponse;
        rotate_token(RotateTokenRequest) -> TokenResponse;
        upload_file(tonic::Streaming<UploadFileChunk>) -> FileInfo;
        list_files(ListFilesRequest) -> ListFilesResponse;
        delete_file(FileRequest) -> Empty;
        create_admin(CreateAdminRequest) -> Admin;
        list_admins(ListAdminsRequest) -> ListAdminsResponse;
        set_admin_password(SetAdminPasswordRequest) -> Empty;
        delete_admin(DeleteAdminRequest) -> Empty;
        update_device(UpdateDeviceRequest) -> Device;
        delete_device(DeleteDeviceRequest) -> Empty;
        reset_device_credential(ResetDeviceCredentialRequest) -> Empty;
        create_folder(CreateFolderRequest) -> Folder;
        list_folders(ListFoldersRequest) -> ListFoldersResponse;
        delete_folder(DeleteFolderRequest) -> Empty;
        create_profile(CreateProfileRequest) -> Profile;
        list_profiles(ListProfilesRequest) -> ListProfilesResponse;
        get_profile(GetProfileRequest) -> Profile;
        update_profile_params(UpdateProfileParamsRequest) -> Profile;
        list_parameters(ListParametersRequest) -> ListParametersResponse;
        assign(AssignRequest) -> Empty;
        unassign(AssignRequest) -> Empty;
        list_assignments(ListAssignmentsRequest) -> ListAssignmentsResponse;
        create_jobs(CreateJobsRequest) -> CreateJobsResponse;
        list_jobs(ListJobsRequest) -> ListJobsResponse;
        create_directory(DirectorySpec) -> DirectoryInfo;
        update_directory(UpdateDirectoryRequest) -> DirectoryInfo;
        list_directories(ListDirectoriesRequest) -> ListDirectoriesResponse;
        delete_directory(DeleteDirectoryRequest) -> Empty;
        assign_user(AssignUserRequest) -> Empty;
        unassign_user(AssignUserRequest) -> Empty;
        list_user_assignments(ListUserAssignmentsRequest) -> ListUserAssignmentsResponse;
        set_shared_workplace(SetSharedWorkplaceRequest) -> SharedWorkplaceState;
        network_check(NetworkCheckRequest) -> NetworkCheckReport;
        support_bundle(SupportBundleRequest) -> SupportBundleResponse;
        list_audit(ListAuditRequest) -> ListAuditResponse;
        set_folder_shared_workplace(SetFolderSharedWorkplaceRequest) -> Empty;
        create_swp_licence(CreateSwpLicenceRequest) -> SwpLicence;
        list_swp_licences(ListSwpLicencesRequest) -> ListSwpLicencesResponse;
        delete_swp_licence(DeleteSwpLicenceRequest) -> Empty;
        list_swp_sessions(ListSwpSessionsRequest) -> ListSwpSessionsResponse;
        end_swp_session(EndSwpSessionRequest) -> SwpSession;
        end_update_mode(EndUpdateModeRequest) -> EndUpdateModeResponse;
        upload_release(UploadReleaseRequest) -> UploadReleaseResponse;
        release_status(ReleaseStatusRequest) -> ReleaseStatusResponse;
        release_log(ReleaseLogRequest) -> ReleaseLogResponse;
        pause_release(PauseReleaseRequest) -> ReleaseRollout;
        resume_release(ResumeReleaseRequest) -> ReleaseRollout;
        rollback_release(RollbackReleaseRequest) -> ReleaseRollout;
        configure_release(ConfigureReleaseRequest) -> ReleaseRollout;
        update_status(UpdateStatusRequest) -> UpdateStatus;
        update_plan(UpdatePlanRequest) -> UpdatePlan;
        update_log(UpdateLogRequest) -> UpdateLogResponse;
        update_apply(UpdateApplyRequest) -> UpdateApplyResponse;
}

/// Starts the fake admin API on its own runtime thread; returns its URL and CA PEM.
fn serve() -> (String, String) {
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("params")
        .signed_by(&key, &ca)
        .expect("cert");
    let identity = Identity::from_pem(cert.pem(), key.serialize_pem());

    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async move {
            let incoming = TcpIncoming::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
            tx.send(incoming.local_addr().expect("addr")).expect("send");
            Server::builder()
                .tls_config(ServerTlsConfig::new().identity(identity))
                .expect("tls")
                .add_service(AdminServiceServer::new(Fake))
                .serve_with_incoming(incoming)
                .await
                .expect("serve");
        });
    });
    let addr = rx.recv().expect("address");
    (format!("https://127.0.0.1:{}", addr.port()), ca.pem())
}

struct Env {
    dir: PathBuf,
}

impl Env {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("umsctl-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        Self { dir }
    }

    fn run(&self, args: &[&str], envs: &[(&str, &str)]) -> Output {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_umsctl"));
        command
            .args(args)
            .env("XDG_CONFIG_HOME", &self.dir)
            .env("HOME", &self.dir)
            .env_remove("UMS_SERVER")
            .env_remove("UMS_CA")
            .env_remove("UMS_PASSWORD")
            .stdin(std::process::Stdio::null());
        for (key, value) in envs {
            command.env(key, value);
        }
        command.output().expect("run umsctl")
    }

    fn config(&self) -> PathBuf {
        self.dir.join("umsctl").join("config.toml")
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn write_ca(dir: &Path, pem: &str) -> String {
    let path = dir.join("ca.pem");
    std::fs::write(&path, pem).expect("write ca");
    path.to_string_lossy().into_owned()
}

#[test]
fn logs_in_and_calls_the_admin_api() {
    let (url, ca_pem) = serve();
    let env = Env::new("flow");
    let ca = write_ca(&env.dir, &ca_pem);

    let out = env.run(&["whoami"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("error: no server"),
        "{}",
        stderr(&out)
    );

    let out = env.run(
        &["init", "--server", &url, "--ca", &ca, "--user", "root"],
        &[("UMS_PASSWORD", "wrong")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: login failed: invalid user name or password\n"
    );

    let out = env.run(
        &["init", "--server", &url, "--ca", &ca, "--user", "root"],
        &[("UMS_PASSWORD", "pw")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("logged in as root on {url}\n"));
    let config = std::fs::read_to_string(env.config()).expect("config");
    assert!(
        config.contains(TOKEN) && !config.contains("\"pw\""),
        "{config}"
    );
    let mode = std::fs::metadata(env.config())
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // The password can also come from standard input, and login reuses the stored user.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_umsctl"))
        .args(["login"])
        .env("XDG_CONFIG_HOME", &env.dir)
        .env_remove("UMS_PASSWORD")
        .env_remove("UMS_SERVER")
        .env_remove("UMS_CA")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"pw\n").expect("write");
    }
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{}", stderr(&out));

    let out = env.run(&["whoami"], &[]);
    assert_eq!(stdout(&out), "root\npermissions: *\n");

    let out = env.run(&["devices", "list", "--limit", "250", "--json"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["devices"].as_array().map(Vec::len), Some(250));
    assert_eq!(json["total"], 250);

    let out = env.run(&["devices", "list"], &[]);
    let text = stdout(&out);
    assert!(text.contains("100 of 250 devices"), "{text}");
    assert!(text.contains("2026-01-01 00:00:00"), "{text}");

    // A device's online state and the revision it applies, against the one it should.
    let out = env.run(&["devices", "show", "4"], &[]);
    let text = stdout(&out);
    let line = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}:")))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {key} in {text}"))
            .to_owned()
    };
    assert_eq!(line("online"), "yes", "{text}");
    assert_eq!(line("settings revision"), "12", "{text}");
    assert!(
        line("applied revision").starts_with("11 (not yet 12"),
        "{text}"
    );
    let out = env.run(&["devices", "show", "4", "--json"], &[]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        (json["applied_revision"].clone(), json["online"].clone()),
        (11.into(), true.into())
    );

    // A profile in use is refused, saying where it is assigned and how to delete it anyway.
    let out = env.run(&["profiles", "rm", "5"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: profile 5 `base` is assigned to device 4, folder 3 \"lab\""),
        "{err}"
    );
    assert!(err.contains("umsctl profiles rm 5 --force"), "{err}");
    let out = env.run(&["profiles", "rm", "5", "--force"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "deleted profile 5\n");
    let out = env.run(&["profiles", "rm", "6"], &[]);
    assert_eq!(stdout(&out), "deleted profile 6\n");

    let out = env.run(&["settings", "explain", "4"], &[]);
    let text = stdout(&out);
    assert!(
        text.contains("profile \"base\" (#1) on folder \"lab\" (#3)"),
        "{text}"
    );
    assert!(text.contains("\"10.0.0.1\" from \"old\" (#2)"), "{text}");
    assert!(text.contains("warnings:"), "{text}");

    let out = env.run(&["folders", "list"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "error: not in this test\n");

    // An expired session.
    let stale = config.replace(TOKEN, "expired");
    std::fs::write(env.config(), stale).expect("write");
    let out = env.run(&["whoami"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: not logged in or session expired: run `umsctl login`\n"
    );
}

#[test]
fn reports_connection_problems() {
    let (url, _) = serve();
    let env = Env::new("conn");
    let (_, other_ca) = serve();
    let ca = write_ca(&env.dir, &other_ca);
    let out = env.run(
        &["init", "--server", &url, "--ca", &ca, "--user", "root"],
        &[("UMS_PASSWORD", "pw")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with(&format!("error: cannot connect to {url}")),
        "{}",
        stderr(&out)
    );

    let out = env.run(
        &[
            "init", "--server", "http://x", "--ca", &ca, "--user", "root",
        ],
        &[("UMS_PASSWORD", "pw")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("must start with https://"),
        "{}",
        stderr(&out)
    );

    let out = env.run(
        &[
            "init",
            "--server",
            &url,
            "--ca",
            "/nonexistent",
            "--user",
            "root",
        ],
        &[("UMS_PASSWORD", "pw")],
    );
    assert_eq!(
        stderr(&out),
        "error: cannot read ca file /nonexistent: No such file or directory (os error 2)\n"
    );

    let out = env.run(&["whoami", "--server", &url, "--ca", &ca], &[]);
    assert_eq!(
        stderr(&out),
        "error: not logged in: run `umsctl init` or `umsctl login`\n"
    );
}

#[test]
fn generates_a_release_key_and_signs_a_bundle_offline() {
    let env = Env::new("release");
    let key = env.dir.join("release.key");
    let key_arg = key.to_string_lossy().into_owned();
    let out = env.run(&["release", "keygen", &key_arg], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    assert!(
        printed.contains("public_keys = [\"ed25519:"),
        "the public key to pin: {printed}"
    );
    let mode = std::fs::metadata(&key)
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // An existing key is never overwritten.
    let out = env.run(&["release", "keygen", &key_arg], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("never overwritten"),
        "{}",
        stderr(&out)
    );

    let bundle = env.dir.join("bundle");
    std::fs::create_dir_all(bundle.join("server/bin")).expect("dir");
    std::fs::create_dir_all(bundle.join("broker/bin")).expect("dir");
    std::fs::write(bundle.join("server/bin/ums-server"), b"#!/bin/sh\n").expect("write");
    std::fs::set_permissions(
        bundle.join("server/bin/ums-server"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    std::fs::write(bundle.join("broker/bin/ums-broker"), b"broker").expect("write");
    let bundle_arg = bundle.to_string_lossy().into_owned();
    let sign = |revision: &str| {
        env.run(
            &[
                "release",
                "sign",
                &bundle_arg,
                "--key",
                &key_arg,
                "--release-version",
                "0.5.0",
                "--revision",
                revision,
                "--json",
            ],
            &[],
        )
    };
    let out = sign("7");
    assert!(out.status.success(), "{}", stderr(&out));
    let written = std::fs::read_to_string(bundle.join("manifest.json")).expect("manifest");
    let manifest: serde_json::Value = serde_json::from_str(&written).expect("json");
    assert_eq!(manifest["signed"]["revision"], 7);
    let files = manifest["signed"]["files"].as_array().expect("files");
    assert_eq!(files.len(), 2);
    assert_eq!(files[1]["name"], "bin/ums-server");
    assert_eq!(files[1]["roles"], serde_json::json!(["server"]));
    assert_eq!(files[1]["mode"], 0o755);
    assert_eq!(manifest["signatures"].as_array().map(Vec::len), Some(1));

    let out = sign("0");
    assert_eq!(out.status.code(), Some(2), "clap refuses revision 0");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = sign("8");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
}
