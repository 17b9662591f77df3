//! The settings layering: which objects' profiles make a device's settings, and a user's on a
//! device, in the documented order, and the revision that changes exactly when one of them
//! changes. One function builds a device's layers ([`device_layers`]); the device half of a
//! user's settings is built by the same function, so it always equals the device's own.
//!
//! Pure functions of the in-memory [`SettingsModel`]: a check-in of an unchanged device reads
//! nothing from the database.

use std::collections::HashSet;

use ums_db::settings::SettingsModel;
use ums_db::swp::{Directory, PrincipalKind};
use ums_domain::{DirectoryUser, Effective, Layer, ObjectKind, ObjectRef, Profile};

use crate::error::ApiError;

/// The fields of a device row that its settings depend on, owned: as a check-in returned them
/// or as read from the database.
#[derive(Debug, Clone)]
pub struct DeviceRow {
    pub name: String,
    pub folder_id: Option<i64>,
    pub rev: i64,
    /// The tag of the Shared Workplace session on the device, if a user is logged in.
    pub session: Option<i64>,
}

impl DeviceRow {
    pub fn view(&self, id: i64) -> DeviceView<'_> {
        DeviceView {
            id,
            name: &self.name,
            folder_id: self.folder_id,
            rev: self.rev,
        }
    }
}

impl From<ums_db::devices::Device> for DeviceRow {
    fn from(d: ums_db::devices::Device) -> Self {
        Self {
            name: d.name,
            folder_id: d.folder_id,
            rev: d.rev,
            session: d.swp_session,
        }
    }
}

/// The settings inputs of one device, borrowed.
pub struct DeviceView<'a> {
    pub id: i64,
    pub name: &'a str,
    pub folder_id: Option<i64>,
    pub rev: i64,
}

/// The folder chain of a device: its folder, the parent, ..., the top folder. A broken or
/// circular chain (which the database prevents) ends where it breaks or repeats.
pub fn folder_chain(model: &SettingsModel, folder: Option<i64>) -> Vec<i64> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut next = folder;
    while let Some(f) = next {
        let Some(folder) = model.folders.get(&f) else {
            break;
        };
        if !seen.insert(f) {
            break;
        }
        out.push(f);
        next = folder.parent_id;
    }
    out
}

/// A folder and every folder below it.
pub fn subtree(model: &SettingsModel, root: i64) -> Vec<i64> {
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(
            model
                .folders
                .values()
                .filter(|f| f.parent_id == Some(parent) && !out.contains(&f.id))
                .map(|f| f.id)
                .collect::<Vec<_>>(),
        );
        i += 1;
    }
    out
}

fn profiles_of<'a>(model: &'a SettingsModel, ids: Option<&Vec<i64>>) -> Vec<&'a Profile> {
    ids.into_iter()
        .flatten()
        .filter_map(|p| model.profiles.get(p).map(|(p, _)| p))
        .collect()
}

/// The layers of a device, closest first: the device, its folder, the parents.
pub fn device_layers<'a>(model: &'a SettingsModel, d: &DeviceView<'a>) -> Vec<Layer<'a>> {
    let mut layers = vec![Layer {
        object: ObjectRef {
            kind: ObjectKind::Device,
            id: d.id,
        },
        object_name: d.name,
        profiles: profiles_of(model, model.device_profiles.get(&d.id)),
    }];
    for f in folder_chain(model, d.folder_id) {
        let name = model.folders.get(&f).map_or("", |f| f.name.as_str());
        layers.push(Layer {
            object: ObjectRef {
                kind: ObjectKind::Folder,
                id: f,
            },
            object_name: name,
            profiles: profiles_of(model, model.folder_profiles.get(&f)),
        });
    }
    layers
}

/// A device's settings revision: the newest stamp among the device, its folders and the profiles
/// assigned to them.
pub fn revision(model: &SettingsModel, d: &DeviceView<'_>) -> u64 {
    let profile_rev = |ids: Option<&Vec<i64>>| {
        ids.into_iter()
            .flatten()
            .filter_map(|p| model.profiles.get(p).map(|(_, rev)| *rev))
            .max()
            .unwrap_or(0)
    };
    let mut rev = d.rev.max(profile_rev(model.device_profiles.get(&d.id)));
    for f in folder_chain(model, d.folder_id) {
        let folder_rev = model.folders.get(&f).map_or(0, |f| f.rev);
        rev = rev
            .max(folder_rev)
            .max(profile_rev(model.folder_profiles.get(&f)));
    }
    u64::try_from(rev).unwrap_or(0)
}

/// A device's effective settings and the revision they belong to, from one model.
pub fn device_settings(model: &SettingsModel, d: &DeviceView<'_>) -> (Effective, u64) {
    let mut out = ums_domain::merge(&device_layers(model, d));
    out.warnings.extend(model.warnings.iter().cloned());
    (out, revision(model, d))
}

/// The user's side of the chain: user, primary group, groups (by level, then name), OUs
/// (closest first). Only objects profiles are assigned to make a layer; a group or OU matches
/// an assignment by its name or by its DN. Also returns the newest stamp among them and their
/// profiles.
fn user_layers<'a>(
    model: &'a SettingsModel,
    directory: i64,
    user: &'a DirectoryUser,
) -> (Vec<Layer<'a>>, i64) {
    let swp = &model.swp;
    let mut rev = 0;
    let mut layers = Vec::new();
    let mut add = |kind: PrincipalKind, keys: &[&str], name: &'a str| {
        let mut ids: Vec<i64> = Vec::new();
        let mut object = None;
        for key in keys {
            let key = ums_db::swp::principal_key(key);
            if let Some(p) = swp.principal(directory, kind, &key) {
                rev = rev.max(p.rev);
                object.get_or_insert(p.id);
                for id in swp.principal_profiles.get(&p.id).into_iter().flatten() {
                    if !ids.contains(id) {
                        ids.push(*id);
                    }
                }
            }
        }
        let Some(id) = object else {
            return;
        };
        let profiles: Vec<&Profile> = ids
            .iter()
            .filter_map(|p| model.profiles.get(p))
            .map(|(p, r)| {
                rev = rev.max(*r);
                p
            })
            .collect();
        layers.push(Layer {
            object: ObjectRef {
                kind: kind.object_kind(),
                id,
            },
            object_name: name,
            profiles,
        });
    };
    add(PrincipalKind::User, &[&user.login], &user.login);
    for g in ums_domain::order_groups(user.primary_group.as_ref(), &user.groups) {
        add(PrincipalKind::Group, &[&g.name, &g.dn], &g.name);
    }
    for ou in &user.ous {
        add(PrincipalKind::Ou, &[&ou.name, &ou.dn], &ou.name);
    }
    (layers, rev)
}

/// A user's effective settings on a device and their revision: the user's side merged over
/// the device's own layers.
pub fn user_settings(
    model: &SettingsModel,
    device: &DeviceView<'_>,
    directory: i64,
    user: &DirectoryUser,
) -> (Effective, u64) {
    let (users, user_rev) = user_layers(model, directory, user);
    let devices = device_layers(model, device);
    let mut out = ums_domain::merge_user(&users, &devices);
    out.warnings.extend(model.warnings.iter().cloned());
    let rev = revision(model, device).max(u64::try_from(user_rev).unwrap_or(0));
    (out, rev)
}

/// The newest stamp among the user's side of a user's settings on a device and the device's
/// own: what [`user_settings`] returns as revision, without the merge.
pub fn user_revision(
    model: &SettingsModel,
    device: &DeviceView<'_>,
    directory: i64,
    user: &DirectoryUser,
) -> u64 {
    let (_, user_rev) = user_layers(model, directory, user);
    revision(model, device).max(u64::try_from(user_rev).unwrap_or(0))
}

/// Bits of a revision below a session's tag.
const SESSION_SHIFT: u32 = 40;

/// The revision a device gets while a user is logged in: the session's tag in the bits above
/// [`SESSION_SHIFT`], the revision of the user's settings below. Revisions are opaque to devices,
/// which compare them only for equality: a login, a refresh that changed the user, and a logout
/// change the tag, so the revision changes even when no stamp did; a change of the user's or the
/// device's inputs changes the part below. Tags are below 2^23, so the revision fits an i64.
pub fn session_revision(tag: i64, user_revision: u64) -> u64 {
    let tag = u64::try_from(tag.clamp(0, ums_db::swp::MAX_TAG)).unwrap_or(0);
    (tag << SESSION_SHIFT) | (user_revision & ((1 << SESSION_SHIFT) - 1))
}

/// Why Shared Workplace is on or off on a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enablement {
    /// The device's own switch.
    Device(bool),
    /// The switch of this folder, the closest up the device's chain that has one.
    Folder(i64, bool),
    /// `sharedworkplace.enabled` in the device's settings (a profile).
    Profile(bool),
    /// Nothing says.
    Unset,
}

impl Enablement {
    pub fn enabled(&self) -> bool {
        match self {
            Self::Device(on) | Self::Folder(_, on) | Self::Profile(on) => *on,
            Self::Unset => false,
        }
    }
}

/// The parameter of a profile that switches Shared Workplace on or off.
pub const SWP_ENABLED_KEY: &str = "sharedworkplace.enabled";

/// Whether Shared Workplace is on for a device: its own switch, else the closest folder's, else
/// `sharedworkplace.enabled` from its profiles.
pub fn swp_enablement(model: &SettingsModel, d: &DeviceView<'_>) -> Enablement {
    if let Some(dev) = model.swp.devices.get(&d.id) {
        return Enablement::Device(dev.enabled);
    }
    for f in folder_chain(model, d.folder_id) {
        if let Some(on) = model.swp.folders.get(&f) {
            return Enablement::Folder(f, *on);
        }
    }
    let own = ums_domain::merge(&device_layers(model, d));
    match own.values.iter().find(|v| v.key == SWP_ENABLED_KEY) {
        Some(v) => Enablement::Profile(v.value.to_string() == "true"),
        None => Enablement::Unset,
    }
}

/// The directory a typed user name belongs to: by its domain (`alice@ad.example.org`,
/// `AD\alice`), by the name an administrator gave, or the first directory.
pub fn pick_directory<'a>(
    model: &'a SettingsModel,
    username: &str,
    by_name: &str,
) -> Result<&'a Directory, ApiError> {
    let dirs = &model.swp.directories;
    if !by_name.is_empty() {
        return dirs
            .values()
            .find(|d| d.input.name.eq_ignore_ascii_case(by_name))
            .ok_or_else(|| ApiError::NotFound(format!("directory `{by_name}` not found")));
    }
    let first = dirs.values().next().ok_or_else(|| {
        ApiError::FailedPrecondition(
            "no directory is configured for Shared Workplace logins".into(),
        )
    })?;
    let name = username.trim();
    if let Some((netbios, _)) = name.split_once('\\') {
        return dirs
            .values()
            .find(|d| {
                d.input.netbios.eq_ignore_ascii_case(netbios)
                    || (!d.input.domain.is_empty() && d.input.domain.eq_ignore_ascii_case(netbios))
            })
            .ok_or_else(|| unknown_domain(netbios));
    }
    if let Some((_, domain)) = name.rsplit_once('@')
        && let Some(d) = dirs
            .values()
            .find(|d| !d.input.domain.is_empty() && d.input.domain.eq_ignore_ascii_case(domain))
    {
        return Ok(d);
    }
    Ok(first)
}

/// A `DOMAIN\user` login naming a domain no directory has: refused like a wrong password, so
/// the answer tells nobody which domains exist; the server's log says why.
fn unknown_domain(netbios: &str) -> ApiError {
    tracing::info!(domain = %netbios, "login refused: no directory has this NetBIOS domain");
    ApiError::Unauthenticated("wrong user name or password".into())
}

/// The user part of a typed name: `AD\alice` and `alice@ad.example.org` are `alice`.
pub fn user_part(name: &str) -> &str {
    let name = name.trim();
    let name = name.split_once('\\').map_or(name, |(_, u)| u);
    name.rsplit_once('@').map_or(name, |(u, _)| u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_parts() {
        assert_eq!(user_part("AD\\alice"), "alice");
        assert_eq!(user_part(" alice@ad.example.org "), "alice");
        assert_eq!(user_part("alice"), "alice");
    }

    fn folder(id: i64, parent: Option<i64>) -> ums_db::settings::Folder {
        ums_db::settings::Folder {
            id,
            name: format!("f{id}"),
            parent_id: parent,
            rev: id,
            created_at: 0,
        }
    }

    #[test]
    fn a_circular_folder_chain_ends_where_it_repeats() {
        let mut model = SettingsModel::default();
        for f in [folder(1, Some(3)), folder(2, Some(1)), folder(3, Some(2))] {
            model.folders.insert(f.id, f);
        }
        assert_eq!(folder_chain(&model, Some(2)), vec![2, 1, 3]);
        let mut sub = subtree(&model, 1);
        sub.sort_unstable();
        assert_eq!(sub, vec![1, 2, 3]);
        let d = DeviceView {
            id: 9,
            name: "d",
            folder_id: Some(2),
            rev: 0,
        };
        assert_eq!(device_layers(&model, &d).len(), 4);
        assert_eq!(revision(&model, &d), 3);
    }
}
