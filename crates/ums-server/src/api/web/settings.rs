//! Folders and profiles: the folder tree with creating and deleting, profiles with their
//! parameters (checked by the parameter catalog in the admin API's handlers), and their
//! assignments to folders, devices and Shared Workplace users, groups and OUs.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use serde::Deserialize;
use ums_proto::admin::v1 as pb;
use ums_proto::admin::v1::admin_service_server::AdminService;

use super::devices::{folder_choices, folder_path, folder_tree};
use super::html::{E, button_form, csrf_field, options};
use super::{Failure, Session, parse_id, parse_opt_id, see};
use crate::api::admin::AdminApi;

pub async fn folders(State(api): State<Arc<AdminApi>>, s: Session) -> Result<Response, Failure> {
    render_folders(&api, &s, None).await
}

async fn render_folders(
    api: &AdminApi,
    s: &Session,
    error: Option<Failure>,
) -> Result<Response, Failure> {
    let folders = s
        .call(pb::ListFoldersRequest {}, |r| api.list_folders(r))
        .await?
        .folders;
    let assignments = s
        .call(pb::ListAssignmentsRequest::default(), |r| {
            api.list_assignments(r)
        })
        .await?
        .assignments;
    let profiles = s
        .call(pb::ListProfilesRequest {}, |r| api.list_profiles(r))
        .await?
        .profiles;
    let names: HashMap<i64, &str> = profiles.iter().map(|p| (p.id, p.name.as_str())).collect();
    let mut main = String::from("<h1>Folders</h1>");
    main.push_str(&folder_tree(&folders, None, &|id| {
        format!("/devices?folder={id}")
    }));
    let mut parents = vec![(String::new(), "(top level)".to_owned())];
    parents.extend(folder_choices(&folders));
    let _ = write!(
        main,
        "<h2>New folder</h2><form method=\"post\" action=\"/folders\" class=\"row\">{}\
         <label>Name <input name=\"name\" id=\"folder-name\" required></label>\
         <label>Inside <select name=\"parent\">{}</select></label>\
         <button type=\"submit\" id=\"create-folder\">Create</button></form>",
        csrf_field(&s.csrf),
        options(&parents, "")
    );
    main.push_str(
        "<h2>All folders</h2><table id=\"folders\"><tr><th>Id</th><th>Folder</th>\
         <th>Profiles assigned</th><th></th></tr>",
    );
    let mut sorted = folder_choices(&folders);
    sorted.sort_by(|a, b| a.1.cmp(&b.1));
    for (id, path) in &sorted {
        let fid: i64 = id.parse().unwrap_or_default();
        let assigned: Vec<String> = assignments
            .iter()
            .filter(|a| a.folder_id == Some(fid))
            .map(|a| {
                format!(
                    "<a href=\"/profiles/{}\">{}</a>",
                    a.profile_id,
                    E(names.get(&a.profile_id).copied().unwrap_or("?"))
                )
            })
            .collect();
        let _ = write!(
            main,
            "<tr><td class=\"num\">{fid}</td><td><a href=\"/devices?folder={fid}\">{}</a></td><td>{}</td><td>{}</td></tr>",
            E(path),
            assigned.join(", "),
            button_form(&format!("/folders/{fid}/delete"), &s.csrf, &[], "Delete")
        );
    }
    main.push_str("</table>");
    Ok(match error {
        Some(e) => s.page_with_error(&e, "Folders", "/folders", &main),
        None => s.page("Folders", "/folders", &main),
    })
}

#[derive(Deserialize)]
pub struct FolderForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    parent: String,
}

pub async fn create_folder(
    State(api): State<Arc<AdminApi>>,
    s: Session,
    axum::Form(f): axum::Form<FolderForm>,
) -> Result<Response, Failure> {
    let result = async {
        let parent_id = parse_opt_id("parent folder", &f.parent)?;
        s.call(
            pb::CreateFolderRequest {
                name: f.name.clone(),
                parent_id,
            },
            |r| api.create_folder(r),
        )
        .await
    }
    .await;
    match result {
        Ok(_) => Ok(see("/folders")),
        Err(e) => render_folders(&api, &s, Some(e)).await,
    }
}

pub async fn delete_folder(
    State(api): State<Arc<AdminApi>>,
    s: Session,
    Path(id): Path<String>,
) -> Result<Response, Failure> {
    let id = parse_id("folder id", &id)?;
    match s
        .call(pb::DeleteFolderRequest { id }, |r| api.delete_folder(r))
        .await
    {
        Ok(_) => Ok(see("/folders")),
        Err(e) => render_folders(&api, &s, Some(e)).await,
    }
}

pub async fn profiles(State(api): State<Arc<AdminApi>>, s: Session) -> Result<Response, Failure> {
    render_profiles(&api, &s, None, None).await
}

async fn render_profiles(
    api: &AdminApi,
    s: &Session,
    error: Option<Failure>,
    form: Option<&NewProfileForm>,
) -> Result<Response, Failure> {
    let profiles = s
        .call(pb::ListProfilesRequest {}, |r| api.list_profiles(r))
        .await?
        .profiles;
    let mut main = String::from("<h1>Profiles</h1>");
    main.push_str(
        "<table id=\"profiles\"><tr><th>Id</th><th>Name</th><th>Priority</th><th>Description</th></tr>",
    );
    for p in &profiles {
        let _ = write!(
            main,
            "<tr><td class=\"num\">{}</td><td><a href=\"/profiles/{}\">{}</a></td><td>{}</td><td>{}</td></tr>",
            p.id,
            p.id,
            E(&p.name),
            if p.priority { "yes" } else { "" },
            E(&p.description)
        );
    }
    main.push_str("</table>");
    let (name, description, params, priority) = form.map_or(("", "", "", false), |f| {
        (
            f.name.as_str(),
            f.description.as_str(),
            f.params.as_str(),
            !f.priority.is_empty(),
        )
    });
    let _ = write!(
        main,
        "<h2>New profile</h2><form method=\"post\" action=\"/profiles\" class=\"row\">{}\
         <label>Name <input name=\"name\" id=\"profile-name\" value=\"{}\" required></label>\
         <label>Description <input name=\"description\" value=\"{}\"></label>\
         <label>Parameters, one <code>key=value</code> a line \
         <textarea name=\"params\" id=\"profile-params\" placeholder=\"display.monitors=2\">{}</textarea></label>\
         <label><span><input type=\"checkbox\" name=\"priority\" value=\"1\"{}> priority profile (overrides standard ones)</span></label>\
         <button type=\"submit\" id=\"create-profile\">Create</button></form>",
        csrf_field(&s.csrf),
        E(name),
        E(description),
        E(params),
        if priority { " checked" } else { "" }
    );
    main.push_str(&catalog_reference(api, s).await);
    Ok(match error {
        Some(e) => s.page_with_error(&e, "Profiles", "/profiles", &main),
        None => s.page("Profiles", "/profiles", &main),
    })
}

/// The parameter catalog, folded, and as suggestions for key inputs (`list="catalog"`).
async fn catalog_reference(api: &AdminApi, s: &Session) -> String {
    let Ok(catalog) = s
        .call(pb::ListParametersRequest {}, |r| api.list_parameters(r))
        .await
    else {
        return String::new();
    };
    let mut out = String::from("<datalist id=\"catalog\">");
    for p in &catalog.parameters {
        let _ = write!(out, "<option value=\"{}\">", E(&p.pattern));
    }
    out.push_str(
        "</datalist><details><summary>Parameter catalog</summary><table><tr><th>Key</th>\
         <th>Type</th><th>Values</th><th>Description</th></tr>",
    );
    for p in &catalog.parameters {
        let _ = write!(
            out,
            "<tr><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            E(&p.pattern),
            E(&p.r#type),
            E(&p.choices.join(", ")),
            E(&p.description)
        );
    }
    out.push_str(
        "</table><p class=\"muted\"><code>#</code> stands for an instance number (0, 1, ...).</p></details>",
    );
    out
}

/// `key=value` lines into parameters; blank lines are skipped.
fn parse_lines(text: &str) -> Result<Vec<pb::Param>, Failure> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (key, value) = line.split_once('=').ok_or_else(|| {
            Failure::invalid(format!(
                "parameters line {}: expected `key=value`, got `{line}`",
                n + 1
            ))
        })?;
        out.push(pb::Param {
            key: key.trim().to_owned(),
            value: value.trim().to_owned(),
        });
    }
    Ok(out)
}

#[derive(Deserialize)]
pub struct NewProfileForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    params: String,
    #[serde(default)]
    priority: String,
}

pub async fn create_profile(
    State(api): State<Arc<AdminApi>>,
    s: Session,
    axum::Form(f): axum::Form<NewProfileForm>,
) -> Result<Response, Failure> {
    let result = async {
        let params = parse_lines(&f.params)?;
        s.call(
            pb::CreateProfileRequest {
                name: f.name.clone(),
                description: f.description.clone(),
                priority: !f.priority.is_empty(),
                params,
            },
            |r| api.create_profile(r),
        )
        .await
    }
    .await;
    match result {
        Ok(p) => Ok(see(&format!("/profiles/{}", p.id))),
        Err(e) => render_profiles(&api, &s, Some(e), Some(&f)).await,
    }
}

pub async fn profile(
    State(api): State<Arc<AdminApi>>,
    s: Session,
    Path(id): Path<String>,
) -> Result<Response, Failure> {
    let id = parse_id("profile id", &id)?;
    render_profile(&api, &s, id, None, ("", "")).await
}

/// The profile page; `entered` is the parameter form's key and value, kept after a refusal.
async fn render_profile(
    api: &AdminApi,
    s: &Session,
    id: i64,
    error: Option<Failure>,
    entered: (&str, &str),
) -> Result<Response, Failure> {
    let p = s
        .call(pb::GetProfileRequest { id }, |r| api.get_profile(r))
        .await?;
    let folders = s
        .call(pb::ListFoldersRequest {}, |r| api.list_folders(r))
        .await?
        .folders;
    let assignments = s
        .call(
            pb::ListAssignmentsRequest {
                profile_id: Some(id),
                device_id: None,
                folder_id: None,
            },
            |r| api.list_assignments(r),
        )
        .await?
        .assignments;
    let mut main = format!(
        "<h1>Profile {}</h1><p class=\"muted\">{}{}</p>",
        E(&p.name),
        E(&p.description),
        if p.priority {
            " · priority profile"
        } else {
            ""
        }
    );
    main.push_str("<h2>Parameters</h2>");
    if p.params.is_empty() {
        main.push_str("<p class=\"muted\">No parameters yet.</p>");
    } else {
        main.push_str("<table id=\"params\"><tr><th>Key</th><th>Value</th><th></th></tr>");
        for param in &p.params {
            let _ = write!(
                main,
                "<tr><td class=\"mono\">{}</td><td class=\"mono\">{}</td><td>{}</td></tr>",
                E(&param.key),
                E(&param.value),
                button_form(
                    &format!("/profiles/{id}/params"),
                    &s.csrf,
                    &[("unset", &param.key)],
                    "Remove"
                )
            );
        }
        main.push_str("</table>");
    }
    let _ = write!(
        main,
        "<form method=\"post\" action=\"/profiles/{id}/params\" class=\"row\">{}\
         <label>Parameter <input name=\"key\" id=\"param-key\" list=\"catalog\" value=\"{}\" required></label>\
         <label>Value <input name=\"value\" id=\"param-value\" value=\"{}\"></label>\
         <button type=\"submit\" id=\"set-param\">Set</button></form>",
        csrf_field(&s.csrf),
        E(entered.0),
        E(entered.1)
    );

    main.push_str("<h2>Assigned to</h2>");
    if assignments.is_empty() {
        main.push_str("<p class=\"muted\">Not assigned.</p>");
    } else {
        main.push_str("<table id=\"assignments\"><tr><th>Object</th><th></th></tr>");
        for a in &assignments {
            let (label, field, value) = match (a.device_id, a.folder_id) {
                (Some(d), _) => (
                    format!("device <a href=\"/devices/{d}\">{d}</a>"),
                    "device",
                    d,
                ),
                (_, Some(f)) => (
                    format!("folder {}", E(&folder_path(&folders, Some(f)))),
                    "folder",
                    f,
                ),
                _ => continue,
            };
            let _ = write!(
                main,
                "<tr><td>{label}</td><td>{}</td></tr>",
                button_form(
                    &format!("/profiles/{id}/unassign"),
                    &s.csrf,
                    &[(field, &value.to_string())],
                    "Unassign"
                )
            );
        }
        main.push_str("</table>");
    }
    let mut folder_opts = vec![(String::new(), "(choose a folder)".to_owned())];
    folder_opts.extend(folder_choices(&folders));
    let _ = write!(
        main,
        "<form method=\"post\" action=\"/profiles/{id}/assign\" class=\"row\">{}\
         <label>Folder <select name=\"folder\" id=\"assign-folder\">{}</select></label>\
         <label>or device id <input name=\"device\" id=\"assign-device\" inputmode=\"numeric\" size=\"8\"></label>\
         <button type=\"submit\" id=\"assign\">Assign</button></form>",
        csrf_field(&s.csrf),
        options(&folder_opts, "")
    );

    // Shared Workplace: users, groups and OUs.
    if let Ok(users) = s
        .call(
            pb::ListUserAssignmentsRequest {
                profile_id: Some(id),
            },
            |r| api.list_user_assignments(r),
        )
        .await
    {
        main.push_str("<h2>Shared Workplace users, groups and OUs</h2>");
        if !users.assignments.is_empty() {
            main.push_str(
                "<table id=\"user-assignments\"><tr><th>Directory</th><th>Kind</th><th>Name</th><th></th></tr>",
            );
            for a in &users.assignments {
                let _ = write!(
                    main,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    E(&a.directory),
                    E(&a.kind),
                    E(&a.name),
                    button_form(
                        &format!("/profiles/{id}/unassign"),
                        &s.csrf,
                        &[
                            ("directory", &a.directory),
                            ("kind", &a.kind),
                            ("name", &a.name)
                        ],
                        "Unassign"
                    )
                );
            }
            main.push_str("</table>");
        }
        let kinds = [
            ("user".to_owned(), "user".to_owned()),
            ("group".to_owned(), "group".to_owned()),
            ("ou".to_owned(), "OU".to_owned()),
        ];
        let _ = write!(
            main,
            "<form method=\"post\" action=\"/profiles/{id}/assign\" class=\"row\">{}\
             <label>Directory <input name=\"directory\" placeholder=\"(the only one)\"></label>\
             <label>Kind <select name=\"kind\">{}</select></label>\
             <label>Name or DN <input name=\"name\" required></label>\
             <button type=\"submit\">Assign</button></form>",
            csrf_field(&s.csrf),
            options(&kinds, "user")
        );
    }
    let _ = write!(
        main,
        "<h2>Delete</h2><form method=\"post\" action=\"/profiles/{id}/delete\" class=\"row\">{}\
         <label><span><input type=\"checkbox\" name=\"force\" value=\"1\"> also while it is assigned \
         (its assignments go with it)</span></label>\
         <button type=\"submit\" id=\"delete-profile\">Delete this profile</button></form>",
        csrf_field(&s.csrf)
    );
    main.push_str(&catalog_reference(api, s).await);
    let title = format!("Profile {}", p.name);
    Ok(match error {
        Some(e) => s.page_with_error(&e, &title, "/profiles", &main),
        None => s.page(&title, "/profiles", &main),
    })
}

#[derive(Deserialize)]
pub struct ParamForm {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    unset: String,
}

pub async fn set_params(
    State(api): State<Arc<AdminApi>>,
    s: Session,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<ParamForm>,
) -> Result<Response, Failure> {
    let id = parse_id("profile id", &id)?;
    let (set, unset) = if f.unset.is_empty() {
        (
            vec![pb::Param {
                key: f.key.trim().to_owned(),
                value: f.value.trim().to_owned(),
            }],
            Vec::new(),
        )
    } else {
        (Vec::new(), vec![f.unset.clone()])
    };
    match s
        .call(pb::UpdateProfileParamsRequest { id, set, unset }, |r| {
            api.update_profile_params(r)
        })
        .await
    {
        Ok(_) => Ok(see(&format!("/profiles/{id}"))),
        Err(e) => render_profile(&api, &s, id, Some(e), (&f.key, &f.value)).await,
    }
}

#[derive(Deserialize)]
pub struct DeleteForm {
    #[serde(default)]
    force: String,
}

pub async fn delete_profile(
    State(api): State<Arc<AdminApi>>,
    s: Session,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<DeleteForm>,
) -> Result<Response, Failure> {
    let id = parse_id("profile id", &id)?;
    let request = pb::DeleteProfileRequest {
        id,
        force: !f.force.is_empty(),
    };
    match s.call(request, |r| api.delete_profile(r)).await {
        Ok(_) => Ok(see("/profiles")),
        Err(e) => render_profile(&api, &s, id, Some(e), ("", "")).await,
    }
}

#[derive(Deserialize)]
pub struct AssignForm {
    #[serde(default)]
    folder: String,
    #[serde(default)]
    device: String,
    #[serde(default)]
    directory: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    name: String,
}

pub async fn assign(
    State(api): State<Arc<AdminApi>>,
    s: Session,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<AssignForm>,
) -> Result<Response, Failure> {
    assignment(&api, &s, &id, &f, true).await
}

pub async fn unassign(
    State(api): State<Arc<AdminApi>>,
    s: Session,
    Path(id): Path<String>,
    axum::Form(f): axum::Form<AssignForm>,
) -> Result<Response, Failure> {
    assignment(&api, &s, &id, &f, false).await
}

async fn assignment(
    api: &AdminApi,
    s: &Session,
    id: &str,
    f: &AssignForm,
    assign: bool,
) -> Result<Response, Failure> {
    let id = parse_id("profile id", id)?;
    let result = async {
        if !f.kind.is_empty() {
            let name = f.name.trim().to_owned();
            let mut r = pb::AssignUserRequest {
                profile_id: id,
                directory: f.directory.trim().to_owned(),
                ..Default::default()
            };
            match f.kind.as_str() {
                "user" => r.user = name,
                "group" => r.group = name,
                "ou" => r.ou = name,
                other => return Err(Failure::invalid(format!("unknown kind `{other}`"))),
            }
            return if assign {
                s.call(r, |r| api.assign_user(r)).await
            } else {
                s.call(r, |r| api.unassign_user(r)).await
            };
        }
        let folder_id = parse_opt_id("folder", &f.folder)?;
        let device_id = parse_opt_id("device id", &f.device)?;
        if folder_id.is_some() == device_id.is_some() {
            return Err(Failure::invalid(
                "choose a folder or give a device id, not both",
            ));
        }
        let r = pb::AssignRequest {
            profile_id: id,
            device_id,
            folder_id,
        };
        if assign {
            s.call(r, |r| api.assign(r)).await
        } else {
            s.call(r, |r| api.unassign(r)).await
        }
    }
    .await;
    match result {
        Ok(_) => Ok(see(&format!("/profiles/{id}"))),
        Err(e) => render_profile(api, s, id, Some(e), ("", "")).await,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parameter_lines_are_key_value_pairs() {
        let p = super::parse_lines("display.monitors = 2\n\n  sessions.rdp0.server=a=b \n")
            .unwrap_or_else(|e| panic!("{}", e.0.message()));
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].key.as_str(), p[0].value.as_str()),
            ("display.monitors", "2")
        );
        assert_eq!(p[1].value, "a=b", "the first = splits");
        let e = super::parse_lines("ok=1\nno equals sign").expect_err("refused");
        assert!(e.0.message().contains("line 2"), "{}", e.0.message());
    }
}
