//! The simulator and the device client against a small in-process device API over TLS.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Code, Request, Response, Status};
use ums_devsim::{DeviceClient, SimConfig};
use ums_proto::device::v1::device_service_server::{DeviceService, DeviceServiceServer};
use ums_proto::device::v1::{
    CheckInRequest, CheckInResponse, DownloadFileRequest, FetchJobsRequest, FetchJobsResponse,
    FileChunk, FileEntry, GetSettingsRequest, GetSettingsResponse, Job, ListFilesRequest,
    ListFilesResponse, RegisterRequest, RegisterResponse, ReportJobResultRequest,
    ReportJobResultResponse, Setting,
};

const REVISION: u64 = 5;

#[derive(Default)]
struct Fake {
    next_id: AtomicI64,
    /// unit id -> (device id, hex secret)
    units: Mutex<HashMap<String, (i64, String)>>,
    reports: Mutex<Vec<(i64, bool, String)>>,
}

impl Fake {
    fn authenticate<T>(&self, request: &Request<T>) -> Result<i64, Status> {
        let header = |key| {
            request
                .metadata()
                .get(key)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .ok_or_else(|| Status::unauthenticated("missing device credentials"))
        };
        let id: i64 = header(ums_proto::DEVICE_ID_HEADER)?
            .parse()
            .map_err(|_| Status::unauthenticated("bad device id"))?;
        let secret = header(ums_proto::DEVICE_SECRET_HEADER)?;
        let units = self
            .units
            .lock()
            .map_err(|_| Status::internal("poisoned"))?;
        if units.values().any(|(i, s)| *i == id && *s == secret) {
            Ok(id)
        } else {
            Err(Status::unauthenticated("wrong device credentials"))
        }
    }
}

#[tonic::async_trait]
impl DeviceService for Fake {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let r = request.into_inner();
        if r.unit_id.starts_with("fail") {
            return Err(Status::failed_precondition("registration closed"));
        }
        if r.secret.len() != 32 || r.firmware != ums_devsim::SIM_FIRMWARE || r.name.is_empty() {
            return Err(Status::invalid_argument("bad registration"));
        }
        let secret = r
            .secret
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        let mut units = self
            .units
            .lock()
            .map_err(|_| Status::internal("poisoned"))?;
        if let Some((id, known)) = units.get(&r.unit_id) {
            if *known != secret {
                return Err(Status::permission_denied("different secret"));
            }
            return Ok(Response::new(RegisterResponse {
                device_id: *id,
                created: false,
                settings_revision: REVISION,
            }));
        }
        let id = self.next_id.fetch_add(1, Ordering::SeqCst) + 1;
        units.insert(r.unit_id, (id, secret));
        Ok(Response::new(RegisterResponse {
            device_id: id,
            created: true,
            settings_revision: REVISION,
        }))
    }

    async fn check_in(
        &self,
        request: Request<CheckInRequest>,
    ) -> Result<Response<CheckInResponse>, Status> {
        self.authenticate(&request)?;
        let r = request.into_inner();
        if r.state != "idle" {
            return Err(Status::invalid_argument("unexpected state"));
        }
        Ok(Response::new(CheckInResponse {
            settings_revision: REVISION,
            settings_changed: r.known_revision != REVISION,
            jobs_due: 1,
        }))
    }

    async fn get_settings(
        &self,
        request: Request<GetSettingsRequest>,
    ) -> Result<Response<GetSettingsResponse>, Status> {
        self.authenticate(&request)?;
        Ok(Response::new(GetSettingsResponse {
            revision: REVISION,
            settings: vec![Setting {
                key: "a".into(),
                value: "1".into(),
                r#type: "int".into(),
            }],
        }))
    }

    async fn fetch_jobs(
        &self,
        request: Request<FetchJobsRequest>,
    ) -> Result<Response<FetchJobsResponse>, Status> {
        let id = self.authenticate(&request)?;
        Ok(Response::new(FetchJobsResponse {
            jobs: vec![Job {
                id: id * 100,
                kind: "reboot".into(),
                scheduled_at_ms: 0,
            }],
        }))
    }

    async fn report_job_result(
        &self,
        request: Request<ReportJobResultRequest>,
    ) -> Result<Response<ReportJobResultResponse>, Status> {
        self.authenticate(&request)?;
        let r = request.into_inner();
        self.reports
            .lock()
            .map_err(|_| Status::internal("poisoned"))?
            .push((r.job_id, r.success, r.message));
        Ok(Response::new(ReportJobResultResponse {}))
    }

    async fn list_files(
        &self,
        request: Request<ListFilesRequest>,
    ) -> Result<Response<ListFilesResponse>, Status> {
        self.authenticate(&request)?;
        Ok(Response::new(ListFilesResponse {
            files: vec![FileEntry {
                id: 1,
                path: "fw.bin".into(),
                size: FILE.len() as u64,
                sha256: String::new(),
            }],
            revision: 1,
        }))
    }

    type DownloadFileStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<FileChunk, Status>> + Send + 'static>,
    >;

    async fn download_file(
        &self,
        request: Request<DownloadFileRequest>,
    ) -> Result<Response<Self::DownloadFileStream>, Status> {
        self.authenticate(&request)?;
        let offset = request.get_ref().offset as usize;
        // Chunks of 7 bytes from the offset.
        let chunks: Vec<Result<FileChunk, Status>> = FILE[offset.min(FILE.len())..]
            .chunks(7)
            .enumerate()
            .map(|(i, c)| {
                Ok(FileChunk {
                    offset: (offset + i * 7) as u64,
                    data: c.to_vec(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }
}

/// The one file the fake server offers.
const FILE: &[u8] = b"firmware image, resumable at any offset";

/// A CA and a server certificate for localhost, 127.0.0.1 and ::1.
fn pki() -> (String, Identity) {
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca");
    let key = KeyPair::generate().expect("key");
    let params = CertificateParams::new(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])
    .expect("params");
    let cert = params.signed_by(&key, &ca).expect("cert");
    (
        ca.pem(),
        Identity::from_pem(cert.pem(), key.serialize_pem()),
    )
}

/// Serves the fake device API on `bind` with TLS; returns the bound address and the CA PEM.
async fn serve(bind: &str) -> Option<(SocketAddr, String)> {
    let (ca, identity) = pki();
    let incoming = TcpIncoming::bind(bind.parse().expect("addr")).ok()?;
    let addr = incoming.local_addr().expect("local addr");
    let server = Server::builder()
        .tls_config(ServerTlsConfig::new().identity(identity))
        .expect("tls")
        .add_service(DeviceServiceServer::new(Fake::default()));
    tokio::spawn(server.serve_with_incoming(incoming));
    Some((addr, ca))
}

#[tokio::test]
async fn simulates_devices() {
    let (addr, ca) = serve("127.0.0.1:0").await.expect("serve");
    let mut cfg = SimConfig::new(format!("https://127.0.0.1:{}", addr.port()), ca.into());
    cfg.devices = 20;
    cfg.concurrency = 4;
    cfg.checkins = 2;
    let bar = indicatif::ProgressBar::hidden();
    let report = ums_devsim::run(cfg, Some(bar.clone())).await.expect("run");
    assert_eq!(report.error_samples, Vec::<String>::new());
    assert_eq!((report.devices, report.ok, report.errors), (20, 20, 0));
    assert_eq!(report.ops, 60);
    assert_eq!(report.register.count, 20);
    assert_eq!(report.checkin.count, 40);
    assert_eq!(report.settings.count, 20);
    assert_eq!(report.total.count, 20);
    assert!(report.register.p50_ms > 0.0 && report.register.max_ms >= report.register.p99_ms);
    assert_eq!(bar.position(), 20);
    let json = serde_json::to_value(&report).expect("json");
    for key in [
        "ops_per_s",
        "elapsed_s",
        "error_samples",
        "register",
        "total",
    ] {
        assert!(json.get(key).is_some(), "missing {key}");
    }
}

#[tokio::test]
async fn counts_failures_without_stopping() {
    let (addr, ca) = serve("127.0.0.1:0").await.expect("serve");
    let mut cfg = SimConfig::new(format!("https://localhost:{}", addr.port()), ca.into());
    cfg.devices = 7;
    cfg.concurrency = 3;
    cfg.prefix = "fail".into();
    let report = ums_devsim::run(cfg, None).await.expect("run");
    assert_eq!((report.ok, report.errors, report.ops), (0, 7, 0));
    assert_eq!(
        report.error_samples,
        vec!["register: FailedPrecondition: registration closed".to_owned()]
    );
}

#[tokio::test]
async fn unreachable_server_is_an_error_per_device() {
    let (_, ca) = serve("127.0.0.1:0").await.expect("serve");
    // Nothing listens on port 1.
    let mut cfg = SimConfig::new("https://127.0.0.1:1", ca.into());
    cfg.devices = 3;
    let report = ums_devsim::run(cfg, None).await.expect("run");
    assert_eq!(report.errors, 3);
    assert_eq!(report.error_samples.len(), 1, "{:?}", report.error_samples);
    assert!(report.error_samples[0].starts_with("register: Unavailable"));
}

#[tokio::test]
async fn bad_configuration_is_refused() {
    let cfg = SimConfig::new("https://127.0.0.1:1", b"not a pem".to_vec());
    assert!(ums_devsim::run(cfg, None).await.is_err());
    let cfg = SimConfig::new("127.0.0.1:1", Vec::new());
    assert!(ums_devsim::run(cfg, None).await.is_err());
    let mut cfg = SimConfig::new("https://127.0.0.1:1", Vec::new());
    cfg.concurrency = 0;
    assert!(ums_devsim::run(cfg, None).await.is_err());
}

#[tokio::test]
async fn device_client_acts_as_one_device() {
    let (addr, ca) = serve("127.0.0.1:0").await.expect("serve");
    let url = format!("https://127.0.0.1:{}", addr.port());
    let mut device = DeviceClient::connect(&url, ca.as_bytes())
        .await
        .expect("connect");
    assert_eq!(device.secret().len(), 32);

    let err = device
        .check_in("idle", 0)
        .await
        .expect_err("no credentials");
    assert_eq!(err.code(), Code::Unauthenticated);

    let registered = device.register("unit-1", "Unit 1").await.expect("register");
    assert!(registered.created);
    assert_eq!(device.device_id(), Some(registered.device_id));
    let again = device.register("unit-1", "Unit 1").await.expect("register");
    assert!(!again.created);

    let checked = device.check_in("idle", 0).await.expect("check in");
    assert!(checked.settings_changed);
    let settings = device.get_settings().await.expect("settings");
    assert_eq!(settings.revision, REVISION);
    let jobs = device.fetch_jobs().await.expect("jobs");
    let job = jobs.jobs.first().expect("a job");
    device
        .report_job_result(job.id, true, "rebooted")
        .await
        .expect("report");

    // Another unit with a fresh secret cannot take over this one.
    let mut impostor = DeviceClient::connect(&url, ca.as_bytes())
        .await
        .expect("connect");
    let err = impostor
        .register("unit-1", "Unit 1")
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::PermissionDenied);
    impostor.set_device_id(device.device_id());
    let err = impostor.fetch_jobs().await.expect_err("wrong secret");
    assert_eq!(err.code(), Code::Unauthenticated);
    impostor.set_secret(device.secret().to_vec());
    impostor.fetch_jobs().await.expect("right secret");
}

#[tokio::test]
async fn ipv6_and_wrong_ca() {
    // IPv6 loopback may be missing in some sandboxes.
    if let Some((addr, ca)) = serve("[::1]:0").await {
        let url = format!("https://[::1]:{}", addr.port());
        let mut device = DeviceClient::connect(&url, ca.as_bytes())
            .await
            .expect("connect over ipv6");
        device.register("unit-6", "six").await.expect("register");
    }
    let (addr, _) = serve("127.0.0.1:0").await.expect("serve");
    let (other_ca, _) = pki();
    let err = DeviceClient::connect(
        &format!("https://127.0.0.1:{}", addr.port()),
        other_ca.as_bytes(),
    )
    .await
    .expect_err("untrusted server");
    assert!(err.to_string().contains("cannot connect"), "{err}");
}

#[tokio::test]
async fn a_download_resumes_where_it_stopped() {
    let (addr, ca) = serve("127.0.0.1:0").await.expect("serve");
    let mut dev =
        DeviceClient::connect(&format!("https://127.0.0.1:{}", addr.port()), ca.as_bytes())
            .await
            .expect("connect");
    dev.register("00:aa:bb:cc:dd:01", "dl")
        .await
        .expect("register");
    let files = dev.list_files().await.expect("list");
    assert_eq!(files.files[0].size, FILE.len() as u64);
    let mut got = Vec::new();
    // Interrupted after 10 bytes (in the middle of the second chunk), then resumed.
    assert_eq!(
        dev.download_file(1, &mut got, Some(10))
            .await
            .expect("part"),
        10
    );
    assert_eq!(got, &FILE[..10]);
    let rest = dev.download_file(1, &mut got, None).await.expect("rest");
    assert_eq!(rest, FILE.len() - 10);
    assert_eq!(got, FILE);
}
