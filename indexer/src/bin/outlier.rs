//! `outlier`: Outlier's command line for people — search, list and follow
//! scored events through the indexer's gRPC services.
//!
//!     outlier --org acme search "reverse shell bash outbound connection"
//!     outlier --org acme events --verdict alert --since 1h
//!     outlier --org acme alerts --follow
//!     outlier --org acme event EVENT_ID
//!     outlier --org acme feedback EVENT_ID --benign --reason "nightly backup"
//!     outlier --org acme hosts --silent 5m
//!     outlier --org acme incidents --since 24h
//!     outlier --org acme incident INCIDENT_ID
//!     outlier --org acme suppress --host 'db-*' --argv 'su postgres -c psql *' --for 30d --reason "monitoring"
//!     outlier --org acme suppressions
//!     outlier --org acme unsuppress SUPPRESSION_ID
//!     outlier --org acme confirm INCIDENT_ID --reason "reverse shell, ticket SEC-42"
//!     outlier --org acme signatures

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use outlier_common::now_ns;
use outlier_proto::alert_stream_client::AlertStreamClient;
use outlier_proto::event_query_client::EventQueryClient;
use outlier_proto::feedback_service_client::FeedbackServiceClient;
use outlier_proto::incident_service_client::IncidentServiceClient;
use outlier_proto::search_client::SearchClient;
use outlier_proto::signature_service_client::SignatureServiceClient;
use outlier_proto::suppression_service_client::SuppressionServiceClient;
use outlier_proto::{
    ConfirmIncidentRequest, CreateSuppressionRequest, EventKind, FeedbackLabel, GetEventRequest,
    GetIncidentRequest, Incident, ListHostsRequest, ListIncidentsRequest, ListSignaturesRequest,
    ListSuppressionsRequest, QueryEventsRequest, RevokeSignatureRequest, RevokeSuppressionRequest,
    ScoredEvent, SearchRequest, Signature, SortOrder, StreamAlertsRequest, StreamIncidentsRequest,
    SubmitFeedbackRequest, Suppression, Verdict, search_request,
};
use serde_json::json;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

/// Adds the bearer token to every call.
#[derive(Clone)]
struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

#[derive(Parser)]
#[command(
    name = "outlier",
    version,
    about = "Search, list and follow Outlier's scored events"
)]
struct Cli {
    /// The indexer's gRPC address.
    #[arg(
        long,
        env = "OUTLIER_ADDR",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    addr: String,
    /// CA certificate (PEM) that signed the indexer's TLS certificate; with
    /// it the CLI speaks TLS (scripts/stack: .outlier/auth/ca.pem).
    #[arg(long, env = "OUTLIER_CA", global = true)]
    ca: Option<std::path::PathBuf>,
    /// Bearer token for the indexer (prefer OUTLIER_TOKEN or --token-file:
    /// a flag shows in the process list).
    #[arg(long, env = "OUTLIER_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// File holding the bearer token (scripts/stack: .outlier/auth/admin.token).
    #[arg(long, env = "OUTLIER_TOKEN_FILE", global = true)]
    token_file: Option<std::path::PathBuf>,
    /// Org to query: every call is scoped to one org.
    #[arg(long, env = "OUTLIER_ORG", global = true)]
    org: Option<String>,
    /// Print JSON (one object per line) instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Events whose behaviour is nearest to plain words.
    Search {
        /// What to look for, e.g. "reverse shell bash outbound connection".
        query: String,
        #[arg(long, default_value_t = 10)]
        limit: u32,
        /// Only these workloads (repeatable).
        #[arg(long)]
        workload: Vec<String>,
    },
    /// List events by filters, newest first.
    Events {
        /// ok, warn or alert (repeatable).
        #[arg(long, value_enum)]
        verdict: Vec<VerdictArg>,
        /// How far back: 30s, 15m, 1h, 7d.
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        host: Vec<String>,
        #[arg(long)]
        workload: Vec<String>,
        /// exec, connect or open (repeatable).
        #[arg(long, value_enum)]
        kind: Vec<KindArg>,
        #[arg(long)]
        min_score: Option<f32>,
        /// Case-insensitive text in the command line, path, address or process.
        #[arg(long)]
        contains: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Sort by score instead of time.
        #[arg(long)]
        by_score: bool,
    },
    /// One event, in full.
    Event { id: String },
    /// Warn and alert verdicts as they happen.
    Alerts {
        /// Keep following (otherwise: the alerts of the last hour, then exit).
        #[arg(long)]
        follow: bool,
        /// Resume after this cursor (printed with each alert in --json mode).
        #[arg(long)]
        cursor: Option<String>,
        /// Only alerts (not warnings).
        #[arg(long)]
        alerts_only: bool,
    },
    /// The org's hosts and their collectors' latest heartbeats, most
    /// silent first.
    Hosts {
        /// Only hosts silent for at least this long (5m, 1h).
        #[arg(long)]
        silent: Option<String>,
    },
    /// Incidents: flagged events grouped by host, process tree and time,
    /// most recent first.
    Incidents {
        /// How far back: 30m, 24h, 7d (default 24h).
        #[arg(long, default_value = "24h")]
        since: String,
        #[arg(long)]
        host: Vec<String>,
        /// Only incidents with events of these workloads.
        #[arg(long)]
        workload: Vec<String>,
        /// Only incidents named one of these ATT&CK tactics (persistence, …).
        #[arg(long)]
        tactic: Vec<String>,
        /// Only incidents with an alert (not only warnings).
        #[arg(long)]
        alerts_only: bool,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Keep following new and growing incidents.
        #[arg(long)]
        follow: bool,
        /// Resume after this cursor (printed with each update in --json mode).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// One incident and its events.
    Incident { id: String },
    /// Keep matching flagged events from alerting (they are still scored,
    /// stored and marked) until the rule expires. Every condition given
    /// must hold; globs take `*` and `?`. Needs a token allowed feedback.
    Suppress {
        #[arg(long)]
        workload: Option<String>,
        #[arg(long)]
        host: Option<String>,
        /// The acting program's name, e.g. psql.
        #[arg(long)]
        program: Option<String>,
        /// An exec's command line (arguments joined by spaces).
        #[arg(long)]
        argv: Option<String>,
        /// An open's path.
        #[arg(long)]
        path: Option<String>,
        /// A connection's address:port.
        #[arg(long)]
        remote: Option<String>,
        /// How long it applies: 1h, 7d (at most 90d).
        #[arg(long = "for", default_value = "7d")]
        duration: String,
        /// Why (required; shown with the rule).
        #[arg(long)]
        reason: String,
    },
    /// The org's suppressions, newest first.
    Suppressions {
        /// Also expired and revoked ones.
        #[arg(long)]
        all: bool,
    },
    /// Revoke a suppression: matching events alert again.
    Unsuppress { id: String },
    /// Confirm an incident malicious: each of its behaviours becomes a
    /// fleet signature that alerts on every host of the org (immune
    /// memory), and the workloads that learned them forget them.
    Confirm {
        /// The incident's id (as `outlier incidents` prints it).
        id: String,
        /// Why (required; kept with the signatures).
        #[arg(long)]
        reason: String,
        /// How long the signatures apply (at most 365d).
        #[arg(long = "for", default_value = "90d")]
        duration: String,
    },
    /// Write the protobuf descriptor set of Outlier's contract (events,
    /// scored events, feedback, heartbeats, suppressions, signatures, the
    /// gRPC services) for consumers of the Kafka topics: `protoc
    /// --decode`, Schema Registry, Kafka Connect converters.
    DescriptorSet {
        /// Where to write it (`-`: standard output).
        #[arg(long, default_value = "-")]
        out: std::path::PathBuf,
    },
    /// The org's fleet signatures, newest first.
    Signatures {
        /// Also expired and revoked ones.
        #[arg(long)]
        all: bool,
    },
    /// Revoke a fleet signature.
    RevokeSignature { id: String },
    /// Tell the scorers an event is benign (its workload learns the
    /// behaviour) or malicious (its workload forgets it). Audited with your
    /// identity; the token must be allowed feedback.
    #[command(group(clap::ArgGroup::new("label").required(true).args(["benign", "malicious"])))]
    Feedback {
        /// The event's id (as `outlier events` prints it).
        id: String,
        #[arg(long)]
        benign: bool,
        #[arg(long)]
        malicious: bool,
        /// Why (recorded in the audit).
        #[arg(long, default_value = "")]
        reason: String,
        /// workload (its baseline only), host (benign: also a suppression
        /// of exactly this behaviour on the host) or org (benign: a
        /// suppression org-wide; malicious: a fleet signature).
        #[arg(long, value_enum, default_value = "workload")]
        scope: ScopeArg,
        /// For host and org scope: how long it applies (default 30d for
        /// benign, 90d for malicious).
        #[arg(long = "for")]
        duration: Option<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum VerdictArg {
    Ok,
    Warn,
    Alert,
}

#[derive(Clone, Copy, ValueEnum)]
enum ScopeArg {
    Workload,
    Host,
    Org,
}

#[derive(Clone, Copy, ValueEnum)]
enum KindArg {
    Exec,
    Connect,
    Open,
}

fn parse_ago(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("bad duration `{s}` (try 30s, 15m, 1h, 7d)"))?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("bad duration unit in `{s}` (s, m, h or d)")),
    };
    Ok(Duration::from_secs(secs))
}

/// What an event did, in one line.
fn what(s: &ScoredEvent) -> String {
    s.event.as_ref().map(|e| e.action()).unwrap_or_default()
}

/// Shortens a host-controlled string for a table cell. Control characters
/// are shown escaped (`\x1b`), never sent to the terminal: a command line
/// from a monitored host must not be able to rewrite an analyst's screen.
fn cut(s: &str, n: usize) -> String {
    let safe: String = s
        .chars()
        .flat_map(|c| {
            if c.is_control() {
                format!("\\x{:02x}", c as u32).chars().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    if safe.chars().count() <= n {
        safe
    } else {
        safe.chars().take(n.saturating_sub(1)).collect::<String>() + "…"
    }
}

fn time_of(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02}")
}

fn to_json(s: &ScoredEvent, extra: serde_json::Value) -> serde_json::Value {
    let e = s.event.clone().unwrap_or_default();
    let mut v = json!({
        "event_id": e.event_id, "org": e.org, "workload": e.workload, "host": e.host,
        "kind": e.kind_name(), "ts_ns": e.ts_ns, "pid": e.pid, "uid": e.uid,
        "comm": e.comm, "parent_comm": e.parent_comm, "what": what(s),
        "anomaly_score": s.anomaly_score, "verdict": s.verdict().label(),
        "threat_category": s.threat_category, "tactic": s.tactic, "technique": s.technique,
        "confidence": s.confidence, "explanation": s.explanation,
        "suppressed_by": s.suppressed_by, "signature_id": s.signature_id,
        "contributions": s.contributions.iter().map(|c| json!({
            "feature": c.feature, "value": c.value, "shap": c.shap, "sentence": c.sentence,
        })).collect::<Vec<_>>(),
    });
    if let (Some(obj), serde_json::Value::Object(x)) = (v.as_object_mut(), extra) {
        obj.extend(x);
    }
    v
}

fn print_table(rows: &[(ScoredEvent, Option<f32>)]) {
    let sim = rows.iter().any(|(_, s)| s.is_some());
    if sim {
        println!(
            "{:<6} {:<8} {:<12} {:<10} {:<8} {:<44} {:>5} {:<7} EXPLANATION",
            "MATCH", "TIME", "WORKLOAD", "HOST", "KIND", "WHAT", "SCORE", "VERDICT"
        );
    } else {
        println!(
            "{:<8} {:<12} {:<10} {:<8} {:<44} {:>5} {:<7} EXPLANATION",
            "TIME", "WORKLOAD", "HOST", "KIND", "WHAT", "SCORE", "VERDICT"
        );
    }
    for (s, similarity) in rows {
        let e = s.event.clone().unwrap_or_default();
        let line = format!(
            "{:<8} {:<12} {:<10} {:<8} {:<44} {:>5.2} {:<7} {}",
            time_of(e.ts_ns),
            cut(&e.workload, 12),
            cut(&e.host, 10),
            e.kind_name(),
            cut(&what(s), 44),
            s.anomaly_score,
            s.verdict().label(),
            if s.suppressed_by.is_empty() {
                cut(&s.explanation, 60)
            } else {
                format!(
                    "suppressed by {}; {}",
                    cut(&s.suppressed_by, 40),
                    cut(&s.explanation, 40)
                )
            }
        );
        match similarity {
            Some(x) if sim => println!("{x:<6.2} {line}"),
            _ => println!("{line}"),
        }
    }
}

fn incident_json(i: &Incident, extra: serde_json::Value) -> serde_json::Value {
    let mut v = json!({
        "incident_id": i.incident_id, "org": i.org, "host": i.host, "workloads": i.workloads,
        "first_ns": i.first_ns, "last_ns": i.last_ns, "event_count": i.event_count,
        "alert_count": i.alert_count, "verdict": i.verdict().label(), "max_score": i.max_score,
        "tactics": i.tactics, "techniques": i.techniques, "summary": i.summary,
        "event_ids": i.event_ids, "root_pid": i.root_pid, "root_program": i.root_program,
        "updated_ns": i.updated_ns,
    });
    if let (Some(obj), serde_json::Value::Object(x)) = (v.as_object_mut(), extra) {
        obj.extend(x);
    }
    v
}

fn print_incidents(incidents: &[Incident], header: bool) {
    if header {
        println!(
            "{:<24} {:<8} {:<8} {:<16} {:>6} {:>6} {:<7} SUMMARY",
            "INCIDENT", "FIRST", "LAST", "HOST", "EVENTS", "ALERTS", "VERDICT"
        );
    }
    for i in incidents {
        println!(
            "{:<24} {:<8} {:<8} {:<16} {:>6} {:>6} {:<7} {}",
            cut(&i.incident_id, 24),
            time_of(i.first_ns),
            time_of(i.last_ns),
            cut(&i.host, 16),
            i.event_count,
            i.alert_count,
            i.verdict().label(),
            cut(&i.summary, 120)
        );
    }
}

fn suppression_json(x: &Suppression) -> serde_json::Value {
    json!({
        "suppression_id": x.suppression_id, "org": x.org, "workload": x.workload,
        "host": x.host, "program": x.program, "argv": x.argv, "path": x.path,
        "remote": x.remote, "expires_ns": x.expires_ns, "reason": x.reason,
        "author": x.author, "created_ns": x.created_ns, "revoked": x.revoked,
        "revoked_by": x.revoked_by,
    })
}

fn print_suppression(x: &Suppression) {
    let conditions: Vec<String> = [
        ("workload", &x.workload),
        ("host", &x.host),
        ("program", &x.program),
        ("argv", &x.argv),
        ("path", &x.path),
        ("remote", &x.remote),
    ]
    .iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(k, v)| format!("{k}={v}"))
    .collect();
    let state = if x.revoked {
        format!("revoked by {}", x.revoked_by)
    } else if now_ns() >= x.expires_ns {
        "expired".to_string()
    } else {
        let left = (x.expires_ns - now_ns()) / 1_000_000_000;
        match left {
            0..7200 => format!("{}m left", left / 60),
            7200..172_800 => format!("{}h left", left / 3600),
            _ => format!("{}d left", left / 86_400),
        }
    };
    println!(
        "{:<36} {:<14} {:<16} {:<50} {}",
        cut(&x.suppression_id, 36),
        cut(&state, 14),
        cut(&x.author, 16),
        cut(&conditions.join(" "), 50),
        cut(&x.reason, 80)
    );
}

fn signature_json(x: &Signature) -> serde_json::Value {
    json!({
        "signature_id": x.signature_id, "org": x.org, "kind": x.kind, "program": x.program,
        "max_distance": x.max_distance, "tactic": x.tactic, "technique": x.technique,
        "incident_id": x.incident_id, "event_id": x.event_id, "host": x.host,
        "workload": x.workload, "summary": x.summary, "author": x.author, "reason": x.reason,
        "created_ns": x.created_ns, "expires_ns": x.expires_ns, "revoked": x.revoked,
        "revoked_by": x.revoked_by,
    })
}

fn print_signatures(list: &[Signature], json_out: bool) {
    if json_out {
        for x in list {
            println!("{}", signature_json(x));
        }
        return;
    }
    println!(
        "{:<36} {:<8} {:<16} {:<14} {:<16} BEHAVIOUR",
        "SIGNATURE", "STATE", "FROM HOST", "AUTHOR", "TACTIC"
    );
    for x in list {
        let state = if x.revoked {
            "revoked"
        } else if now_ns() >= x.expires_ns {
            "expired"
        } else {
            "active"
        };
        println!(
            "{:<36} {:<8} {:<16} {:<14} {:<16} {}",
            cut(&x.signature_id, 36),
            state,
            cut(&x.host, 16),
            cut(&x.author, 14),
            cut(&x.tactic, 16),
            cut(&x.summary, 80)
        );
    }
}

/// Events as JSON lines or as a table.
fn print_events(events: Vec<ScoredEvent>, json: bool) {
    if json {
        for e in &events {
            println!("{}", to_json(e, json!({})));
        }
    } else {
        print_table(&events.into_iter().map(|e| (e, None)).collect::<Vec<_>>());
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    if let Command::DescriptorSet { out } = &cli.command {
        let bytes = outlier_proto::FILE_DESCRIPTOR_SET;
        return if out.as_os_str() == "-" {
            use std::io::Write as _;
            std::io::stdout()
                .write_all(bytes)
                .map_err(|e| format!("stdout: {e}"))
        } else {
            std::fs::write(out, bytes).map_err(|e| format!("{}: {e}", out.display()))
        };
    }
    let org = cli
        .org
        .clone()
        .ok_or("an org is required: --org ORG or OUTLIER_ORG")?;
    let mut addr = cli.addr.clone();
    let tls = match &cli.ca {
        Some(ca) => {
            if let Some(rest) = addr.strip_prefix("http://") {
                addr = format!("https://{rest}");
            }
            let pem = std::fs::read(ca).map_err(|e| format!("--ca {}: {e}", ca.display()))?;
            Some(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
        }
        None => None,
    };
    let mut endpoint =
        Channel::from_shared(addr.clone()).map_err(|e| format!("bad address {addr}: {e}"))?;
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| format!("TLS settings: {e}"))?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot reach the indexer at {addr}: {e}"))?;
    let token = match (&cli.token, &cli.token_file) {
        (Some(t), _) => Some(t.trim().to_string()),
        (None, Some(f)) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| format!("--token-file {}: {e}", f.display()))?
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    };
    let auth = Bearer(
        token
            .map(|t| format!("Bearer {t}").parse())
            .transpose()
            .map_err(|_| "the token is not a valid header value".to_string())?,
    );
    match cli.command {
        Command::Search {
            query,
            limit,
            workload,
        } => {
            let resp = SearchClient::with_interceptor(channel, auth)
                .search(SearchRequest {
                    org,
                    query: Some(search_request::Query::Text(query)),
                    workloads: workload,
                    since_ns: 0,
                    limit,
                })
                .await
                .map_err(|e| e.message().to_string())?
                .into_inner();
            let rows: Vec<(ScoredEvent, Option<f32>)> = resp
                .hits
                .into_iter()
                .filter_map(|h| h.event.map(|e| (e, Some(h.similarity))))
                .collect();
            if cli.json {
                for (e, s) in &rows {
                    println!("{}", to_json(e, json!({ "similarity": s })));
                }
            } else {
                print_table(&rows);
            }
        }
        Command::Events {
            verdict,
            since,
            host,
            workload,
            kind,
            min_score,
            contains,
            limit,
            by_score,
        } => {
            let since_ns = match since {
                Some(s) => now_ns().saturating_sub(parse_ago(&s)?.as_nanos() as u64),
                None => 0,
            };
            let req = QueryEventsRequest {
                org,
                since_ns,
                until_ns: 0,
                hosts: host,
                workloads: workload,
                kinds: kind
                    .into_iter()
                    .map(|k| match k {
                        KindArg::Exec => EventKind::Exec,
                        KindArg::Connect => EventKind::Connect,
                        KindArg::Open => EventKind::Open,
                    } as i32)
                    .collect(),
                verdicts: verdict
                    .into_iter()
                    .map(|v| match v {
                        VerdictArg::Ok => Verdict::Ok,
                        VerdictArg::Warn => Verdict::Warn,
                        VerdictArg::Alert => Verdict::Alert,
                    } as i32)
                    .collect(),
                min_score: min_score.unwrap_or(0.0),
                text_contains: contains.unwrap_or_default(),
                page_size: limit,
                page_token: String::new(),
                order: if by_score {
                    SortOrder::ScoreDesc
                } else {
                    SortOrder::NewestFirst
                } as i32,
            };
            let resp = EventQueryClient::with_interceptor(channel, auth)
                .query_events(req)
                .await
                .map_err(|e| e.message().to_string())?
                .into_inner();
            print_events(resp.events, cli.json);
        }
        Command::Hosts { silent } => {
            let silent_for_s = match silent {
                Some(s) => parse_ago(&s)?.as_secs().max(1),
                None => 0,
            };
            let hosts = EventQueryClient::with_interceptor(channel, auth)
                .list_hosts(ListHostsRequest { org, silent_for_s })
                .await
                .map_err(|e| e.message().to_string())?
                .into_inner()
                .hosts;
            if cli.json {
                for h in &hosts {
                    let l = h.last.clone().unwrap_or_default();
                    println!(
                        "{}",
                        json!({
                            "host": l.host, "silent_for_s": h.silent_for_s, "last_ts_ns": l.ts_ns,
                            "version": l.version, "capture_mode": l.capture_mode,
                            "events_captured": l.events_captured, "kernel_drops": l.kernel_drops,
                            "spool_dropped": l.spool_dropped, "spool_backlog": l.spool_backlog,
                        })
                    );
                }
            } else {
                println!(
                    "{:<24} {:>10} {:<10} {:<7} {:>12} {:>12} {:>12} {:>12}",
                    "HOST",
                    "SILENT",
                    "VERSION",
                    "MODE",
                    "CAPTURED",
                    "KERNEL DROP",
                    "SPOOL DROP",
                    "BACKLOG"
                );
                for h in &hosts {
                    let l = h.last.clone().unwrap_or_default();
                    println!(
                        "{:<24} {:>10} {:<10} {:<7} {:>12} {:>12} {:>12} {:>12}",
                        cut(&l.host, 24),
                        format!("{}s", h.silent_for_s),
                        cut(&l.version, 10),
                        cut(&l.capture_mode, 7),
                        l.events_captured,
                        l.kernel_drops,
                        l.spool_dropped,
                        l.spool_backlog
                    );
                }
            }
        }
        Command::Feedback {
            id,
            benign,
            malicious: _,
            reason,
            scope,
            duration,
        } => {
            let expires_in_s = match duration {
                Some(d) => parse_ago(&d)?.as_secs(),
                None => 0,
            };
            let label = if benign {
                FeedbackLabel::Benign
            } else {
                FeedbackLabel::Malicious
            };
            let resp = FeedbackServiceClient::with_interceptor(channel, auth)
                .submit_feedback(SubmitFeedbackRequest {
                    org,
                    event_id: id.clone(),
                    label: label as i32,
                    reason,
                    scope: match scope {
                        ScopeArg::Workload => outlier_proto::FeedbackScope::Workload,
                        ScopeArg::Host => outlier_proto::FeedbackScope::Host,
                        ScopeArg::Org => outlier_proto::FeedbackScope::Org,
                    } as i32,
                    expires_in_s,
                })
                .await
                .map_err(|e| e.message().to_string())?
                .into_inner();
            let fb = resp.feedback.ok_or("no feedback in the answer")?;
            if cli.json {
                println!(
                    "{}",
                    json!({
                        "event_id": id, "label": if benign { "benign" } else { "malicious" },
                        "actor": fb.actor, "reason": fb.note, "ts_ns": fb.ts_ns,
                        "suppression": resp.suppression.as_ref().map(suppression_json),
                        "signature": resp.signature.as_ref().map(signature_json),
                    })
                );
            } else {
                println!(
                    "feedback on {} recorded: {} by {}{}",
                    cut(&id, 200),
                    if benign {
                        "benign (learned)"
                    } else {
                        "malicious (forgotten)"
                    },
                    cut(&fb.actor, 200),
                    if fb.note.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", cut(&fb.note, 500))
                    }
                );
                if let Some(x) = &resp.suppression {
                    println!("and beyond the workload, a suppression of this behaviour:");
                    print_suppression(x);
                }
                if let Some(x) = &resp.signature {
                    println!("and org-wide, a fleet signature of this behaviour:");
                    print_signatures(std::slice::from_ref(x), false);
                }
            }
        }
        Command::Incidents {
            since,
            host,
            workload,
            tactic,
            alerts_only,
            limit,
            follow,
            cursor,
        } => {
            let min_verdict = if alerts_only {
                Verdict::Alert
            } else {
                Verdict::Warn
            } as i32;
            let mut client = IncidentServiceClient::with_interceptor(channel, auth);
            if follow {
                let mut stream = client
                    .stream_incidents(StreamIncidentsRequest {
                        org,
                        resume_cursor: cursor.unwrap_or_default(),
                        min_verdict,
                    })
                    .await
                    .map_err(|e| e.message().to_string())?
                    .into_inner();
                if !cli.json {
                    eprintln!("following incidents (Ctrl-C to stop)…");
                }
                while let Some(u) = stream
                    .message()
                    .await
                    .map_err(|e| e.message().to_string())?
                {
                    let Some(i) = u.incident else { continue };
                    if cli.json {
                        println!("{}", incident_json(&i, json!({ "cursor": u.cursor })));
                    } else {
                        print_incidents(&[i], false);
                    }
                }
                return Ok(());
            }
            let incidents = client
                .list_incidents(ListIncidentsRequest {
                    org,
                    since_ns: now_ns().saturating_sub(parse_ago(&since)?.as_nanos() as u64),
                    until_ns: 0,
                    hosts: host,
                    workloads: workload,
                    tactics: tactic,
                    min_verdict,
                    limit,
                    before_last_ns: 0,
                })
                .await
                .map_err(|e| e.message().to_string())?
                .into_inner()
                .incidents;
            if cli.json {
                for i in &incidents {
                    println!("{}", incident_json(i, json!({})));
                }
            } else {
                print_incidents(&incidents, true);
            }
        }
        Command::Incident { id } => {
            let resp = IncidentServiceClient::with_interceptor(channel, auth)
                .get_incident(GetIncidentRequest {
                    org,
                    incident_id: id,
                })
                .await
                .map_err(|e| e.message().to_string())?
                .into_inner();
            let i = resp.incident.ok_or("no incident in the answer")?;
            if cli.json {
                let events: Vec<_> = resp.events.iter().map(|e| to_json(e, json!({}))).collect();
                println!("{}", incident_json(&i, json!({ "events": events })));
            } else {
                println!("incident {}", cut(&i.incident_id, 64));
                println!("  {}", cut(&i.summary, 2000));
                println!(
                    "  host {}, workloads {}, verdict {}, {} events ({} alerts), highest score {:.2}",
                    cut(&i.host, 200),
                    cut(&i.workloads.join(", "), 200),
                    i.verdict().label(),
                    i.event_count,
                    i.alert_count,
                    i.max_score
                );
                if !i.techniques.is_empty() {
                    println!("  techniques {}", cut(&i.techniques.join(", "), 400));
                }
                println!();
                print_events(resp.events, false);
            }
        }
        Command::Suppress {
            workload,
            host,
            program,
            argv,
            path,
            remote,
            duration,
            reason,
        } => {
            let x = SuppressionServiceClient::with_interceptor(channel, auth)
                .create_suppression(CreateSuppressionRequest {
                    org,
                    workload: workload.unwrap_or_default(),
                    host: host.unwrap_or_default(),
                    program: program.unwrap_or_default(),
                    argv: argv.unwrap_or_default(),
                    path: path.unwrap_or_default(),
                    remote: remote.unwrap_or_default(),
                    expires_in_s: parse_ago(&duration)?.as_secs(),
                    reason,
                })
                .await
                .map_err(|e| e.message().to_string())?
                .into_inner()
                .suppression
                .ok_or("no suppression in the answer")?;
            if cli.json {
                println!("{}", suppression_json(&x));
            } else {
                print_suppression(&x);
            }
        }
        Command::Suppressions { all } => {
            let list = SuppressionServiceClient::with_interceptor(channel, auth)
                .list_suppressions(ListSuppressionsRequest { org, all })
                .await
                .map_err(|e| e.message().to_string())?
                .into_inner()
                .suppressions;
            if cli.json {
                for x in &list {
                    println!("{}", suppression_json(x));
                }
            } else {
                println!(
                    "{:<36} {:<14} {:<16} {:<50} REASON",
                    "SUPPRESSION", "STATE", "AUTHOR", "CONDITIONS"
                );
                list.iter().for_each(print_suppression);
            }
        }
        Command::Unsuppress { id } => {
            let x = SuppressionServiceClient::with_interceptor(channel, auth)
                .revoke_suppression(RevokeSuppressionRequest {
                    org,
                    suppression_id: id,
                })
                .await
                .map_err(|e| e.message().to_string())?
                .into_inner()
                .suppression
                .ok_or("no suppression in the answer")?;
            if cli.json {
                println!("{}", suppression_json(&x));
            } else {
                print_suppression(&x);
            }
        }
        Command::Confirm {
            id,
            reason,
            duration,
        } => {
            let list = SignatureServiceClient::with_interceptor(channel, auth)
                .confirm_incident(ConfirmIncidentRequest {
                    org,
                    incident_id: id,
                    reason,
                    expires_in_s: parse_ago(&duration)?.as_secs(),
                })
                .await
                .map_err(|e| e.message().to_string())?
                .into_inner()
                .signatures;
            print_signatures(&list, cli.json);
        }
        Command::Signatures { all } => {
            let list = SignatureServiceClient::with_interceptor(channel, auth)
                .list_signatures(ListSignaturesRequest { org, all })
                .await
                .map_err(|e| e.message().to_string())?
                .into_inner()
                .signatures;
            print_signatures(&list, cli.json);
        }
        Command::RevokeSignature { id } => {
            let x = SignatureServiceClient::with_interceptor(channel, auth)
                .revoke_signature(RevokeSignatureRequest {
                    org,
                    signature_id: id,
                })
                .await
                .map_err(|e| e.message().to_string())?
                .into_inner()
                .signature
                .ok_or("no signature in the answer")?;
            print_signatures(&[x], cli.json);
        }
        Command::DescriptorSet { .. } => unreachable!("answered before connecting"),
        Command::Event { id } => {
            let resp = EventQueryClient::with_interceptor(channel, auth)
                .get_event(GetEventRequest { org, event_id: id })
                .await
                .map_err(|e| e.message().to_string())?
                .into_inner();
            let e = resp.event.ok_or("no event in the answer")?;
            let v = to_json(&e, json!({}));
            if cli.json {
                println!("{v}");
            } else {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            }
        }
        Command::Alerts {
            follow,
            cursor,
            alerts_only,
        } => {
            let min = if alerts_only {
                Verdict::Alert
            } else {
                Verdict::Warn
            };
            if !follow {
                let verdicts = if alerts_only {
                    vec![Verdict::Alert as i32]
                } else {
                    vec![Verdict::Warn as i32, Verdict::Alert as i32]
                };
                let req = QueryEventsRequest {
                    org,
                    since_ns: now_ns().saturating_sub(3_600_000_000_000),
                    verdicts,
                    page_size: 100,
                    ..QueryEventsRequest::default()
                };
                let resp = EventQueryClient::with_interceptor(channel, auth)
                    .query_events(req)
                    .await
                    .map_err(|e| e.message().to_string())?
                    .into_inner();
                print_events(resp.events, cli.json);
                return Ok(());
            }
            let mut stream = AlertStreamClient::with_interceptor(channel, auth)
                .stream_alerts(StreamAlertsRequest {
                    org,
                    resume_cursor: cursor.unwrap_or_default(),
                    workloads: vec![],
                    min_verdict: min as i32,
                })
                .await
                .map_err(|e| e.message().to_string())?
                .into_inner();
            if !cli.json {
                eprintln!("following alerts (Ctrl-C to stop)…");
            }
            while let Some(a) = stream
                .message()
                .await
                .map_err(|e| e.message().to_string())?
            {
                let Some(e) = a.event else { continue };
                if cli.json {
                    println!("{}", to_json(&e, json!({ "cursor": a.cursor })));
                } else {
                    print_table(&[(e, None)]);
                }
            }
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    outlier_indexer::install_crypto_provider();
    // `outlier … | head` ends quietly when the reader goes away, as other
    // command-line tools do, instead of panicking on a broken pipe.
    // SAFETY: restores the default disposition of SIGPIPE (process-wide); no
    // handler of ours is replaced and none runs.
    #[allow(unsafe_code)]
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        );
    }
    let cli = Cli::parse();
    let plaintext = cli.ca.is_none();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("outlier: {e}");
            if plaintext && (e.contains("h2 protocol error") || e.contains("transport error")) {
                eprintln!(
                    "outlier: the indexer serves TLS: pass --ca CA.pem and a token (the local stack: source .outlier/auth/cli.env)"
                );
            }
            ExitCode::FAILURE
        }
    }
}
