//! The console's pages. Each reads through the service methods (or, for
//! the overview's counts, after the same org check), as the signed-in
//! identity.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::fmt::Write;
use std::time::Duration;

use axum::Form;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use futures::{Stream, StreamExt};
use outlier_proto::alert_stream_server::AlertStream;
use outlier_proto::event_query_server::EventQuery;
use outlier_proto::feedback_service_server::FeedbackService;
use outlier_proto::incident_service_server::IncidentService;
use outlier_proto::search_server::Search;
use outlier_proto::suppression_service_server::SuppressionService;
use outlier_proto::{
    Event, EventKind, FeedbackLabel, FeedbackScope, GetEventRequest, GetIncidentRequest, Incident,
    ListHostsRequest, ListIncidentsRequest, ListSuppressionsRequest, QueryEventsRequest,
    RevokeSuppressionRequest, ScoredEvent, SearchRequest, SortOrder, StreamAlertsRequest,
    StreamIncidentsRequest, SubmitFeedbackRequest, Verdict, event::Detail, search_request,
};
use serde::Deserialize;

use super::html::{self, Page, esc, url};
use super::{Console, PageError, Session};

const NS: u64 = 1_000_000_000;

pub(super) fn routes() -> Router<Console> {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/o/{org}", get(overview))
        .route("/o/{org}/incidents", get(incidents))
        .route("/o/{org}/incidents/{id}", get(incident))
        .route("/o/{org}/events/{id}", get(event))
        .route("/o/{org}/events/{id}/feedback", post(feedback))
        .route("/o/{org}/search", get(search))
        .route("/o/{org}/hosts", get(hosts))
        .route("/o/{org}/baselines", get(baselines))
        .route("/o/{org}/suppressions", get(suppressions))
        .route(
            "/o/{org}/suppressions/{id}/revoke",
            post(revoke_suppression),
        )
        .route("/o/{org}/live", get(live_alerts))
        .route("/o/{org}/live/incidents", get(live_incidents))
        .route("/static/console.css", get(css))
        .route("/static/console.js", get(js))
}

type PageResult = Result<Response, PageError>;

fn now_ns() -> u64 {
    outlier_common::now_ns()
}

fn page(s: &Session, org: Option<&str>, current: &str, title: &str, body: &str) -> Response {
    Html(
        Page {
            title,
            org,
            who: s.who.as_deref(),
            csrf: &s.csrf,
            current,
        }
        .render(body),
    )
    .into_response()
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("../../assets/console.css"),
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("../../assets/console.js"),
    )
        .into_response()
}

// ---------------------------------------------------------------- sign-in

async fn login_form(State(c): State<Console>) -> Response {
    if !c.auth_enabled() {
        return Redirect::to("/").into_response();
    }
    login_page(StatusCode::OK, "")
}

fn login_page(status: StatusCode, error: &str) -> Response {
    let error = if error.is_empty() {
        String::new()
    } else {
        format!("<p class=\"error\" role=\"alert\">{}</p>", esc(error))
    };
    let body = format!(
        "{error}<form method=\"post\" action=\"/login\" class=\"login\">\
         <label for=\"token\">Access token</label>\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required autofocus>\
         <button type=\"submit\">Sign in</button></form>\
         <p class=\"hint\">A token of the indexer's tokens file (<code>auth.tokens_file</code>): the same identity and orgs as for the gRPC services.</p>"
    );
    let html = Page {
        title: "Sign in",
        org: None,
        who: None,
        csrf: "",
        current: "",
    }
    .render(&body);
    (status, Html(html)).into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(c): State<Console>, Form(f): Form<LoginForm>) -> Response {
    if !c.auth_enabled() {
        return Redirect::to("/").into_response();
    }
    match c.sign_in(&f.token) {
        Some((sid, s)) => {
            tracing::info!(identity = s.who.as_deref().unwrap_or(""), "console sign-in");
            let mut r = Redirect::to("/").into_response();
            r.headers_mut()
                .insert(header::SET_COOKIE, c.cookie(&sid, c.ttl.as_secs()));
            r
        }
        None => {
            tracing::warn!("console sign-in with an unknown token");
            login_page(StatusCode::UNAUTHORIZED, "That token is not known.")
        }
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(c): State<Console>,
    s: Session,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> PageResult {
    s.check_csrf(&f.csrf)?;
    if let Some(sid) = super::session_id(&headers) {
        c.sign_out(&sid);
    }
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().insert(header::SET_COOKIE, c.cookie("", 0));
    Ok(r)
}

#[derive(Deserialize)]
struct OrgPick {
    org: Option<String>,
}

async fn home(s: Session, Query(q): Query<OrgPick>) -> Response {
    if let Some(org) = q.org.filter(|o| !o.is_empty()) {
        return Redirect::to(&format!("/o/{}", url(&org))).into_response();
    }
    match s.orgs.as_deref() {
        Some([only]) => Redirect::to(&format!("/o/{}", url(only))).into_response(),
        Some(orgs) => {
            let mut body = String::from("<ul class=\"orgs\">");
            for o in orgs {
                let _ = write!(body, "<li><a href=\"/o/{}\">{}</a></li>", url(o), esc(o));
            }
            body.push_str("</ul>");
            page(&s, None, "", "Organisations", &body)
        }
        None => page(
            &s,
            None,
            "",
            "Organisation",
            "<form method=\"get\" action=\"/\"><label for=\"org\">Organisation</label>\
             <input id=\"org\" name=\"org\" required><button type=\"submit\">Open</button></form>",
        ),
    }
}

// --------------------------------------------------------------- overview

async fn overview(State(c): State<Console>, s: Session, Path(org): Path<String>) -> PageResult {
    let since = now_ns().saturating_sub(24 * 3600 * NS);
    let check = s.request(());
    c.services.check_read(&check, &org)?;
    let list = IncidentService::list_incidents(
        &c.services,
        s.request(ListIncidentsRequest {
            org: org.clone(),
            since_ns: since,
            limit: 10,
            ..Default::default()
        }),
    );
    let silent = EventQuery::list_hosts(
        &c.services,
        s.request(ListHostsRequest {
            org: org.clone(),
            silent_for_s: 300,
        }),
    );
    let flagged = crate::query::flagged_by_hour(&c.services.ch, &org, since);
    let dead = crate::deadletters::by_reason(&c.services.ch, &org, since);
    let opened = crate::incidents::opened_by_hour(&c.services.ch, &org, since);
    let (list, silent, flagged, dead, opened) = tokio::join!(list, silent, flagged, dead, opened);
    let (list, silent, flagged) = (
        list?.into_inner().incidents,
        silent?.into_inner().hosts,
        flagged?,
    );
    let dead = dead.map_err(crate::query::QueryError::from)?;
    let opened = opened.map_err(crate::query::QueryError::from)?;
    let dead_total: u64 = dead.iter().map(|d| d.n).sum();

    let mut by_hour: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    let mut by_workload: HashMap<&str, u64> = HashMap::new();
    let mut by_host: HashMap<&str, u64> = HashMap::new();
    for r in &flagged {
        let h = by_hour.entry(r.hour).or_default();
        h.0 += r.flagged;
        h.1 += r.alerts;
        *by_workload.entry(&r.workload).or_default() += r.flagged;
        *by_host.entry(&r.host).or_default() += r.flagged;
    }
    let total: u64 = by_hour.values().map(|v| v.0).sum();
    let alerts: u64 = by_hour.values().map(|v| v.1).sum();
    let hours: Vec<(String, f64)> = by_hour
        .iter()
        .map(|(h, v)| {
            (
                html::time(u64::from(*h) * NS)[11..16].to_string(),
                v.0 as f64,
            )
        })
        .collect();
    let top = |m: HashMap<&str, u64>| {
        let mut v: Vec<(String, f64)> = m
            .into_iter()
            .map(|(k, n)| (k.to_string(), n as f64))
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(10);
        v
    };
    let mut body = format!(
        "<section class=\"figures\" aria-label=\"last 24 hours\">\
         <div><span class=\"figure\">{total}</span> flagged events</div>\
         <div><span class=\"figure\">{alerts}</span> alerts</div>\
         <div><span class=\"figure\">{}</span> incidents (latest {})</div>\
         <div><span class=\"figure\">{}</span> silent hosts</div>\
         <div><span class=\"figure\">{dead_total}</span> dead letters</div></section>",
        list.len(),
        10,
        silent.len()
    );
    let _ = write!(
        body,
        "<div class=\"columns\"><section><h2>Flagged per hour (UTC), last 24 hours</h2>{}</section>\
         <section><h2>By workload</h2>{}</section><section><h2>Busiest hosts</h2>{}</section></div>",
        html::bars(&hours, "", "flagged events per hour"),
        html::bars(&top(by_workload), "", "flagged events per workload"),
        html::bars(&top(by_host), "", "flagged events per host"),
    );
    body.push_str(&per_workload_hours(&flagged, &opened));
    let _ = write!(
        body,
        "<section><h2>Latest incidents</h2>{}<p><a href=\"/o/{}/incidents\">All incidents</a></p></section>",
        incidents_table(&org, &list),
        url(&org)
    );
    if !dead.is_empty() {
        body.push_str(
            "<section><h2>Dead letters, last 24 hours</h2><p class=\"hint\">Records that can never \
             be processed, set aside on the dead-letter topic with the reason (docs/reliability.md).</p>\
             <table class=\"dead\"><thead><tr><th scope=\"col\">Reason</th><th scope=\"col\">Records</th>\
             <th scope=\"col\">Latest (UTC)</th></tr></thead><tbody>",
        );
        for d in &dead {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&d.kind),
                d.n,
                html::time(d.last_ns)
            );
        }
        body.push_str("</tbody></table></section>");
    }
    if !silent.is_empty() {
        body.push_str("<section><h2>Silent hosts</h2>");
        body.push_str(&hosts_table(&silent));
        body.push_str("</section>");
    }
    Ok(page(&s, Some(&org), "overview", "Overview", &body))
}

/// Flagged events and incidents opened per hour (newest first) for the
/// busiest workloads (at most 8), as a table: `flagged / incidents`.
fn per_workload_hours(
    flagged: &[crate::query::FlaggedRow],
    opened: &[crate::incidents::OpenedRow],
) -> String {
    let mut cells: BTreeMap<(u32, &str), (u64, u64)> = BTreeMap::new();
    let mut totals: HashMap<&str, u64> = HashMap::new();
    for r in flagged {
        cells.entry((r.hour, &r.workload)).or_default().0 += r.flagged;
        *totals.entry(&r.workload).or_default() += r.flagged;
    }
    for r in opened {
        cells.entry((r.hour, &r.workload)).or_default().1 += r.n;
        *totals.entry(&r.workload).or_default() += r.n;
    }
    if cells.is_empty() {
        return String::new();
    }
    let mut workloads: Vec<(&str, u64)> = totals.into_iter().collect();
    workloads.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    workloads.truncate(8);
    let mut hours: Vec<u32> = cells.keys().map(|k| k.0).collect();
    hours.sort_unstable_by(|a, b| b.cmp(a));
    hours.dedup();
    let mut t = String::from(
        "<section><h2>Per workload and hour (UTC): flagged events / incidents opened</h2>\
         <table class=\"grid\"><thead><tr><th scope=\"col\">Hour</th>",
    );
    for (w, _) in &workloads {
        let _ = write!(t, "<th scope=\"col\">{}</th>", esc(w));
    }
    t.push_str("</tr></thead><tbody>");
    for h in hours {
        let _ = write!(
            t,
            "<tr><th scope=\"row\">{}</th>",
            &html::time(u64::from(h) * NS)[..16]
        );
        for (w, _) in &workloads {
            match cells.get(&(h, *w)) {
                Some((f, i)) => {
                    let _ = write!(t, "<td>{f} / {i}</td>");
                }
                None => t.push_str("<td></td>"),
            }
        }
        t.push_str("</tr>");
    }
    t.push_str("</tbody></table></section>");
    t
}

fn incidents_table(org: &str, list: &[Incident]) -> String {
    if list.is_empty() {
        return "<p class=\"empty\">No incidents.</p>".into();
    }
    let mut t = String::from(
        "<table class=\"incidents\"><thead><tr><th scope=\"col\">Last event (UTC)</th><th scope=\"col\">Host</th>\
         <th scope=\"col\">Workloads</th><th scope=\"col\">What happened</th><th scope=\"col\">Verdict</th>\
         <th scope=\"col\">Events</th><th scope=\"col\">Tactics</th></tr></thead><tbody>",
    );
    for i in list {
        let _ = write!(
            t,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><a href=\"/o/{}/incidents/{}\">{}</a></td>\
             <td>{}</td><td>{} ({} alerts)</td><td>{}</td></tr>",
            html::time(i.last_ns),
            esc(&i.host),
            esc(&i.workloads.join(", ")),
            url(org),
            url(&i.incident_id),
            esc(&html::cut(&i.summary, 140)),
            html::verdict(i.verdict()),
            i.event_count,
            i.alert_count,
            esc(&i.tactics.join(", ")),
        );
    }
    t.push_str("</tbody></table>");
    t
}

// -------------------------------------------------------------- incidents

#[derive(Deserialize, Default)]
struct IncidentFilter {
    #[serde(default)]
    host: String,
    #[serde(default)]
    workload: String,
    #[serde(default)]
    tactic: String,
    /// "warn" (default) or "alert".
    #[serde(default)]
    verdict: String,
    /// Hours back (default 24).
    #[serde(default)]
    hours: Option<u64>,
    /// Paging: before this incident's last event.
    #[serde(default)]
    before: Option<u64>,
}

const PAGE: u32 = 50;

async fn incidents(
    State(c): State<Console>,
    s: Session,
    Path(org): Path<String>,
    Query(f): Query<IncidentFilter>,
) -> PageResult {
    let hours = f.hours.unwrap_or(24).clamp(1, 24 * 90);
    let one = |v: &str| {
        if v.is_empty() {
            Vec::new()
        } else {
            vec![v.to_string()]
        }
    };
    let min_verdict = if f.verdict == "alert" {
        Verdict::Alert
    } else {
        Verdict::Warn
    };
    let list = IncidentService::list_incidents(
        &c.services,
        s.request(ListIncidentsRequest {
            org: org.clone(),
            since_ns: now_ns().saturating_sub(hours * 3600 * NS),
            hosts: one(&f.host),
            workloads: one(&f.workload),
            tactics: one(&f.tactic),
            min_verdict: min_verdict as i32,
            before_last_ns: f.before.unwrap_or(0),
            limit: PAGE,
            ..Default::default()
        }),
    )
    .await?
    .into_inner()
    .incidents;
    let mut body =
        String::from("<form method=\"get\" class=\"filters\" aria-label=\"filter incidents\">");
    for (name, label, value) in [
        ("host", "Host", &f.host),
        ("workload", "Workload", &f.workload),
    ] {
        let _ = write!(
            body,
            "<label>{label} <input name=\"{name}\" value=\"{}\"></label>",
            esc(value)
        );
    }
    body.push_str("<label>Tactic <select name=\"tactic\"><option value=\"\">any</option>");
    for t in outlier_classifier::CLASSES.iter().skip(1) {
        let sel = if *t == f.tactic { " selected" } else { "" };
        let _ = write!(body, "<option{sel}>{t}</option>");
    }
    body.push_str("</select></label><label>Verdict <select name=\"verdict\">");
    for (v, label) in [("warn", "warn or alert"), ("alert", "alert")] {
        let sel = if v == f.verdict { " selected" } else { "" };
        let _ = write!(body, "<option value=\"{v}\"{sel}>{label}</option>");
    }
    body.push_str("</select></label><label>Since <select name=\"hours\">");
    for (h, label) in [
        (1, "1 hour"),
        (24, "24 hours"),
        (168, "7 days"),
        (720, "30 days"),
    ] {
        let sel = if h == hours { " selected" } else { "" };
        let _ = write!(body, "<option value=\"{h}\"{sel}>{label}</option>");
    }
    body.push_str("</select></label><button type=\"submit\">Filter</button></form>");
    body.push_str(&incidents_table(&org, &list));
    if list.len() == PAGE as usize
        && let Some(last) = list.last()
    {
        let _ = write!(
            body,
            "<p><a rel=\"next\" href=\"/o/{}/incidents?host={}&amp;workload={}&amp;tactic={}&amp;verdict={}&amp;hours={hours}&amp;before={}\">Older incidents</a></p>",
            url(&org),
            url(&f.host),
            url(&f.workload),
            url(&f.tactic),
            url(&f.verdict),
            last.last_ns
        );
    }
    Ok(page(&s, Some(&org), "incidents", "Incidents", &body))
}

async fn incident(
    State(c): State<Console>,
    s: Session,
    Path((org, id)): Path<(String, String)>,
) -> PageResult {
    let r = IncidentService::get_incident(
        &c.services,
        s.request(GetIncidentRequest {
            org: org.clone(),
            incident_id: id,
        }),
    )
    .await?
    .into_inner();
    let i = r.incident.unwrap_or_default();
    let mut body = format!(
        "<p class=\"summary\">{}</p><dl class=\"facts\">\
         <dt>Host</dt><dd>{}</dd><dt>Workloads</dt><dd>{}</dd>\
         <dt>From</dt><dd>{} to {} UTC</dd><dt>Verdict</dt><dd>{}</dd>\
         <dt>Events</dt><dd>{} ({} alerts)</dd><dt>Tactics</dt><dd>{}</dd>\
         <dt>Techniques</dt><dd>{}</dd><dt>First process</dt><dd>{} (pid {})</dd></dl>",
        esc(&i.summary),
        esc(&i.host),
        esc(&i.workloads.join(", ")),
        html::time(i.first_ns),
        html::time(i.last_ns),
        html::verdict(i.verdict()),
        i.event_count,
        i.alert_count,
        esc(&i.tactics.join(", ")),
        esc(&i.techniques.join(", ")),
        esc(&i.root_program),
        i.root_pid,
    );
    if let Some(first) = r.events.first().and_then(|e| e.event.as_ref()) {
        let _ = write!(
            body,
            "<p><a href=\"/o/{}/events/{}\">The first event, its process tree and its reasons</a></p>",
            url(&org),
            url(&first.event_id)
        );
    }
    body.push_str("<h2>Its events</h2>");
    body.push_str(&html::events_table(&org, &r.events, ""));
    Ok(page(&s, Some(&org), "incidents", "Incident", &body))
}

// ------------------------------------------------------------------ event

/// Minutes of a host's exec events read around an event to draw its
/// process tree.
const TREE_WINDOW_NS: u64 = 30 * 60 * NS;

#[derive(Deserialize, Default)]
struct Done {
    #[serde(default)]
    done: String,
}

async fn event(
    State(c): State<Console>,
    s: Session,
    Path((org, id)): Path<(String, String)>,
    Query(done): Query<Done>,
) -> PageResult {
    let scored = EventQuery::get_event(
        &c.services,
        s.request(GetEventRequest {
            org: org.clone(),
            event_id: id.clone(),
        }),
    )
    .await?
    .into_inner()
    .event
    .unwrap_or_default();
    let e = scored.event.clone().unwrap_or_default();
    let query = |since: u64, until: u64, kinds: Vec<i32>, order: SortOrder, n: u32| {
        EventQuery::query_events(
            &c.services,
            s.request(QueryEventsRequest {
                org: org.clone(),
                since_ns: since,
                until_ns: until,
                hosts: vec![e.host.clone()],
                kinds,
                page_size: n,
                order: order as i32,
                ..Default::default()
            }),
        )
    };
    let execs = query(
        e.ts_ns.saturating_sub(TREE_WINDOW_NS),
        e.ts_ns + TREE_WINDOW_NS,
        vec![EventKind::Exec as i32],
        SortOrder::OldestFirst,
        1000,
    );
    let before = query(
        e.ts_ns.saturating_sub(TREE_WINDOW_NS),
        e.ts_ns,
        Vec::new(),
        SortOrder::NewestFirst,
        12,
    );
    let after = query(
        e.ts_ns,
        e.ts_ns + TREE_WINDOW_NS,
        Vec::new(),
        SortOrder::OldestFirst,
        13,
    );
    let nearest = Search::search(
        &c.services,
        s.request(SearchRequest {
            org: org.clone(),
            query: Some(search_request::Query::Example(e.clone())),
            workloads: vec![e.workload.clone()],
            limit: 6,
            ..Default::default()
        }),
    );
    let (execs, before, after, nearest) = tokio::join!(execs, before, after, nearest);
    let execs = execs?.into_inner().events;
    let mut timeline = before?.into_inner().events;
    timeline.reverse();
    timeline.extend(after?.into_inner().events);
    // Look-alikes are context: the page stands without them.
    let nearest = nearest.map(|r| r.into_inner().hits).unwrap_or_default();
    let keys: Vec<u64> = nearest
        .iter()
        .filter_map(|h| h.event.as_ref().map(|s| s.behaviour_key))
        .collect();
    let counts = crate::query::behaviour_counts(
        &c.services.ch,
        &org,
        &e.workload,
        &keys,
        now_ns().saturating_sub(24 * 3600 * NS),
    )
    .await
    .unwrap_or_default();

    let mut body = String::new();
    if !done.done.is_empty() {
        let _ = write!(
            body,
            "<p class=\"notice\" role=\"status\">{}</p>",
            esc(&done.done)
        );
    }
    let _ = write!(
        body,
        "<p class=\"summary\">{} <code>{}</code></p>",
        html::verdict(scored.verdict()),
        esc(&html::action(&scored))
    );
    let mut facts = vec![
        ("Time", format!("{} UTC", html::time(e.ts_ns))),
        ("Host", esc(&e.host)),
        ("Workload", esc(&e.workload)),
        (
            "Process",
            format!(
                "{} (pid {}, parent {} pid {}, uid {})",
                esc(e.program_name()),
                e.pid,
                esc(&e.parent_comm),
                e.ppid,
                e.uid
            ),
        ),
        ("Executable", esc(&e.exe)),
        (
            "Anomaly",
            format!(
                "{:.2} (distance {:.3} to the nearest of {} known behaviours)",
                scored.anomaly_score, scored.nearest_distance, scored.baseline_size
            ),
        ),
        (
            "Classifier",
            format!(
                "{} ({:.0}% confident)",
                esc(&scored.threat_category),
                scored.confidence * 100.0
            ),
        ),
        (
            "ATT&amp;CK",
            format!("{} {}", esc(&scored.tactic), esc(&scored.technique)),
        ),
    ];
    if let Some(Detail::Exec(x)) = &e.detail
        && !x.cwd.is_empty()
    {
        facts.push(("Working directory", esc(&x.cwd)));
    }
    if !scored.suppressed_by.is_empty() {
        facts.push(("Suppressed by", esc(&scored.suppressed_by)));
    }
    if !scored.signature_id.is_empty() {
        facts.push(("Fleet signature", esc(&scored.signature_id)));
    }
    body.push_str("<dl class=\"facts\">");
    for (k, v) in facts {
        let _ = write!(body, "<dt>{k}</dt><dd>{v}</dd>");
    }
    body.push_str("</dl>");

    body.push_str("<div class=\"columns\"><section><h2>Why</h2>");
    let mut reasons: Vec<(String, f64)> = scored
        .contributions
        .iter()
        .filter(|c| c.shap > 0.0)
        .map(|c| (c.sentence.clone(), c.shap))
        .collect();
    reasons.sort_by(|a, b| b.1.total_cmp(&a.1));
    if reasons.is_empty() {
        let _ = write!(body, "<p>{}</p>", esc(&scored.explanation));
    } else {
        body.push_str(&html::bars(&reasons, "", "the classifier's contributions"));
    }
    body.push_str("</section><section><h2>Process tree</h2>");
    body.push_str(&process_tree(&org, &e, &execs));
    body.push_str("</section></div>");

    body.push_str("<section><h2>Nearest known behaviours of the workload</h2>");
    if nearest.is_empty() {
        body.push_str("<p class=\"empty\">None found.</p>");
    } else {
        body.push_str(
            "<table><thead><tr><th scope=\"col\">Similarity</th><th scope=\"col\">Behaviour</th>\
             <th scope=\"col\">Events, last 24 h</th></tr></thead><tbody>",
        );
        for h in &nearest {
            let Some(hs) = &h.event else { continue };
            let he = hs.event.clone().unwrap_or_default();
            let this = if hs.behaviour_key == scored.behaviour_key {
                " <span class=\"hint\">(this behaviour)</span>"
            } else {
                ""
            };
            let _ = write!(
                body,
                "<tr><td>{:.3}</td><td><a href=\"/o/{}/events/{}\">{}</a>{this}</td><td>{}</td></tr>",
                h.similarity,
                url(&org),
                url(&he.event_id),
                esc(&html::cut(&html::action(hs), 140)),
                counts.get(&hs.behaviour_key).copied().unwrap_or(0)
            );
        }
        body.push_str("</tbody></table>");
    }
    body.push_str("</section>");

    body.push_str("<section><h2>The host around it</h2>");
    body.push_str(&html::events_table(&org, &timeline, &e.event_id));
    body.push_str("</section>");

    body.push_str("<section><h2>Feedback</h2>");
    if s.feedback {
        let _ = write!(
            body,
            "<form method=\"post\" action=\"/o/{}/events/{}/feedback\" class=\"feedback\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <fieldset><legend>This behaviour is</legend>\
             <label><input type=\"radio\" name=\"label\" value=\"benign\" required> normal (learn it)</label>\
             <label><input type=\"radio\" name=\"label\" value=\"malicious\"> malicious (forget it)</label></fieldset>\
             <label>For <select name=\"scope\"><option value=\"workload\">this workload</option>\
             <option value=\"host\">every workload of this host</option><option value=\"org\">the whole organisation</option></select></label>\
             <label>Why <input name=\"reason\" required maxlength=\"500\"></label>\
             <button type=\"submit\">Send feedback</button></form>",
            url(&org),
            url(&e.event_id),
            esc(&s.csrf)
        );
    } else {
        body.push_str("<p>Your identity may read but not give feedback (<code>feedback = true</code> in the tokens file).</p>");
    }
    body.push_str("</section>");
    Ok(page(&s, Some(&org), "", "Event", &body))
}

/// The event's ancestry (the latest exec of each parent before it) and
/// descendants (execs whose parent is its process, after it), as nested
/// lists, from a host's exec events.
fn process_tree(org: &str, e: &Event, execs: &[ScoredEvent]) -> String {
    let events: Vec<&Event> = execs.iter().filter_map(|s| s.event.as_ref()).collect();
    let flagged: HashMap<&str, Verdict> = execs
        .iter()
        .filter_map(|s| Some((s.event.as_ref()?.event_id.as_str(), s.verdict())))
        .collect();
    let node = |x: &Event, this: bool| {
        let v = flagged
            .get(x.event_id.as_str())
            .copied()
            .unwrap_or_default();
        let badge = if v >= Verdict::Warn {
            html::verdict(v)
        } else {
            String::new()
        };
        let class = if this {
            " class=\"this\" aria-current=\"true\""
        } else {
            ""
        };
        format!(
            "<span{class}><a href=\"/o/{}/events/{}\">{} <span class=\"pid\">{}</span></a> <code>{}</code> {badge}</span>",
            url(org),
            url(&x.event_id),
            esc(x.program_name()),
            x.pid,
            esc(&html::cut(&x.action(), 120))
        )
    };
    // Ancestors, nearest first.
    let mut ancestors: Vec<&Event> = Vec::new();
    let (mut ppid, mut before) = (e.ppid, e.ts_ns);
    while ancestors.len() < 12 && ppid > 1 {
        let Some(p) = events
            .iter()
            .filter(|x| x.pid == ppid && x.ts_ns <= before && x.event_id != e.event_id)
            .max_by_key(|x| x.ts_ns)
        else {
            break;
        };
        ancestors.push(p);
        (ppid, before) = (p.ppid, p.ts_ns);
    }
    let mut out = String::from("<ul class=\"tree\">");
    let top = ancestors
        .last()
        .map_or((e.ppid, e.parent_comm.as_str()), |a| {
            (a.ppid, a.parent_comm.as_str())
        });
    if top.0 > 0 {
        let _ = write!(
            out,
            "<li><span class=\"outside\">{} <span class=\"pid\">{}</span> (started before the window read)</span><ul>",
            esc(top.1),
            top.0
        );
    }
    for a in ancestors.iter().rev() {
        let _ = write!(out, "<li>{}<ul>", node(a, false));
    }
    let _ = write!(out, "<li>{}", node(e, true));
    out.push_str(&children(e.pid, e.ts_ns, &events, &node, 0));
    out.push_str("</li>");
    for _ in &ancestors {
        out.push_str("</ul></li>");
    }
    if top.0 > 0 {
        out.push_str("</ul></li>");
    }
    out.push_str("</ul>");
    out
}

fn children(
    pid: u32,
    after: u64,
    events: &[&Event],
    node: &dyn Fn(&Event, bool) -> String,
    depth: usize,
) -> String {
    if depth >= 4 {
        return String::new();
    }
    let kids: Vec<&&Event> = events
        .iter()
        .filter(|x| x.ppid == pid && x.ts_ns >= after && x.pid != pid)
        .take(25)
        .collect();
    if kids.is_empty() {
        return String::new();
    }
    let mut out = String::from("<ul>");
    for k in kids {
        let _ = write!(
            out,
            "<li>{}{}</li>",
            node(k, false),
            children(k.pid, k.ts_ns, events, node, depth + 1)
        );
    }
    out.push_str("</ul>");
    out
}

#[derive(Deserialize)]
struct FeedbackForm {
    #[serde(default)]
    csrf: String,
    label: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    reason: String,
}

async fn feedback(
    State(c): State<Console>,
    s: Session,
    Path((org, id)): Path<(String, String)>,
    Form(f): Form<FeedbackForm>,
) -> PageResult {
    s.check_csrf(&f.csrf)?;
    let label = match f.label.as_str() {
        "benign" => FeedbackLabel::Benign,
        "malicious" => FeedbackLabel::Malicious,
        _ => {
            return Err(PageError::new(
                StatusCode::BAD_REQUEST,
                "label must be benign or malicious",
            ));
        }
    };
    let scope = match f.scope.as_str() {
        "" | "workload" => FeedbackScope::Workload,
        "host" => FeedbackScope::Host,
        "org" => FeedbackScope::Org,
        _ => {
            return Err(PageError::new(
                StatusCode::BAD_REQUEST,
                "scope must be workload, host or org",
            ));
        }
    };
    let r = FeedbackService::submit_feedback(
        &c.services,
        s.request(SubmitFeedbackRequest {
            org: org.clone(),
            event_id: id.clone(),
            label: label as i32,
            reason: f.reason.clone(),
            scope: scope as i32,
            expires_in_s: 0,
        }),
    )
    .await?
    .into_inner();
    let actor = r.feedback.map(|f| f.actor).unwrap_or_default();
    let mut done = format!(
        "Feedback sent: {} for the {} by {actor}.",
        f.label,
        match scope {
            FeedbackScope::Host => "host",
            FeedbackScope::Org => "organisation",
            _ => "workload",
        }
    );
    if let Some(sup) = r.suppression {
        let _ = write!(done, " Suppression {} made.", sup.suppression_id);
    }
    if let Some(sig) = r.signature {
        let _ = write!(done, " Fleet signature {} made.", sig.signature_id);
    }
    Ok(Redirect::to(&format!(
        "/o/{}/events/{}?done={}",
        url(&org),
        url(&id),
        url(&done)
    ))
    .into_response())
}

// ----------------------------------------------------------------- search

#[derive(Deserialize, Default)]
struct SearchQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    workload: String,
}

async fn search(
    State(c): State<Console>,
    s: Session,
    Path(org): Path<String>,
    Query(q): Query<SearchQuery>,
) -> PageResult {
    let mut body = format!(
        "<form method=\"get\" class=\"search\" role=\"search\">\
         <label for=\"q\">Describe the behaviour</label>\
         <input id=\"q\" name=\"q\" value=\"{}\" placeholder=\"reverse shell from a web server\" required>\
         <label>Workload <input name=\"workload\" value=\"{}\"></label>\
         <button type=\"submit\">Search</button></form>",
        esc(&q.q),
        esc(&q.workload)
    );
    if !q.q.trim().is_empty() {
        let hits = Search::search(
            &c.services,
            s.request(SearchRequest {
                org: org.clone(),
                query: Some(search_request::Query::Text(q.q.clone())),
                workloads: if q.workload.is_empty() {
                    Vec::new()
                } else {
                    vec![q.workload.clone()]
                },
                limit: 25,
                ..Default::default()
            }),
        )
        .await?
        .into_inner()
        .hits;
        if hits.is_empty() {
            body.push_str("<p class=\"empty\">No matching behaviour.</p>");
        } else {
            body.push_str(
                "<table class=\"hits\"><thead><tr><th scope=\"col\">Similarity</th><th scope=\"col\">Time (UTC)</th>\
                 <th scope=\"col\">Host</th><th scope=\"col\">Workload</th><th scope=\"col\">What</th>\
                 <th scope=\"col\">Verdict</th></tr></thead><tbody>",
            );
            for h in &hits {
                let Some(hs) = &h.event else { continue };
                let e = hs.event.clone().unwrap_or_default();
                let _ = write!(
                    body,
                    "<tr><td>{:.3}</td><td>{}</td><td>{}</td><td>{}</td>\
                     <td class=\"what\"><a href=\"/o/{}/events/{}\">{}</a></td><td>{}</td></tr>",
                    h.similarity,
                    html::time(e.ts_ns),
                    esc(&e.host),
                    esc(&e.workload),
                    url(&org),
                    url(&e.event_id),
                    esc(&html::cut(&html::action(hs), 140)),
                    html::verdict(hs.verdict())
                );
            }
            body.push_str("</tbody></table>");
        }
    }
    Ok(page(&s, Some(&org), "search", "Search", &body))
}

// -------------------------------------------------------------- baselines

/// Events a workload's baseline takes to warm up (the scorer's default
/// `baseline.warmup_events`): before it, new behaviour is learned, not
/// flagged as novel.
const WARMUP_EVENTS: u64 = 200;

async fn baselines(State(c): State<Console>, s: Session, Path(org): Path<String>) -> PageResult {
    let check = s.request(());
    c.services.check_read(&check, &org)?;
    let now = now_ns();
    let rows = crate::query::baselines(
        &c.services.ch,
        &org,
        now.saturating_sub(7 * 24 * 3600 * NS),
        now.saturating_sub(24 * 3600 * NS),
    )
    .await?;
    let mut body = String::from(
        "<p class=\"hint\">What each workload's baseline knows, from its scored events of the last 7 days.</p>",
    );
    if rows.is_empty() {
        body.push_str("<p class=\"empty\">No events in the last 7 days.</p>");
    } else {
        body.push_str(
            "<table class=\"baselines\"><thead><tr><th scope=\"col\">Workload</th>\
             <th scope=\"col\">Behaviours known</th><th scope=\"col\">Grew, last 24 h</th>\
             <th scope=\"col\">Events learned, last 24 h</th><th scope=\"col\">Last learned (UTC)</th>\
             <th scope=\"col\">State</th><th scope=\"col\">Events, 7 days</th>\
             <th scope=\"col\">Distinct behaviours, 7 days</th><th scope=\"col\">Flagged, last 24 h</th>\
             <th scope=\"col\">Last event (UTC)</th></tr></thead><tbody>",
        );
        for r in &rows {
            let grew = if r.events_day == 0 {
                "—".to_string()
            } else {
                format!("{:+}", r.known as i64 - r.known_day_ago as i64)
            };
            let last_learned = if r.last_learned_ns == 0 {
                "—".to_string()
            } else {
                html::time(r.last_learned_ns)
            };
            let state = if r.events < WARMUP_EVENTS {
                format!("warming up ({} of {WARMUP_EVENTS} events)", r.events)
            } else {
                "learned".to_string()
            };
            let _ = write!(
                body,
                "<tr><td><a href=\"/o/{}/incidents?workload={}&amp;hours=168\">{}</a></td><td>{}</td><td>{grew}</td>\
                 <td>{}</td><td>{last_learned}</td><td>{state}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                url(&org),
                url(&r.workload),
                esc(&r.workload),
                r.known,
                r.learned_day,
                r.events,
                r.behaviours_seen,
                r.flagged_day,
                html::time(r.last_ns),
            );
        }
        body.push_str("</tbody></table>");
    }
    Ok(page(&s, Some(&org), "baselines", "Baselines", &body))
}

// ----------------------------------------------------------- suppressions

async fn suppressions(
    State(c): State<Console>,
    s: Session,
    Path(org): Path<String>,
    Query(done): Query<Done>,
) -> PageResult {
    let list = SuppressionService::list_suppressions(
        &c.services,
        s.request(ListSuppressionsRequest {
            org: org.clone(),
            all: true,
        }),
    )
    .await?
    .into_inner()
    .suppressions;
    let now = now_ns();
    let mut body = String::new();
    if !done.done.is_empty() {
        let _ = write!(
            body,
            "<p class=\"notice\" role=\"status\">{}</p>",
            esc(&done.done)
        );
    }
    body.push_str(
        "<p class=\"hint\">Rules that keep matching flagged events from alerting (they are still scored, \
         stored and shown). Made from an event's feedback for its host or the organisation.</p>",
    );
    if list.is_empty() {
        body.push_str("<p class=\"empty\">No suppressions.</p>");
        return Ok(page(&s, Some(&org), "suppressions", "Suppressions", &body));
    }
    body.push_str(
        "<table class=\"suppressions\"><thead><tr><th scope=\"col\">Rule</th><th scope=\"col\">Matches</th>\
         <th scope=\"col\">Why</th><th scope=\"col\">By</th><th scope=\"col\">Made (UTC)</th>\
         <th scope=\"col\">Until (UTC)</th><th scope=\"col\">State</th></tr></thead><tbody>",
    );
    for r in &list {
        let mut matches = Vec::new();
        for (k, v) in [
            ("workload", &r.workload),
            ("host", &r.host),
            ("program", &r.program),
            ("command", &r.argv),
            ("path", &r.path),
            ("peer", &r.remote),
        ] {
            if !v.is_empty() {
                matches.push(format!("{k} <code>{}</code>", esc(v)));
            }
        }
        let state = if r.revoked {
            format!("revoked by {}", esc(&r.revoked_by))
        } else if r.expires_ns <= now {
            "expired".to_string()
        } else if s.feedback {
            format!(
                "active <form method=\"post\" action=\"/o/{}/suppressions/{}/revoke\" class=\"inline\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                 <button type=\"submit\" aria-label=\"revoke {}\">Revoke</button></form>",
                url(&org),
                url(&r.suppression_id),
                esc(&s.csrf),
                esc(&r.suppression_id)
            )
        } else {
            "active".to_string()
        };
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{state}</td></tr>",
            esc(&r.suppression_id),
            matches.join(", "),
            esc(&r.reason),
            esc(&r.author),
            html::time(r.created_ns),
            html::time(r.expires_ns),
        );
    }
    body.push_str("</tbody></table>");
    Ok(page(&s, Some(&org), "suppressions", "Suppressions", &body))
}

async fn revoke_suppression(
    State(c): State<Console>,
    s: Session,
    Path((org, id)): Path<(String, String)>,
    Form(f): Form<CsrfForm>,
) -> PageResult {
    s.check_csrf(&f.csrf)?;
    SuppressionService::revoke_suppression(
        &c.services,
        s.request(RevokeSuppressionRequest {
            org: org.clone(),
            suppression_id: id.clone(),
        }),
    )
    .await?;
    Ok(Redirect::to(&format!(
        "/o/{}/suppressions?done={}",
        url(&org),
        url(&format!("Suppression {id} revoked."))
    ))
    .into_response())
}

// ------------------------------------------------------------------ fleet

async fn hosts(State(c): State<Console>, s: Session, Path(org): Path<String>) -> PageResult {
    let hosts = EventQuery::list_hosts(
        &c.services,
        s.request(ListHostsRequest {
            org: org.clone(),
            silent_for_s: 0,
        }),
    )
    .await?
    .into_inner()
    .hosts;
    let body = if hosts.is_empty() {
        "<p class=\"empty\">No collector has reported yet.</p>".to_string()
    } else {
        hosts_table(&hosts)
    };
    Ok(page(&s, Some(&org), "hosts", "Fleet", &body))
}

fn hosts_table(hosts: &[outlier_proto::HostStatus]) -> String {
    let mut t = String::from(
        "<table class=\"hosts\"><thead><tr><th scope=\"col\">Host</th><th scope=\"col\">Last heartbeat (UTC)</th>\
         <th scope=\"col\">Silent for</th><th scope=\"col\">Collector</th><th scope=\"col\">Capture</th>\
         <th scope=\"col\">Events</th><th scope=\"col\">Lost in the kernel</th><th scope=\"col\">Spool backlog</th></tr></thead><tbody>",
    );
    for h in hosts {
        let l = h.last.clone().unwrap_or_default();
        let class = if h.silent_for_s >= 300 {
            " class=\"flagged\""
        } else {
            ""
        };
        let _ = write!(
            t,
            "<tr{class}><td>{}</td><td>{}</td><td>{} s</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&l.host),
            html::time(l.ts_ns),
            h.silent_for_s,
            esc(&l.version),
            esc(&l.capture_mode),
            l.events_captured,
            l.kernel_drops,
            l.spool_backlog
        );
    }
    t.push_str("</tbody></table>");
    t
}

// ------------------------------------------------------------------- live

/// The org's new alerts as server-sent events (`event: alert`), resumable:
/// each carries its stream cursor as its id, and a reconnecting browser
/// sends it back as `Last-Event-ID`.
async fn live_alerts(
    State(c): State<Console>,
    s: Session,
    Path(org): Path<String>,
    headers: HeaderMap,
) -> PageResult {
    let stream = AlertStream::stream_alerts(
        &c.services,
        s.request(StreamAlertsRequest {
            org: org.clone(),
            resume_cursor: last_event_id(&headers),
            min_verdict: Verdict::Warn as i32,
            ..Default::default()
        }),
    )
    .await?
    .into_inner();
    let events = stream.map(move |r| match r {
        Ok(a) => {
            let s = a.event.unwrap_or_default();
            let e = s.event.clone().unwrap_or_default();
            let data = serde_json::json!({
                "href": format!("/o/{}/events/{}", url(&org), url(&e.event_id)),
                "verdict": s.verdict().label(), "host": e.host, "workload": e.workload,
                "what": html::cut(&e.action(), 160), "tactic": s.tactic,
            });
            SseEvent::default()
                .event("alert")
                .id(a.cursor)
                .data(data.to_string())
        }
        Err(e) => SseEvent::default().event("error").data(e.message()),
    });
    Ok(sse(events))
}

/// New and grown incidents (`event: incident`), resumable likewise.
async fn live_incidents(
    State(c): State<Console>,
    s: Session,
    Path(org): Path<String>,
    headers: HeaderMap,
) -> PageResult {
    let stream = IncidentService::stream_incidents(
        &c.services,
        s.request(StreamIncidentsRequest {
            org: org.clone(),
            resume_cursor: last_event_id(&headers),
            min_verdict: Verdict::Warn as i32,
        }),
    )
    .await?
    .into_inner();
    let events = stream.map(move |r| match r {
        Ok(u) => {
            let i = u.incident.unwrap_or_default();
            let data = serde_json::json!({
                "href": format!("/o/{}/incidents/{}", url(&org), url(&i.incident_id)),
                "verdict": i.verdict().label(), "host": i.host,
                "what": html::cut(&i.summary, 160), "events": i.event_count,
            });
            SseEvent::default()
                .event("incident")
                .id(u.cursor)
                .data(data.to_string())
        }
        Err(e) => SseEvent::default().event("error").data(e.message()),
    });
    Ok(sse(events))
}

fn last_event_id(headers: &HeaderMap) -> String {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

fn sse(events: impl Stream<Item = SseEvent> + Send + 'static) -> Response {
    Sse::new(events.map(Ok::<_, Infallible>))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use outlier_proto::Exec;

    fn exec(id: &str, pid: u32, ppid: u32, ts: u64, argv: &[&str]) -> ScoredEvent {
        ScoredEvent {
            event: Some(Event {
                event_id: id.into(),
                pid,
                ppid,
                ts_ns: ts,
                comm: argv[0].into(),
                detail: Some(Detail::Exec(Exec {
                    argv: argv.iter().map(|a| a.to_string()).collect(),
                    ..Exec::default()
                })),
                ..Event::default()
            }),
            ..ScoredEvent::default()
        }
    }

    #[test]
    fn the_tree_holds_the_ancestry_and_the_children_in_order() {
        let execs = vec![
            exec("nginx", 100, 1, 10, &["nginx"]),
            // A pid reused after the event is not its parent.
            exec("sh", 200, 100, 20, &["sh", "-c", "id"]),
            exec("curl", 300, 200, 30, &["curl", "http://x/a.sh"]),
            exec("bash", 301, 200, 31, &["bash", "a.sh"]),
            exec("late-nginx", 100, 1, 40, &["nginx", "-s", "reload"]),
            exec("grandchild", 400, 301, 35, &["id"]),
            exec("unrelated", 500, 1, 32, &["cron"]),
        ];
        let e = execs[1].event.clone().unwrap();
        let t = process_tree("acme", &e, &execs);
        let at = |needle: &str| t.find(needle).unwrap_or_else(|| panic!("{needle} in {t}"));
        // Ancestry: nginx (its exec before the shell), then the shell.
        assert!(at("/events/nginx\"") < at("/events/sh\""), "{t}");
        assert!(!t.contains("late-nginx"), "{t}");
        // Children under the shell, the grandchild under bash.
        assert!(at("/events/sh\"") < at("/events/curl\""));
        assert!(at("/events/bash\"") < at("/events/grandchild\""));
        assert!(!t.contains("unrelated"), "{t}");
        assert!(t.contains("aria-current=\"true\""));
        // pid 1 started everything: shown as outside the window.
        assert!(t.contains("(started before the window read)"));
    }
}
