//! The admin API (`ums.admin.v1.AdminService`): gRPC on the admin port, and the same handlers
//! behind the HTTPS JSON routes of [`crate::json_api`].

use std::collections::HashSet;
use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;
use tonic::{Request, Response, Status};
use ums_db::devices::DeviceUpdate;
use ums_domain::{JobKind, JobState, ObjectKind, ObjectRef};
use ums_proto::admin::v1 as pb;
use ums_proto::admin::v1::admin_service_server::AdminService;

use crate::error::ApiError;
use crate::state::{self, AppState, DeviceView};

/// Every permission an administrator account can hold; `*` holds them all.
pub const PERMISSIONS: &[&str] = &[
    "devices:read",
    "devices:write",
    "settings:read",
    "settings:write",
    "jobs:write",
    "admins:write",
    "network:read",
    "network:write",
    "files:write",
];

const MIN_PASSWORD: usize = 8;

pub struct AdminApi {
    pub state: Arc<AppState>,
    pub logins: crate::login_guard::LoginGuard,
}

/// The administrator behind a call.
pub(crate) struct Caller {
    username: String,
    permissions: Vec<String>,
}

impl Caller {
    pub(crate) fn require(&self, permission: &str) -> Result<(), Status> {
        if self.permissions.iter().any(|p| p == "*" || p == permission) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "administrator `{}` lacks the permission `{permission}`",
                self.username
            )))
        }
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn ok<T>(v: T) -> Reply<T> {
    Ok(Response::new(v))
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Hashes a password with argon2id on the blocking pool.
pub async fn hash_password(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || {
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        let salt = SaltString::encode_b64(&salt).map_err(|e| ApiError::Internal(e.to_string()))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| ApiError::Internal(e.to_string()))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
}

async fn verify_password(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// A random string of `len` characters from [A-Za-z0-9].
pub fn random_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[(rng.next_u32() as usize) % ALPHABET.len()] as char)
        .collect()
}

pub fn validate_username(u: &str) -> Result<(), ApiError> {
    let ok = !u.is_empty()
        && u.len() <= 64
        && u.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::Invalid(
            "user name must be 1 to 64 characters of letters, digits, `.`, `_`, `-` and `@`".into(),
        ))
    }
}

fn validate_password(p: &str) -> Result<(), ApiError> {
    if p.chars().count() < MIN_PASSWORD || p.len() > 1024 {
        return Err(ApiError::Invalid(format!(
            "password must be {MIN_PASSWORD} to 1024 characters"
        )));
    }
    Ok(())
}

fn validate_permissions(perms: &[String]) -> Result<(), ApiError> {
    for p in perms {
        if p != "*" && !PERMISSIONS.contains(&p.as_str()) {
            return Err(ApiError::Invalid(format!(
                "unknown permission `{p}`: use * or one of {}",
                PERMISSIONS.join(", ")
            )));
        }
    }
    Ok(())
}

fn split_permissions(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

fn target(device_id: Option<i64>, folder_id: Option<i64>) -> Result<ObjectRef, Status> {
    match (device_id, folder_id) {
        (Some(id), None) => Ok(ObjectRef {
            kind: ObjectKind::Device,
            id,
        }),
        (None, Some(id)) => Ok(ObjectRef {
            kind: ObjectKind::Folder,
            id,
        }),
        _ => Err(Status::invalid_argument(
            "give exactly one of device_id and folder_id",
        )),
    }
}

/// Validates parameters and returns them in their normalised text form.
fn normalise_params(params: &[pb::Param]) -> Result<Vec<(String, String)>, ApiError> {
    let mut seen = HashSet::new();
    params
        .iter()
        .map(|p| {
            let key = p.key.trim();
            let value = ums_domain::parse_param(key, &p.value)?;
            if !seen.insert(key.to_owned()) {
                return Err(ApiError::Invalid(format!("parameter `{key}` given twice")));
            }
            Ok((key.to_owned(), value.to_string()))
        })
        .collect()
}

fn profile_pb(p: ums_db::settings::StoredProfile) -> pb::Profile {
    pb::Profile {
        id: p.id,
        name: p.name,
        description: p.description,
        priority: p.priority,
        params: p
            .params
            .into_iter()
            .map(|(key, value)| pb::Param { key, value })
            .collect(),
    }
}

impl AdminApi {
    pub(crate) async fn caller<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        let token = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Status::unauthenticated("missing `authorization: Bearer <token>`: log in first")
            })?;
        let found = self
            .state
            .db
            .session_admin(&sha256_hex(token.as_bytes()), ums_db::now_ms())
            .await
            .map_err(ApiError::from)?;
        let (admin, _) = found
            .ok_or_else(|| Status::unauthenticated("session expired or unknown: log in again"))?;
        Ok(Caller {
            username: admin.username,
            permissions: split_permissions(&admin.permissions),
        })
    }

    fn device_pb(&self, d: ums_db::devices::Device) -> pb::Device {
        let model = self.state.settings();
        let settings_revision = state::revision(
            &model,
            &DeviceView {
                id: d.id,
                name: &d.name,
                folder_id: d.folder_id,
                rev: d.rev,
            },
        );
        pb::Device {
            id: d.id,
            unit_id: d.unit_id,
            name: d.name,
            firmware: d.firmware,
            state: d.state,
            folder_id: d.folder_id,
            last_contact_ms: d.last_contact.unwrap_or(0),
            registered_at_ms: d.registered_at,
            settings_revision,
        }
    }

    pub(crate) async fn reload(&self) -> Result<(), Status> {
        self.state.reload_settings().await.map_err(Status::from)?;
        self.state.settings_changed().await;
        Ok(())
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn list_processes(
        &self,
        request: Request<pb::ListProcessesRequest>,
    ) -> Reply<pb::ListProcessesResponse> {
        self.caller(&request).await?.require("network:read")?;
        ok(crate::admin_network::list_processes(&self.state).await?)
    }

    async fn remove_process(&self, request: Request<pb::ProcessRequest>) -> Reply<pb::Empty> {
        self.caller(&request).await?.require("network:write")?;
        crate::admin_network::remove_process(&self.state, &request.get_ref().id).await?;
        ok(pb::Empty {})
    }

    async fn stop_process(
        &self,
        request: Request<pb::ProcessRequest>,
    ) -> Reply<ums_proto::cluster::v1::ProcessInfo> {
        self.caller(&request).await?.require("network:write")?;
        ok(crate::admin_network::control(&self.state, &request.get_ref().id, false).await?)
    }

    async fn start_process(
        &self,
        request: Request<pb::ProcessRequest>,
    ) -> Reply<ums_proto::cluster::v1::ProcessInfo> {
        self.caller(&request).await?.require("network:write")?;
        ok(crate::admin_network::control(&self.state, &request.get_ref().id, true).await?)
    }

    async fn export_token(
        &self,
        request: Request<pb::ExportTokenRequest>,
    ) -> Reply<pb::TokenResponse> {
        self.caller(&request).await?.require("network:write")?;
        ok(crate::admin_network::export_token(&self.state).await?)
    }

    async fn rotate_token(
        &self,
        request: Request<pb::RotateTokenRequest>,
    ) -> Reply<pb::TokenResponse> {
        self.caller(&request).await?.require("network:write")?;
        let grace = request.get_ref().grace_seconds;
        ok(crate::admin_network::rotate_token(&self.state, grace).await?)
    }

    async fn upload_file(
        &self,
        request: Request<tonic::Streaming<pb::UploadFileChunk>>,
    ) -> Reply<pb::FileInfo> {
        self.caller(&request).await?.require("files:write")?;
        ok(crate::admin_network::upload(&self.state, request.into_inner()).await?)
    }

    async fn list_files(
        &self,
        request: Request<pb::ListFilesRequest>,
    ) -> Reply<pb::ListFilesResponse> {
        self.caller(&request).await?.require("devices:read")?;
        ok(crate::admin_network::list_files(&self.state).await?)
    }

    async fn delete_file(&self, request: Request<pb::FileRequest>) -> Reply<pb::Empty> {
        self.caller(&request).await?.require("files:write")?;
        crate::admin_network::delete_file(&self.state, request.get_ref().id).await?;
        ok(pb::Empty {})
    }

    async fn login(&self, request: Request<pb::LoginRequest>) -> Reply<pb::LoginResponse> {
        let r = request.into_inner();
        let wrong = || Status::unauthenticated("wrong user name or password");
        if r.username.is_empty() || r.password.is_empty() || r.password.len() > 1024 {
            return Err(wrong());
        }
        let now = std::time::Instant::now();
        if let Err(wait) = self.logins.check(&r.username, now) {
            return Err(Status::resource_exhausted(format!(
                "too many failed logins for `{}`: try again in {} s",
                r.username,
                wait.as_secs().max(1)
            )));
        }
        let admin = self
            .state
            .db
            .find_admin(&r.username)
            .await
            .map_err(ApiError::from)?;
        // Verify against a dummy hash for unknown users too, so timing tells nothing.
        let hash = match &admin {
            Some(a) => a.password_hash.clone(),
            None => dummy_hash().await,
        };
        let valid = verify_password(r.password, hash).await;
        let Some(admin) = admin.filter(|_| valid) else {
            self.logins.failed(&r.username, now);
            tracing::info!(user = %r.username, "failed administrator login");
            return Err(wrong());
        };
        self.logins.succeeded(&r.username);
        let token = random_token(48);
        let expires_at_ms =
            ums_db::now_ms() + i64::from(self.state.info.session_hours.max(1)) * 3_600_000;
        self.state
            .db
            .create_session(&sha256_hex(token.as_bytes()), admin.id, expires_at_ms)
            .await
            .map_err(ApiError::from)?;
        tracing::info!(user = %admin.username, "administrator logged in");
        ok(pb::LoginResponse {
            token,
            expires_at_ms,
            permissions: split_permissions(&admin.permissions),
        })
    }

    async fn who_am_i(&self, request: Request<pb::WhoAmIRequest>) -> Reply<pb::WhoAmIResponse> {
        let c = self.caller(&request).await?;
        ok(pb::WhoAmIResponse {
            username: c.username,
            permissions: c.permissions,
        })
    }

    async fn create_admin(&self, request: Request<pb::CreateAdminRequest>) -> Reply<pb::Admin> {
        self.caller(&request).await?.require("admins:write")?;
        let r = request.into_inner();
        validate_username(&r.username)?;
        validate_password(&r.password)?;
        validate_permissions(&r.permissions)?;
        let hash = hash_password(r.password).await?;
        let a = self
            .state
            .db
            .create_admin(&r.username, &hash, &r.permissions)
            .await
            .map_err(ApiError::from)?;
        ok(admin_pb(a))
    }

    async fn list_admins(
        &self,
        request: Request<pb::ListAdminsRequest>,
    ) -> Reply<pb::ListAdminsResponse> {
        self.caller(&request).await?.require("admins:write")?;
        let admins = self.state.db.list_admins().await.map_err(ApiError::from)?;
        ok(pb::ListAdminsResponse {
            admins: admins.into_iter().map(admin_pb).collect(),
        })
    }

    async fn set_admin_password(
        &self,
        request: Request<pb::SetAdminPasswordRequest>,
    ) -> Reply<pb::Empty> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        if caller.username != r.username {
            caller.require("admins:write")?;
        }
        validate_password(&r.password)?;
        let hash = hash_password(r.password).await?;
        self.state
            .db
            .set_admin_password(&r.username, &hash)
            .await
            .map_err(ApiError::from)?;
        ok(pb::Empty {})
    }

    async fn delete_admin(&self, request: Request<pb::DeleteAdminRequest>) -> Reply<pb::Empty> {
        self.caller(&request).await?.require("admins:write")?;
        let r = request.into_inner();
        self.state
            .db
            .delete_admin(&r.username)
            .await
            .map_err(ApiError::from)?;
        ok(pb::Empty {})
    }

    async fn list_devices(
        &self,
        request: Request<pb::ListDevicesRequest>,
    ) -> Reply<pb::ListDevicesResponse> {
        self.caller(&request).await?.require("devices:read")?;
        let r = request.into_inner();
        let limit = match r.limit {
            0 => 100,
            n => u64::from(n.min(10_000)),
        };
        let page = self
            .state
            .db
            .list_devices(r.folder_id, r.after_id, limit)
            .await
            .map_err(ApiError::from)?;
        ok(pb::ListDevicesResponse {
            total: page.total,
            devices: page
                .devices
                .into_iter()
                .map(|d| self.device_pb(d))
                .collect(),
        })
    }

    async fn get_device(&self, request: Request<pb::GetDeviceRequest>) -> Reply<pb::Device> {
        self.caller(&request).await?.require("devices:read")?;
        let d = self
            .state
            .db
            .get_device(request.into_inner().id)
            .await
            .map_err(ApiError::from)?;
        ok(self.device_pb(d))
    }

    async fn update_device(&self, request: Request<pb::UpdateDeviceRequest>) -> Reply<pb::Device> {
        self.caller(&request).await?.require("devices:write")?;
        let r = request.into_inner();
        let name = r
            .name
            .as_deref()
            .map(|n| ums_domain::validate_name("device name", n))
            .transpose()
            .map_err(ApiError::from)?;
        let folder = match (r.folder_id, r.clear_folder) {
            (Some(_), true) => {
                return Err(Status::invalid_argument(
                    "give folder_id or clear_folder, not both",
                ));
            }
            (Some(f), false) => Some(Some(f)),
            (None, true) => Some(None),
            (None, false) => None,
        };
        let moved = folder.is_some();
        let d = self
            .state
            .db
            .update_device(r.id, &DeviceUpdate { name, folder })
            .await
            .map_err(ApiError::from)?;
        if moved {
            self.reload().await?;
        }
        ok(self.device_pb(d))
    }

    async fn delete_device(&self, request: Request<pb::DeleteDeviceRequest>) -> Reply<pb::Empty> {
        self.caller(&request).await?.require("devices:write")?;
        let id = request.into_inner().id;
        self.state
            .db
            .delete_device(id)
            .await
            .map_err(ApiError::from)?;
        self.state.forget_device_everywhere(id).await;
        self.reload().await?;
        ok(pb::Empty {})
    }

    async fn reset_device_credential(
        &self,
        request: Request<pb::ResetDeviceCredentialRequest>,
    ) -> Reply<pb::Empty> {
        self.caller(&request).await?.require("devices:write")?;
        let id = request.into_inner().id;
        self.state
            .db
            .reset_device_credential(id)
            .await
            .map_err(ApiError::from)?;
        self.state.forget_device_everywhere(id).await;
        ok(pb::Empty {})
    }

    async fn create_folder(&self, request: Request<pb::CreateFolderRequest>) -> Reply<pb::Folder> {
        self.caller(&request).await?.require("settings:write")?;
        let r = request.into_inner();
        let name = ums_domain::validate_name("folder name", &r.name).map_err(ApiError::from)?;
        let f = self
            .state
            .db
            .create_folder(&name, r.parent_id)
            .await
            .map_err(ApiError::from)?;
        self.reload().await?;
        ok(pb::Folder {
            id: f.id,
            name: f.name,
            parent_id: f.parent_id,
        })
    }

    async fn list_folders(
        &self,
        request: Request<pb::ListFoldersRequest>,
    ) -> Reply<pb::ListFoldersResponse> {
        self.caller(&request).await?.require("settings:read")?;
        let folders = self.state.db.list_folders().await.map_err(ApiError::from)?;
        ok(pb::ListFoldersResponse {
            folders: folders
                .into_iter()
                .map(|f| pb::Folder {
                    id: f.id,
                    name: f.name,
                    parent_id: f.parent_id,
                })
                .collect(),
        })
    }

    async fn delete_folder(&self, request: Request<pb::DeleteFolderRequest>) -> Reply<pb::Empty> {
        self.caller(&request).await?.require("settings:write")?;
        self.state
            .db
            .delete_folder(request.into_inner().id)
            .await
            .map_err(ApiError::from)?;
        self.reload().await?;
        ok(pb::Empty {})
    }

    async fn create_profile(
        &self,
        request: Request<pb::CreateProfileRequest>,
    ) -> Reply<pb::Profile> {
        self.caller(&request).await?.require("settings:write")?;
        let r = request.into_inner();
        let name = ums_domain::validate_name("profile name", &r.name).map_err(ApiError::from)?;
        if r.description.len() > 4096 {
            return Err(Status::invalid_argument(
                "description must be at most 4096 bytes",
            ));
        }
        let params = normalise_params(&r.params)?;
        let p = self
            .state
            .db
            .create_profile(&name, &r.description, r.priority, &params)
            .await
            .map_err(ApiError::from)?;
        self.reload().await?;
        ok(profile_pb(p))
    }

    async fn list_profiles(
        &self,
        request: Request<pb::ListProfilesRequest>,
    ) -> Reply<pb::ListProfilesResponse> {
        self.caller(&request).await?.require("settings:read")?;
        let profiles = self
            .state
            .db
            .list_profiles()
            .await
            .map_err(ApiError::from)?;
        ok(pb::ListProfilesResponse {
            profiles: profiles.into_iter().map(profile_pb).collect(),
        })
    }

    async fn get_profile(&self, request: Request<pb::GetProfileRequest>) -> Reply<pb::Profile> {
        self.caller(&request).await?.require("settings:read")?;
        let p = self
            .state
            .db
            .get_profile(request.into_inner().id)
            .await
            .map_err(ApiError::from)?;
        ok(profile_pb(p))
    }

    async fn update_profile_params(
        &self,
        request: Request<pb::UpdateProfileParamsRequest>,
    ) -> Reply<pb::Profile> {
        self.caller(&request).await?.require("settings:write")?;
        let r = request.into_inner();
        let set = normalise_params(&r.set)?;
        crate::swp::check_user_profile(&self.state, r.id, &set).await?;
        let unset: Vec<String> = r.unset.iter().map(|k| k.trim().to_owned()).collect();
        if let Some(k) = unset.iter().find(|k| set.iter().any(|(s, _)| s == *k)) {
            return Err(Status::invalid_argument(format!(
                "parameter `{k}` is both set and unset"
            )));
        }
        let p = self
            .state
            .db
            .update_profile_params(r.id, &set, &unset)
            .await
            .map_err(ApiError::from)?;
        self.reload().await?;
        ok(profile_pb(p))
    }

    async fn delete_profile(&self, request: Request<pb::DeleteProfileRequest>) -> Reply<pb::Empty> {
        self.caller(&request).await?.require("settings:write")?;
        self.state
            .db
            .delete_profile(request.into_inner().id)
            .await
            .map_err(ApiError::from)?;
        self.reload().await?;
        ok(pb::Empty {})
    }

    async fn list_parameters(
        &self,
        request: Request<pb::ListParametersRequest>,
    ) -> Reply<pb::ListParametersResponse> {
        self.caller(&request).await?.require("settings:read")?;
        ok(pb::ListParametersResponse {
            parameters: ums_domain::catalog()
                .iter()
                .map(|s| pb::ParameterInfo {
                    pattern: s.pattern.to_owned(),
                    r#type: s.ty.name().to_owned(),
                    description: s.description.to_owned(),
                    choices: match s.ty {
                        ums_domain::ParamType::Enum(c) => {
                            c.iter().map(|c| (*c).to_owned()).collect()
                        }
                        _ => Vec::new(),
                    },
                })
                .collect(),
        })
    }

    async fn assign(&self, request: Request<pb::AssignRequest>) -> Reply<pb::Empty> {
        self.caller(&request).await?.require("settings:write")?;
        let r = request.into_inner();
        let t = target(r.device_id, r.folder_id)?;
        self.state
            .db
            .assign(r.profile_id, t)
            .await
            .map_err(ApiError::from)?;
        self.reload().await?;
        ok(pb::Empty {})
    }

    async fn unassign(&self, request: Request<pb::AssignRequest>) -> Reply<pb::Empty> {
        self.caller(&request).await?.require("settings:write")?;
        let r = request.into_inner();
        let t = target(r.device_id, r.folder_id)?;
        self.state
            .db
            .unassign(r.profile_id, t)
            .await
            .map_err(ApiError::from)?;
        self.reload().await?;
        ok(pb::Empty {})
    }

    async fn list_assignments(
        &self,
        request: Request<pb::ListAssignmentsRequest>,
    ) -> Reply<pb::ListAssignmentsResponse> {
        self.caller(&request).await?.require("settings:read")?;
        let r = request.into_inner();
        let t = match (r.device_id, r.folder_id) {
            (None, None) => None,
            (d, f) => Some(target(d, f)?),
        };
        let list = self
            .state
            .db
            .list_assignments(r.profile_id, t)
            .await
            .map_err(ApiError::from)?;
        ok(pb::ListAssignmentsResponse {
            assignments: list
                .into_iter()
                .map(|a| {
                    let (device_id, folder_id) = match a.target.kind {
                        ObjectKind::Device => (Some(a.target.id), None),
                        ObjectKind::Folder => (None, Some(a.target.id)),
                        _ => (None, None),
                    };
                    pb::Assignment {
                        profile_id: a.profile_id,
                        device_id,
                        folder_id,
                    }
                })
                .collect(),
        })
    }

    async fn create_jobs(
        &self,
        request: Request<pb::CreateJobsRequest>,
    ) -> Reply<pb::CreateJobsResponse> {
        self.caller(&request).await?.require("jobs:write")?;
        let r = request.into_inner();
        let kind: JobKind = r.kind.parse().map_err(ApiError::from)?;
        let devices = match target(r.device_id, r.folder_id)? {
            ObjectRef {
                kind: ObjectKind::Device,
                id,
            } => vec![id],
            ObjectRef { id, .. } => {
                let model = self.state.settings();
                if !model.folders.contains_key(&id) {
                    return Err(Status::not_found(format!("folder {id} not found")));
                }
                let subtree = subtree(&model, id);
                self.state
                    .db
                    .devices_in_folders(&subtree)
                    .await
                    .map_err(ApiError::from)?
            }
        };
        let at = if r.scheduled_at_ms <= 0 {
            ums_db::now_ms()
        } else {
            r.scheduled_at_ms
        };
        let job_ids = self
            .state
            .db
            .create_jobs(kind, &devices, at)
            .await
            .map_err(ApiError::from)?;
        ok(pb::CreateJobsResponse { job_ids })
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Reply<pb::ListJobsResponse> {
        self.caller(&request).await?.require("devices:read")?;
        let r = request.into_inner();
        let state = if r.state.is_empty() {
            None
        } else {
            Some(r.state.parse::<JobState>().map_err(ApiError::from)?)
        };
        let limit = match r.limit {
            0 => 100,
            n => u64::from(n.min(10_000)),
        };
        let jobs = self
            .state
            .db
            .list_jobs(r.device_id, state, limit)
            .await
            .map_err(ApiError::from)?;
        ok(pb::ListJobsResponse {
            jobs: jobs
                .into_iter()
                .map(|j| pb::JobInfo {
                    id: j.id,
                    device_id: j.device_id,
                    kind: j.kind,
                    state: j.state,
                    scheduled_at_ms: j.scheduled_at,
                    created_at_ms: j.created_at,
                    finished_at_ms: j.finished_at.unwrap_or(0),
                    result: j.result,
                })
                .collect(),
        })
    }

    async fn explain_settings(
        &self,
        request: Request<pb::ExplainSettingsRequest>,
    ) -> Reply<pb::ExplainSettingsResponse> {
        self.caller(&request).await?.require("settings:read")?;
        let r = request.into_inner();
        let id = r.device_id;
        let (effective, revision, user) = if r.user.is_empty() {
            let row: state::DeviceRow = self
                .state
                .db
                .get_device(id)
                .await
                .map_err(ApiError::from)?
                .into();
            let (effective, revision) = state::settings_of(&self.state.settings(), &row.view(id));
            (effective, revision, None)
        } else {
            crate::swp::explain(&self.state, &r).await?
        };
        ok(pb::ExplainSettingsResponse {
            user,
            device_id: id,
            revision,
            values: effective
                .values
                .into_iter()
                .map(|v| pb::ExplainedValue {
                    key: v.key,
                    r#type: v.value.type_name().to_owned(),
                    value: v.value.to_string(),
                    origin: Some(origin_pb(&v.origin)),
                    overridden: v
                        .overridden
                        .iter()
                        .map(|(value, o)| pb::OverriddenValue {
                            value: value.to_string(),
                            origin: Some(origin_pb(o)),
                        })
                        .collect(),
                })
                .collect(),
            conflicts: effective
                .conflicts
                .into_iter()
                .map(|c| pb::Conflict {
                    key: c.key,
                    object_kind: c.object.kind.as_str().to_owned(),
                    object_id: c.object.id,
                    winner_profile_id: c.winner,
                    loser_profile_id: c.loser,
                    rule: c.rule,
                })
                .collect(),
            warnings: effective.warnings,
        })
    }

    async fn create_directory(&self, r: Request<pb::DirectorySpec>) -> Reply<pb::DirectoryInfo> {
        self.swp_create_directory(r).await
    }
    async fn update_directory(
        &self,
        r: Request<pb::UpdateDirectoryRequest>,
    ) -> Reply<pb::DirectoryInfo> {
        self.swp_update_directory(r).await
    }
    async fn list_directories(
        &self,
        r: Request<pb::ListDirectoriesRequest>,
    ) -> Reply<pb::ListDirectoriesResponse> {
        self.swp_list_directories(r).await
    }
    async fn delete_directory(&self, r: Request<pb::DeleteDirectoryRequest>) -> Reply<pb::Empty> {
        self.swp_delete_directory(r).await
    }
    async fn assign_user(&self, r: Request<pb::AssignUserRequest>) -> Reply<pb::Empty> {
        self.swp_assign_user(r).await
    }
    async fn unassign_user(&self, r: Request<pb::AssignUserRequest>) -> Reply<pb::Empty> {
        self.swp_unassign_user(r).await
    }
    async fn list_user_assignments(
        &self,
        r: Request<pb::ListUserAssignmentsRequest>,
    ) -> Reply<pb::ListUserAssignmentsResponse> {
        self.swp_list_user_assignments(r).await
    }
    async fn set_shared_workplace(
        &self,
        r: Request<pb::SetSharedWorkplaceRequest>,
    ) -> Reply<pb::SharedWorkplaceState> {
        self.swp_set_shared_workplace(r).await
    }
}

/// A folder and every folder below it.
fn subtree(model: &ums_db::settings::SettingsModel, root: i64) -> Vec<i64> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(
            model
                .folders
                .values()
                .filter(|f| f.parent_id == Some(parent))
                .map(|f| f.id),
        );
        i += 1;
    }
    out
}

fn origin_pb(o: &ums_domain::Origin) -> pb::Origin {
    pb::Origin {
        profile_id: o.profile_id,
        profile_name: o.profile_name.clone(),
        object_kind: o.object.kind.as_str().to_owned(),
        object_id: o.object.id,
        object_name: o.object_name.clone(),
        priority: o.priority,
    }
}

fn admin_pb(a: ums_db::admins::Admin) -> pb::Admin {
    pb::Admin {
        id: a.id,
        permissions: split_permissions(&a.permissions),
        username: a.username,
        created_at_ms: a.created_at,
    }
}

/// An argon2id hash of a random password nobody knows, verified for unknown user names so a
/// failed login takes as long whether the user exists or not.
async fn dummy_hash() -> String {
    static DUMMY: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    DUMMY
        .get_or_init(|| async { hash_password(random_token(32)).await.unwrap_or_default() })
        .await
        .clone()
}
