//! HTML the console's pages are made of: escaping (everything a host sent
//! is text, never markup), the page layout and small shared pieces.

use std::fmt::Write;

use outlier_proto::{ScoredEvent, Verdict};

/// `s` as HTML text or attribute value. Control characters are shown
/// escaped (`\x1b`): a command line from a monitored host is data.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// `s` as one URL path segment or query value.
pub fn url(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of a time in ns since the epoch.
pub fn time(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let (y, m, d) = crate::schema::civil_from_days((secs / 86_400) as i64);
    let t = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        t / 3600,
        (t / 60) % 60,
        t % 60
    )
}

/// `HH:MM:SS.mmm` of a time in ns (for timelines within one day).
pub fn clock(ns: u64) -> String {
    let ms = (ns / 1_000_000) % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        (ms / 60_000) % 60,
        (ms / 1000) % 60,
        ms % 1000
    )
}

/// A verdict as a badge.
pub fn verdict(v: Verdict) -> String {
    let label = v.label();
    format!("<span class=\"badge {label}\">{label}</span>")
}

/// A whole page: the navigation of `org` (none before an org is chosen),
/// the signed-in identity with its sign-out button, and `body`.
pub struct Page<'a> {
    pub title: &'a str,
    pub org: Option<&'a str>,
    /// The identity's name; `None` without authentication.
    pub who: Option<&'a str>,
    /// The session's token against cross-site form posts.
    pub csrf: &'a str,
    /// Which navigation entry is current.
    pub current: &'a str,
}

impl Page<'_> {
    pub fn render(&self, body: &str) -> String {
        let mut nav = String::new();
        if let Some(org) = self.org {
            let o = url(org);
            for (key, href, label) in [
                ("overview", format!("/o/{o}"), "Overview"),
                ("incidents", format!("/o/{o}/incidents"), "Incidents"),
                ("search", format!("/o/{o}/search"), "Search"),
                ("baselines", format!("/o/{o}/baselines"), "Baselines"),
                (
                    "suppressions",
                    format!("/o/{o}/suppressions"),
                    "Suppressions",
                ),
                ("hosts", format!("/o/{o}/hosts"), "Fleet"),
            ] {
                let current = if key == self.current {
                    " aria-current=\"page\""
                } else {
                    ""
                };
                let _ = write!(nav, "<a href=\"{href}\"{current}>{label}</a>");
            }
            let _ = write!(
                nav,
                "<span class=\"org\" title=\"organisation\">{}</span>",
                esc(org)
            );
        }
        let account = match self.who {
            Some(who) => format!(
                "<form method=\"post\" action=\"/logout\" class=\"account\">\
                 <span>{}</span><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                 <button type=\"submit\">Sign out</button></form>",
                esc(who),
                esc(self.csrf)
            ),
            None => String::new(),
        };
        let live = match self.org {
            Some(org) => format!(" data-live=\"/o/{}/live\"", url(org)),
            None => String::new(),
        };
        format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{title} · Outlier</title>\
             <link rel=\"stylesheet\" href=\"/static/console.css\">\
             <script src=\"/static/console.js\" defer></script></head>\
             <body{live}><a class=\"skip\" href=\"#main\">Skip to content</a>\
             <header><a class=\"brand\" href=\"/\">Outlier</a><nav aria-label=\"main\">{nav}</nav>{account}</header>\
             <div id=\"live\" role=\"status\" aria-live=\"polite\"></div>\
             <main id=\"main\"><h1>{title}</h1>{body}</main></body></html>\n",
            title = esc(self.title),
        )
    }
}

/// What an event did, in one line (its command line, peer or path).
pub fn action(s: &ScoredEvent) -> String {
    s.event.as_ref().map(|e| e.action()).unwrap_or_default()
}

/// A table of events: time, host, workload, program, what it did,
/// verdict, score, tactic; each links to its page.
pub fn events_table(org: &str, events: &[ScoredEvent], highlight: &str) -> String {
    if events.is_empty() {
        return "<p class=\"empty\">No events.</p>".into();
    }
    let mut t = String::from(
        "<table class=\"events\"><thead><tr><th scope=\"col\">Time (UTC)</th><th scope=\"col\">Host</th>\
         <th scope=\"col\">Workload</th><th scope=\"col\">Program</th><th scope=\"col\">What</th>\
         <th scope=\"col\">Verdict</th><th scope=\"col\">Anomaly</th><th scope=\"col\">Tactic</th></tr></thead><tbody>",
    );
    for s in events {
        let e = s.event.clone().unwrap_or_default();
        let class = if e.event_id == highlight {
            " class=\"this\""
        } else if s.verdict() >= Verdict::Warn {
            " class=\"flagged\""
        } else {
            ""
        };
        let _ = write!(
            t,
            "<tr{class}><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"what\"><a href=\"/o/{}/events/{}\">{}</a></td><td>{}</td><td>{:.2}</td><td>{}</td></tr>",
            time(e.ts_ns),
            esc(&e.host),
            esc(&e.workload),
            esc(e.program_name()),
            url(org),
            url(&e.event_id),
            esc(&cut(&action(s), 160)),
            verdict(s.verdict()),
            s.anomaly_score,
            esc(&s.tactic),
        );
    }
    t.push_str("</tbody></table>");
    t
}

/// `s` shortened to `n` characters.
pub fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n.saturating_sub(1)).collect::<String>() + "…"
    }
}

/// Horizontal bars: one per `(label, value)`, as wide as its share of the
/// largest; `unit` follows each value.
pub fn bars(rows: &[(String, f64)], unit: &str, label: &str) -> String {
    let max = rows.iter().map(|r| r.1).fold(0.0f64, f64::max);
    if rows.is_empty() || max <= 0.0 {
        return "<p class=\"empty\">Nothing to show.</p>".into();
    }
    let mut out = format!("<ul class=\"bars\" aria-label=\"{}\">", esc(label));
    for (name, v) in rows {
        let pct = (v / max * 100.0).clamp(1.0, 100.0);
        let _ = write!(
            out,
            "<li><span class=\"label\">{}</span><span class=\"bar\" style=\"width:{pct:.1}%\"></span>\
             <span class=\"value\">{}{}</span></li>",
            esc(name),
            trim_number(*v),
            esc(unit)
        );
    }
    out.push_str("</ul>");
    out
}

fn trim_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_text_is_never_markup() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\"\x1b[2J"),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;\\x1b[2J"
        );
        assert_eq!(url("a b/c?d=é"), "a%20b%2Fc%3Fd%3D%C3%A9");
    }

    #[test]
    fn times_read_as_utc_dates() {
        // 2026-12-02 10:44:32.123 UTC.
        let ns = 1_796_208_272_123_000_000;
        assert_eq!(time(ns), "2026-12-02 10:44:32");
        assert_eq!(clock(ns), "10:44:32.123");
    }
}
