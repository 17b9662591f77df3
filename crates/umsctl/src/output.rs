//! Tables, timestamps and time parsing.

use std::collections::{BTreeMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};
use ums_proto::admin::v1::{
    Admin, Assignment, Device, ExplainSettingsResponse, Folder, JobInfo, Origin, ParameterInfo,
    Profile,
};

/// A spinner with `message` on standard error while a long call runs, on a terminal only
/// (hidden when standard error is not one).
pub fn spinner(message: &str) -> indicatif::ProgressBar {
    let bar =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    bar.set_message(message.to_owned());
    bar.enable_steady_tick(std::time::Duration::from_millis(100));
    bar
}

/// A bar of `total` bytes on standard error, on a terminal only.
pub fn byte_bar(total: u64, message: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message.to_owned());
    bar
}

/// A table with the given header.
pub fn table<const N: usize>(header: [&str; N]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header);
    if let Some(width) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse::<u16>().ok())
    {
        table.set_width(width);
    }
    table
}

/// Days since 1970-01-01 to a (year, month, day) civil date, proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A (year, month, day) civil date to days since 1970-01-01, proleptic Gregorian.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let month = i64::from(month);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Milliseconds since the epoch as UTC `YYYY-MM-DD HH:MM:SS`; 0 is shown as `-`.
pub fn time(ms: i64) -> String {
    if ms == 0 {
        return "-".to_owned();
    }
    let secs = ms.div_euclid(1000);
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Parses a point in time into milliseconds since the epoch.
///
/// Accepted forms: milliseconds since the epoch (`1767225600000`); relative to now, a `+`, a
/// number and a unit among `s`, `m`, `h`, `d` (`+10m`); RFC 3339 with a `Z` or `±HH:MM` offset and
/// optional fractional seconds (`2025-06-01T22:00:00Z`, `2025-06-01 22:00:00.5+02:00`).
pub fn parse_time(text: &str) -> Result<i64, String> {
    parse_time_at(text, now_ms())
}

fn parse_time_at(text: &str, now: i64) -> Result<i64, String> {
    let text = text.trim();
    let invalid =
        || format!("invalid time {text:?}: expected unix milliseconds, +N[s|m|h|d] or RFC 3339");
    if let Some(relative) = text.strip_prefix('+') {
        let split = relative
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(invalid)?;
        let (number, unit) = relative.split_at(split);
        let number: i64 = number.parse().map_err(|_| invalid())?;
        let unit_ms = match unit {
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(invalid()),
        };
        return number
            .checked_mul(unit_ms)
            .and_then(|d| now.checked_add(d))
            .ok_or_else(invalid);
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map_err(|_| invalid());
    }
    parse_rfc3339(text).ok_or_else(invalid)
}

fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let month = u32::try_from(month).ok().filter(|m| (1..=12).contains(m))?;
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let day = u32::try_from(day)
        .ok()
        .filter(|d| *d >= 1 && *d <= month_days[month as usize - 1])?;
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(fraction.len());
        if digits == 0 {
            return None;
        }
        let padded = format!("{:0<3}", &fraction[..digits.min(3)]);
        millis = padded.parse::<i64>().ok()?;
        rest = &fraction[digits..];
    }
    let offset_s = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let rb = rest.as_bytes();
            if rest.len() != 6 || rb[3] != b':' {
                return None;
            }
            let oh: i64 = rest[1..3].parse().ok().filter(|h| *h <= 23)?;
            let om: i64 = rest[4..6].parse().ok().filter(|m| *m <= 59)?;
            sign * (oh * 3600 + om * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_s;
    Some(secs * 1000 + millis)
}

fn opt(id: Option<i64>) -> String {
    id.map_or_else(|| "-".to_owned(), |id| id.to_string())
}

/// Devices as a table.
pub fn devices(devices: &[Device]) -> Table {
    let mut t = table([
        "ID",
        "UNIT ID",
        "NAME",
        "FIRMWARE",
        "STATE",
        "FOLDER",
        "LAST CONTACT (UTC)",
        "REV",
    ]);
    for d in devices {
        t.add_row([
            d.id.to_string(),
            d.unit_id.clone(),
            d.name.clone(),
            d.firmware.clone(),
            d.state.clone(),
            opt(d.folder_id),
            time(d.last_contact_ms),
            d.settings_revision.to_string(),
        ]);
    }
    t
}

/// One device as `field: value` lines.
pub fn device(d: &Device) -> String {
    let rows = [
        ("id", d.id.to_string()),
        ("unit id", d.unit_id.clone()),
        ("name", d.name.clone()),
        ("firmware", d.firmware.clone()),
        ("state", d.state.clone()),
        (
            "folder",
            d.folder_id
                .map_or_else(|| "(top level)".to_owned(), |id| id.to_string()),
        ),
        ("online", if d.online { "yes" } else { "no" }.to_owned()),
        ("last contact", time(d.last_contact_ms)),
        ("registered", time(d.registered_at_ms)),
        ("settings revision", d.settings_revision.to_string()),
        ("applied revision", applied(d)),
    ];
    fields(&rows)
}

/// The revision the device reported applying, against the one it should.
fn applied(d: &Device) -> String {
    match d.applied_revision {
        0 => "- (none reported yet)".to_owned(),
        r if r == d.settings_revision => format!("{r} (current)"),
        r => format!(
            "{r} (not yet {}: the device reports it at its next check-in after downloading)",
            d.settings_revision
        ),
    }
}

fn fields(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    rows.iter()
        .map(|(k, v)| format!("{:<width$} {v}\n", format!("{k}:")))
        .collect()
}

/// Folders as a tree: children below their parent, names indented by depth.
pub fn folders(folders: &[Folder]) -> Table {
    let ids: HashSet<i64> = folders.iter().map(|f| f.id).collect();
    let mut children: BTreeMap<Option<i64>, Vec<&Folder>> = BTreeMap::new();
    for f in folders {
        // A folder whose parent is missing from the list is shown at the top level.
        let parent = f.parent_id.filter(|p| ids.contains(p) && *p != f.id);
        children.entry(parent).or_default().push(f);
    }
    for list in children.values_mut() {
        list.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    }
    let mut t = table(["ID", "NAME", "PARENT"]);
    let mut shown = HashSet::new();
    let mut stack: Vec<(&Folder, usize)> = children
        .get(&None)
        .map(|roots| roots.iter().rev().map(|f| (*f, 0)).collect())
        .unwrap_or_default();
    loop {
        let Some((f, depth)) = stack.pop() else {
            // Folders in a parent cycle are never reached from the top: show them flat.
            match folders.iter().find(|f| !shown.contains(&f.id)) {
                Some(f) => stack.push((f, 0)),
                None => break,
            }
            continue;
        };
        if !shown.insert(f.id) {
            continue;
        }
        t.add_row([
            f.id.to_string(),
            format!("{}{}", "  ".repeat(depth), f.name),
            opt(f.parent_id),
        ]);
        if let Some(kids) = children.get(&Some(f.id)) {
            stack.extend(kids.iter().rev().map(|k| (*k, depth + 1)));
        }
    }
    t
}

/// Profiles as a table.
pub fn profiles(profiles: &[Profile]) -> Table {
    let mut t = table(["ID", "NAME", "PRIORITY", "DESCRIPTION"]);
    for p in profiles {
        t.add_row([
            p.id.to_string(),
            p.name.clone(),
            if p.priority { "yes" } else { "no" }.to_owned(),
            p.description.clone(),
        ]);
    }
    t
}

/// One profile: its fields, then its parameters as a table.
pub fn profile(p: &Profile) -> String {
    let mut out = fields(&[
        ("id", p.id.to_string()),
        ("name", p.name.clone()),
        ("priority", if p.priority { "yes" } else { "no" }.to_owned()),
        ("description", p.description.clone()),
    ]);
    if p.params.is_empty() {
        out.push_str("no parameters\n");
    } else {
        let mut params: Vec<_> = p.params.iter().collect();
        params.sort_by(|a, b| a.key.cmp(&b.key));
        let mut t = table(["KEY", "VALUE"]);
        for param in params {
            t.add_row([param.key.clone(), param.value.clone()]);
        }
        out.push_str(&format!("{t}\n"));
    }
    out
}

/// Known parameters as a table.
pub fn parameters(params: &[ParameterInfo]) -> Table {
    let mut t = table(["PATTERN", "TYPE", "CHOICES", "DESCRIPTION"]);
    for p in params {
        t.add_row([
            p.pattern.clone(),
            p.r#type.clone(),
            p.choices.join(", "),
            p.description.clone(),
        ]);
    }
    t
}

/// Assignments as a table.
pub fn assignments(assignments: &[Assignment]) -> Table {
    let mut t = table(["PROFILE", "TARGET"]);
    for a in assignments {
        let target = match (a.device_id, a.folder_id) {
            (Some(d), _) => format!("device {d}"),
            (None, Some(f)) => format!("folder {f}"),
            (None, None) => "-".to_owned(),
        };
        t.add_row([a.profile_id.to_string(), target]);
    }
    t
}

/// Jobs as a table.
pub fn jobs(jobs: &[JobInfo]) -> Table {
    let mut t = table([
        "ID",
        "DEVICE",
        "KIND",
        "STATE",
        "SCHEDULED (UTC)",
        "CREATED (UTC)",
        "FINISHED (UTC)",
        "RESULT",
    ]);
    for j in jobs {
        t.add_row([
            j.id.to_string(),
            j.device_id.to_string(),
            j.kind.clone(),
            j.state.clone(),
            time(j.scheduled_at_ms),
            time(j.created_at_ms),
            time(j.finished_at_ms),
            j.result.clone(),
        ]);
    }
    t
}

/// Administrators as a table.
pub fn admins(admins: &[Admin]) -> Table {
    let mut t = table(["ID", "USERNAME", "PERMISSIONS", "CREATED (UTC)"]);
    for a in admins {
        t.add_row([
            a.id.to_string(),
            a.username.clone(),
            a.permissions.join(", "),
            time(a.created_at_ms),
        ]);
    }
    t
}

/// Where a value comes from: `profile "name" (#id) on folder "x" (#id) [priority]`.
pub fn origin(o: &Origin) -> String {
    let target = match o.object_kind.as_str() {
        "device" => "device".to_owned(),
        kind if o.object_name.is_empty() => format!("{kind} #{}", o.object_id),
        kind => format!("{kind} \"{}\" (#{})", o.object_name, o.object_id),
    };
    let priority = if o.priority { " [priority]" } else { "" };
    format!(
        "profile \"{}\" (#{}) on {target}{priority}",
        o.profile_name, o.profile_id
    )
}

/// Effective settings with their origins, then the conflicts and warnings.
pub fn explain(e: &ExplainSettingsResponse) -> String {
    let mut out = format!(
        "device {} - settings revision {}\n",
        e.device_id, e.revision
    );
    if let Some(u) = &e.user {
        out.push_str(&format!(
            "user {} ({}) in directory {}
  groups: {}
  OUs: {}
",
            u.login,
            u.display_name,
            u.directory,
            if u.groups.is_empty() {
                "-".to_owned()
            } else {
                u.groups.join(", ")
            },
            if u.ous.is_empty() {
                "-".to_owned()
            } else {
                u.ous.join(", ")
            }
        ));
    }
    if e.values.is_empty() {
        out.push_str("no settings\n");
    } else {
        let mut t = table(["KEY", "VALUE", "FROM", "OVERRIDES"]);
        for v in &e.values {
            let from = v.origin.as_ref().map_or_else(|| "-".to_owned(), origin);
            let overrides = if v.overridden.is_empty() {
                "-".to_owned()
            } else {
                v.overridden
                    .iter()
                    .map(|o| match &o.origin {
                        Some(origin) => format!(
                            "\"{}\" from \"{}\" (#{})",
                            o.value, origin.profile_name, origin.profile_id
                        ),
                        None => format!("\"{}\"", o.value),
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            t.add_row([v.key.clone(), v.value.clone(), from, overrides]);
        }
        out.push_str(&format!("{t}\n"));
    }
    if !e.conflicts.is_empty() {
        out.push_str("\nconflicts:\n");
        for c in &e.conflicts {
            out.push_str(&format!(
                "  {}: profile #{} wins over profile #{} on {} #{} ({})\n",
                c.key, c.winner_profile_id, c.loser_profile_id, c.object_kind, c.object_id, c.rule
            ));
        }
    }
    if !e.warnings.is_empty() {
        out.push_str("\nwarnings:\n");
        for w in &e.warnings {
            out.push_str(&format!("  {w}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ums_proto::admin::v1::{Conflict, ExplainedValue, OverriddenValue};

    #[test]
    fn formats_times() {
        assert_eq!(time(0), "-");
        assert_eq!(time(1), "1970-01-01 00:00:00");
        assert_eq!(time(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(time(1_767_225_599_999), "2025-12-31 23:59:59");
        assert_eq!(time(-1000), "1969-12-31 23:59:59");
    }

    #[test]
    fn shows_whether_the_device_applies_its_settings() {
        let d = |applied_revision, online| Device {
            id: 7,
            settings_revision: 12,
            applied_revision,
            online,
            ..Device::default()
        };
        let field = |text: &str, key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}:")))
                .map(|v| v.trim().to_owned())
                .unwrap_or_else(|| panic!("no {key} in {text}"))
        };
        let text = device(&d(12, true));
        assert_eq!(field(&text, "online"), "yes");
        assert_eq!(field(&text, "applied revision"), "12 (current)");
        let text = device(&d(11, false));
        assert_eq!(field(&text, "online"), "no");
        assert!(field(&text, "applied revision").starts_with("11 (not yet 12"));
        let text = device(&d(0, false));
        assert_eq!(field(&text, "applied revision"), "- (none reported yet)");
    }

    #[test]
    fn civil_round_trip() {
        for days in (-800_000..800_000).step_by(97) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn parses_times() {
        let now = 1_000_000;
        assert_eq!(parse_time_at("1767225600000", now), Ok(1_767_225_600_000));
        assert_eq!(parse_time_at("+10m", now), Ok(now + 600_000));
        assert_eq!(parse_time_at("+2h", now), Ok(now + 7_200_000));
        assert_eq!(parse_time_at("+30s", now), Ok(now + 30_000));
        assert_eq!(parse_time_at("+1d", now), Ok(now + 86_400_000));
        assert_eq!(
            parse_time_at("2026-01-01T00:00:00Z", now),
            Ok(1_767_225_600_000)
        );
        assert_eq!(
            parse_time_at("2026-01-01T02:00:00.25+02:00", now),
            Ok(1_767_225_600_250)
        );
        assert_eq!(
            parse_time_at("2025-12-31 19:00:00-05:00", now),
            Ok(1_767_225_600_000)
        );
        for bad in [
            "",
            "+",
            "+10",
            "+10y",
            "+m",
            "soon",
            "2026-01-01",
            "2026-01-01T00:00:00",
            "2026-02-30T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:00+2:00",
            "2026-01-01T00:00:00.Z",
            "２026-01-01T00:00:00Z",
            "+99999999999999999d",
        ] {
            assert!(parse_time_at(bad, now).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn folder_tree_is_indented() {
        let f = |id, name: &str, parent| Folder {
            id,
            name: name.into(),
            parent_id: parent,
        };
        let text = folders(&[
            f(3, "child", Some(1)),
            f(1, "root", None),
            f(2, "another", None),
            f(4, "grandchild", Some(3)),
            f(5, "orphan", Some(99)),
            f(6, "cycle-a", Some(7)),
            f(7, "cycle-b", Some(6)),
        ])
        .to_string();
        let order: Vec<usize> = ["another", "orphan", "root", "  child", "    grandchild"]
            .iter()
            .map(|n| text.find(n).expect(n))
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert!(text.contains("cycle-a") && text.contains("cycle-b"));
    }

    #[test]
    fn explains_settings() {
        let mk = |id, name: &str, kind: &str, priority| Origin {
            profile_id: id,
            profile_name: name.into(),
            object_kind: kind.into(),
            object_id: 7,
            object_name: "lab".into(),
            priority,
        };
        let text = explain(&ExplainSettingsResponse {
            user: None,
            device_id: 42,
            revision: 3,
            values: vec![ExplainedValue {
                key: "net.ntp".into(),
                value: "pool".into(),
                r#type: "string".into(),
                origin: Some(mk(1, "base", "folder", true)),
                overridden: vec![OverriddenValue {
                    value: "old".into(),
                    origin: Some(mk(2, "legacy", "device", false)),
                }],
            }],
            conflicts: vec![Conflict {
                key: "net.ntp".into(),
                object_kind: "folder".into(),
                object_id: 7,
                winner_profile_id: 1,
                loser_profile_id: 2,
                rule: "lower id wins".into(),
            }],
            warnings: vec!["unknown key x".into()],
        });
        assert!(text.contains("profile \"base\" (#1) on folder \"lab\" (#7) [priority]"));
        assert!(text.contains("\"old\" from \"legacy\" (#2)"));
        assert!(text.contains("conflicts:"));
        assert!(text.contains("warnings:\n  unknown key x"));
        assert_eq!(
            origin(&mk(2, "legacy", "device", false)),
            "profile \"legacy\" (#2) on device"
        );
    }
}
