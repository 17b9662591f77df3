//! Calendar dates (UTC) as licences state them: `YYYY-MM-DD`, to and from milliseconds since
//! the epoch (the civil-from-days algorithm of H. Hinnant, no time zone data).

const DAY_MS: i64 = 86_400_000;

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `YYYY-MM-DD` of the UTC day a time (ms since the epoch) falls on.
pub fn format_date_ms(ms: i64) -> String {
    let (y, m, d) = civil_from_days(ms.div_euclid(DAY_MS));
    format!("{y:04}-{m:02}-{d:02}")
}

/// The start (00:00 UTC, ms since the epoch) of a `YYYY-MM-DD` date; `None` for anything else.
pub fn parse_date(s: &str) -> Option<i64> {
    let mut parts = s.trim().splitn(3, '-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let num = |p: &str| {
        p.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| p.parse::<i64>().ok())
            .flatten()
    };
    let (y, m, d) = (num(y)?, num(m)?, num(d)?);
    if !(1..=12).contains(&m) || d < 1 {
        return None;
    }
    let days = days_from_civil(y, m, d);
    // Refuses 2026-02-30 and the like: the day must come back as written.
    (civil_from_days(days) == (y, m, d)).then_some(days * DAY_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(format_date_ms(0), "1970-01-01");
        // 2024-02-29 12:00 UTC
        assert_eq!(format_date_ms(1_709_208_000_000), "2024-02-29");
        assert_eq!(parse_date("2024-02-29"), Some(1_709_164_800_000));
        for s in ["2026-12-31", "2000-03-01", "1999-12-31", "2100-02-28"] {
            let ms = parse_date(s).expect(s);
            assert_eq!(format_date_ms(ms), s);
            assert_eq!(format_date_ms(ms + DAY_MS - 1), s);
        }
    }

    #[test]
    fn bad_dates_are_refused() {
        for s in [
            "",
            "2026-02-30",
            "2026-13-01",
            "2026-1-01",
            "26-01-01",
            "2026-01-0x",
            "+026-01-01",
        ] {
            assert_eq!(parse_date(s), None, "{s}");
        }
    }
}
