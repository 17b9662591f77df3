//! The device API (`ums.device.v1.DeviceService`) on the device port.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use ums_db::devices::{CheckIn, Registration};
use ums_proto::device::v1 as pb;
use ums_proto::device::v1::device_service_server::DeviceService;

use crate::error::ApiError;
use crate::state::{self, AppState, DeviceRow, DeviceView};

/// Shortest and longest device secret accepted at registration.
const SECRET_LEN: std::ops::RangeInclusive<usize> = 16..=64;
/// Longest firmware and state strings.
const MAX_FIELD: usize = 128;

pub struct DeviceApi {
    pub state: Arc<AppState>,
}

/// Refuses at once while the database cannot be reached, so devices move on (through the broker
/// to another server, or retry later) instead of waiting for a call that cannot succeed.
fn serving(state: &AppState) -> Result<(), Status> {
    if state.network.available() {
        Ok(())
    } else {
        Err(Status::unavailable(
            "this server cannot reach its database: retry shortly",
        ))
    }
}

/// Reads and checks the device credential of a call; the device id on success.
async fn authenticate<T>(state: &AppState, req: &Request<T>) -> Result<i64, Status> {
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
        return Err(Status::unauthenticated(format!(
            "device credentials missing: send {} and {} (hex)",
            ums_proto::DEVICE_ID_HEADER,
            ums_proto::DEVICE_SECRET_HEADER
        )));
    };
    if state
        .verify_device(id, &secret)
        .await
        .map_err(Status::from)?
    {
        Ok(id)
    } else {
        Err(Status::unauthenticated(
            "unknown device or wrong device secret",
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

#[tonic::async_trait]
impl DeviceService for DeviceApi {
    type DownloadFileStream = std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<pb::FileChunk, Status>> + Send + 'static>,
    >;

    async fn list_files(
        &self,
        request: Request<pb::ListFilesRequest>,
    ) -> Result<Response<pb::ListFilesResponse>, Status> {
        authenticate(&self.state, &request).await?;
        let db = &self.state.db;
        let files = db.list_files(false).await.map_err(ApiError::from)?;
        let (_, revision) = db.change_counters().await.map_err(ApiError::from)?;
        Ok(Response::new(pb::ListFilesResponse {
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
        }))
    }

    async fn download_file(
        &self,
        request: Request<pb::DownloadFileRequest>,
    ) -> Result<Response<Self::DownloadFileStream>, Status> {
        authenticate(&self.state, &request).await?;
        let r = request.into_inner();
        let file = self
            .state
            .db
            .file(r.file_id)
            .await
            .map_err(ApiError::from)?;
        if r.offset > file.size as u64 {
            return Err(Status::out_of_range(format!(
                "offset {} is past the end of file {} ({} bytes)",
                r.offset, file.id, file.size
            )));
        }
        if !self.state.files.has(&file.sha256, file.size as u64).await {
            return Err(Status::unavailable(format!(
                "file {} is still being copied to this server; retry shortly",
                file.id
            )));
        }
        use futures_util::StreamExt;
        let stream = crate::files::read_chunks(self.state.files.path_of(&file.sha256), r.offset)
            .map(|c| c.map(|(offset, data)| pb::FileChunk { offset, data }));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        serving(&self.state)?;
        let address = request
            .extensions()
            .get::<ums_service::ClientAddr>()
            .map(|a| a.0.to_string())
            .unwrap_or_default();
        let r = request.into_inner();
        let unit_id = ums_domain::normalize_unit_id(&r.unit_id).map_err(ApiError::from)?;
        if !SECRET_LEN.contains(&r.secret.len()) {
            return Err(Status::invalid_argument(format!(
                "secret must be {} to {} random bytes",
                SECRET_LEN.start(),
                SECRET_LEN.end()
            )));
        }
        let name = if r.name.trim().is_empty() {
            unit_id.clone()
        } else {
            ums_domain::validate_name("device name", &r.name).map_err(ApiError::from)?
        };
        let firmware = short_field("firmware", &r.firmware)?;
        let out = self
            .state
            .batcher
            .register(Registration {
                unit_id: unit_id.clone(),
                name: name.clone(),
                firmware,
                secret_hash: state::secret_hash_hex(&r.secret),
            })
            .await
            .map_err(ApiError::from)?;
        if out.created {
            tracing::info!(device_id = out.device_id, unit_id = %unit_id, %address, "device registered");
        }
        self.state.remember_device(out.device_id, &r.secret);
        let model = self.state.settings();
        let settings_revision = state::revision(
            &model,
            &DeviceView {
                id: out.device_id,
                name: &name,
                folder_id: None,
                rev: 1,
            },
        );
        Ok(Response::new(pb::RegisterResponse {
            device_id: out.device_id,
            created: out.created,
            settings_revision,
        }))
    }

    async fn check_in(
        &self,
        request: Request<pb::CheckInRequest>,
    ) -> Result<Response<pb::CheckInResponse>, Status> {
        let device_id = authenticate(&self.state, &request).await?;
        let r = request.into_inner();
        let now = ums_db::now_ms();
        let row = self
            .state
            .batcher
            .check_in(CheckIn {
                device_id,
                firmware: short_field("firmware", &r.firmware)?,
                state: short_field("state", &r.state)?,
                at: now,
            })
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| Status::not_found("device no longer exists"))?;
        let model = self.state.settings();
        let rev = state::revision(
            &model,
            &DeviceView {
                id: device_id,
                name: "",
                folder_id: row.folder_id,
                rev: row.rev,
            },
        );
        let jobs_due = match row.next_job_at {
            Some(at) if at <= now => self
                .state
                .db
                .count_due_jobs(device_id, now)
                .await
                .map_err(ApiError::from)?,
            _ => 0,
        };
        let settings_changed = rev != r.known_revision;
        if settings_changed {
            self.state.keep_view(
                device_id,
                DeviceRow {
                    name: row.name,
                    folder_id: row.folder_id,
                    rev: row.rev,
                },
            );
        }
        Ok(Response::new(pb::CheckInResponse {
            settings_revision: rev,
            settings_changed,
            jobs_due: u32::try_from(jobs_due).unwrap_or(u32::MAX),
        }))
    }

    async fn get_settings(
        &self,
        request: Request<pb::GetSettingsRequest>,
    ) -> Result<Response<pb::GetSettingsResponse>, Status> {
        let device_id = authenticate(&self.state, &request).await?;
        // The check-in that announced the change read the row already; a device that asks
        // without one gets it read now.
        let row = match self.state.take_view(device_id) {
            Some(v) => v,
            None => self
                .state
                .db
                .get_device(device_id)
                .await
                .map_err(ApiError::from)?
                .into(),
        };
        let (effective, revision) =
            state::settings_of(&self.state.settings(), &row.view(device_id));
        Ok(Response::new(pb::GetSettingsResponse {
            revision,
            settings: effective
                .values
                .into_iter()
                .map(|v| pb::Setting {
                    key: v.key,
                    r#type: v.value.type_name().to_owned(),
                    value: v.value.to_string(),
                })
                .collect(),
        }))
    }

    async fn fetch_jobs(
        &self,
        request: Request<pb::FetchJobsRequest>,
    ) -> Result<Response<pb::FetchJobsResponse>, Status> {
        let device_id = authenticate(&self.state, &request).await?;
        let jobs = self
            .state
            .db
            .fetch_due_jobs(device_id, ums_db::now_ms())
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::FetchJobsResponse {
            jobs: jobs
                .into_iter()
                .map(|j| pb::Job {
                    id: j.id,
                    kind: j.kind,
                    scheduled_at_ms: j.scheduled_at,
                })
                .collect(),
        }))
    }

    async fn report_job_result(
        &self,
        request: Request<pb::ReportJobResultRequest>,
    ) -> Result<Response<pb::ReportJobResultResponse>, Status> {
        let device_id = authenticate(&self.state, &request).await?;
        let r = request.into_inner();
        if r.message.len() > 4096 {
            return Err(Status::invalid_argument(
                "message must be at most 4096 bytes",
            ));
        }
        self.state
            .db
            .report_job_result(device_id, r.job_id, r.success, &r.message)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ReportJobResultResponse {}))
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let device_id = authenticate(&self.state, &request).await?;
        crate::swp::login(&self.state, device_id, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::GetSettingsResponse>, Status> {
        let device_id = authenticate(&self.state, &request).await?;
        crate::swp::logout(&self.state, device_id)
            .await
            .map(Response::new)
    }
}
