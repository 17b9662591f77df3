//! `umsctl network check`: the health check of the whole network as a table, JSON, or a
//! self-contained HTML report.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use ums_proto::admin::v1 as pb;

use crate::client::{Admin, ok};
use crate::output::{table, time};

/// The sections of the report, in the order they are shown.
const SECTIONS: &[&str] = &[
    "messaging",
    "files",
    "device ports",
    "certificates",
    "more checks",
    "roles",
];

fn section_rank(s: &str) -> usize {
    SECTIONS
        .iter()
        .position(|x| *x == s)
        .unwrap_or(SECTIONS.len())
}

fn sorted(report: &pb::NetworkCheckReport) -> Vec<&pb::CheckResult> {
    let mut rows: Vec<&pb::CheckResult> = report.results.iter().collect();
    rows.sort_by_key(|r| section_rank(&r.section));
    rows
}

/// One line under the table: what failed and whether the report came from the cache.
pub fn summary(report: &pb::NetworkCheckReport) -> String {
    let verdict = if report.failed == 0 && report.warnings == 0 {
        "all checks passed".to_owned()
    } else {
        format!("{} failed, {} warnings", report.failed, report.warnings)
    };
    format!(
        "{verdict} (checked by {} at {} UTC{})",
        report.checked_by,
        time(report.checked_at_ms),
        if report.cached {
            ", cached: --fresh to check again"
        } else {
            ""
        }
    )
}

/// The report as a terminal table.
pub fn report_table(report: &pb::NetworkCheckReport) -> String {
    let mut t = table(["SECTION", "CHECKED", "STATUS", "RESULT", "CAUSE AND FIX"]);
    for r in sorted(report) {
        let advice = match (r.cause.is_empty(), r.fix.is_empty()) {
            (true, true) => String::new(),
            _ => format!("cause: {}\nfix: {}", r.cause, r.fix),
        };
        t.add_row([
            r.section.clone(),
            r.checked.clone(),
            r.status.to_uppercase(),
            r.result.clone(),
            advice,
        ]);
    }
    format!("{t}\n{}\n", summary(report))
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The report as one HTML page with its styles inline and no scripts: a summary, the messaging
/// round trips as a matrix, and every section's rows with cause and fix.
pub fn report_html(report: &pb::NetworkCheckReport) -> String {
    let mut h = String::with_capacity(32 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Network check {}</title><style>\
         body{{font-family:sans-serif;margin:2em;color:#222}}\
         table{{border-collapse:collapse;margin-bottom:2em}}\
         th,td{{border:1px solid #bbb;padding:4px 8px;text-align:left;vertical-align:top}}\
         th{{background:#eee}} .ok{{background:#dff0d8}} .failed{{background:#f2dede}}\
         .warning{{background:#fcf8e3}} .info{{background:#eef3fa}} .none{{color:#999}}\
         .summary{{font-size:1.2em;padding:.5em;border:2px solid #888;display:inline-block}}\
         </style></head><body>\n<h1>Network check</h1>\n",
        esc(&time(report.checked_at_ms))
    );
    let class = if report.failed > 0 {
        "failed"
    } else if report.warnings > 0 {
        "warning"
    } else {
        "ok"
    };
    let _ = writeln!(
        h,
        "<p class=\"summary {class}\" id=\"summary\">{}</p>",
        esc(&summary(report))
    );

    // The matrix of round trips between components.
    let pairs: Vec<&pb::CheckResult> = report
        .results
        .iter()
        .filter(|r| {
            r.section == "messaging" && !r.from.is_empty() && !r.checked.starts_with("event")
        })
        .collect();
    if !pairs.is_empty() {
        let from: BTreeSet<&str> = pairs.iter().map(|r| r.from.as_str()).collect();
        let to: BTreeSet<&str> = pairs.iter().map(|r| r.to.as_str()).collect();
        let cells: BTreeMap<(&str, &str), &pb::CheckResult> = pairs
            .iter()
            .map(|r| ((r.from.as_str(), r.to.as_str()), *r))
            .collect();
        h.push_str("<h2>Round trips (from row to column)</h2>\n<table id=\"matrix\"><tr><th></th>");
        for t in &to {
            let _ = write!(h, "<th>{}</th>", esc(t));
        }
        h.push_str("</tr>\n");
        for f in &from {
            let _ = write!(h, "<tr><th>{}</th>", esc(f));
            for t in &to {
                match cells.get(&(*f, *t)) {
                    Some(r) if r.status == "ok" => {
                        let _ = write!(
                            h,
                            "<td class=\"ok\">{:.1} ms</td>",
                            r.rtt_us as f64 / 1000.0
                        );
                    }
                    Some(r) => {
                        let _ = write!(
                            h,
                            "<td class=\"{}\">{}</td>",
                            esc(&r.status),
                            esc(&r.status)
                        );
                    }
                    None => h.push_str("<td class=\"none\">-</td>"),
                }
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</table>\n");
    }

    let rows = sorted(report);
    for section in SECTIONS {
        let in_section: Vec<&&pb::CheckResult> =
            rows.iter().filter(|r| r.section == *section).collect();
        if in_section.is_empty() {
            continue;
        }
        let _ = writeln!(h, "<h2>{}</h2>", esc(&capitalise(section)));
        h.push_str("<table><tr><th>Checked</th><th>Status</th><th>Result</th><th>Cause</th><th>Fix</th></tr>\n");
        for r in in_section {
            let _ = writeln!(
                h,
                "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&r.status),
                esc(&r.checked),
                esc(&r.status.to_uppercase()),
                esc(&r.result),
                esc(&r.cause),
                esc(&r.fix)
            );
        }
        h.push_str("</table>\n");
    }
    h.push_str("</body></html>\n");
    h
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Runs the check, shows it, writes the HTML report; fails when a check failed.
pub async fn run(
    json: bool,
    admin: &mut Admin,
    fresh: bool,
    html: Option<&Path>,
) -> anyhow::Result<()> {
    let spinner = crate::output::spinner("checking the network");
    let report = ok(admin.network_check(pb::NetworkCheckRequest { fresh }).await);
    spinner.finish_and_clear();
    let report = report?;
    if let Some(path) = html {
        std::fs::write(path, report_html(&report))
            .with_context(|| format!("write the HTML report to {}", path.display()))?;
    }
    super::show(json, &report, report_table)?;
    if report.failed > 0 {
        anyhow::bail!(
            "the network check found {} failed checks: see CAUSE AND FIX",
            report.failed
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> pb::NetworkCheckReport {
        pb::NetworkCheckReport {
            checked_at_ms: 1_767_225_600_000,
            checked_by: "server-a".into(),
            cached: false,
            results: vec![
                pb::CheckResult {
                    section: "more checks".into(),
                    checked: "clock of server c".into(),
                    status: "failed".into(),
                    result: "120 s ahead".into(),
                    cause: "no time <sync>".into(),
                    fix: "run chrony".into(),
                    ..Default::default()
                },
                pb::CheckResult {
                    section: "messaging".into(),
                    checked: "server a -> server b".into(),
                    status: "ok".into(),
                    result: "round trip 1.5 ms".into(),
                    from: "a".into(),
                    to: "b".into(),
                    rtt_us: 1500,
                    ..Default::default()
                },
            ],
            failed: 1,
            warnings: 0,
        }
    }

    #[test]
    fn the_table_shows_messaging_first_and_the_fix() {
        let t = report_table(&report());
        let messaging = t.find("server a -> server b").expect("messaging row");
        let clock = t.find("clock of server c").expect("clock row");
        assert!(messaging < clock, "{t}");
        assert!(t.contains("fix: run chrony"), "{t}");
        assert!(t.contains("1 failed, 0 warnings"), "{t}");
    }

    #[test]
    fn the_html_is_escaped_and_has_the_matrix() {
        let h = report_html(&report());
        assert!(h.contains("no time &lt;sync&gt;"), "escaped");
        assert!(!h.contains("<sync>"));
        assert!(h.contains("<table id=\"matrix\">"));
        assert!(h.contains("<td class=\"ok\">1.5 ms</td>"));
        assert!(!h.contains("<script"), "self-contained, no scripts");
    }
}
