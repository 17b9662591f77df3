//! The device pages: the list with search and the folder tree, and a device's details: last
//! contact, moving it, its profiles, its effective settings with their origins (`explain`, for
//! the device or for a user on it) and its jobs.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;
use ums_proto::admin::v1 as pb;
use ums_proto::admin::v1::admin_service_server::AdminService;

use super::html::{E, ago, badge, button_form, csrf_field, options, time, url_component};
use super::{Failure, Session, parse_id, parse_opt_id, see};
use crate::api::admin::AdminApi;

/// Devices the list reads at most per page.
const PAGE: u32 = 500;

/// `Berlin / Floor 1` for a folder id; `(top level)` for none.
pub(super) fn folder_path(folders: &[pb::Folder], id: Option<i64>) -> String {
    let by_id: HashMap<i64, &pb::Folder> = folders.iter().map(|f| (f.id, f)).collect();
    let mut names = Vec::new();
    let mut next = id;
    // Bounded: a cycle in broken data cannot loop forever.
    while let Some(f) = next.and_then(|i| by_id.get(&i)) {
        names.push(f.name.as_str());
        next = f.parent_id;
        if names.len() > folders.len() {
            break;
        }
    }
    if names.is_empty() {
        return match id {
            Some(i) => format!("folder {i}"),
            None => "(top level)".into(),
        };
    }
    names.reverse();
    names.join(" / ")
}

/// Every folder as `(id, path)`, sorted by path, for a `<select>`.
pub(super) fn folder_choices(folders: &[pb::Folder]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = folders
        .iter()
        .map(|f| (f.id.to_string(), folder_path(folders, Some(f.id))))
        .collect();
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out
}

/// The folder tree as nested lists; `link` gives each folder's address.
pub(super) fn folder_tree(
    folders: &[pb::Folder],
    active: Option<i64>,
    link: &dyn Fn(i64) -> String,
) -> String {
    let mut children: HashMap<Option<i64>, Vec<&pb::Folder>> = HashMap::new();
    for f in folders {
        children.entry(f.parent_id).or_default().push(f);
    }
    for list in children.values_mut() {
        list.sort_by(|a, b| a.name.cmp(&b.name));
    }
    fn level(
        out: &mut String,
        children: &HashMap<Option<i64>, Vec<&pb::Folder>>,
        parent: Option<i64>,
        active: Option<i64>,
        link: &dyn Fn(i64) -> String,
        depth: usize,
    ) {
        let Some(list) = children.get(&parent) else {
            return;
        };
        if depth > 64 {
            return;
        }
        out.push_str("<ul>");
        for f in list {
            let class = if Some(f.id) == active {
                " class=\"active\""
            } else {
                ""
            };
            let _ = write!(
                out,
                "<li><a href=\"{}\"{class}>{}</a>",
                E(&link(f.id)),
                E(&f.name)
            );
            level(out, children, Some(f.id), active, link, depth + 1);
            out.push_str("</li>");
        }
        out.push_str("</ul>");
    }
    let mut out = String::from("<div class=\"tree\">");
    level(&mut out, &children, None, active, link, 0);
    out.push_str("</div>");
    out
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    folder: String,
    #[serde(default)]
    after: String,
}

pub async fn list(
    State(api): State<Arc<AdminApi>>,
    s: Session,
    Query(q): Query<ListQuery>,
) -> Result<Response, Failure> {
    let folders = s
        .call(pb::ListFoldersRequest {}, |r| api.list_folders(r))
        .await?
        .folders;
    let folder_id = parse_opt_id("folder", &q.folder)?;
    let after_id = parse_opt_id("after", &q.after)?.unwrap_or(0);
    let needle = q.q.trim().to_lowercase();
    let page = s
        .call(
            pb::ListDevicesRequest {
                folder_id,
                limit: PAGE,
                after_id,
            },
            |r| api.list_devices(r),
        )
        .await?;
    let now = ums_db::now_ms();
    let shown: Vec<&pb::Device> = page
        .devices
        .iter()
        .filter(|d| {
            needle.is_empty()
                || d.name.to_lowercase().contains(&needle)
                || d.unit_id.to_lowercase().contains(&needle)
        })
        .collect();

    let mut main = String::from("<h1>Devices</h1><div class=\"columns\"><aside><h2>Folders</h2>");
    let _ = write!(main, "<p><a href=\"/devices\">All devices</a></p>");
    main.push_str(&folder_tree(&folders, folder_id, &|id| {
        format!("/devices?folder={id}")
    }));
    main.push_str("</aside><section>");
    let _ = write!(
        main,
        "<form method=\"get\" action=\"/devices\" class=\"row\"><label>Search name or unit id \
         <input name=\"q\" id=\"search\" value=\"{}\"></label>{}<button type=\"submit\" id=\"search-go\">Search</button></form>",
        E(&q.q),
        folder_id.map_or_else(String::new, |f| format!(
            "<input type=\"hidden\" name=\"folder\" value=\"{f}\">"
        ))
    );
    let _ = write!(
        main,
        "<p class=\"muted\">{} in {}; {} shown.</p>",
        page.total,
        E(&match folder_id {
            Some(_) => folder_path(&folders, folder_id),
            None => "all folders".into(),
        }),
        shown.len()
    );
    main.push_str(
        "<table id=\"devices\"><tr><th>Id</th><th>Name</th><th>Unit id</th><th>Folder</th>\
         <th>Firmware</th><th>State</th><th>Last contact</th><th>Settings</th></tr>",
    );
    for d in &shown {
        let settings = if d.applied_revision == d.settings_revision {
            "applied"
        } else {
            "pending"
        };
        let _ = write!(
            main,
            "<tr><td class=\"num\">{}</td><td><a href=\"/devices/{}\">{}</a></td><td class=\"mono\">{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td title=\"{}\">{} {}</td><td>{}</td></tr>",
            d.id,
            d.id,
            E(&d.name),
            E(&d.unit_id),
            E(&folder_path(&folders, d.folder_id)),
            E(&d.firmware),
            E(&d.state),
            time(d.last_contact_ms),
            badge(if d.online { "online" } else { "offline" }),
            ago(d.last_contact_ms, now),
            settings
        );
    }
    main.push_str("</table>");
    if let Some(last) = page
        .devices
        .last()
        .filter(|_| page.devices.len() == PAGE as usize)
    {
        let mut next = format!("/devices?after={}", last.id);
        if let Some(f) = folder_id {
            let _ = write!(next, "&folder={f}");
        }
        if !q.q.is_empty() {
            let _ = write!(next, "&q={}", url_component(&q.q));
        }
        let _ = write!(main, "<p><a href=\"{}\">Next page</a></p>", E(&next));
    }
    main.push_str("</section></div>");
    Ok(s.page("Devices", "/devices", &main))
}

#[derive(Deserialize, Default)]
pub struct DetailQuery {
    #[serde(default)]
    user: String,
    #[serde(default)]
    directory: String,
}

pub async fn detail(
    State(api): State<Arc<AdminApi>>,
    s: Session,
    Path(id): Path<String>,
    Query(q): Query<DetailQuery>,
) -> Result<Response, Failure> {
    let id = parse_id("device id", &id)?;
    render(&api, &s, id, &q, None).await
}

/// The device page, with `error` (a refused form) above it.
async fn render(
    api: &AdminApi,
    s: &Session,
    id: i64,
    q: &DetailQuery,
    error: Option<Failure>,
) -> Result<Response, Failure> {
    let d = s
        .call(pb::GetDeviceRequest { id }, |r| api.get_device(r))
        .await?;
    let folders = s
        .call(pb::ListFoldersRequest {}, |r| api.list_folders(r))
        .await?
        .folders;
    let profiles = s
        .call(pb::ListProfilesRequest {}, |r| api.list_profiles(r))
        .await?
        .profiles;
    let names: HashMap<i64, &str> = profiles.iter().map(|p| (p.id, p.name.as_str())).collect();
    let assigned = s
        .call(
            pb::ListAssignmentsRequest {
                profile_id: None,
                device_id: Some(id),
                folder_id: None,
            },
            |r| api.list_assignments(r),
        )
        .await?
        .assignments;
    let now = ums_db::now_ms();
    let mut main = format!("<h1>Device {}</h1>", E(&d.name));
    let _ = write!(
        main,
        "<dl class=\"facts\" id=\"device\"><dt>Id</dt><dd>{}</dd><dt>Unit id</dt><dd class=\"mono\">{}</dd>\
         <dt>Folder</dt><dd id=\"device-folder\">{}</dd><dt>Firmware</dt><dd>{}</dd><dt>State</dt><dd>{}</dd>\
         <dt>Last contact</dt><dd>{} {} ({})</dd><dt>Registered</dt><dd>{}</dd>\
         <dt>Settings revision</dt><dd>{} (applied: {})</dd></dl>",
        d.id,
        E(&d.unit_id),
        E(&folder_path(&folders, d.folder_id)),
        E(&d.firmware),
        E(&d.state),
        badge(if d.online { "online" } else { "offline" }),
        time(d.last_contact_ms),
        ago(d.last_contact_ms, now),
        time(d.registered_at_ms),
        d.settings_revision,
        d.applied_revision
    );

    let _ = write!(
        main,
        "<h2>Rename</h2><form method=\"post\" action=\"/devices/{id}/rename\" class=\"row\">{}\
         <label>Name <input name=\"name\" id=\"device-name\" value=\"{}\" required></label>\
         <button type=\"submit\" id=\"rename\">Rename</button></form>",
        csrf_field(&s.csrf),
        E(&d.name)
    );

    // Moving.
    let mut choices = vec![(String::new(), "(top level)".to_owned())];
    choices.extend(folder_choices(&folders));
    let current = d.folder_id.map(|f| f.to_string()).unwrap_or_default();
    let _ = write!(
        main,
        "<h2>Move</h2><form method=\"post\" action=\"/devices/{id}/move\" class=\"row\">{}\
         <label>Folder <select name=\"folder\" id=\"move-folder\">{}</select></label>\
         <button type=\"submit\" id=\"move\">Move</button></form>",
        csrf_field(&s.csrf),
        options(&choices, &current)
    );

    // Profiles assigned to the device itself.
    main.push_str("<h2>Profiles assigned to this device</h2>");
    if assigned.is_empty() {
        main.push_str("<p class=\"muted\">None; its settings come from its folders.</p>");
    } else {
        main.push_str("<table><tr><th>Profile</th><th></th></tr>");
        for a in &assigned {
            let _ = write!(
                main,
                "<tr><td><a href=\"/profiles/{}\">{}</a></td><td>{}</td></tr>",
                a.profile_id,
                E(names.get(&a.profile_id).copied().unwrap_or("?")),
                button_form(
                    &format!("/devices/{id}/unassign"),
                    &s.csrf,
                    &[("profile", &a.profile_id.to_string())],
                    "Unassign"
                )
            );
        }
        main.push_str("</table>");
    }
    let profile_choices: Vec<(String, String)> = profiles
        .iter()
        .map(|p| (p.id.to_string(), p.name.clone()))
        .collect();
    if !profile_choices.is_empty() {
        let _ = write!(
            main,
            "<form method=\"post\" action=\"/devices/{id}/assign\" class=\"row\">{}\
             <label>Profile <select name=\"profile\">{}</select></label>\
             <button type=\"submit\">Assign to this device</button></form>",
            csrf_field(&s.csrf),
            options(&profile_choices, "")
        );
    }

    // Effective settings.
    main.push_str(&explain_section(api, s, id, q).await);

    // Jobs.
    match s
        .call(
            pb::ListJobsRequest {
                device_id: Some(id),
                state: String::new(),
                limit: 20,
            },
            |r| api.list_jobs(r),
        )
        .await
    {
        Ok(jobs) => {
            main.push_str("<h2>Recent jobs</h2>");
            main.push_str(&super::more::jobs_table(&jobs.jobs));
        }
        Err(e) => main.push_str(&e.banner()),
    }

    let title = format!("Device {}", d.name);
    Ok(match error {
        Some(e) => s.page_with_error(&e, &title, "/devices", &main),
        None => s.page(&title, "/devices", &main),
    })
}

/// The effective settings, each value with where it came from; for a user when `q.user` names
/// one. A refusal (no such user, the directory unreachable) shows in this section only.
async fn explain_section(api: &AdminApi, s: &Session, id: i64, q: &DetailQuery) -> String {
    let user = q.user.trim();
    let mut out = String::from("<h2 id=\"explain\">Effective settings</h2>");
    let _ = write!(
        out,
        "<form method=\"get\" action=\"/devices/{id}\" class=\"row\"><label>Shared Workplace user \
         <input name=\"user\" value=\"{}\" placeholder=\"(the device's own settings)\"></label>\
         <label>Directory <input name=\"directory\" value=\"{}\" placeholder=\"(by the user's domain)\"></label>\
         <button type=\"submit\">Explain</button></form>",
        E(user),
        E(q.directory.trim())
    );
    let answer = s
        .call(
            pb::ExplainSettingsRequest {
                device_id: id,
                user: user.to_owned(),
                directory: q.directory.trim().to_owned(),
            },
            |r| api.explain_settings(r),
        )
        .await;
    let e = match answer {
        Ok(e) => e,
        Err(f) => {
            out.push_str(&f.banner());
            return out;
        }
    };
    if let Some(u) = &e.user {
        let _ = write!(
            out,
            "<p>As <b>{}</b> ({}) of directory {}: primary group {}, groups {}, OUs {}.</p>",
            E(&u.login),
            E(&u.display_name),
            E(&u.directory),
            E(&u.primary_group),
            E(&u.groups.join(", ")),
            E(&u.ous.join(", "))
        );
    }
    let _ = write!(out, "<p class=\"muted\">Revision {}.</p>", e.revision);
    if e.values.is_empty() {
        out.push_str("<p class=\"muted\">No parameter is set for this device.</p>");
    } else {
        out.push_str(
            "<table id=\"explained\"><tr><th>Parameter</th><th>Value</th><th>Type</th>\
             <th>From profile</th><th>Assigned to</th><th>Overridden values</th></tr>",
        );
        for v in &e.values {
            let (profile, object) = v.origin.as_ref().map_or_else(
                || ("-".to_owned(), "-".to_owned()),
                |o| (origin_profile(o), origin_object(o)),
            );
            let overridden = v
                .overridden
                .iter()
                .map(|o| {
                    format!(
                        "{} <span class=\"muted\">({}, {})</span>",
                        E(&o.value),
                        o.origin.as_ref().map(origin_profile).unwrap_or_default(),
                        o.origin.as_ref().map(origin_object).unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join("<br>");
            let _ = write!(
                out,
                "<tr><td class=\"mono\">{}</td><td class=\"mono\">{}</td><td>{}</td><td>{profile}</td>\
                 <td>{object}</td><td>{overridden}</td></tr>",
                E(&v.key),
                E(&v.value),
                E(&v.r#type)
            );
        }
        out.push_str("</table>");
    }
    for c in &e.conflicts {
        let _ = write!(
            out,
            "<p class=\"error\">Conflict on <code>{}</code> at {} {}: profile {} wins over {} ({}).</p>",
            E(&c.key),
            E(&c.object_kind),
            c.object_id,
            c.winner_profile_id,
            c.loser_profile_id,
            E(&c.rule)
        );
    }
    for w in &e.warnings {
        let _ = write!(out, "<p class=\"muted\">Warning: {}</p>", E(w));
    }
    out
}

fn origin_profile(o: &pb::Origin) -> String {
    format!(
        "<a href=\"/profiles/{}\">{}</a>{}",
        o.profile_id,
        E(&o.profile_name),
        if o.priority { " (priority)" } else { "" }
    )
}

fn origin_object(o: &pb::Origin) -> String {
    format!("{} {}", E(&o.object_kind), E(&o.object_name))
}

#[derive(Deserialize)]
pub struct MoveForm {
    #[serde(default)]
    folder: String,
}

pub async fn move_to(
    State(api): State<Arc<AdminApi>>,
    s: Session,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<MoveForm>,
) -> Result<Response, Failure> {
    let id = parse_id("device id", &id)?;
    let result = async {
        let folder_id = parse_opt_id("folder", &f.folder)?;
        s.call(
            pb::UpdateDeviceRequest {
                id,
                name: None,
                clear_folder: folder_id.is_none(),
                folder_id,
            },
            |r| api.update_device(r),
        )
        .await
    }
    .await;
    match result {
        Ok(_) => Ok(see(&format!("/devices/{id}"))),
        Err(e) => render(&api, &s, id, &DetailQuery::default(), Some(e)).await,
    }
}

#[derive(Deserialize)]
pub struct RenameForm {
    #[serde(default)]
    name: String,
}

pub async fn rename(
    State(api): State<Arc<AdminApi>>,
    s: Session,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<RenameForm>,
) -> Result<Response, Failure> {
    let id = parse_id("device id", &id)?;
    let request = pb::UpdateDeviceRequest {
        id,
        name: Some(f.name.trim().to_owned()),
        folder_id: None,
        clear_folder: false,
    };
    match s.call(request, |r| api.update_device(r)).await {
        Ok(_) => Ok(see(&format!("/devices/{id}"))),
        Err(e) => render(&api, &s, id, &DetailQuery::default(), Some(e)).await,
    }
}

#[derive(Deserialize)]
pub struct ProfileForm {
    #[serde(default)]
    profile: String,
}

pub async fn assign(
    State(api): State<Arc<AdminApi>>,
    s: Session,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<ProfileForm>,
) -> Result<Response, Failure> {
    assignment(&api, &s, &id, &f.profile, true).await
}

pub async fn unassign(
    State(api): State<Arc<AdminApi>>,
    s: Session,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<ProfileForm>,
) -> Result<Response, Failure> {
    assignment(&api, &s, &id, &f.profile, false).await
}

async fn assignment(
    api: &AdminApi,
    s: &Session,
    id: &str,
    profile: &str,
    assign: bool,
) -> Result<Response, Failure> {
    let id = parse_id("device id", id)?;
    let result = async {
        let request = pb::AssignRequest {
            profile_id: parse_id("profile", profile)?,
            device_id: Some(id),
            folder_id: None,
        };
        if assign {
            s.call(request, |r| api.assign(r)).await
        } else {
            s.call(request, |r| api.unassign(r)).await
        }
    }
    .await;
    match result {
        Ok(_) => Ok(see(&format!("/devices/{id}"))),
        Err(e) => render(api, s, id, &DetailQuery::default(), Some(e)).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(id: i64, name: &str, parent_id: Option<i64>) -> pb::Folder {
        pb::Folder {
            id,
            name: name.into(),
            parent_id,
        }
    }

    #[test]
    fn folders_are_named_by_their_path() {
        let f = vec![
            folder(1, "Berlin", None),
            folder(2, "Floor 1", Some(1)),
            folder(3, "Hamburg", None),
        ];
        assert_eq!(folder_path(&f, Some(2)), "Berlin / Floor 1");
        assert_eq!(folder_path(&f, None), "(top level)");
        assert_eq!(folder_path(&f, Some(9)), "folder 9");
        let choices = folder_choices(&f);
        assert_eq!(choices[1], ("2".into(), "Berlin / Floor 1".into()));
        let tree = folder_tree(&f, Some(2), &|id| format!("/x?f={id}"));
        assert!(
            tree.contains("<li><a href=\"/x?f=1\">Berlin</a><ul><li><a href=\"/x?f=2\" class=\"active\">Floor 1</a>"),
            "{tree}"
        );
        // A cycle in broken data ends.
        let cycle = vec![folder(1, "a", Some(2)), folder(2, "b", Some(1))];
        assert!(!folder_path(&cycle, Some(1)).is_empty());
    }
}
