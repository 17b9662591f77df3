//! `ums-swp-load`: Shared Workplace login load for `cargo xtask bench swp`.
//!
//! Sets a fresh server up through the admin API (the directory from a JSON `DirectorySpec`,
//! profiles on the devices and on groups and OUs, licences), registers the devices, then logs
//! users in from every device for a while and prints one JSON line: logins per second and the
//! latency from sending a login to holding the user's settings.
//!
//! Between the logins, devices with a user logged in check in (`--checkins-per-login`) while
//! an administrator changes a group's profile (`--change-every-ms`): the check-ins that find the
//! change download the user's merged settings, as a device with a user logged in does.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use ums_devsim::DeviceClient;
use ums_proto::admin::v1 as pb;
use ums_proto::admin::v1::admin_service_client::AdminServiceClient;

#[derive(Debug, Parser)]
#[command(name = "ums-swp-load", version)]
struct Args {
    /// Device API address.
    #[arg(long)]
    addr: String,
    /// Admin API address.
    #[arg(long)]
    admin: String,
    /// PEM file of the server's CA.
    #[arg(long)]
    ca: PathBuf,
    /// File holding the password of the administrator `admin`.
    #[arg(long)]
    admin_password_file: PathBuf,
    /// JSON file with the directory (ums.admin.v1.DirectorySpec).
    #[arg(long)]
    directory_json: PathBuf,
    /// Devices logging users in, each over its own connection.
    #[arg(long, default_value_t = 256)]
    devices: usize,
    /// Users: user00000 ... with password <login>-pw-1.
    #[arg(long, default_value_t = 5000)]
    users: usize,
    /// Logins in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds of warm-up (connections, group caches), not measured.
    #[arg(long, default_value_t = 3)]
    warmup_s: u64,
    /// Seconds measured.
    #[arg(long, default_value_t = 20)]
    duration_s: u64,
    /// Check-ins of logged-in devices after each login (0: logins only).
    #[arg(long, default_value_t = 2)]
    checkins_per_login: usize,
    /// How often the profile of one department group changes during the measurement, in
    /// milliseconds (0: never).
    #[arg(long, default_value_t = 500)]
    change_every_ms: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn authed<T>(token: &str, message: T) -> anyhow::Result<Request<T>> {
    let mut r = Request::new(message);
    r.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}"))?,
    );
    Ok(r)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let ca = std::fs::read(&args.ca).with_context(|| format!("read {}", args.ca.display()))?;
    let password = std::fs::read_to_string(&args.admin_password_file)?
        .trim()
        .to_owned();
    let spec: pb::DirectorySpec =
        serde_json::from_str(&std::fs::read_to_string(&args.directory_json)?)?;
    let channel = Endpoint::from_shared(args.admin.clone())?
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca)))?
        .connect()
        .await
        .context("connect to the admin API")?;
    let mut admin = AdminServiceClient::new(channel);
    let token = admin
        .login(pb::LoginRequest {
            username: "admin".into(),
            password,
        })
        .await?
        .into_inner()
        .token;
    let t = token.as_str();

    admin.create_directory(authed(t, spec)?).await?;
    let profile = |name: &str, params: &[(&str, &str)]| pb::CreateProfileRequest {
        name: name.to_owned(),
        description: String::new(),
        priority: false,
        params: params
            .iter()
            .map(|(k, v)| pb::Param {
                key: (*k).to_owned(),
                value: (*v).to_owned(),
            })
            .collect(),
    };
    let device_profile = admin
        .create_profile(authed(
            t,
            profile(
                "bench-device",
                &[
                    ("audio.volume", "20"),
                    ("network.proxy", "http://proxy:3128"),
                    ("sessions.rdp0.server", "ts-device"),
                ],
            ),
        )?)
        .await?
        .into_inner()
        .id;
    let mut dept_profiles = Vec::new();
    for d in 0..5 {
        let id = admin
            .create_profile(authed(
                t,
                profile(
                    &format!("bench-dept{d}"),
                    &[
                        ("display.monitors", "2"),
                        ("sessions.rdp0.server", "ts-dept"),
                    ],
                ),
            )?)
            .await?
            .into_inner()
            .id;
        dept_profiles.push(id);
        admin
            .assign_user(authed(
                t,
                pb::AssignUserRequest {
                    profile_id: id,
                    group: format!("dept{d}"),
                    ..Default::default()
                },
            )?)
            .await?;
    }
    for (name, kind, params) in [
        ("bench-staff", "ou", [("system.timezone", "Europe/Berlin")]),
        (
            "bench-domain-users",
            "group",
            [("input.keyboard_layout", "de")],
        ),
    ] {
        let id = admin
            .create_profile(authed(t, profile(name, &params))?)
            .await?
            .into_inner()
            .id;
        let mut req = pb::AssignUserRequest {
            profile_id: id,
            ..Default::default()
        };
        match kind {
            "ou" => req.ou = "Staff".into(),
            _ => req.group = "Domain Users".into(),
        }
        admin.assign_user(authed(t, req)?).await?;
    }

    eprintln!("registering and licensing {} devices", args.devices);
    let prefix = ums_devsim::random_prefix();
    let mut devices = Vec::with_capacity(args.devices);
    for i in 0..args.devices {
        let mut d = DeviceClient::connect(&args.addr, &ca).await?;
        let id = d
            .register(&format!("{prefix}-{i:06}"), &format!("desk-{i}"))
            .await?
            .device_id;
        admin
            .assign(authed(
                t,
                pb::AssignRequest {
                    profile_id: device_profile,
                    device_id: Some(id),
                    folder_id: None,
                },
            )?)
            .await?;
        admin
            .set_shared_workplace(authed(
                t,
                pb::SetSharedWorkplaceRequest {
                    device_id: id,
                    licensed: Some(true),
                    enabled: None,
                },
            )?)
            .await?;
        devices.push(d);
    }
    let users: Vec<(String, String)> = (0..args.users)
        .map(|i| {
            let login = format!("user{i:05}");
            let password = format!("{login}-pw-1");
            (login, password)
        })
        .collect();

    // Only the users' side sets `display.monitors` (the department groups' profiles).
    let session_checkins = ums_devsim::SessionCheckIns {
        per_login: args.checkins_per_login,
        user_key: "display.monitors".into(),
    };
    eprintln!("warm-up {} s", args.warmup_s);
    let warm = ums_devsim::run_session_load(
        devices.clone(),
        users.clone(),
        args.concurrency,
        Duration::from_secs(args.warmup_s),
        session_checkins.clone(),
    )
    .await?;
    if warm.logins == 0 {
        anyhow::bail!(
            "no login succeeded during warm-up: {:?}",
            warm.error_samples
        );
    }
    eprintln!(
        "measuring {} s at concurrency {}",
        args.duration_s, args.concurrency
    );
    // An administrator keeps changing the profile of dept0's users while they are logged in.
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let changer = {
        let mut admin = admin.clone();
        let token = token.clone();
        let profile_id = dept_profiles.first().copied();
        let every = Duration::from_millis(args.change_every_ms);
        tokio::spawn(async move {
            let mut changes = 0u64;
            let (Some(id), false) = (profile_id, every.is_zero()) else {
                return Ok(changes);
            };
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = &mut stopped => return Ok::<u64, anyhow::Error>(changes),
                    _ = tick.tick() => {}
                }
                let monitors = if changes.is_multiple_of(2) { "3" } else { "2" };
                admin
                    .update_profile_params(authed(
                        &token,
                        pb::UpdateProfileParamsRequest {
                            id,
                            set: vec![pb::Param {
                                key: "display.monitors".into(),
                                value: monitors.into(),
                            }],
                            unset: vec![],
                        },
                    )?)
                    .await
                    .context("change the group's profile")?;
                changes += 1;
            }
        })
    };
    let report = ums_devsim::run_session_load(
        devices,
        users,
        args.concurrency,
        Duration::from_secs(args.duration_s),
        session_checkins,
    )
    .await?;
    let _ = stop.send(());
    let changes = changer.await.context("the profile changer")??;
    let mut out = serde_json::to_value(&report)?;
    out["profile_changes"] = changes.into();
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}
