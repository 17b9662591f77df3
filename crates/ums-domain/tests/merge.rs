//! Scenario tests for the order of effectiveness.

use std::collections::BTreeMap;

use ums_domain::settings::{RULE_HIGHEST_ID, RULE_PRIORITY};
use ums_domain::{Effective, Layer, ObjectKind, ObjectRef, Profile, Value, merge};

fn profile(id: i64, priority: bool, params: &[(&str, Value)]) -> Profile {
    Profile {
        id,
        name: format!("p{id}"),
        priority,
        params: params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn s(text: &str) -> Value {
    Value::String(text.to_owned())
}

const DEVICE: ObjectRef = ObjectRef {
    kind: ObjectKind::Device,
    id: 1,
};

fn folder(id: i64) -> ObjectRef {
    ObjectRef {
        kind: ObjectKind::Folder,
        id,
    }
}

fn layer<'a>(object: ObjectRef, name: &'a str, profiles: &[&'a Profile]) -> Layer<'a> {
    Layer {
        object,
        object_name: name,
        profiles: profiles.to_vec(),
    }
}

fn get<'e>(effective: &'e Effective, key: &str) -> &'e ums_domain::EffectiveValue {
    effective
        .values
        .iter()
        .find(|v| v.key == key)
        .unwrap_or_else(|| panic!("missing key {key} in {:?}", effective.values))
}

fn keys(effective: &Effective) -> Vec<&str> {
    effective.values.iter().map(|v| v.key.as_str()).collect()
}

#[test]
fn device_beats_folder() {
    let on_device = profile(1, false, &[("audio.volume", Value::Int(10))]);
    let on_folder = profile(
        2,
        false,
        &[
            ("audio.volume", Value::Int(90)),
            ("audio.mute", Value::Bool(true)),
        ],
    );
    let effective = merge(&[
        layer(DEVICE, "tc-1", &[&on_device]),
        layer(folder(10), "lab", &[&on_folder]),
    ]);
    let volume = get(&effective, "audio.volume");
    assert_eq!(volume.value, Value::Int(10));
    assert_eq!(volume.origin.profile_id, 1);
    assert_eq!(volume.origin.object, DEVICE);
    assert_eq!(volume.origin.object_name, "tc-1");
    assert_eq!(volume.overridden.len(), 1);
    assert_eq!(volume.overridden[0].0, Value::Int(90));
    assert_eq!(volume.overridden[0].1.object, folder(10));
    assert_eq!(get(&effective, "audio.mute").value, Value::Bool(true));
    assert!(
        effective.conflicts.is_empty(),
        "different objects never conflict"
    );
    assert!(effective.warnings.is_empty());
    assert_eq!(keys(&effective), ["audio.mute", "audio.volume"]);
}

#[test]
fn folder_beats_parent_folder_even_with_lower_id() {
    let child = profile(3, false, &[("system.language", s("de"))]);
    let parent = profile(50, false, &[("system.language", s("fr"))]);
    let top = profile(99, false, &[("system.language", s("en"))]);
    let effective = merge(&[
        layer(DEVICE, "tc-1", &[]),
        layer(folder(10), "berlin", &[&child]),
        layer(folder(11), "germany", &[&parent]),
        layer(folder(12), "all", &[&top]),
    ]);
    let language = get(&effective, "system.language");
    assert_eq!(language.value, s("de"));
    let losers: Vec<i64> = language
        .overridden
        .iter()
        .map(|(_, o)| o.profile_id)
        .collect();
    assert_eq!(losers, [50, 99], "losers best first");
}

#[test]
fn same_object_highest_id_wins_and_conflict_is_reported() {
    let low = profile(
        4,
        false,
        &[
            ("audio.volume", Value::Int(20)),
            ("audio.mute", Value::Bool(false)),
        ],
    );
    let high = profile(7, false, &[("audio.volume", Value::Int(70))]);
    // Vec order must not matter
    for profiles in [[&low, &high], [&high, &low]] {
        let effective = merge(&[layer(DEVICE, "tc-1", &profiles)]);
        assert_eq!(get(&effective, "audio.volume").value, Value::Int(70));
        assert_eq!(get(&effective, "audio.mute").value, Value::Bool(false));
        assert_eq!(effective.conflicts.len(), 1);
        let conflict = &effective.conflicts[0];
        assert_eq!(conflict.key, "audio.volume");
        assert_eq!(conflict.object, DEVICE);
        assert_eq!((conflict.winner, conflict.loser), (7, 4));
        assert_eq!(conflict.rule, RULE_HIGHEST_ID);
    }
}

#[test]
fn conflict_between_priority_and_standard_on_one_object() {
    let standard = profile(9, false, &[("audio.volume", Value::Int(20))]);
    let priority = profile(2, true, &[("audio.volume", Value::Int(5))]);
    let effective = merge(&[layer(folder(10), "lab", &[&standard, &priority])]);
    assert_eq!(get(&effective, "audio.volume").value, Value::Int(5));
    assert_eq!(effective.conflicts.len(), 1);
    assert_eq!(effective.conflicts[0].winner, 2);
    assert_eq!(effective.conflicts[0].loser, 9);
    assert_eq!(effective.conflicts[0].rule, RULE_PRIORITY);
}

#[test]
fn priority_beats_standard_on_a_closer_object() {
    let on_device = profile(30, false, &[("display.monitors", Value::Int(2))]);
    let on_top = profile(1, true, &[("display.monitors", Value::Int(1))]);
    let effective = merge(&[
        layer(DEVICE, "tc-1", &[&on_device]),
        layer(folder(10), "lab", &[]),
        layer(folder(11), "root", &[&on_top]),
    ]);
    let monitors = get(&effective, "display.monitors");
    assert_eq!(monitors.value, Value::Int(1));
    assert!(monitors.origin.priority);
    assert_eq!(monitors.origin.object, folder(11));
    assert_eq!(monitors.overridden[0].1.profile_id, 30);
}

#[test]
fn priority_layer_order_is_inverted() {
    let device_prio = profile(100, true, &[("audio.volume", Value::Int(1))]);
    let folder_prio = profile(50, true, &[("audio.volume", Value::Int(2))]);
    let top_prio = profile(5, true, &[("audio.volume", Value::Int(3))]);
    let standard = profile(200, false, &[("audio.volume", Value::Int(4))]);
    let effective = merge(&[
        layer(DEVICE, "tc-1", &[&device_prio, &standard]),
        layer(folder(10), "lab", &[&folder_prio]),
        layer(folder(11), "root", &[&top_prio]),
    ]);
    let volume = get(&effective, "audio.volume");
    assert_eq!(
        volume.value,
        Value::Int(3),
        "top folder's priority profile wins"
    );
    let order: Vec<i64> = volume
        .overridden
        .iter()
        .map(|(_, o)| o.profile_id)
        .collect();
    assert_eq!(order, [50, 100, 200]);
    // the device carries a priority and a standard profile: reported as a conflict
    assert_eq!(effective.conflicts.len(), 1);
    assert_eq!(effective.conflicts[0].rule, RULE_PRIORITY);
}

#[test]
fn same_profile_on_two_layers_counts_once_at_its_strongest_occurrence() {
    let shared = profile(
        8,
        false,
        &[
            ("audio.volume", Value::Int(33)),
            ("sessions.rdp0.server", s("rds1")),
        ],
    );
    let other = profile(9, false, &[("audio.volume", Value::Int(66))]);
    let effective = merge(&[
        layer(DEVICE, "tc-1", &[&shared]),
        layer(folder(10), "lab", &[&shared, &other]),
    ]);
    let volume = get(&effective, "audio.volume");
    assert_eq!(volume.value, Value::Int(33));
    assert_eq!(volume.origin.object, DEVICE);
    assert_eq!(
        volume.overridden.len(),
        1,
        "the shared profile is not listed twice"
    );
    assert_eq!(keys(&effective), ["audio.volume", "sessions.rdp0.server"]);
    // on the folder, profiles 8 and 9 both set audio.volume: that is a conflict
    assert_eq!(effective.conflicts.len(), 1);
    assert_eq!(effective.conflicts[0].object, folder(10));
    assert_eq!(
        (effective.conflicts[0].winner, effective.conflicts[0].loser),
        (9, 8)
    );
}

#[test]
fn same_priority_profile_on_two_layers_uses_the_outermost() {
    let shared = profile(8, true, &[("audio.volume", Value::Int(33))]);
    let effective = merge(&[
        layer(DEVICE, "tc-1", &[&shared]),
        layer(folder(10), "lab", &[&shared]),
    ]);
    let volume = get(&effective, "audio.volume");
    assert_eq!(volume.origin.object, folder(10));
    assert!(volume.overridden.is_empty());
    assert!(effective.conflicts.is_empty());
}

#[test]
fn list_entries_coexist_and_are_renumbered() {
    let device_sessions = profile(
        1,
        false,
        &[
            ("sessions.rdp5.server", s("dev-b")),
            ("sessions.rdp5.port", Value::Int(3390)),
            ("sessions.rdp2.server", s("dev-a")),
        ],
    );
    let folder_sessions = profile(
        2,
        false,
        &[
            ("sessions.rdp0.server", s("folder-a")),
            ("sessions.rdp0.fullscreen", Value::Bool(true)),
            ("sessions.browser3.url", s("https://intranet")),
        ],
    );
    let top_priority = profile(3, true, &[("sessions.rdp7.server", s("prio"))]);
    let effective = merge(&[
        layer(DEVICE, "tc-1", &[&device_sessions]),
        layer(folder(10), "lab", &[&folder_sessions]),
        layer(folder(11), "root", &[&top_priority]),
    ]);
    let rendered: Vec<(String, String, i64)> = effective
        .values
        .iter()
        .map(|v| (v.key.clone(), v.value.to_string(), v.origin.profile_id))
        .collect();
    let expected: Vec<(String, String, i64)> = [
        ("sessions.browser0.url", "https://intranet", 2),
        ("sessions.rdp0.server", "prio", 3),
        ("sessions.rdp1.server", "dev-a", 1),
        ("sessions.rdp2.port", "3390", 1),
        ("sessions.rdp2.server", "dev-b", 1),
        ("sessions.rdp3.fullscreen", "true", 2),
        ("sessions.rdp3.server", "folder-a", 2),
    ]
    .iter()
    .map(|(k, v, p)| ((*k).to_owned(), (*v).to_owned(), *p))
    .collect();
    assert_eq!(rendered, expected);
    assert!(
        effective.conflicts.is_empty(),
        "list entries never conflict"
    );
    assert!(effective.values.iter().all(|v| v.overridden.is_empty()));
}

#[test]
fn list_entries_of_one_object_follow_profile_id_order() {
    let low = profile(1, false, &[("sessions.ica0.server", s("low"))]);
    let high = profile(2, false, &[("sessions.ica0.server", s("high"))]);
    let effective = merge(&[layer(DEVICE, "tc-1", &[&low, &high])]);
    assert_eq!(get(&effective, "sessions.ica0.server").value, s("high"));
    assert_eq!(get(&effective, "sessions.ica1.server").value, s("low"));
    assert!(effective.conflicts.is_empty());
}

#[test]
fn unknown_and_invalid_parameters_are_skipped_with_warnings() {
    let old = profile(
        1,
        false,
        &[
            ("legacy.removed_option", Value::Bool(true)),
            ("audio.volume", s("loud")),
            ("audio.mute", Value::Bool(true)),
            ("sessions.rdp01.server", s("bad-instance")),
        ],
    );
    let effective = merge(&[layer(DEVICE, "tc-1", &[&old])]);
    assert_eq!(keys(&effective), ["audio.mute"]);
    assert_eq!(effective.warnings.len(), 3, "{:?}", effective.warnings);
    assert!(
        effective
            .warnings
            .iter()
            .any(|w| w.contains("unknown settings parameter `legacy.removed_option`")),
        "{:?}",
        effective.warnings
    );
    assert!(
        effective
            .warnings
            .iter()
            .any(|w| w.contains("expected int, got string"))
    );
}

#[test]
fn empty_chain_gives_empty_result() {
    assert_eq!(merge(&[]), Effective::default());
    assert_eq!(merge(&[layer(DEVICE, "tc-1", &[])]), Effective::default());
}
