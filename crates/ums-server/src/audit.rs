//! The audit log: every administrator's change (who, when, what, from where) in the database.
//!
//! The admin API's table records each successful write call here (its method, the object it
//! names and the request with secrets redacted); other steps a server takes on an
//! administrator's behalf (the steps of an update) call [`record`] themselves. A failure to
//! record is logged and does not undo the change it describes.

use serde_json::Value;
use ums_db::Db;
use ums_db::audit::NewAuditEntry;

/// Keys whose values never reach the log.
const SECRET_KEYS: &[&str] = &["password", "secret", "token", "private_key"];

fn names_secret(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    SECRET_KEYS.iter().any(|s| lower.contains(s))
}

/// What was changed: the operation, the object, and the request (JSON, redacted).
#[derive(Debug, Clone, Default)]
pub struct What {
    pub action: String,
    pub target: String,
    pub detail: String,
    /// The request field the target was read from.
    target_key: Option<&'static str>,
}

impl What {
    /// A change described by an action and its target, without detail.
    pub fn new(action: impl Into<String>, target: impl Into<String>) -> Self {
        Self {
            action: action.into(),
            target: target.into(),
            detail: String::new(),
            target_key: None,
        }
    }

    /// A change described by an admin API call: the request's redacted JSON and the object it
    /// names (`profile 7`, `device 3`, `admin bob`), read from its fields.
    pub fn from_request(action: &str, request: &impl serde::Serialize) -> Self {
        let mut json = serde_json::to_value(request).unwrap_or(Value::Null);
        redact(&mut json);
        let (target, target_key) = target_of(action, &json);
        Self {
            action: action.to_owned(),
            target,
            detail: json.to_string(),
            target_key,
        }
    }
}

impl What {
    /// Names the object by the id in the call's answer when the request named it by no more
    /// than a display name (a created profile is `profile 7`, not `profile kiosk`; an
    /// administrator stays `admin alice`).
    pub fn with_answer(mut self, answer: &impl serde::Serialize) -> Self {
        if !matches!(self.target_key, None | Some("name")) {
            return self;
        }
        let json = serde_json::to_value(answer).unwrap_or(Value::Null);
        if let Some(id) = json.get("id").and_then(Value::as_i64).filter(|id| *id != 0) {
            let noun = noun_of(&self.action);
            self.target = if noun.is_empty() {
                id.to_string()
            } else {
                format!("{noun} {id}")
            };
        }
        self
    }
}

/// Records a change by `who` (an administrator's name; empty for the server's own step) from
/// `from` (the client's address). Never fails the caller: a database error is logged.
pub async fn record(db: &Db, who: &str, what: What, from: &str) {
    let entry = NewAuditEntry {
        admin: who.to_owned(),
        action: what.action,
        target: what.target,
        detail: what.detail,
        source: from.to_owned(),
    };
    if let Err(e) = db.insert_audit(&entry).await {
        tracing::error!(admin = %entry.admin, action = %entry.action, target = %entry.target, error = %e, "could not record the change in the audit log");
    }
}

/// Replaces the value of every key that names a secret, at any depth.
pub fn redact(v: &mut Value) {
    match v {
        Value::Object(map) => {
            // A settings parameter `{"key": "...password", "value": "..."}`.
            let secret_param = map
                .get("key")
                .and_then(Value::as_str)
                .is_some_and(names_secret);
            for (k, val) in map.iter_mut() {
                if names_secret(k) || (secret_param && k == "value") {
                    if !(val.is_null() || val.as_str() == Some("")) {
                        *val = Value::String("***".into());
                    }
                } else {
                    redact(val);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// The object a request names, from the action's noun and the request's id-like fields; and
/// the field it came from.
fn target_of(action: &str, json: &Value) -> (String, Option<&'static str>) {
    let noun = noun_of(action);
    let field = |k: &str| match json.get(k) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) if n.as_i64() != Some(0) => Some(n.to_string()),
        _ => None,
    };
    const KEYS: &[&str] = &[
        "id",
        "profile_id",
        "device_id",
        "folder_id",
        "username",
        "name",
        "path",
        "revision",
    ];
    let found = KEYS.iter().find_map(|k| field(k).map(|v| (*k, v)));
    let key = found.as_ref().map(|(k, _)| *k);
    let target = match (noun, found) {
        ("", Some((_, id))) => id,
        (noun, Some((_, id))) => format!("{noun} {id}"),
        (noun, None) => noun.to_owned(),
    };
    (target, key)
}

/// `UpdateProfileParams` → `profile`, `DeleteDevice` → `device`, `CreateAdmin` → `admin`.
fn noun_of(action: &str) -> &'static str {
    const NOUNS: &[(&str, &str)] = &[
        ("Profile", "profile"),
        ("Folder", "folder"),
        ("Device", "device"),
        ("Admin", "admin"),
        ("Directory", "directory"),
        ("File", "file"),
        ("Process", "process"),
        ("Token", "token"),
        ("Jobs", "jobs"),
        ("SharedWorkplace", "device"),
        ("User", "user assignment"),
        ("Assign", "assignment"),
        ("Release", "release"),
        ("Update", "schema"),
    ];
    NOUNS
        .iter()
        .find(|(k, _)| action.contains(k))
        .map(|(_, n)| *n)
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_at_any_depth() {
        let mut v = serde_json::json!({
            "username": "bob",
            "password": "hunter2",
            "spec": {"bind_password": "s3cret", "controllers": [{"token": "t"}]},
            "empty_secret": "",
            "set": [{"key": "display.monitors", "value": "2"}, {"key": "proxy.password", "value": "p4ss"}],
        });
        redact(&mut v);
        let text = v.to_string();
        for secret in ["hunter2", "s3cret", "\"t\"", "p4ss"] {
            assert!(!text.contains(secret), "{text}");
        }
        assert_eq!(v["username"], "bob");
        assert_eq!(v["password"], "***");
        assert_eq!(v["set"][0]["value"], "2", "other parameters stay readable");
        assert_eq!(
            v["empty_secret"], "",
            "an empty value shows that none was given"
        );
    }

    #[test]
    fn the_target_names_the_object() {
        let what = What::from_request(
            "UpdateProfileParams",
            &serde_json::json!({"id": 7, "set": {"a": "1"}}),
        );
        assert_eq!(what.target, "profile 7");
        let what = What::from_request(
            "CreateAdmin",
            &serde_json::json!({"username": "bob", "password": "x"}),
        );
        assert_eq!(what.target, "admin bob");
        assert!(!what.detail.contains("\"x\""), "{}", what.detail);
        assert_eq!(
            What::from_request("RotateToken", &serde_json::json!({})).target,
            "token"
        );
        let created = What::from_request("CreateProfile", &serde_json::json!({"name": "kiosk"}))
            .with_answer(&serde_json::json!({"id": 9, "name": "kiosk"}));
        assert_eq!(created.target, "profile 9");
        let admin = What::from_request("CreateAdmin", &serde_json::json!({"username": "bob"}))
            .with_answer(&serde_json::json!({"id": 2, "username": "bob"}));
        assert_eq!(admin.target, "admin bob");
    }
}
