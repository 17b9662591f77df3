//! Property tests for the Shared Workplace merge: a user's side of the chain on top of a
//! device's, checked against a direct statement of the order of effectiveness.

use std::collections::{BTreeMap, HashSet};

use proptest::prelude::*;
use ums_domain::{
    DirectoryGroup, Layer, ObjectKind, ObjectRef, Profile, Value, find_spec, list_instance, merge,
    merge_user, order_groups,
};

const KEYS: &[&str] = &[
    "audio.volume",
    "audio.mute",
    "display.monitors",
    "system.language",
    "network.proxy",
    "security.ssh",
    "sessions.rdp0.server",
    "sessions.rdp3.server",
];

fn value_for(key: &str, seed: u8) -> Value {
    match key {
        "audio.volume" => Value::Int(i64::from(seed % 101)),
        "display.monitors" => Value::Int(i64::from(seed % 8) + 1),
        "audio.mute" | "security.ssh" => Value::Bool(seed.is_multiple_of(2)),
        "system.language" => Value::String(["en", "de", "fr"][usize::from(seed) % 3].to_owned()),
        _ => Value::String(format!("v{}", seed % 5)),
    }
}

/// The kinds of the layers, strongest standard layer first.
const USER_KINDS: &[ObjectKind] = &[
    ObjectKind::User,
    ObjectKind::UserGroup,
    ObjectKind::UserGroup,
    ObjectKind::Ou,
    ObjectKind::Ou,
];
const DEVICE_KINDS: &[ObjectKind] = &[ObjectKind::Device, ObjectKind::Folder, ObjectKind::Folder];

#[derive(Debug, Clone)]
struct Scenario {
    profiles: Vec<Profile>,
    /// Profile indices per user-side layer, then per device-side layer.
    user: Vec<Vec<usize>>,
    device: Vec<Vec<usize>>,
}

fn arb_scenario() -> impl Strategy<Value = Scenario> {
    (
        prop::collection::vec(
            (
                prop::bool::weighted(0.3),
                prop::collection::btree_map(0..KEYS.len(), any::<u8>(), 0..4),
            ),
            1..8,
        ),
        prop::collection::btree_set(1i64..1000, 8),
    )
        .prop_flat_map(|(raw, ids)| {
            let profiles: Vec<Profile> = raw
                .into_iter()
                .zip(ids)
                .map(|((priority, params), id)| Profile {
                    id,
                    name: format!("p{id}"),
                    priority,
                    params: params
                        .into_iter()
                        .map(|(k, s)| (KEYS[k].to_owned(), value_for(KEYS[k], s)))
                        .collect(),
                })
                .collect();
            let n = profiles.len();
            let layer = move || prop::collection::vec(0..n, 0..3);
            (
                Just(profiles),
                prop::collection::vec(layer(), 0..=USER_KINDS.len()),
                prop::collection::vec(layer(), 1..=DEVICE_KINDS.len()),
            )
        })
        .prop_map(|(profiles, user, device)| {
            let dedup = |layers: Vec<Vec<usize>>| -> Vec<Vec<usize>> {
                layers
                    .into_iter()
                    .map(|l| {
                        let mut seen = HashSet::new();
                        l.into_iter().filter(|i| seen.insert(*i)).collect()
                    })
                    .collect()
            };
            Scenario {
                profiles,
                user: dedup(user),
                device: dedup(device),
            }
        })
}

fn layers<'a>(
    s: &'a Scenario,
    which: &[Vec<usize>],
    kinds: &[ObjectKind],
    base: i64,
) -> Vec<Layer<'a>> {
    which
        .iter()
        .enumerate()
        .map(|(i, l)| Layer {
            object: ObjectRef {
                kind: kinds[i],
                id: base + i as i64,
            },
            object_name: "obj",
            profiles: l.iter().map(|p| &s.profiles[*p]).collect(),
        })
        .collect()
}

/// The rank of a profile at a position of the whole chain: smaller is stronger.
///
/// Standard profiles: chain position, then highest id. Priority profiles beat every standard
/// one; user side before device side; further beats closer within a side; highest id.
type Rank = (u8, u8, i64, i64);

fn rank(priority: bool, user_side: bool, position: usize, id: i64) -> Rank {
    let position = position as i64;
    if priority {
        (0, u8::from(!user_side), -position, -id)
    } else {
        (1, 0, position, -id)
    }
}

/// The expected winner of each scalar key, computed straight from the rules.
fn expected(s: &Scenario) -> BTreeMap<String, (i64, Value)> {
    let mut best: BTreeMap<String, (Rank, i64, Value)> = BTreeMap::new();
    let mut seen = HashSet::new();
    let chain = s
        .user
        .iter()
        .map(|l| (true, l))
        .chain(s.device.iter().map(|l| (false, l)));
    let mut occurrences = Vec::new();
    for (position, (user_side, layer)) in chain.enumerate() {
        for p in layer {
            let profile = &s.profiles[*p];
            occurrences.push((
                rank(profile.priority, user_side, position, profile.id),
                user_side,
                profile,
            ));
        }
    }
    // A profile counts once, at its strongest occurrence.
    occurrences.sort_by_key(|o| o.0);
    for (r, user_side, profile) in occurrences {
        if !seen.insert(profile.id) {
            continue;
        }
        for (key, value) in &profile.params {
            if list_instance(key).is_some() {
                continue;
            }
            let device_only = find_spec(key).is_some_and(|s| s.device_only);
            if user_side && device_only {
                continue;
            }
            let better = best.get(key).is_none_or(|(b, _, _)| r < *b);
            if better {
                best.insert(key.clone(), (r, profile.id, value.clone()));
            }
        }
    }
    best.into_iter()
        .map(|(k, (_, id, v))| (k, (id, v)))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn scalars_follow_the_order_of_effectiveness(s in arb_scenario()) {
        let user = layers(&s, &s.user, USER_KINDS, 1);
        let device = layers(&s, &s.device, DEVICE_KINDS, 100);
        let out = merge_user(&user, &device);
        let got: BTreeMap<String, (i64, Value)> = out
            .values
            .iter()
            .filter(|v| list_instance(&v.key).is_none())
            .map(|v| (v.key.clone(), (v.origin.profile_id, v.value.clone())))
            .collect();
        prop_assert_eq!(got, expected(&s));
    }

    #[test]
    fn device_only_parameters_never_come_from_the_user_side(s in arb_scenario()) {
        let user = layers(&s, &s.user, USER_KINDS, 1);
        let device = layers(&s, &s.device, DEVICE_KINDS, 100);
        let out = merge_user(&user, &device);
        for v in &out.values {
            let device_only = find_spec(&v.key).is_some_and(|s| s.device_only);
            if device_only {
                prop_assert!(!v.origin.object.kind.is_user_side(), "{:?}", v);
                for (_, o) in &v.overridden {
                    prop_assert!(!o.object.kind.is_user_side(), "{:?}", v);
                }
            }
        }
        let user_has_device_only = s.user.iter().flatten().any(|p| {
            s.profiles[*p].params.keys().any(|k| find_spec(k).is_some_and(|s| s.device_only))
        });
        prop_assert_eq!(
            user_has_device_only,
            out.warnings.iter().any(|w| w.contains("device-only")),
        );
    }

    #[test]
    fn without_a_user_side_it_is_the_device_merge(s in arb_scenario()) {
        let device = layers(&s, &s.device, DEVICE_KINDS, 100);
        prop_assert_eq!(merge_user(&[], &device), merge(&device));
    }

    #[test]
    fn list_entries_coexist_and_are_numbered_from_zero(s in arb_scenario()) {
        let user = layers(&s, &s.user, USER_KINDS, 1);
        let device = layers(&s, &s.device, DEVICE_KINDS, 100);
        let out = merge_user(&user, &device);
        let mut distinct = HashSet::new();
        for l in s.user.iter().chain(&s.device) {
            for p in l {
                let profile = &s.profiles[*p];
                for k in profile.params.keys() {
                    if list_instance(k).is_some() {
                        distinct.insert((profile.id, k.clone()));
                    }
                }
            }
        }
        let lists: Vec<&str> = out
            .values
            .iter()
            .filter(|v| list_instance(&v.key).is_some())
            .map(|v| v.key.as_str())
            .collect();
        prop_assert_eq!(lists.len(), distinct.len());
        for (i, key) in lists.iter().enumerate() {
            prop_assert_eq!(*key, format!("sessions.rdp{i}.server"));
        }
    }

    #[test]
    fn groups_are_ordered_by_primary_level_and_name(
        raw in prop::collection::vec(("[a-dA-D]{1,3}", 1u32..4), 0..12),
        primary in prop::option::of(0usize..12),
    ) {
        let groups: Vec<DirectoryGroup> = raw
            .iter()
            .map(|(name, level)| DirectoryGroup {
                name: name.clone(),
                dn: format!("cn={name},dc=example,dc=org"),
                level: *level,
            })
            .collect();
        let primary = primary.and_then(|i| groups.get(i));
        let ordered = order_groups(primary, &groups);
        let dns: HashSet<String> = groups.iter().map(|g| g.dn.to_lowercase()).collect();
        prop_assert_eq!(ordered.len(), dns.len());
        let rest = match primary {
            Some(p) => {
                prop_assert_eq!(ordered[0], p);
                &ordered[1..]
            }
            None => &ordered[..],
        };
        for w in rest.windows(2) {
            let key = |g: &DirectoryGroup| (g.level, g.name.to_lowercase());
            prop_assert!(key(w[0]) <= key(w[1]), "{:?} before {:?}", w[0], w[1]);
        }
        // Each group at its closest level.
        for g in rest {
            let closest = groups
                .iter()
                .filter(|o| o.dn.eq_ignore_ascii_case(&g.dn))
                .map(|o| o.level)
                .min();
            prop_assert_eq!(Some(g.level), closest);
        }
    }
}
