//! The settings merge: effective settings of an object from the profiles
//! assigned along its chain of objects.
//!
//! # Order of effectiveness
//!
//! The caller passes the chain as layers, ordered from the strongest standard
//! layer to the weakest: `[device, its folder, the folder's parent, ..., top
//! folder]`. The merge itself does not care what kind of object a layer is,
//! so further kinds can be slotted into the chain later.
//!
//! 1. **Standard profiles:** closer beats further. A profile on an earlier
//!    layer beats a profile on a later one (device > its folder > parent
//!    folders).
//! 2. **Within one object** the profile with the highest id wins.
//! 3. **Priority profiles** override every standard profile. Among priority
//!    profiles the layer order is *inverted*: a priority profile on the top
//!    folder beats one on a lower folder, which beats one on the device.
//!    Within one object the highest id wins again.
//! 4. **Conflicts:** when two different profiles on *one* object set the same
//!    scalar key, the rules above settle it (a priority profile beats a
//!    standard one, otherwise the highest id wins) and a [`Conflict`] is
//!    reported as well. Profiles on different objects setting the same key
//!    is normal overriding; the losers are listed in
//!    [`EffectiveValue::overridden`], best first.
//! 5. **List-type entries** (keys with an instance number, e.g.
//!    `sessions.rdp0.server`) coexist instead of overriding. Each profile's
//!    instances are kept as separate entries and renumbered per list
//!    (`sessions.rdp0`, `sessions.rdp1`, ...) in precedence order of the
//!    defining profile (priority profiles first in their order, then
//!    standard profiles in theirs) and, within one profile, by the original
//!    instance number. All keys of one original instance keep the same new
//!    number. Instances beyond the highest allowed number are dropped with a
//!    warning.
//! 6. **The same profile on several layers** counts once, at its strongest
//!    occurrence: it neither conflicts with itself nor duplicates list
//!    instances. Profiles are identified by their id.
//! 7. **Unknown or invalid parameters** (e.g. a key removed from the catalog
//!    in a newer version, or a value of the wrong type) are skipped with a
//!    message in [`Effective::warnings`].

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, HashSet};

use crate::ProfileId;
use crate::params::{MAX_INSTANCE, Value, list_instance, validate_value};

/// The kind of an object that profiles can be assigned to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum ObjectKind {
    /// A thin client.
    Device,
    /// A device folder.
    Folder,
    /// A directory user (Shared Workplace).
    User,
    /// A directory group (Shared Workplace).
    UserGroup,
    /// An organisational unit of a directory (Shared Workplace).
    Ou,
}

impl ObjectKind {
    /// Lowercase name: `"device"`, `"folder"`, `"user"`, `"group"` or `"ou"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ObjectKind::Device => "device",
            ObjectKind::Folder => "folder",
            ObjectKind::User => "user",
            ObjectKind::UserGroup => "group",
            ObjectKind::Ou => "ou",
        }
    }

    /// Whether the object is on the user side (user, group, OU) of a Shared Workplace merge.
    pub fn is_user_side(&self) -> bool {
        matches!(
            self,
            ObjectKind::User | ObjectKind::UserGroup | ObjectKind::Ou
        )
    }
}

/// A reference to an object by kind and id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct ObjectRef {
    /// The kind of object.
    pub kind: ObjectKind,
    /// The object's id within its kind.
    pub id: i64,
}

/// A settings profile.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Profile {
    /// Profile id; higher ids win on one object.
    pub id: ProfileId,
    /// Display name.
    pub name: String,
    /// Priority profiles override all standard profiles.
    pub priority: bool,
    /// The settings, by key.
    pub params: BTreeMap<String, Value>,
}

/// One object in the chain with the profiles assigned directly to it.
#[derive(Debug, Clone)]
pub struct Layer<'a> {
    /// The object.
    pub object: ObjectRef,
    /// The object's display name.
    pub object_name: &'a str,
    /// Profiles assigned directly to the object, in any order.
    pub profiles: Vec<&'a Profile>,
}

/// Where an effective value comes from.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Origin {
    /// The profile that sets the value.
    pub profile_id: ProfileId,
    /// The profile's name.
    pub profile_name: String,
    /// The object the profile is assigned to (its strongest occurrence).
    pub object: ObjectRef,
    /// The object's name.
    pub object_name: String,
    /// Whether the profile is a priority profile.
    pub priority: bool,
}

/// One effective setting with its origin and the values it overrides.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EffectiveValue {
    /// The effective key (list instances renumbered).
    pub key: String,
    /// The winning value.
    pub value: Value,
    /// Where the winning value comes from.
    pub origin: Origin,
    /// Losing values, best first.
    pub overridden: Vec<(Value, Origin)>,
}

/// Two profiles on one object set the same scalar key.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Conflict {
    /// The contested key.
    pub key: String,
    /// The object both profiles are assigned to.
    pub object: ObjectRef,
    /// The profile that wins on this object.
    pub winner: ProfileId,
    /// The profile that loses on this object.
    pub loser: ProfileId,
    /// The rule that settled the conflict.
    pub rule: String,
}

/// The result of a merge.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct Effective {
    /// Effective values, sorted by key.
    pub values: Vec<EffectiveValue>,
    /// Same-object conflicts, in layer order, then by key.
    pub conflicts: Vec<Conflict>,
    /// Skipped parameters and other non-fatal problems.
    pub warnings: Vec<String>,
}

/// Rule text for a same-object conflict settled by profile id.
pub const RULE_HIGHEST_ID: &str = "highest profile id wins on one object";
/// Rule text for a same-object conflict settled by the priority flag.
pub const RULE_PRIORITY: &str = "priority profile beats standard profile on one object";

/// A profile at one position of the chain.
#[derive(Clone, Copy)]
struct Occurrence<'a> {
    profile: &'a Profile,
    layer: usize,
    object: ObjectRef,
    object_name: &'a str,
}

impl Occurrence<'_> {
    fn origin(&self) -> Origin {
        Origin {
            profile_id: self.profile.id,
            profile_name: self.profile.name.clone(),
            object: self.object,
            object_name: self.object_name.to_owned(),
            priority: self.profile.priority,
        }
    }
}

/// Sort key: smaller is stronger. Priority profiles first, side by side
/// (stronger side first) with inverted layer order within a side, then
/// standard profiles in layer order; highest id first within one layer.
fn precedence(
    priority: bool,
    side: usize,
    layer: usize,
    id: ProfileId,
) -> (u8, i64, i64, Reverse<ProfileId>) {
    let layer = i64::try_from(layer).unwrap_or(i64::MAX);
    let side = i64::try_from(side).unwrap_or(i64::MAX);
    if priority {
        (0, side, -layer, Reverse(id))
    } else {
        (1, 0, layer, Reverse(id))
    }
}

/// The valid parameters of one profile, split into scalars and list instances.
#[derive(Default)]
struct Classified<'a> {
    scalars: BTreeMap<&'a str, &'a Value>,
    /// (list prefix, instance number) -> fields.
    lists: BTreeMap<(&'a str, u32), Vec<(&'a str, &'a Value)>>,
}

fn classify<'a>(profile: &'a Profile, warnings: &mut Vec<String>) -> Classified<'a> {
    let mut out = Classified::default();
    for (key, value) in &profile.params {
        if let Err(err) = validate_value(key, value) {
            warnings.push(format!(
                "profile `{}` (id {}): {err}; parameter skipped",
                profile.name, profile.id
            ));
            continue;
        }
        match list_instance(key) {
            Some((prefix, number, field)) => out
                .lists
                .entry((prefix, number))
                .or_default()
                .push((field, value)),
            None => {
                out.scalars.insert(key.as_str(), value);
            }
        }
    }
    out
}

/// Merges the profiles along a chain of objects into effective settings.
///
/// `layers` is ordered from the strongest standard layer to the weakest:
/// `[device, its folder, the folder's parent, ..., top folder]`. See the
/// module documentation for the rules.
pub fn merge(layers: &[Layer<'_>]) -> Effective {
    merge_sides(layers, &[])
}

/// Merges a chain made of several sides, such as a user's objects followed by
/// a device's (Shared Workplace).
///
/// `layers` is the whole chain from the strongest standard layer to the
/// weakest; `side_starts` are the indices where the second, third, ...
/// side begins. Standard profiles follow the chain order. Priority profiles
/// are ordered side by side, the first side strongest, and inverted within
/// each side: for `[user, groups, OUs | device, folders]` that is OUs >
/// groups > user > top folder > ... > device. With no `side_starts` this is
/// [`merge`].
pub fn merge_sides(layers: &[Layer<'_>], side_starts: &[usize]) -> Effective {
    let side_of = |layer: usize| side_starts.iter().filter(|s| **s <= layer).count();
    let mut effective = Effective::default();

    // All occurrences in precedence order, strongest first.
    let mut occurrences: Vec<Occurrence<'_>> = layers
        .iter()
        .enumerate()
        .flat_map(|(index, layer)| {
            layer.profiles.iter().map(move |profile| Occurrence {
                profile,
                layer: index,
                object: layer.object,
                object_name: layer.object_name,
            })
        })
        .collect();
    occurrences
        .sort_by_key(|o| precedence(o.profile.priority, side_of(o.layer), o.layer, o.profile.id));

    // Each profile counts once, at its strongest occurrence.
    let mut seen = HashSet::new();
    occurrences.retain(|o| seen.insert(o.profile.id));

    let classified: HashMap<ProfileId, Classified<'_>> = occurrences
        .iter()
        .map(|o| (o.profile.id, classify(o.profile, &mut effective.warnings)))
        .collect();

    // Scalars: the first occurrence setting a key wins, the rest are overridden.
    let mut scalars: BTreeMap<&str, Vec<(Value, Origin)>> = BTreeMap::new();
    for occurrence in &occurrences {
        let Some(params) = classified.get(&occurrence.profile.id) else {
            continue;
        };
        for (key, value) in &params.scalars {
            scalars
                .entry(key)
                .or_default()
                .push(((*value).clone(), occurrence.origin()));
        }
    }
    for (key, mut candidates) in scalars {
        if candidates.is_empty() {
            continue;
        }
        let (value, origin) = candidates.remove(0);
        effective.values.push(EffectiveValue {
            key: key.to_owned(),
            value,
            origin,
            overridden: candidates,
        });
    }

    // Lists: every instance is kept and renumbered per list prefix.
    let mut next_number: HashMap<&str, u32> = HashMap::new();
    for occurrence in &occurrences {
        let Some(params) = classified.get(&occurrence.profile.id) else {
            continue;
        };
        for ((prefix, original), fields) in &params.lists {
            let counter = next_number.entry(prefix).or_insert(0);
            let number = *counter;
            if number > MAX_INSTANCE {
                effective.warnings.push(format!(
                    "profile `{}` (id {}): instance {prefix}{original} dropped, more than {} entries in `{prefix}`",
                    occurrence.profile.name,
                    occurrence.profile.id,
                    MAX_INSTANCE + 1
                ));
                continue;
            }
            *counter += 1;
            for (field, value) in fields {
                let key = if field.is_empty() {
                    format!("{prefix}{number}")
                } else {
                    format!("{prefix}{number}.{field}")
                };
                effective.values.push(EffectiveValue {
                    key,
                    value: (*value).clone(),
                    origin: occurrence.origin(),
                    overridden: Vec::new(),
                });
            }
        }
    }
    effective.values.sort_by(|a, b| a.key.cmp(&b.key));

    // Same-object conflicts on scalar keys.
    for layer in layers {
        let mut local: Vec<&Profile> = Vec::new();
        for profile in &layer.profiles {
            if !local.iter().any(|p| p.id == profile.id) {
                local.push(profile);
            }
        }
        local.sort_by_key(|p| precedence(p.priority, 0, 0, p.id));
        let mut by_key: BTreeMap<&str, Vec<&Profile>> = BTreeMap::new();
        for profile in &local {
            let Some(params) = classified.get(&profile.id) else {
                continue;
            };
            for key in params.scalars.keys() {
                by_key.entry(key).or_default().push(profile);
            }
        }
        for (key, setters) in by_key {
            let Some((winner, losers)) = setters.split_first() else {
                continue;
            };
            for loser in losers {
                let rule = if winner.priority && !loser.priority {
                    RULE_PRIORITY
                } else {
                    RULE_HIGHEST_ID
                };
                effective.conflicts.push(Conflict {
                    key: key.to_owned(),
                    object: layer.object,
                    winner: winner.id,
                    loser: loser.id,
                    rule: rule.to_owned(),
                });
            }
        }
    }

    effective
}
