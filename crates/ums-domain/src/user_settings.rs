//! Shared Workplace: the effective settings of a user logged in on a device.
//!
//! # Order of effectiveness
//!
//! The chain is the user's side followed by the device's side:
//!
//! ```text
//! user > primary group > other groups > OU > parent OUs | device > folder > parent folders
//! ```
//!
//! 1. **User-specific beats device-specific**, and on each side **closer beats further**.
//! 2. For users, **the primary group beats the other groups, which beat the OU**. Groups are
//!    ordered by nesting level (direct memberships first, then the groups those are members of,
//!    ...), and the groups **on one level in alphabetical order** (case-insensitive, the name
//!    first in the alphabet is the stronger). A group reached on several levels counts at its
//!    closest. OUs are ordered from the user's own OU up to the top.
//! 3. **Within one object the highest profile id wins** (and the clash is a conflict), as for
//!    devices.
//! 4. **Priority profiles** override every standard profile, in inverse order on each side, the
//!    user's side first: top OU > ... > groups > user > top folder > ... > folder > device.
//! 5. **Device-only parameters** (network, update, security, ...) never take effect from a
//!    profile on the user's side: the merge ignores them with a warning. Saving one into a
//!    profile assigned to users is refused before it gets here ([`device_only_keys`]).

use std::collections::{BTreeMap, HashSet};

use crate::params::find_spec;
use crate::settings::{Effective, Layer, Profile, merge_sides};

/// A directory group the user belongs to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DirectoryGroup {
    /// The group's name (`cn`).
    pub name: String,
    /// The group's distinguished name.
    pub dn: String,
    /// Nesting level: 1 for a direct membership, 2 for a group a direct group is a member of,
    /// and so on. The primary group is level 1.
    pub level: u32,
}

/// An organisational unit on the user's chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DirectoryOu {
    /// The unit's name (the `ou` value of its RDN).
    pub name: String,
    /// The unit's distinguished name.
    pub dn: String,
}

/// What a directory says about a user: who they are and which objects profiles can be assigned
/// to on their side of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct DirectoryUser {
    /// The login name as the directory spells it (`sAMAccountName` or `uid`).
    pub login: String,
    /// The user's distinguished name.
    pub dn: String,
    /// Display name, when the directory has one.
    pub display_name: String,
    /// The primary group (Active Directory's `primaryGroupID`).
    pub primary_group: Option<DirectoryGroup>,
    /// Every group the user belongs to, directly or through nesting, in any order.
    pub groups: Vec<DirectoryGroup>,
    /// The user's OUs, closest first.
    pub ous: Vec<DirectoryOu>,
}

/// Groups in merge order, strongest first: the primary group, then by nesting level, then by
/// name (case-insensitive), each group once (by DN, case-insensitive) at its strongest place.
pub fn order_groups<'a>(
    primary: Option<&'a DirectoryGroup>,
    groups: &'a [DirectoryGroup],
) -> Vec<&'a DirectoryGroup> {
    let mut rest: Vec<&DirectoryGroup> = groups.iter().collect();
    rest.sort_by(|a, b| {
        a.level
            .cmp(&b.level)
            .then_with(|| a.name.to_lowercase().cmp(&b.name.to_lowercase()))
            .then_with(|| a.dn.to_lowercase().cmp(&b.dn.to_lowercase()))
    });
    let mut seen = HashSet::new();
    primary
        .into_iter()
        .chain(rest)
        .filter(|g| seen.insert(g.dn.to_lowercase()))
        .collect()
}

/// The keys of `params` that are device-only parameters, which a profile assigned to users
/// must not hold.
pub fn device_only_keys<'a>(params: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    params
        .into_iter()
        .filter(|k| find_spec(k).is_some_and(|s| s.device_only))
        .collect()
}

/// Merges a user's side of the chain (`user_layers`: user, primary group, groups, OUs, strongest
/// first) with a device's (`device_layers`: device, folder, parent folders) in the order of the
/// module documentation. Device-only parameters in profiles on the user's side are ignored with
/// a warning.
pub fn merge_user(user_layers: &[Layer<'_>], device_layers: &[Layer<'_>]) -> Effective {
    // Copies of the user-side profiles that hold device-only parameters, without them.
    let mut warnings = Vec::new();
    let mut stripped: BTreeMap<i64, Profile> = BTreeMap::new();
    for layer in user_layers {
        for profile in &layer.profiles {
            let bad = device_only_keys(profile.params.keys().map(String::as_str));
            if bad.is_empty() {
                continue;
            }
            for key in &bad {
                warnings.push(format!(
                    "profile `{}` (id {}) on {} `{}`: `{key}` is a device-only parameter and never \
                     takes effect from a user profile; ignored",
                    profile.name,
                    profile.id,
                    layer.object.kind.as_str(),
                    layer.object_name
                ));
            }
            stripped.entry(profile.id).or_insert_with(|| {
                let mut p = (*profile).clone();
                p.params.retain(|k, _| !bad.contains(&k.as_str()));
                p
            });
        }
    }
    let mut chain: Vec<Layer<'_>> = user_layers
        .iter()
        .map(|l| Layer {
            object: l.object,
            object_name: l.object_name,
            profiles: l
                .profiles
                .iter()
                .map(|p| stripped.get(&p.id).unwrap_or(p))
                .collect(),
        })
        .collect();
    let device_start = chain.len();
    chain.extend(device_layers.iter().cloned());
    let mut out = merge_sides(&chain, &[device_start]);
    warnings.append(&mut out.warnings);
    out.warnings = warnings;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ObjectKind, ObjectRef, Value};

    fn group(name: &str, level: u32) -> DirectoryGroup {
        DirectoryGroup {
            name: name.into(),
            dn: format!("cn={name},ou=groups,dc=example,dc=org"),
            level,
        }
    }

    #[test]
    fn groups_order_primary_then_level_then_name() {
        let primary = group("Domain Users", 1);
        let groups = vec![
            group("zeta", 1),
            group("Aardvark", 2),
            group("Zeta", 2),
            group("beta", 1),
            group("Domain Users", 1),
            group("alpha", 1),
        ];
        let names: Vec<&str> = order_groups(Some(&primary), &groups)
            .iter()
            .map(|g| g.name.as_str())
            .collect();
        assert_eq!(names, ["Domain Users", "alpha", "beta", "zeta", "Aardvark"]);
    }

    #[test]
    fn device_only_keys_are_found() {
        assert_eq!(
            device_only_keys(["audio.volume", "network.proxy", "bootsplash.file"]),
            ["network.proxy", "bootsplash.file"]
        );
    }

    fn profile(id: i64, priority: bool, params: &[(&str, Value)]) -> Profile {
        Profile {
            id,
            name: format!("p{id}"),
            priority,
            params: params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        }
    }

    fn layer<'a>(kind: ObjectKind, id: i64, name: &'a str, profiles: &[&'a Profile]) -> Layer<'a> {
        Layer {
            object: ObjectRef { kind, id },
            object_name: name,
            profiles: profiles.to_vec(),
        }
    }

    #[test]
    fn user_beats_device_and_priority_order_is_per_side() {
        let on_user = profile(1, false, &[("audio.volume", Value::Int(10))]);
        let on_device = profile(2, false, &[("audio.volume", Value::Int(20))]);
        let prio_user = profile(3, true, &[("display.monitors", Value::Int(2))]);
        let prio_group = profile(4, true, &[("display.monitors", Value::Int(3))]);
        let prio_folder = profile(5, true, &[("display.monitors", Value::Int(4))]);
        let user = [
            layer(ObjectKind::User, 1, "alice", &[&on_user, &prio_user]),
            layer(ObjectKind::UserGroup, 2, "staff", &[&prio_group]),
        ];
        let device = [
            layer(ObjectKind::Device, 7, "tc-7", &[&on_device]),
            layer(ObjectKind::Folder, 8, "Berlin", &[&prio_folder]),
        ];
        let out = merge_user(&user, &device);
        let get = |k: &str| out.values.iter().find(|v| v.key == k).expect(k);
        assert_eq!(get("audio.volume").value, Value::Int(10));
        assert_eq!(get("audio.volume").origin.object.kind, ObjectKind::User);
        // user groups > users > device folders > device
        assert_eq!(get("display.monitors").value, Value::Int(3));
        let losers: Vec<i64> = get("display.monitors")
            .overridden
            .iter()
            .map(|(_, o)| o.profile_id)
            .collect();
        assert_eq!(losers, [3, 5]);
    }

    #[test]
    fn device_only_parameters_are_ignored_on_the_user_side() {
        let on_user = profile(
            1,
            true,
            &[
                ("network.proxy", Value::String("http://evil".into())),
                ("audio.mute", Value::Bool(true)),
            ],
        );
        let on_device = profile(
            2,
            false,
            &[("network.proxy", Value::String("http://proxy".into()))],
        );
        let user = [layer(ObjectKind::User, 1, "alice", &[&on_user])];
        let device = [layer(ObjectKind::Device, 7, "tc-7", &[&on_device])];
        let out = merge_user(&user, &device);
        let proxy = out
            .values
            .iter()
            .find(|v| v.key == "network.proxy")
            .expect("proxy");
        assert_eq!(proxy.value, Value::String("http://proxy".into()));
        assert!(proxy.overridden.is_empty());
        assert!(out.values.iter().any(|v| v.key == "audio.mute"));
        assert_eq!(out.warnings.len(), 1);
        assert!(
            out.warnings[0].contains("`network.proxy` is a device-only parameter"),
            "{:?}",
            out.warnings
        );
    }
}
