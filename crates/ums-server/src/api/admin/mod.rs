//! The admin API (`ums.admin.v1.AdminService`): gRPC on the admin port, and the same handlers
//! behind the HTTPS JSON routes of [`crate::api::json`].
//!
//! One table ([`admin_service!`] below) names every method with the permission it needs and the
//! handler that serves it; from it come the gRPC service and the JSON dispatch, so both APIs
//! always offer the same operations with the same checks. Handlers live by area in the modules
//! below and return `Result<_, ApiError>`; the table turns that into a gRPC status in one place.

pub mod accounts;
pub mod audit;
pub mod bundle;
pub mod check;
pub mod devices;
pub mod files;
pub mod jobs;
pub mod login_guard;
pub mod network;
pub mod release;
pub mod settings;
pub mod swp;
pub mod update;
pub mod update_mode;

use std::sync::Arc;

use tonic::{Request, Response, Status};
use ums_proto::admin::v1 as pb;
use ums_proto::admin::v1::admin_service_server::AdminService;
use ums_proto::network::v1 as cpb;

use crate::error::ApiError;
use crate::state::AppState;

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
    "audit:read",
];

pub struct AdminApi {
    pub state: Arc<AppState>,
    pub logins: login_guard::LoginGuard,
    /// The last network check's report.
    pub check_cache: check::Cache,
}

/// The administrator behind a call (empty for the one call made before logging in).
pub struct Caller {
    pub username: String,
    pub permissions: Vec<String>,
}

impl Caller {
    pub fn require(&self, permission: &str) -> Result<(), ApiError> {
        if self.permissions.iter().any(|p| p == "*" || p == permission) {
            Ok(())
        } else {
            Err(ApiError::Denied(format!(
                "administrator `{}` lacks the permission `{permission}`",
                self.username
            )))
        }
    }

    fn anonymous() -> Self {
        Self {
            username: String::new(),
            permissions: Vec::new(),
        }
    }
}

/// Whether a call of the admin API changes something and goes to the audit log: every call
/// that needs a `...:write` permission, and a password change.
fn audited(auth: &str, method: &str) -> bool {
    auth.contains(":write") || method == "SetAdminPassword"
}

/// Refuses a change while this server is in update mode (it serves from a local copy whose
/// changes would be lost); ending update mode itself is the one change it takes.
fn refuse_in_update_mode(
    state: &crate::state::AppState,
    auth: &str,
    method: &str,
) -> Result<(), ApiError> {
    match state.network.local_copy() {
        Some(copy) if audited(auth, method) && method != "EndUpdateMode" => {
            Err(crate::network::update::refused_in_update_mode(copy.target))
        }
        _ => Ok(()),
    }
}

/// The client's address for the audit log.
pub(crate) fn client_addr<T>(req: &Request<T>) -> String {
    req.extensions()
        .get::<ums_service::ClientAddr>()
        .map(|a| a.0.to_string())
        .or_else(|| req.remote_addr().map(|a| a.to_string()))
        .unwrap_or_else(|| "unknown".into())
}

pub(crate) fn split_permissions(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

impl AdminApi {
    /// The administrator whose session token the call carries.
    async fn caller<T>(&self, req: &Request<T>) -> Result<Caller, ApiError> {
        let token = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::Unauthenticated(
                    "missing `authorization: Bearer <token>`: log in first".into(),
                )
            })?;
        let found = self
            .state
            .db
            .session_admin(
                &crate::secrets::sha256_hex(token.as_bytes()),
                ums_db::now_ms(),
            )
            .await?;
        let (admin, _) = found.ok_or_else(|| {
            ApiError::Unauthenticated("session expired or unknown: log in again".into())
        })?;
        Ok(Caller {
            username: admin.username,
            permissions: split_permissions(&admin.permissions),
        })
    }

    /// The caller, when it holds `permission`.
    async fn authorized<T>(&self, req: &Request<T>, permission: &str) -> Result<Caller, ApiError> {
        let caller = self.caller(req).await?;
        caller.require(permission)?;
        Ok(caller)
    }
}

/// The table of the admin API: `AUTH method(Request) -> Response => handler;` where AUTH is
/// `public` (no session), `signed_in` (any session) or the permission the call needs. Generates
/// the gRPC service and [`AdminApi::dispatch_json`] for the methods under `json`.
macro_rules! admin_service {
    (
        json { $($jname:literal: $jauth:tt $jmethod:ident($jreq:ty) -> $jresp:ty => $jhandler:path;)* }
        grpc_only { $($name:literal: $auth:tt $method:ident($req:ty) -> $resp:ty => $handler:path;)* }
    ) => {
        #[tonic::async_trait]
        impl AdminService for AdminApi {
            $(
                async fn $jmethod(&self, request: Request<$jreq>) -> Result<Response<$jresp>, Status> {
                    let caller = admin_service!(@auth self, request, $jauth);
                    refuse_in_update_mode(&self.state, stringify!($jauth), $jname)?;
                    // A change is recorded in the audit log once it succeeded.
                    let audit = audited(stringify!($jauth), $jname).then(|| {
                        (
                            caller.username.clone(),
                            client_addr(&request),
                            crate::audit::What::from_request($jname, request.get_ref()),
                        )
                    });
                    let answer = $jhandler(self, caller, request.into_inner()).await?;
                    if let Some((who, from, what)) = audit {
                        let what = what.with_answer(&answer);
                        crate::audit::record(&self.state.db, &who, what, &from).await;
                    }
                    Ok(Response::new(answer))
                }
            )*
            $(
                async fn $method(&self, request: Request<$req>) -> Result<Response<$resp>, Status> {
                    let caller = admin_service!(@auth self, request, $auth);
                    refuse_in_update_mode(&self.state, stringify!($auth), $name)?;
                    // A streamed request is described by what it produced.
                    let audit = audited(stringify!($auth), $name)
                        .then(|| (caller.username.clone(), client_addr(&request)));
                    let answer = $handler(self, caller, request.into_inner()).await?;
                    if let Some((who, from)) = audit {
                        let what = crate::audit::What::from_request($name, &answer);
                        crate::audit::record(&self.state.db, &who, what, &from).await;
                    }
                    Ok(Response::new(answer))
                }
            )*
        }

        impl AdminApi {
            /// Serves `POST /api/v1/<name>` with a JSON body; `None` for an unknown name.
            pub async fn dispatch_json(
                &self,
                name: &str,
                metadata: tonic::metadata::MetadataMap,
                extensions: tonic::Extensions,
                body: &[u8],
            ) -> Option<Result<serde_json::Value, crate::api::json::JsonError>> {
                match name {
                    $( $jname => Some(crate::api::json::call(metadata, extensions, body, |r| self.$jmethod(r)).await), )*
                    _ => None,
                }
            }

            /// The methods of the JSON API.
            pub const JSON_METHODS: &'static [&'static str] = &[$($jname),*];
        }
    };
    (@auth $api:ident, $request:ident, public) => { Caller::anonymous() };
    (@auth $api:ident, $request:ident, signed_in) => { $api.caller(&$request).await? };
    (@auth $api:ident, $request:ident, $perm:literal) => { $api.authorized(&$request, $perm).await? };
}

admin_service! {
    json {
        "Login": public login(pb::LoginRequest) -> pb::LoginResponse => accounts::login;
        "WhoAmI": signed_in who_am_i(pb::WhoAmIRequest) -> pb::WhoAmIResponse => accounts::who_am_i;
        "CreateAdmin": "admins:write" create_admin(pb::CreateAdminRequest) -> pb::Admin => accounts::create;
        "ListAdmins": "admins:write" list_admins(pb::ListAdminsRequest) -> pb::ListAdminsResponse => accounts::list;
        "SetAdminPassword": signed_in set_admin_password(pb::SetAdminPasswordRequest) -> pb::Empty => accounts::set_password;
        "DeleteAdmin": "admins:write" delete_admin(pb::DeleteAdminRequest) -> pb::Empty => accounts::delete;

        "ListDevices": "devices:read" list_devices(pb::ListDevicesRequest) -> pb::ListDevicesResponse => devices::list;
        "GetDevice": "devices:read" get_device(pb::GetDeviceRequest) -> pb::Device => devices::get;
        "UpdateDevice": "devices:write" update_device(pb::UpdateDeviceRequest) -> pb::Device => devices::update;
        "DeleteDevice": "devices:write" delete_device(pb::DeleteDeviceRequest) -> pb::Empty => devices::delete;
        "ResetDeviceCredential": "devices:write" reset_device_credential(pb::ResetDeviceCredentialRequest) -> pb::Empty => devices::reset_credential;

        "CreateFolder": "settings:write" create_folder(pb::CreateFolderRequest) -> pb::Folder => settings::create_folder;
        "ListFolders": "settings:read" list_folders(pb::ListFoldersRequest) -> pb::ListFoldersResponse => settings::list_folders;
        "DeleteFolder": "settings:write" delete_folder(pb::DeleteFolderRequest) -> pb::Empty => settings::delete_folder;
        "CreateProfile": "settings:write" create_profile(pb::CreateProfileRequest) -> pb::Profile => settings::create_profile;
        "ListProfiles": "settings:read" list_profiles(pb::ListProfilesRequest) -> pb::ListProfilesResponse => settings::list_profiles;
        "GetProfile": "settings:read" get_profile(pb::GetProfileRequest) -> pb::Profile => settings::get_profile;
        "UpdateProfileParams": "settings:write" update_profile_params(pb::UpdateProfileParamsRequest) -> pb::Profile => settings::update_profile_params;
        "DeleteProfile": "settings:write" delete_profile(pb::DeleteProfileRequest) -> pb::Empty => settings::delete_profile;
        "ListParameters": "settings:read" list_parameters(pb::ListParametersRequest) -> pb::ListParametersResponse => settings::list_parameters;
        "Assign": "settings:write" assign(pb::AssignRequest) -> pb::Empty => settings::assign;
        "Unassign": "settings:write" unassign(pb::AssignRequest) -> pb::Empty => settings::unassign;
        "ListAssignments": "settings:read" list_assignments(pb::ListAssignmentsRequest) -> pb::ListAssignmentsResponse => settings::list_assignments;
        "ExplainSettings": "settings:read" explain_settings(pb::ExplainSettingsRequest) -> pb::ExplainSettingsResponse => settings::explain;

        "CreateJobs": "jobs:write" create_jobs(pb::CreateJobsRequest) -> pb::CreateJobsResponse => jobs::create;
        "ListJobs": "devices:read" list_jobs(pb::ListJobsRequest) -> pb::ListJobsResponse => jobs::list;

        "ListProcesses": "network:read" list_processes(pb::ListProcessesRequest) -> pb::ListProcessesResponse => network::list_processes;
        "RemoveProcess": "network:write" remove_process(pb::ProcessRequest) -> pb::Empty => network::remove_process;
        "StopProcess": "network:write" stop_process(pb::ProcessRequest) -> cpb::ProcessInfo => network::stop_process;
        "StartProcess": "network:write" start_process(pb::ProcessRequest) -> cpb::ProcessInfo => network::start_process;
        "ExportToken": "network:write" export_token(pb::ExportTokenRequest) -> pb::TokenResponse => network::export_token;
        "RotateToken": "network:write" rotate_token(pb::RotateTokenRequest) -> pb::TokenResponse => network::rotate_token;

        "NetworkCheck": "network:read" network_check(pb::NetworkCheckRequest) -> pb::NetworkCheckReport => check::network_check;
        "SupportBundle": "network:read" support_bundle(pb::SupportBundleRequest) -> pb::SupportBundleResponse => bundle::support_bundle;
        "ListAudit": "audit:read" list_audit(pb::ListAuditRequest) -> pb::ListAuditResponse => audit::list;

        "ListFiles": "devices:read" list_files(pb::ListFilesRequest) -> pb::ListFilesResponse => files::list;
        "DeleteFile": "files:write" delete_file(pb::FileRequest) -> pb::Empty => files::delete;

        "CreateDirectory": "settings:write" create_directory(pb::DirectorySpec) -> pb::DirectoryInfo => swp::create_directory;
        "UpdateDirectory": "settings:write" update_directory(pb::UpdateDirectoryRequest) -> pb::DirectoryInfo => swp::update_directory;
        "ListDirectories": "settings:read" list_directories(pb::ListDirectoriesRequest) -> pb::ListDirectoriesResponse => swp::list_directories;
        "DeleteDirectory": "settings:write" delete_directory(pb::DeleteDirectoryRequest) -> pb::Empty => swp::delete_directory;
        "AssignUser": "settings:write" assign_user(pb::AssignUserRequest) -> pb::Empty => swp::assign_user;
        "UnassignUser": "settings:write" unassign_user(pb::AssignUserRequest) -> pb::Empty => swp::unassign_user;
        "ListUserAssignments": "settings:read" list_user_assignments(pb::ListUserAssignmentsRequest) -> pb::ListUserAssignmentsResponse => swp::list_user_assignments;
        "SetSharedWorkplace": "devices:write" set_shared_workplace(pb::SetSharedWorkplaceRequest) -> pb::SharedWorkplaceState => swp::set_shared_workplace;
        "SetFolderSharedWorkplace": "devices:write" set_folder_shared_workplace(pb::SetFolderSharedWorkplaceRequest) -> pb::Empty => swp::set_folder_shared_workplace;
        "CreateSwpLicence": "devices:write" create_swp_licence(pb::CreateSwpLicenceRequest) -> pb::SwpLicence => swp::create_licence;
        "ListSwpLicences": "devices:read" list_swp_licences(pb::ListSwpLicencesRequest) -> pb::ListSwpLicencesResponse => swp::list_licences;
        "DeleteSwpLicence": "devices:write" delete_swp_licence(pb::DeleteSwpLicenceRequest) -> pb::Empty => swp::delete_licence;
        "ListSwpSessions": "devices:read" list_swp_sessions(pb::ListSwpSessionsRequest) -> pb::ListSwpSessionsResponse => swp::list_sessions;
        "EndSwpSession": "devices:write" end_swp_session(pb::EndSwpSessionRequest) -> pb::SwpSession => swp::end_session;

        "EndUpdateMode": "network:write" end_update_mode(pb::EndUpdateModeRequest) -> pb::EndUpdateModeResponse => update_mode::end;
        "ReleaseStatus": "network:read" release_status(pb::ReleaseStatusRequest) -> pb::ReleaseStatusResponse => release::status;
        "ReleaseLog": "network:read" release_log(pb::ReleaseLogRequest) -> pb::ReleaseLogResponse => release::log;
        "PauseRelease": "network:write" pause_release(pb::PauseReleaseRequest) -> pb::ReleaseRollout => release::pause;
        "ResumeRelease": "network:write" resume_release(pb::ResumeReleaseRequest) -> pb::ReleaseRollout => release::resume;
        "RollbackRelease": "network:write" rollback_release(pb::RollbackReleaseRequest) -> pb::ReleaseRollout => release::rollback;
        "ConfigureRelease": "network:write" configure_release(pb::ConfigureReleaseRequest) -> pb::ReleaseRollout => release::configure;
        "UpdateStatus": "network:read" update_status(pb::UpdateStatusRequest) -> pb::UpdateStatus => update::status;
        "UpdatePlan": "network:read" update_plan(pb::UpdatePlanRequest) -> pb::UpdatePlan => update::plan;
        "UpdateLog": "network:read" update_log(pb::UpdateLogRequest) -> pb::UpdateLogResponse => update::log;
        "UpdateApply": "network:write" update_apply(pb::UpdateApplyRequest) -> pb::UpdateApplyResponse => update::apply;
    }
    grpc_only {
        "UploadFile": "files:write" upload_file(tonic::Streaming<pb::UploadFileChunk>) -> pb::FileInfo => files::upload;
        // Audited by its answer (revision, version, digest), not the whole manifest.
        "UploadRelease": "network:write" upload_release(pb::UploadReleaseRequest) -> pb::UploadReleaseResponse => release::upload;
    }
}
