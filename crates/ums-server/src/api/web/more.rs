//! Jobs, files with their copies on every server, Shared Workplace (sessions, directories,
//! licences), and the audit log.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;
use ums_proto::admin::v1 as pb;
use ums_proto::admin::v1::admin_service_server::AdminService;

use super::devices::folder_choices;
use super::html::{E, badge, button_form, csrf_field, options, time};
use super::{Failure, Session, parse_id, parse_opt_id, see};
use crate::api::admin::AdminApi;

pub(super) fn jobs_table(jobs: &[pb::JobInfo]) -> String {
    if jobs.is_empty() {
        return "<p class=\"muted\">No jobs.</p>".into();
    }
    let mut out = String::from(
        "<table id=\"jobs\"><tr><th>Id</th><th>Device</th><th>Kind</th><th>State</th>\
         <th>Scheduled</th><th>Finished</th><th>Result</th></tr>",
    );
    for j in jobs {
        let _ = write!(
            out,
            "<tr><td class=\"num\">{}</td><td><a href=\"/devices/{}\">{}</a></td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            j.id,
            j.device_id,
            j.device_id,
            E(&j.kind),
            badge(&j.state),
            time(j.scheduled_at_ms),
            time(j.finished_at_ms),
            E(&j.result)
        );
    }
    out.push_str("</table>");
    out
}

#[derive(Deserialize, Default)]
pub struct JobsQuery {
    #[serde(default)]
    state: String,
}

pub async fn jobs(
    State(api): State<Arc<AdminApi>>,
    s: Session,
    Query(q): Query<JobsQuery>,
) -> Result<Response, Failure> {
    render_jobs(&api, &s, &q.state, None).await
}

async fn render_jobs(
    api: &AdminApi,
    s: &Session,
    state: &str,
    error: Option<Failure>,
) -> Result<Response, Failure> {
    let jobs = s
        .call(
            pb::ListJobsRequest {
                device_id: None,
                state: state.to_owned(),
                limit: 200,
            },
            |r| api.list_jobs(r),
        )
        .await?
        .jobs;
    let folders = s
        .call(pb::ListFoldersRequest {}, |r| api.list_folders(r))
        .await?
        .folders;
    let mut main = String::from("<h1>Jobs</h1>");
    let states: Vec<(String, String)> = ["", "pending", "sent", "done", "failed"]
        .iter()
        .map(|s| {
            let label = if s.is_empty() { "all" } else { s };
            ((*s).to_owned(), label.to_owned())
        })
        .collect();
    let _ = write!(
        main,
        "<form method=\"get\" action=\"/jobs\" class=\"row\"><label>State <select name=\"state\">{}</select></label>\
         <button type=\"submit\">Show</button></form>",
        options(&states, state)
    );
    main.push_str(&jobs_table(&jobs));
    let kinds = [
        ("reboot".to_owned(), "reboot".to_owned()),
        ("apply_settings".to_owned(), "apply settings".to_owned()),
    ];
    let mut folder_opts = vec![(String::new(), "(choose a folder)".to_owned())];
    folder_opts.extend(folder_choices(&folders));
    let _ = write!(
        main,
        "<h2>New job</h2><form method=\"post\" action=\"/jobs\" class=\"row\">{}\
         <label>Kind <select name=\"kind\">{}</select></label>\
         <label>Device id <input name=\"device\" inputmode=\"numeric\" size=\"8\"></label>\
         <label>or every device in <select name=\"folder\">{}</select></label>\
         <button type=\"submit\">Queue</button></form>",
        csrf_field(&s.csrf),
        options(&kinds, "reboot"),
        options(&folder_opts, "")
    );
    Ok(match error {
        Some(e) => s.page_with_error(&e, "Jobs", "/jobs", &main),
        None => s.page("Jobs", "/jobs", &main),
    })
}

#[derive(Deserialize)]
pub struct JobForm {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    device: String,
    #[serde(default)]
    folder: String,
}

pub async fn create_jobs(
    State(api): State<Arc<AdminApi>>,
    s: Session,
    axum::Form(f): axum::Form<JobForm>,
) -> Result<Response, Failure> {
    let result = async {
        let device_id = parse_opt_id("device id", &f.device)?;
        let folder_id = parse_opt_id("folder", &f.folder)?;
        s.call(
            pb::CreateJobsRequest {
                kind: f.kind.clone(),
                device_id,
                folder_id,
                scheduled_at_ms: 0,
            },
            |r| api.create_jobs(r),
        )
        .await
    }
    .await;
    match result {
        Ok(_) => Ok(see("/jobs")),
        Err(e) => render_jobs(&api, &s, "", Some(e)).await,
    }
}

pub async fn files(State(api): State<Arc<AdminApi>>, s: Session) -> Result<Response, Failure> {
    let files = s
        .call(pb::ListFilesRequest {}, |r| api.list_files(r))
        .await?;
    let mut main = format!(
        "<h1>Files</h1><p class=\"muted\">Revision {}. Upload files with <code>umsctl files upload</code>.</p>",
        files.revision
    );
    if files.files.is_empty() {
        main.push_str("<p class=\"muted\">No files.</p>");
    } else {
        main.push_str(
            "<table id=\"files\"><tr><th>Path</th><th>Size</th><th>sha256</th><th>Uploaded</th>\
             <th>Copies on the servers</th></tr>",
        );
        for f in &files.files {
            let replicas = f
                .replicas
                .iter()
                .map(|r| {
                    let error = if r.error.is_empty() {
                        String::new()
                    } else {
                        format!(" <span class=\"muted\">{}</span>", E(&r.error))
                    };
                    format!(
                        "<span class=\"mono\">{}</span> {}{error}",
                        E(&r.server_id),
                        badge(&r.status)
                    )
                })
                .collect::<Vec<_>>()
                .join("<br>");
            let _ = write!(
                main,
                "<tr><td class=\"mono\">{}</td><td class=\"num\">{}</td><td class=\"mono\" title=\"{}\">{}…</td>\
                 <td>{}</td><td>{replicas}</td></tr>",
                E(&f.path),
                f.size,
                E(&f.sha256),
                E(f.sha256.get(..12).unwrap_or(&f.sha256)),
                time(f.created_at_ms)
            );
        }
        main.push_str("</table>");
    }
    Ok(s.page("Files", "/files", &main))
}

#[derive(Deserialize, Default)]
pub struct SwpQuery {
    #[serde(default)]
    user: String,
}

pub async fn swp(
    State(api): State<Arc<AdminApi>>,
    s: Session,
    Query(q): Query<SwpQuery>,
) -> Result<Response, Failure> {
    render_swp(&api, &s, &q.user, None).await
}

async fn render_swp(
    api: &AdminApi,
    s: &Session,
    user: &str,
    error: Option<Failure>,
) -> Result<Response, Failure> {
    let sessions = s
        .call(
            pb::ListSwpSessionsRequest {
                user: user.trim().to_owned(),
            },
            |r| api.list_swp_sessions(r),
        )
        .await?
        .sessions;
    let mut main = String::from("<h1>Shared Workplace</h1><h2>Sessions</h2>");
    let _ = write!(
        main,
        "<form method=\"get\" action=\"/swp\" class=\"row\"><label>User <input name=\"user\" value=\"{}\"></label>\
         <button type=\"submit\">Show</button></form>",
        E(user)
    );
    if sessions.is_empty() {
        main.push_str("<p class=\"muted\">Nobody is logged in.</p>");
    } else {
        main.push_str(
            "<table id=\"sessions\"><tr><th>Device</th><th>User</th><th>Directory</th><th>Since</th>\
             <th>Server</th><th></th></tr>",
        );
        for x in &sessions {
            let _ = write!(
                main,
                "<tr><td><a href=\"/devices/{}\">{}</a></td><td>{} <span class=\"muted\">{}</span></td><td>{}</td>\
                 <td>{}</td><td class=\"mono\">{}</td><td>{}</td></tr>",
                x.device_id,
                E(&x.device_name),
                E(&x.user),
                E(&x.display_name),
                E(&x.directory),
                time(x.started_at_ms),
                E(&x.server_id),
                button_form(
                    "/swp/end",
                    &s.csrf,
                    &[("device", &x.device_id.to_string())],
                    "Log out"
                )
            );
        }
        main.push_str("</table>");
    }
    main.push_str("<h2>Directories</h2>");
    match s
        .call(pb::ListDirectoriesRequest {}, |r| api.list_directories(r))
        .await
    {
        Ok(d) if d.directories.is_empty() => {
            main.push_str(
                "<p class=\"muted\">None. Add one with <code>umsctl swp directory add</code>.</p>",
            );
        }
        Ok(d) => {
            main.push_str(
                "<table id=\"directories\"><tr><th>Name</th><th>Kind</th><th>Domain</th><th>Controllers</th>\
                 <th>Base DN</th><th>Bind account</th></tr>",
            );
            for x in d.directories {
                let spec = x.spec.unwrap_or_default();
                let _ = write!(
                    main,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"mono\">{}</td><td class=\"mono\">{}</td><td class=\"mono\">{}{}</td></tr>",
                    E(&spec.name),
                    E(&spec.kind),
                    E(&spec.domain),
                    E(&spec.urls.join(", ")),
                    E(&spec.base_dn),
                    E(&spec.bind_dn),
                    if x.has_bind_password {
                        ""
                    } else {
                        " (no password)"
                    }
                );
            }
            main.push_str("</table>");
        }
        Err(e) => main.push_str(&e.banner()),
    }
    main.push_str("<h2>Licences</h2>");
    match s
        .call(pb::ListSwpLicencesRequest {}, |r| api.list_swp_licences(r))
        .await
    {
        Ok(l) if l.licences.is_empty() => {
            main.push_str("<p class=\"muted\">No licence pool.</p>");
        }
        Ok(l) => {
            main.push_str(
                "<table id=\"licences\"><tr><th>Name</th><th>Seats used</th><th>Valid until</th></tr>",
            );
            for x in l.licences {
                let _ = write!(
                    main,
                    "<tr><td>{}</td><td class=\"num\">{} / {}</td><td>{} {}</td></tr>",
                    E(&x.name),
                    x.used,
                    x.seats,
                    E(&x.expires),
                    if x.expired {
                        badge("expired")
                    } else {
                        String::new()
                    }
                );
            }
            main.push_str("</table>");
        }
        Err(e) => main.push_str(&e.banner()),
    }
    Ok(match error {
        Some(e) => s.page_with_error(&e, "Shared Workplace", "/swp", &main),
        None => s.page("Shared Workplace", "/swp", &main),
    })
}

#[derive(Deserialize)]
pub struct EndForm {
    #[serde(default)]
    device: String,
}

pub async fn end_session(
    State(api): State<Arc<AdminApi>>,
    s: Session,
    axum::Form(f): axum::Form<EndForm>,
) -> Result<Response, Failure> {
    let result = async {
        let device_id = parse_id("device id", &f.device)?;
        s.call(pb::EndSwpSessionRequest { device_id }, |r| {
            api.end_swp_session(r)
        })
        .await
    }
    .await;
    match result {
        Ok(_) => Ok(see("/swp")),
        Err(e) => render_swp(&api, &s, "", Some(e)).await,
    }
}

#[derive(Deserialize, Default)]
pub struct AuditQuery {
    #[serde(default)]
    admin: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    target: String,
}

pub async fn audit(
    State(api): State<Arc<AdminApi>>,
    s: Session,
    Query(q): Query<AuditQuery>,
) -> Result<Response, Failure> {
    let entries = s
        .call(
            pb::ListAuditRequest {
                admin: q.admin.trim().to_owned(),
                action: q.action.trim().to_owned(),
                target: q.target.trim().to_owned(),
                limit: 200,
                ..Default::default()
            },
            |r| api.list_audit(r),
        )
        .await?
        .entries;
    let mut main = String::from("<h1>Audit log</h1>");
    let _ = write!(
        main,
        "<form method=\"get\" action=\"/audit\" class=\"row\">\
         <label>Administrator <input name=\"admin\" value=\"{}\"></label>\
         <label>Action <input name=\"action\" value=\"{}\" placeholder=\"UpdateProfileParams\"></label>\
         <label>Object contains <input name=\"target\" value=\"{}\" placeholder=\"profile 7\"></label>\
         <button type=\"submit\">Show</button></form>",
        E(&q.admin),
        E(&q.action),
        E(&q.target)
    );
    if entries.is_empty() {
        main.push_str("<p class=\"muted\">No entries.</p>");
    } else {
        main.push_str(
            "<table id=\"audit\"><tr><th>When</th><th>Administrator</th><th>Action</th><th>Object</th>\
             <th>Request</th><th>From</th></tr>",
        );
        for e in &entries {
            let _ = write!(
                main,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"mono\">{}</td><td class=\"mono\">{}</td></tr>",
                time(e.at_ms),
                E(&e.admin),
                E(&e.action),
                E(&e.target),
                E(&e.detail),
                E(&e.source)
            );
        }
        main.push_str("</table>");
    }
    Ok(s.page("Audit log", "/audit", &main))
}
