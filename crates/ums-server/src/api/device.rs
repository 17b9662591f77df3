//! The device API (`ums.device.v1.DeviceService`) on the device port: registration, check-in,
//! settings, jobs, file downloads, and Shared Workplace logins.
//!
//! Each call is a handler returning `Result<_, ApiError>`; the service impl at the bottom only
//! authenticates the device and turns the result into a response or a status.

use std::sync::Arc;

use futures_util::StreamExt;
use tonic::{Request, Response, Status};
use ums_db::devices::{CheckIn, Registration};
use ums_db::swp::SwpSession;
use ums_domain::Effective;
use ums_proto::device::v1 as pb;
use ums_proto::device::v1::device_service_server::DeviceService;

use crate::error::ApiError;
use crate::network::update::maintenance;
use crate::settings::{
    DeviceRow, DeviceView, Enablement, device_settings, pick_directory, revision, session_revision,
    swp_enablement, user_revision, user_settings,
};
use crate::state::{AppState, SessionUser};

/// Shortest and longest device secret accepted at registration.
const SECRET_LEN: std::ops::RangeInclusive<usize> = 16..=64;
/// Longest firmware and state strings.
const MAX_FIELD: usize = 128;
/// Longest message of a job result.
const MAX_JOB_MESSAGE: usize = 4096;

pub struct DeviceApi {
    pub state: Arc<AppState>,
}

/// Refuses at once while the database cannot be reached, so devices move on (through the broker
/// to another server, or retry later) instead of waiting for a call that cannot succeed.
/// In update mode devices are served from the local copy, whatever the shared database does.
fn serving(state: &AppState) -> Result<(), ApiError> {
    if state.network.available() || state.network.local_copy().is_some() {
        Ok(())
    } else {
        Err(ApiError::Unavailable(
            "this server cannot reach its database: retry shortly".into(),
        ))
    }
}

/// Reads and checks the device credential of a call; the device id on success.
async fn authenticate<T>(state: &AppState, req: &Request<T>) -> Result<i64, ApiError> {
    serving(state)?;
    let md = req.metadata();
    let id = md
        .get(ums_proto::DEVICE_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok());
    let secret = md
        .get(ums_proto::DEVICE_SECRET_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| hex::decode(v).ok());
    let (Some(id), Some(secret)) = (id, secret) else {
        return Err(ApiError::Unauthenticated(format!(
            "device credentials missing: send {} and {} (hex)",
            ums_proto::DEVICE_ID_HEADER,
            ums_proto::DEVICE_SECRET_HEADER
        )));
    };
    if state.verify_device(id, &secret).await? {
        Ok(id)
    } else {
        Err(ApiError::Unauthenticated(
            "unknown device or wrong device secret".into(),
        ))
    }
}

fn short_field(what: &str, v: &str) -> Result<String, ApiError> {
    if v.len() > MAX_FIELD || v.chars().any(char::is_control) {
        return Err(ApiError::Invalid(format!(
            "{what} must be at most {MAX_FIELD} printable characters"
        )));
    }
    Ok(v.to_owned())
}

fn settings_pb(e: Effective) -> Vec<pb::Setting> {
    e.values
        .into_iter()
        .map(|v| pb::Setting {
            key: v.key,
            r#type: v.value.type_name().to_owned(),
            value: v.value.to_string(),
        })
        .collect()
}

impl DeviceApi {
    async fn register(
        &self,
        r: pb::RegisterRequest,
        address: String,
    ) -> Result<pb::RegisterResponse, ApiError> {
        let state = &self.state;
        serving(state)?;
        let unit_id = ums_domain::normalize_unit_id(&r.unit_id)?;
        if !SECRET_LEN.contains(&r.secret.len()) {
            return Err(ApiError::Invalid(format!(
                "secret must be {} to {} random bytes",
                SECRET_LEN.start(),
                SECRET_LEN.end()
            )));
        }
        let name = if r.name.trim().is_empty() {
            unit_id.clone()
        } else {
            ums_domain::validate_name("device name", &r.name)?
        };
        let firmware = short_field("firmware", &r.firmware)?;
        let registration = Registration {
            unit_id: unit_id.clone(),
            name: name.clone(),
            firmware,
            secret_hash: crate::secrets::sha256_hex(&r.secret),
        };
        let out = match state.network.local_copy() {
            // A known device registering again with its own secret is answered from the
            // copy; a new one waits for the update's end.
            Some(copy) => match copy.registered(&registration).await? {
                Some(device_id) => ums_db::devices::Registered {
                    device_id,
                    created: false,
                },
                None => return Err(maintenance("the registration of a new device")),
            },
            None => state.batcher.register(registration).await?,
        };
        if out.created {
            tracing::info!(device_id = out.device_id, unit_id = %unit_id, %address, "device registered");
        }
        state.remember_device(out.device_id, &r.secret);
        let settings_revision = revision(
            &state.settings(),
            &DeviceView {
                id: out.device_id,
                name: &name,
                folder_id: None,
                rev: 1,
            },
        );
        Ok(pb::RegisterResponse {
            device_id: out.device_id,
            created: out.created,
            settings_revision,
        })
    }

    async fn check_in(
        &self,
        device_id: i64,
        r: pb::CheckInRequest,
    ) -> Result<pb::CheckInResponse, ApiError> {
        let state = &self.state;
        let now = ums_db::now_ms();
        // Revisions come from a database counter: one past i64 was never handed out.
        let applied_revision = i64::try_from(r.known_revision)
            .map_err(|_| ApiError::Invalid("known_revision is not a settings revision".into()))?;
        let check_in = CheckIn {
            device_id,
            firmware: short_field("firmware", &r.firmware)?,
            state: short_field("state", &r.state)?,
            at: now,
            applied_revision,
        };
        let local = state.network.local_copy();
        let row = match &local {
            // Kept in the copy's journal, replayed into the shared database after the update.
            Some(copy) => copy.check_in(&check_in).await?,
            None => state.batcher.check_in(check_in).await?,
        }
        .ok_or_else(|| ApiError::NotFound("device no longer exists".into()))?;
        let model = state.settings();
        let view = DeviceView {
            id: device_id,
            name: "",
            folder_id: row.folder_id,
            rev: row.rev,
        };
        // While a user is logged in the revision is that of the user's settings.
        let rev = match state.session_user(device_id, row.swp_session).await? {
            Some(s) => {
                session_revision(s.tag, user_revision(&model, &view, s.directory_id, &s.user))
            }
            None => revision(&model, &view),
        };
        let jobs_due = match row.next_job_at {
            Some(at) if at <= now => state.device_db().count_due_jobs(device_id, now).await?,
            _ => 0,
        };
        let settings_changed = rev != r.known_revision;
        if settings_changed {
            state.keep_view(
                device_id,
                DeviceRow {
                    name: row.name,
                    folder_id: row.folder_id,
                    rev: row.rev,
                    session: row.swp_session,
                },
            );
        }
        Ok(pb::CheckInResponse {
            settings_revision: rev,
            settings_changed,
            jobs_due: u32::try_from(jobs_due).unwrap_or(u32::MAX),
        })
    }

    async fn get_settings(&self, device_id: i64) -> Result<pb::GetSettingsResponse, ApiError> {
        let state = &self.state;
        // The check-in that announced the change read the row already; a device that asks
        // without one gets it read now.
        let row = match state.take_view(device_id) {
            Some(v) => v,
            None => state.device_row(device_id).await?,
        };
        let session = state.session_user(device_id, row.session).await?;
        let (effective, revision) = settings_of(&state.settings(), &row, device_id, session);
        Ok(pb::GetSettingsResponse {
            revision,
            settings: settings_pb(effective),
        })
    }

    async fn fetch_jobs(&self, device_id: i64) -> Result<pb::FetchJobsResponse, ApiError> {
        let jobs = self
            .state
            .device_db()
            .fetch_due_jobs(device_id, ums_db::now_ms())
            .await?;
        Ok(pb::FetchJobsResponse {
            jobs: jobs
                .into_iter()
                .map(|j| pb::Job {
                    id: j.id,
                    kind: j.kind,
                    scheduled_at_ms: j.scheduled_at,
                })
                .collect(),
        })
    }

    async fn report_job_result(
        &self,
        device_id: i64,
        r: pb::ReportJobResultRequest,
    ) -> Result<pb::ReportJobResultResponse, ApiError> {
        if r.message.len() > MAX_JOB_MESSAGE {
            return Err(ApiError::Invalid(format!(
                "message must be at most {MAX_JOB_MESSAGE} bytes"
            )));
        }
        match self.state.network.local_copy() {
            Some(copy) => {
                copy.report_job_result(device_id, r.job_id, r.success, &r.message)
                    .await?
            }
            None => {
                self.state
                    .db
                    .report_job_result(device_id, r.job_id, r.success, &r.message)
                    .await?
            }
        }
        Ok(pb::ReportJobResultResponse {})
    }

    async fn list_files(&self) -> Result<pb::ListFilesResponse, ApiError> {
        let db = &self.state.device_db();
        let files = db.list_files(false).await?;
        let (_, revision) = db.change_counters().await?;
        Ok(pb::ListFilesResponse {
            files: files
                .into_iter()
                .map(|f| pb::FileEntry {
                    id: f.id,
                    path: f.path,
                    size: f.size as u64,
                    sha256: f.sha256,
                })
                .collect(),
            revision,
        })
    }

    async fn download_file(
        &self,
        r: pb::DownloadFileRequest,
    ) -> Result<<Self as DeviceService>::DownloadFileStream, ApiError> {
        let state = &self.state;
        let file = state.device_db().file(r.file_id).await?;
        if r.offset > file.size as u64 {
            return Err(ApiError::OutOfRange(format!(
                "offset {} is past the end of file {} ({} bytes)",
                r.offset, file.id, file.size
            )));
        }
        if !state.files.has(&file.sha256, file.size as u64).await {
            return Err(ApiError::Unavailable(format!(
                "file {} is still being copied to this server; retry shortly",
                file.id
            )));
        }
        let stream =
            crate::files::read_chunks(state.files.path_of(&file.sha256), r.offset).map(|c| {
                c.map(|(offset, data)| pb::FileChunk { offset, data })
                    .map_err(Status::from)
            });
        Ok(Box::pin(stream))
    }

    /// A device login: switch and licence, then swp-auth, then the merge.
    async fn login(
        &self,
        device_id: i64,
        r: pb::LoginRequest,
    ) -> Result<pb::LoginResponse, ApiError> {
        let state = &self.state;
        if state.network.local_copy().is_some() {
            return Err(maintenance("a user login"));
        }
        let model = state.settings();
        let row = state.device_row(device_id).await?;
        admit(state, &model, &row, device_id).await?;
        if r.password.is_empty() {
            return Err(ApiError::Invalid("password is empty".into()));
        }
        let directory = pick_directory(&model, &r.username, "")?;
        let user = state
            .swp
            .authenticate(
                super::admin::swp::directory_for_swp(state, directory)?,
                r.username,
                r.password,
                device_id,
            )
            .await?;
        let (effective, revision) =
            user_settings(&model, &row.view(device_id), directory.id, &user);
        for w in &effective.warnings {
            tracing::debug!(device_id, user = %user.login, warning = %w, "user settings");
        }
        let now = ums_db::now_ms();
        let session = state
            .batcher
            .start_swp_session(
                SwpSession {
                    device_id,
                    directory_id: directory.id,
                    login: user.login.clone(),
                    user_json: serde_json::to_string(&user).unwrap_or_default(),
                    token_hash: String::new(),
                    started_at: now,
                    tag: 0,
                    server_id: state.info.process_id.clone(),
                    refreshed_at: now,
                },
                rand::random::<i64>(),
            )
            .await?;
        tracing::info!(device_id, user = %user.login, directory = %directory.input.name, "user logged in");
        let login = user.login.clone();
        let display_name = user.display_name.clone();
        state.remember_session(device_id, session.tag, directory.id, user);
        Ok(pb::LoginResponse {
            user: login,
            display_name,
            revision: session_revision(session.tag, revision),
            settings: settings_pb(effective),
        })
    }

    /// Ends a device's user session: the device's own settings.
    async fn logout(&self, device_id: i64) -> Result<pb::GetSettingsResponse, ApiError> {
        let state = &self.state;
        if state.network.local_copy().is_some() {
            return Err(maintenance("a user logout"));
        }
        if let Some(s) = state.db.end_swp_session(device_id).await? {
            tracing::info!(device_id, user = %s.login, "user logged out");
        }
        state.forget_session(device_id);
        let row = state.device_row(device_id).await?;
        let (effective, revision) = device_settings(&state.settings(), &row.view(device_id));
        Ok(pb::GetSettingsResponse {
            revision,
            settings: settings_pb(effective),
        })
    }
}

/// A device's settings: the user's while a session is open, else its own; with their revision.
fn settings_of(
    model: &ums_db::settings::SettingsModel,
    row: &DeviceRow,
    device_id: i64,
    session: Option<Arc<SessionUser>>,
) -> (Effective, u64) {
    match session {
        Some(s) => {
            let (e, rev) = user_settings(model, &row.view(device_id), s.directory_id, &s.user);
            (e, session_revision(s.tag, rev))
        }
        None => device_settings(model, &row.view(device_id)),
    }
}

/// Whether a device may log a user in: Shared Workplace on (device, folder or profile) and a
/// licence (the device's own, or a seat of the licence pool, taken at its first login).
async fn admit(
    state: &AppState,
    model: &ums_db::settings::SettingsModel,
    row: &DeviceRow,
    device_id: i64,
) -> Result<(), ApiError> {
    let own = model
        .swp
        .devices
        .get(&device_id)
        .copied()
        .unwrap_or_default();
    let enablement = swp_enablement(model, &row.view(device_id));
    if !enablement.enabled() {
        if !own.licensed && model.swp.licences.is_empty() {
            return Err(ApiError::FailedPrecondition(format!(
                "device {device_id} has no Shared Workplace licence"
            )));
        }
        let why = match enablement {
            Enablement::Device(_) => "on the device".to_owned(),
            Enablement::Folder(f, _) => format!("for its folder {f}"),
            Enablement::Profile(_) => "by a profile of the device".to_owned(),
            Enablement::Unset => {
                "anywhere: switch it on for the device, a folder above it or in a profile"
                    .to_owned()
            }
        };
        return Err(ApiError::FailedPrecondition(format!(
            "Shared Workplace is switched off on device {device_id} ({why})"
        )));
    }
    if own.licensed {
        return Ok(());
    }
    let now = ums_db::now_ms();
    if let Some(l) = state.known_seat(device_id)
        && model
            .swp
            .licences
            .iter()
            .any(|x| x.id == l && x.expires_at > now)
    {
        return Ok(());
    }
    match state.db.claim_swp_seat(device_id, now).await? {
        ums_db::swp::SeatClaim::Seat(l) => {
            state.remember_seat(device_id, Some(l.id));
            Ok(())
        }
        ums_db::swp::SeatClaim::NoLicence => {
            state.remember_seat(device_id, None);
            Err(ApiError::FailedPrecondition(format!(
                "device {device_id} has no Shared Workplace licence"
            )))
        }
        ums_db::swp::SeatClaim::Expired(l) => {
            state.remember_seat(device_id, None);
            tracing::warn!(device_id, licence = %l.name, "login refused: the Shared Workplace licences expired");
            Err(ApiError::FailedPrecondition(format!(
                "the Shared Workplace licence `{}` expired on {}: no new logins until a valid licence is added",
                l.name,
                ums_domain::format_date_ms(l.expires_at - 1)
            )))
        }
        ums_db::swp::SeatClaim::Full(seats) => {
            state.remember_seat(device_id, None);
            Err(ApiError::FailedPrecondition(format!(
                "all {seats} seats of the Shared Workplace licences are held by other devices"
            )))
        }
    }
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl DeviceService for DeviceApi {
    type DownloadFileStream = std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<pb::FileChunk, Status>> + Send + 'static>,
    >;

    async fn register(&self, request: Request<pb::RegisterRequest>) -> Reply<pb::RegisterResponse> {
        let address = request
            .extensions()
            .get::<ums_service::ClientAddr>()
            .map(|a| a.0.to_string())
            .unwrap_or_default();
        Ok(Response::new(
            DeviceApi::register(self, request.into_inner(), address).await?,
        ))
    }

    async fn check_in(&self, request: Request<pb::CheckInRequest>) -> Reply<pb::CheckInResponse> {
        let id = authenticate(&self.state, &request).await?;
        Ok(Response::new(
            DeviceApi::check_in(self, id, request.into_inner()).await?,
        ))
    }

    async fn get_settings(
        &self,
        request: Request<pb::GetSettingsRequest>,
    ) -> Reply<pb::GetSettingsResponse> {
        let id = authenticate(&self.state, &request).await?;
        Ok(Response::new(DeviceApi::get_settings(self, id).await?))
    }

    async fn fetch_jobs(
        &self,
        request: Request<pb::FetchJobsRequest>,
    ) -> Reply<pb::FetchJobsResponse> {
        let id = authenticate(&self.state, &request).await?;
        Ok(Response::new(DeviceApi::fetch_jobs(self, id).await?))
    }

    async fn report_job_result(
        &self,
        request: Request<pb::ReportJobResultRequest>,
    ) -> Reply<pb::ReportJobResultResponse> {
        let id = authenticate(&self.state, &request).await?;
        Ok(Response::new(
            DeviceApi::report_job_result(self, id, request.into_inner()).await?,
        ))
    }

    async fn list_files(
        &self,
        request: Request<pb::ListFilesRequest>,
    ) -> Reply<pb::ListFilesResponse> {
        authenticate(&self.state, &request).await?;
        Ok(Response::new(DeviceApi::list_files(self).await?))
    }

    async fn download_file(
        &self,
        request: Request<pb::DownloadFileRequest>,
    ) -> Reply<Self::DownloadFileStream> {
        authenticate(&self.state, &request).await?;
        Ok(Response::new(
            DeviceApi::download_file(self, request.into_inner()).await?,
        ))
    }

    async fn login(&self, request: Request<pb::LoginRequest>) -> Reply<pb::LoginResponse> {
        let id = authenticate(&self.state, &request).await?;
        let answer = DeviceApi::login(self, id, request.into_inner()).await;
        let outcome = if answer.is_ok() { "ok" } else { "failed" };
        self.state.metrics.logins.inc(&["swp", outcome]);
        Ok(Response::new(answer?))
    }

    async fn logout(&self, request: Request<pb::LogoutRequest>) -> Reply<pb::GetSettingsResponse> {
        let id = authenticate(&self.state, &request).await?;
        Ok(Response::new(DeviceApi::logout(self, id).await?))
    }
}
