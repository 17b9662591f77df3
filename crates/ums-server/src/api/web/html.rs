//! The console's HTML: escaping, and the few pieces every page is made of. Pages are built with
//! `write!` into a `String`; every value that did not come from this code goes through [`E`].

use std::fmt::{self, Write as _};

/// A value escaped for HTML text and double- or single-quoted attribute values.
pub struct E<'a>(pub &'a str);

impl fmt::Display for E<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..i])?;
            f.write_str(match rest.as_bytes()[i] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[i + 1..];
        }
        f.write_str(rest)
    }
}

/// A query-string component: everything but unreserved characters percent-encoded.
pub fn url_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A time in milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS UTC`; `-` for 0.
pub fn time(ms: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// How long ago `ms` was, seen at `now` (both ms since the epoch): `3 s ago`, `5 min ago`.
pub fn ago(ms: i64, now: i64) -> String {
    if ms <= 0 {
        return "never".into();
    }
    let s = (now - ms).max(0) / 1000;
    match s {
        0..120 => format!("{s} s ago"),
        120..7200 => format!("{} min ago", s / 60),
        7200..172_800 => format!("{} h ago", s / 3600),
        _ => format!("{} days ago", s / 86_400),
    }
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A status word as a coloured badge: ok/running/present green, warning/pending amber,
/// failed/stopped red, anything else grey.
pub fn badge(status: &str) -> String {
    let class = match status {
        "ok" | "running" | "present" | "done" | "online" | "normal" => "ok",
        "warning" | "pending" | "sent" | "update" | "stopping" => "warn",
        "failed" | "stopped" | "offline" | "expired" => "bad",
        _ => "info",
    };
    format!("<span class=\"badge {class}\">{}</span>", E(status))
}

/// The hidden field with the form's CSRF token.
pub fn csrf_field(token: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        E(token)
    )
}

/// A form of one button that POSTs `fields` (name, value) to `action`.
pub fn button_form(action: &str, csrf: &str, fields: &[(&str, &str)], label: &str) -> String {
    let mut out = format!(
        "<form method=\"post\" action=\"{}\" class=\"inline\">{}",
        E(action),
        csrf_field(csrf)
    );
    for (name, value) in fields {
        let _ = write!(
            out,
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            E(name),
            E(value)
        );
    }
    let _ = write!(out, "<button type=\"submit\">{}</button></form>", E(label));
    out
}

/// `<option>`s of `(value, label)`, the one equal to `selected` selected.
pub fn options(items: &[(String, String)], selected: &str) -> String {
    let mut out = String::new();
    for (value, label) in items {
        let sel = if value == selected { " selected" } else { "" };
        let _ = write!(
            out,
            "<option value=\"{}\"{sel}>{}</option>",
            E(value),
            E(label)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_that_could_open_markup() {
        assert_eq!(
            E("<script>alert('x')</script> & \"q\"").to_string(),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(E("plain text").to_string(), "plain text");
        assert_eq!(E("ünïcode ✓").to_string(), "ünïcode ✓");
        assert_eq!(E("").to_string(), "");
    }

    #[test]
    fn url_components_are_percent_encoded() {
        assert_eq!(url_component("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(url_component("alice.x-y_z~"), "alice.x-y_z~");
    }

    #[test]
    fn times_are_utc_dates() {
        assert_eq!(time(0), "-");
        assert_eq!(time(86_400_000), "1970-01-02 00:00:00 UTC");
        assert_eq!(time(1_700_000_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(time(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(ago(0, 5), "never");
        assert_eq!(ago(1_000, 4_000), "3 s ago");
        assert_eq!(ago(1, 600_001), "10 min ago");
    }

    #[test]
    fn forms_escape_their_values() {
        let f = button_form("/x", "t\"", &[("key", "a<b")], "Remove");
        assert!(f.contains("value=\"t&quot;\""), "{f}");
        assert!(f.contains("value=\"a&lt;b\""), "{f}");
        assert!(f.starts_with("<form method=\"post\" action=\"/x\""), "{f}");
    }
}
