//! Property tests for the settings merge.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use proptest::prelude::*;
use ums_domain::{Effective, Layer, ObjectKind, ObjectRef, Profile, Value, list_instance, merge};

/// Keys the generator draws from, with a value generator index.
const KEYS: &[&str] = &[
    "audio.volume",
    "audio.mute",
    "system.language",
    "display.monitors",
    "sessions.rdp0.server",
    "sessions.rdp0.port",
    "sessions.rdp1.server",
    "sessions.rdp7.server",
    "sessions.browser0.url",
    "sessions.browser2.kiosk",
];

fn value_for(key: &str, seed: u8) -> Value {
    match key {
        "audio.volume" => Value::Int(i64::from(seed % 101)),
        "display.monitors" => Value::Int(i64::from(seed % 8) + 1),
        "sessions.rdp0.port" => Value::Int(i64::from(seed) + 1),
        "audio.mute" | "sessions.browser2.kiosk" => Value::Bool(seed.is_multiple_of(2)),
        "system.language" => {
            let langs = ["en", "de", "fr", "es", "it", "nl"];
            Value::String(langs[usize::from(seed) % langs.len()].to_owned())
        }
        _ => Value::String(format!("v{}", seed % 4)),
    }
}

fn is_scalar(key: &str) -> bool {
    list_instance(key).is_none()
}

#[derive(Debug, Clone)]
struct Scenario {
    profiles: Vec<Profile>,
    /// Per layer: indices into `profiles`.
    layers: Vec<Vec<usize>>,
}

fn arb_profile() -> impl Strategy<Value = (bool, BTreeMap<usize, u8>)> {
    (
        prop::bool::weighted(0.25),
        prop::collection::btree_map(0..KEYS.len(), any::<u8>(), 0..5),
    )
}

fn arb_scenario() -> impl Strategy<Value = Scenario> {
    (
        prop::collection::vec(arb_profile(), 1..7),
        prop::collection::btree_set(1i64..500, 7),
    )
        .prop_flat_map(|(raw, ids)| {
            let ids: Vec<i64> = ids.into_iter().collect();
            let profiles: Vec<Profile> = raw
                .into_iter()
                .zip(ids)
                .map(|((priority, params), id)| Profile {
                    id,
                    name: format!("p{id}"),
                    priority,
                    params: params
                        .into_iter()
                        .map(|(k, seed)| (KEYS[k].to_owned(), value_for(KEYS[k], seed)))
                        .collect(),
                })
                .collect();
            let n = profiles.len();
            let layers = prop::collection::vec(prop::collection::vec(0..n, 0..4), 1..5);
            (Just(profiles), layers)
        })
        .prop_map(|(profiles, layers)| {
            // drop duplicate assignments within one layer
            let layers = layers
                .into_iter()
                .map(|l| {
                    let mut seen = HashSet::new();
                    l.into_iter().filter(|i| seen.insert(*i)).collect()
                })
                .collect();
            Scenario { profiles, layers }
        })
}

fn object_of(layer: usize) -> ObjectRef {
    if layer == 0 {
        ObjectRef {
            kind: ObjectKind::Device,
            id: 1,
        }
    } else {
        ObjectRef {
            kind: ObjectKind::Folder,
            id: 100 + layer as i64,
        }
    }
}

fn build<'a>(scenario: &'a Scenario, names: &'a [String]) -> Vec<Layer<'a>> {
    scenario
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| Layer {
            object: object_of(i),
            object_name: &names[i],
            profiles: l.iter().map(|p| &scenario.profiles[*p]).collect(),
        })
        .collect()
}

fn names(scenario: &Scenario) -> Vec<String> {
    (0..scenario.layers.len())
        .map(|i| format!("obj{i}"))
        .collect()
}

fn run(scenario: &Scenario) -> Effective {
    let names = names(scenario);
    merge(&build(scenario, &names))
}

fn layer_index(origin: &ums_domain::Origin) -> usize {
    match origin.object.kind {
        ObjectKind::Device => 0,
        _ => (origin.object.id - 100) as usize,
    }
}

/// Profiles reachable from the chain, by id.
fn assigned(scenario: &Scenario) -> BTreeMap<i64, &Profile> {
    scenario
        .layers
        .iter()
        .flatten()
        .map(|i| (scenario.profiles[*i].id, &scenario.profiles[*i]))
        .collect()
}

/// Whether `profile` sets the effective `key` to `value` (list keys match
/// any original instance with the same prefix and field).
fn profile_sets(profile: &Profile, key: &str, value: &Value) -> bool {
    match list_instance(key) {
        None => profile.params.get(key) == Some(value),
        Some((prefix, _, field)) => profile.params.iter().any(|(k, v)| {
            v == value && list_instance(k).is_some_and(|(p, _, f)| p == prefix && f == field)
        }),
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// (a) The order of profiles inside a layer's Vec does not matter.
    #[test]
    fn order_within_layer_is_irrelevant(scenario in arb_scenario(), rotate in 0usize..4) {
        let mut permuted = scenario.clone();
        for layer in &mut permuted.layers {
            layer.reverse();
            if !layer.is_empty() {
                let by = rotate % layer.len();
                layer.rotate_left(by);
            }
        }
        prop_assert_eq!(run(&scenario), run(&permuted));
    }

    /// (b) Every effective or overridden value comes from a profile that
    /// sets it, assigned to the object named in the origin.
    #[test]
    fn origins_are_truthful(scenario in arb_scenario()) {
        let effective = run(&scenario);
        let profiles = assigned(&scenario);
        for ev in &effective.values {
            for (value, origin) in std::iter::once((&ev.value, &ev.origin))
                .chain(ev.overridden.iter().map(|(v, o)| (v, o)))
            {
                let profile = profiles.get(&origin.profile_id);
                prop_assert!(profile.is_some(), "unknown origin {:?}", origin);
                let profile = profile.copied().expect("checked above");
                prop_assert!(profile_sets(profile, &ev.key, value), "{} {:?}", ev.key, origin);
                prop_assert_eq!(profile.priority, origin.priority);
                let layer = layer_index(origin);
                prop_assert!(scenario.layers[layer]
                    .iter()
                    .any(|i| scenario.profiles[*i].id == origin.profile_id));
            }
        }
        prop_assert!(effective.warnings.is_empty());
        let keys: Vec<&str> = effective.values.iter().map(|v| v.key.as_str()).collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        sorted.dedup();
        prop_assert_eq!(keys, sorted, "keys sorted and unique");
    }

    /// (c) If any priority profile sets a scalar key, a priority profile wins;
    /// and every scalar key set by some profile is present.
    #[test]
    fn priority_wins_scalars(scenario in arb_scenario()) {
        let effective = run(&scenario);
        let profiles = assigned(&scenario);
        let by_key: HashMap<&str, &ums_domain::EffectiveValue> =
            effective.values.iter().map(|v| (v.key.as_str(), v)).collect();
        for key in KEYS.iter().copied().filter(|k| is_scalar(k)) {
            let setters: Vec<&&Profile> =
                profiles.values().filter(|p| p.params.contains_key(key)).collect();
            match by_key.get(key) {
                None => prop_assert!(setters.is_empty()),
                Some(ev) => {
                    prop_assert_eq!(ev.overridden.len() + 1, setters.len());
                    if setters.iter().any(|p| p.priority) {
                        prop_assert!(ev.origin.priority, "{}: {:?}", key, ev.origin);
                    }
                }
            }
        }
    }

    /// (d) Adding a standard profile on a weaker layer never changes a scalar
    /// key already won on a stronger layer or by a priority profile.
    #[test]
    fn weaker_standard_profile_does_not_override(
        scenario in arb_scenario(),
        extra in prop::collection::btree_map(0..KEYS.len(), any::<u8>(), 1..6),
        at in 0usize..5,
    ) {
        let before = run(&scenario);
        let mut extended = scenario.clone();
        let at = at % extended.layers.len();
        extended.profiles.push(Profile {
            id: 1000,
            name: "extra".to_owned(),
            priority: false,
            params: extra
                .into_iter()
                .map(|(k, seed)| (KEYS[k].to_owned(), value_for(KEYS[k], seed)))
                .collect(),
        });
        let new_index = extended.profiles.len() - 1;
        extended.layers[at].push(new_index);
        let after = run(&extended);
        for ev in before.values.iter().filter(|v| is_scalar(&v.key)) {
            if ev.origin.priority || layer_index(&ev.origin) < at {
                let now = after.values.iter().find(|v| v.key == ev.key);
                prop_assert!(now.is_some());
                let now = now.expect("checked above");
                prop_assert_eq!(&now.value, &ev.value);
                prop_assert_eq!(&now.origin, &ev.origin);
            }
        }
        // list instances from stronger positions keep their number and content
        for ev in before
            .values
            .iter()
            .filter(|v| !is_scalar(&v.key))
            .filter(|v| v.origin.priority || layer_index(&v.origin) < at)
        {
            prop_assert!(after.values.contains(ev), "{:?}", ev);
        }
    }

    /// (e) The number of list instances in the output equals the number of
    /// distinct (profile, list, instance) triples in the input.
    #[test]
    fn list_instances_are_preserved(scenario in arb_scenario()) {
        let effective = run(&scenario);
        let input: BTreeSet<(i64, String, u32)> = assigned(&scenario)
            .values()
            .flat_map(|p| {
                p.params.keys().filter_map(move |k| {
                    list_instance(k).map(|(prefix, n, _)| (p.id, prefix.to_owned(), n))
                })
            })
            .collect();
        let output: BTreeSet<(String, u32)> = effective
            .values
            .iter()
            .filter_map(|v| list_instance(&v.key).map(|(prefix, n, _)| (prefix.to_owned(), n)))
            .collect();
        prop_assert_eq!(input.len(), output.len());
        // numbering per list is dense from zero
        let mut per_list: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for (prefix, n) in output {
            per_list.entry(prefix).or_default().push(n);
        }
        for numbers in per_list.values() {
            let expected: Vec<u32> = (0..numbers.len() as u32).collect();
            prop_assert_eq!(numbers, &expected);
        }
    }

    /// (f) A conflict is reported iff two different profiles on one layer set
    /// the same scalar key.
    #[test]
    fn conflicts_iff_same_layer_overlap(scenario in arb_scenario()) {
        let effective = run(&scenario);
        let mut expected = BTreeSet::new();
        for (i, layer) in scenario.layers.iter().enumerate() {
            for key in KEYS.iter().copied().filter(|k| is_scalar(k)) {
                let setters = layer
                    .iter()
                    .filter(|p| scenario.profiles[**p].params.contains_key(key))
                    .count();
                if setters >= 2 {
                    expected.insert((object_of(i), key.to_owned()));
                }
            }
        }
        let reported: BTreeSet<(ObjectRef, String)> = effective
            .conflicts
            .iter()
            .map(|c| (c.object, c.key.clone()))
            .collect();
        prop_assert_eq!(reported, expected);
        for c in &effective.conflicts {
            prop_assert_ne!(c.winner, c.loser);
        }
    }
}
