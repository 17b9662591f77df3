//! Domain model of the device-management suite: devices, folders, profiles,
//! the parameter catalog and the settings merge.
//!
//! This crate performs no I/O; everything here is pure computation on the
//! values passed in.

pub mod dates;
pub mod jobs;
pub mod params;
pub mod settings;
pub mod user_settings;
pub mod validate;

pub use dates::{format_date_ms, parse_date};
pub use jobs::{JobKind, JobState};
pub use params::{
    ParamSpec, ParamType, SettingsError, Value, catalog, find_spec, list_instance, parse_param,
    validate_value,
};
pub use settings::{
    Conflict, Effective, EffectiveValue, Layer, ObjectKind, ObjectRef, Origin, Profile, merge,
    merge_sides,
};
pub use user_settings::{
    DirectoryGroup, DirectoryOu, DirectoryUser, device_only_keys, merge_user, order_groups,
};
pub use validate::{ValidationError, folder_chain, normalize_unit_id, validate_name};

/// Id of a device (thin client).
pub type DeviceId = i64;
/// Id of a device folder.
pub type FolderId = i64;
/// Id of a settings profile.
pub type ProfileId = i64;
