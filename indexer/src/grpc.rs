//! The gRPC services: EventQuery (QueryEvents, GetEvent), Search,
//! AlertStream, FeedbackService, IncidentService, SuppressionService and
//! SignatureService, with reflection and health so `grpcurl`
//! works. Every call is scoped by the org it names.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use clickhouse::Client;
use futures::Stream;
use outlier_common::featurize::{embed, embed_text};
use outlier_common::kafka::KafkaConfig;
use outlier_proto::alert_stream_server::{AlertStream, AlertStreamServer};
use outlier_proto::event_query_server::{EventQuery, EventQueryServer};
use outlier_proto::feedback_service_server::{FeedbackService, FeedbackServiceServer};
use outlier_proto::incident_service_server::{IncidentService, IncidentServiceServer};
use outlier_proto::search_server::{Search, SearchServer};
use outlier_proto::signature_service_server::{SignatureService, SignatureServiceServer};
use outlier_proto::suppression_service_server::{SuppressionService, SuppressionServiceServer};
use outlier_proto::{
    AlertEnvelope, ConfirmIncidentRequest, ConfirmIncidentResponse, CreateSuppressionRequest,
    CreateSuppressionResponse, GetEventRequest, GetEventResponse, GetIncidentRequest,
    GetIncidentResponse, HostStatus, IncidentUpdate, ListHostsRequest, ListHostsResponse,
    ListIncidentsRequest, ListIncidentsResponse, ListSignaturesRequest, ListSignaturesResponse,
    ListSuppressionsRequest, ListSuppressionsResponse, QueryEventsRequest, QueryEventsResponse,
    RevokeSignatureRequest, RevokeSignatureResponse, RevokeSuppressionRequest,
    RevokeSuppressionResponse, SearchHit, SearchRequest, SearchResponse, Signature,
    StreamAlertsRequest, StreamIncidentsRequest, SubmitFeedbackRequest, SubmitFeedbackResponse,
    Suppression, Verdict, search_request,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::auth::Authorizer;
use crate::query::{self, QueryError};
use crate::search_index::SearchIndex;

/// Shared state of the services.
#[derive(Clone)]
pub struct Services {
    pub ch: Client,
    pub search: Arc<SearchIndex>,
    pub kafka: KafkaConfig,
    pub shutdown: CancellationToken,
    /// Open StreamIncidents calls: a permit each, [`MAX_INCIDENT_STREAMS`]
    /// in all.
    pub streams: Arc<tokio::sync::Semaphore>,
    /// The alerts topic's one reader, fanned out to StreamAlerts calls.
    pub alerts: crate::alert_hub::AlertHub,
    /// Who may read which org (checked on every call).
    pub auth: Arc<Authorizer>,
    /// Publishes feedback to the feedback topic.
    pub producer: rdkafka::producer::FutureProducer,
    /// The suppression rules, followed from their topic.
    pub suppressions: outlier_common::suppress::Suppressions,
    /// The fleet's signatures, followed from their topic.
    pub signatures: outlier_common::immune::Signatures,
}

/// Most StreamIncidents calls served at once; more get RESOURCE_EXHAUSTED.
pub const MAX_INCIDENT_STREAMS: usize = 64;

/// Deadline of every unary call (queries, search): a slow ClickHouse or
/// LanceDB cannot pile up requests without bound.
pub const CALL_DEADLINE: Duration = Duration::from_secs(30);

fn status(e: QueryError) -> Status {
    match e {
        QueryError::Invalid(m) => Status::invalid_argument(m),
        QueryError::ClickHouse(e) => {
            tracing::warn!(error = %e, "query failed");
            Status::unavailable(format!("clickhouse: {e}"))
        }
    }
}

fn require_org(org: &str) -> Result<(), Status> {
    outlier_common::names::validate("org", org).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// A request that names the org it reads or changes.
trait OrgScoped {
    fn org(&self) -> &str;
}

macro_rules! org_scoped {
    ($($t:ty),* $(,)?) => {
        $(impl OrgScoped for $t {
            fn org(&self) -> &str {
                &self.org
            }
        })*
    };
}

org_scoped!(
    QueryEventsRequest,
    GetEventRequest,
    ListHostsRequest,
    SearchRequest,
    StreamAlertsRequest,
    SubmitFeedbackRequest,
    ListIncidentsRequest,
    GetIncidentRequest,
    StreamIncidentsRequest,
    CreateSuppressionRequest,
    ListSuppressionsRequest,
    RevokeSuppressionRequest,
    ConfirmIncidentRequest,
    ListSignaturesRequest,
    RevokeSignatureRequest,
);

impl Services {
    /// The request's org is well formed and the caller may read it.
    fn may_read<T: OrgScoped>(&self, request: &Request<T>) -> Result<(), Status> {
        let org = request.get_ref().org();
        require_org(org)?;
        self.auth.authorize(request.metadata(), org).map(|_| ())
    }

    /// Whether the caller of `request` may read `org`: for reads made
    /// beside the service methods (the console's overview counts).
    pub fn check_read<T>(&self, request: &Request<T>, org: &str) -> Result<(), Status> {
        require_org(org)?;
        self.auth.authorize(request.metadata(), org).map(|_| ())
    }

    /// ... and the caller may change what Outlier decides for it (an
    /// identity allowed feedback): its name, for the record.
    fn may_change<T: OrgScoped>(&self, request: &Request<T>) -> Result<String, Status> {
        let org = request.get_ref().org();
        require_org(org)?;
        self.auth.authorize_feedback(request.metadata(), org)
    }
}

#[tonic::async_trait]
impl EventQuery for Services {
    async fn query_events(
        &self,
        request: Request<QueryEventsRequest>,
    ) -> Result<Response<QueryEventsResponse>, Status> {
        self.may_read(&request)?;
        let req = request.into_inner();
        let (rows, next) = query::query_events(&self.ch, &req).await.map_err(status)?;
        Ok(Response::new(QueryEventsResponse {
            events: rows.iter().map(|r| r.to_scored()).collect(),
            next_page_token: next,
        }))
    }

    async fn get_event(
        &self,
        request: Request<GetEventRequest>,
    ) -> Result<Response<GetEventResponse>, Status> {
        self.may_read(&request)?;
        let req = request.into_inner();
        match query::get_event(&self.ch, &req.org, &req.event_id)
            .await
            .map_err(status)?
        {
            Some(r) => Ok(Response::new(GetEventResponse {
                event: Some(r.to_scored()),
            })),
            None => Err(Status::not_found(format!(
                "no event {} in org {}",
                req.event_id, req.org
            ))),
        }
    }

    async fn list_hosts(
        &self,
        request: Request<ListHostsRequest>,
    ) -> Result<Response<ListHostsResponse>, Status> {
        self.may_read(&request)?;
        let req = request.into_inner();
        let now_ns = outlier_common::now_ns();
        let before = if req.silent_for_s == 0 {
            u64::MAX
        } else {
            now_ns.saturating_sub(req.silent_for_s.saturating_mul(1_000_000_000))
        };
        let rows = crate::hosts::list(&self.ch, &req.org, before)
            .await
            .map_err(|e| Status::unavailable(format!("clickhouse: {e}")))?;
        Ok(Response::new(ListHostsResponse {
            hosts: rows
                .iter()
                .map(|r| HostStatus {
                    silent_for_s: now_ns.saturating_sub(r.ts_ns) / 1_000_000_000,
                    last: Some(r.to_heartbeat()),
                })
                .collect(),
        }))
    }
}

#[tonic::async_trait]
impl Search for Services {
    async fn search(
        &self,
        request: Request<SearchRequest>,
    ) -> Result<Response<SearchResponse>, Status> {
        self.may_read(&request)?;
        let req = request.into_inner();
        let q = match &req.query {
            Some(search_request::Query::Text(t)) if !t.trim().is_empty() => embed_text(t),
            Some(search_request::Query::Example(e)) => embed(e),
            _ => {
                return Err(Status::invalid_argument(
                    "a text or an example event is required",
                ));
            }
        };
        let limit = match req.limit {
            0 => 20,
            n => n.min(200) as usize,
        };
        let hits = self
            .search
            .search(&req.org, &q, &req.workloads, limit)
            .await
            .map_err(|e| Status::unavailable(format!("search index: {e}")))?;
        let hits = query::events_of_hits(&self.ch, &req.org, &hits, req.since_ns)
            .await
            .map_err(status)?
            .into_iter()
            .map(|(row, similarity)| SearchHit {
                event: Some(row.to_scored()),
                similarity,
            })
            .collect();
        Ok(Response::new(SearchResponse { hits }))
    }
}

/// A resume cursor: the next offset to read of every partition.
/// A cursor names its org: one org's cursor does not resume another's.
fn encode_positions(org: &str, p: &BTreeMap<i32, i64>) -> String {
    let raw = p
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    format!("v2.{}.{}", hex::encode(org), hex::encode(raw))
}

fn decode_positions(org: &str, s: &str) -> Result<BTreeMap<i32, i64>, Status> {
    let bad = || Status::invalid_argument("resume_cursor is not a cursor this service issued");
    let rest = s.strip_prefix("v2.").ok_or_else(bad)?;
    let (o, p) = rest.split_once('.').ok_or_else(bad)?;
    if hex::decode(o).map_err(|_| bad())? != org.as_bytes() {
        return Err(Status::permission_denied(
            "resume_cursor belongs to another org",
        ));
    }
    let raw = String::from_utf8(hex::decode(p).map_err(|_| bad())?).map_err(|_| bad())?;
    raw.split(',')
        .filter(|x| !x.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').ok_or_else(bad)?;
            Ok((k.parse().map_err(|_| bad())?, v.parse().map_err(|_| bad())?))
        })
        .collect()
}

type AlertStreamBox = Pin<Box<dyn Stream<Item = Result<AlertEnvelope, Status>> + Send>>;

#[tonic::async_trait]
impl AlertStream for Services {
    type StreamAlertsStream = AlertStreamBox;

    async fn stream_alerts(
        &self,
        request: Request<StreamAlertsRequest>,
    ) -> Result<Response<Self::StreamAlertsStream>, Status> {
        self.may_read(&request)?;
        let req = request.into_inner();
        let resume = if req.resume_cursor.is_empty() {
            BTreeMap::new()
        } else {
            decode_positions(&req.org, &req.resume_cursor)?
        };
        let min = match req.min_verdict() {
            Verdict::Unspecified | Verdict::Ok => Verdict::Warn,
            v => v,
        };
        let filter = crate::alert_hub::Filter {
            org: req.org,
            workloads: req.workloads,
            min,
        };
        let stream = self
            .alerts
            .subscribe(filter, resume, encode_positions)
            .await?;
        Ok(Response::new(Box::pin(stream)))
    }
}

#[tonic::async_trait]
impl FeedbackService for Services {
    async fn submit_feedback(
        &self,
        request: Request<SubmitFeedbackRequest>,
    ) -> Result<Response<SubmitFeedbackResponse>, Status> {
        let actor = self.may_change(&request)?;
        let req = request.into_inner();
        let label = outlier_proto::FeedbackLabel::try_from(req.label)
            .ok()
            .filter(|l| *l != outlier_proto::FeedbackLabel::Unspecified)
            .ok_or_else(|| Status::invalid_argument("label must be benign or malicious"))?;
        let scope = outlier_proto::FeedbackScope::try_from(req.scope)
            .map_err(|_| Status::invalid_argument("scope must be workload, host or org"))?;
        if scope == outlier_proto::FeedbackScope::Host
            && label == outlier_proto::FeedbackLabel::Malicious
        {
            // Fleet signatures are org-wide: a malicious verdict is for the
            // workload or the whole org.
            return Err(Status::invalid_argument(
                "malicious feedback is for the workload or the org (a fleet signature); host scope is for benign feedback",
            ));
        }
        let row = query::get_event(&self.ch, &req.org, &req.event_id)
            .await
            .map_err(status)?
            .ok_or_else(|| {
                Status::not_found(format!("no event {} in org {}", req.event_id, req.org))
            })?;
        let event = row
            .to_scored()
            .event
            .ok_or_else(|| Status::internal("row without event"))?;
        let feedback = outlier_proto::Feedback {
            event: Some(event),
            label: label as i32,
            actor,
            note: req.reason,
            ts_ns: outlier_common::now_ns(),
        };
        outlier_common::kafka::send_feedback(
            &self.producer,
            &self.kafka.topics,
            &feedback,
            Duration::from_secs(10),
        )
        .await
        .map_err(|e| Status::unavailable(format!("feedback not delivered to Kafka: {e}")))?;
        tracing::info!(actor = %feedback.actor, org = %req.org, event_id = %req.event_id, label = ?label, "feedback published");
        let (mut suppression, mut signature) = (None, None);
        if matches!(
            scope,
            outlier_proto::FeedbackScope::Host | outlier_proto::FeedbackScope::Org
        ) {
            let event = feedback.event.as_ref().expect("set above");
            let host = if scope == outlier_proto::FeedbackScope::Host {
                event.host.clone()
            } else {
                String::new()
            };
            let now = outlier_common::now_ns();
            let reason = format!(
                "feedback on event {} by {}: {}",
                event.event_id, feedback.actor, feedback.note
            );
            if label == outlier_proto::FeedbackLabel::Benign {
                let expires_in_s = match req.expires_in_s {
                    0 => 30 * 86_400,
                    s => s.clamp(60, MAX_SUPPRESSION_S),
                };
                // Exactly this behaviour: its program and what it did.
                let mut s = Suppression {
                    suppression_id: format!("sup-{}", uuid::Uuid::now_v7().simple()),
                    org: req.org.clone(),
                    host,
                    program: event.program_name().to_string(),
                    expires_ns: now.saturating_add(expires_in_s.saturating_mul(1_000_000_000)),
                    reason,
                    author: feedback.actor.clone(),
                    created_ns: now,
                    ..Suppression::default()
                };
                match &event.detail {
                    Some(outlier_proto::event::Detail::Exec(x)) => s.argv = x.argv.join(" "),
                    Some(outlier_proto::event::Detail::Open(o)) => s.path = o.path.clone(),
                    Some(outlier_proto::event::Detail::Connect(c)) => {
                        s.remote = format!("{}:{}", c.remote_ip, c.remote_port)
                    }
                    None => {}
                }
                outlier_common::suppress::validate(&s).map_err(Status::invalid_argument)?;
                self.publish_suppression(&s).await?;
                suppression = Some(s);
            } else {
                let expires_in_s = match req.expires_in_s {
                    0 => 90 * 86_400,
                    s => s.clamp(60, 365 * 86_400),
                };
                let mut s = outlier_common::immune::signature_of(
                    event,
                    format!("sig-{}", uuid::Uuid::now_v7().simple()),
                );
                let scored = row.to_scored();
                s.tactic = scored.tactic.clone();
                s.technique = scored.technique.clone();
                s.summary = crate::incidents::step_of(&scored);
                s.author = feedback.actor.clone();
                s.reason = reason;
                s.created_ns = now;
                s.expires_ns = now.saturating_add(expires_in_s.saturating_mul(1_000_000_000));
                self.publish_signature(&s).await?;
                signature = Some(s);
            }
        }
        Ok(Response::new(SubmitFeedbackResponse {
            feedback: Some(feedback),
            suppression,
            signature,
        }))
    }
}

/// How long an incident change settles before the stream sends it: its
/// row is stamped before the insert, so a change is only read once every
/// insert stamped before it has landed.
const INCIDENT_SETTLE: Duration = Duration::from_secs(2);

fn min_verdict(v: Verdict) -> u8 {
    match v {
        Verdict::Unspecified | Verdict::Ok => Verdict::Warn as u8,
        v => v as u8,
    }
}

/// An incident stream's cursor: the last change sent, bound to its org.
fn encode_incident_cursor(org: &str, updated_ns: u64) -> String {
    format!("i1.{}.{updated_ns}", hex::encode(org))
}

fn decode_incident_cursor(org: &str, s: &str) -> Result<u64, Status> {
    let bad = || Status::invalid_argument("resume_cursor is not a cursor this service issued");
    let rest = s.strip_prefix("i1.").ok_or_else(bad)?;
    let (o, t) = rest.split_once('.').ok_or_else(bad)?;
    if hex::decode(o).map_err(|_| bad())? != org.as_bytes() {
        return Err(Status::permission_denied(
            "resume_cursor belongs to another org",
        ));
    }
    t.parse().map_err(|_| bad())
}

fn clickhouse_status(e: clickhouse::error::Error) -> Status {
    tracing::warn!(error = %e, "incident query failed");
    Status::unavailable(format!("clickhouse: {e}"))
}

type IncidentStreamBox = Pin<Box<dyn Stream<Item = Result<IncidentUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl IncidentService for Services {
    type StreamIncidentsStream = IncidentStreamBox;

    async fn list_incidents(
        &self,
        request: Request<ListIncidentsRequest>,
    ) -> Result<Response<ListIncidentsResponse>, Status> {
        self.may_read(&request)?;
        let req = request.into_inner();
        let limit = match req.limit {
            0 => 50,
            n => n.min(1000),
        };
        let filter = crate::incidents::Filter {
            since_ns: req.since_ns,
            until_ns: req.until_ns,
            min_verdict: min_verdict(req.min_verdict()),
            hosts: req.hosts,
            workloads: req.workloads,
            tactics: req.tactics,
            before_last_ns: req.before_last_ns,
            limit: u64::from(limit),
        };
        let rows = crate::incidents::list(&self.ch, &req.org, &filter)
            .await
            .map_err(clickhouse_status)?;
        Ok(Response::new(ListIncidentsResponse {
            incidents: rows.iter().map(|r| r.to_incident()).collect(),
        }))
    }

    async fn get_incident(
        &self,
        request: Request<GetIncidentRequest>,
    ) -> Result<Response<GetIncidentResponse>, Status> {
        self.may_read(&request)?;
        let req = request.into_inner();
        let row = crate::incidents::get(&self.ch, &req.org, &req.incident_id)
            .await
            .map_err(clickhouse_status)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no incident {} in org {}",
                    req.incident_id, req.org
                ))
            })?;
        let keys: Vec<(u64, &str)> = row
            .event_ts_ns
            .iter()
            .zip(&row.event_ids)
            .map(|(t, id)| (*t, id.as_str()))
            .collect();
        let mut events = query::events_by_id(&self.ch, &req.org, &keys)
            .await
            .map_err(status)?;
        events.sort_by(|a, b| (a.ts_ns, &a.event_id).cmp(&(b.ts_ns, &b.event_id)));
        events.dedup_by(|a, b| a.event_id == b.event_id);
        Ok(Response::new(GetIncidentResponse {
            incident: Some(row.to_incident()),
            events: events.iter().map(|r| r.to_scored()).collect(),
        }))
    }

    async fn stream_incidents(
        &self,
        request: Request<StreamIncidentsRequest>,
    ) -> Result<Response<Self::StreamIncidentsStream>, Status> {
        self.may_read(&request)?;
        let req = request.into_inner();
        let mut after = if req.resume_cursor.is_empty() {
            outlier_common::now_ns().saturating_sub(INCIDENT_SETTLE.as_nanos() as u64)
        } else {
            decode_incident_cursor(&req.org, &req.resume_cursor)?
        };
        let permit = self.streams.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "{MAX_INCIDENT_STREAMS} incident streams are open on this indexer; try another or later"
            ))
        })?;
        let min = min_verdict(req.min_verdict());
        let (tx, rx) = mpsc::channel(256);
        let ch = self.ch.clone();
        let org = req.org;
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tx.closed() => return,
                    _ = tick.tick() => {}
                }
                let until =
                    outlier_common::now_ns().saturating_sub(INCIDENT_SETTLE.as_nanos() as u64);
                if until <= after {
                    continue;
                }
                let rows = match crate::incidents::changed(&ch, &org, after, until, min).await {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.send(Err(clickhouse_status(e))).await;
                        return;
                    }
                };
                let full = rows.len() >= 500;
                for r in rows {
                    after = after.max(r.updated_ns);
                    let update = IncidentUpdate {
                        cursor: encode_incident_cursor(&org, r.updated_ns),
                        incident: Some(r.to_incident()),
                    };
                    if tx.send(Ok(update)).await.is_err() {
                        return;
                    }
                }
                if !full {
                    after = after.max(until);
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Longest a suppression may apply: a rule is a decision to revisit.
pub const MAX_SUPPRESSION_S: u64 = 90 * 86_400;

impl Services {
    async fn publish_suppression(&self, s: &Suppression) -> Result<(), Status> {
        outlier_common::suppress::publish(
            &self.producer,
            &self.kafka.topics,
            s,
            Duration::from_secs(10),
        )
        .await
        .map_err(|e| Status::unavailable(format!("suppression not delivered to Kafka: {e}")))?;
        // Listed at once here; the scorers follow the topic.
        let _ = self.suppressions.apply(s.clone());
        Ok(())
    }
}

#[tonic::async_trait]
impl SuppressionService for Services {
    async fn create_suppression(
        &self,
        request: Request<CreateSuppressionRequest>,
    ) -> Result<Response<CreateSuppressionResponse>, Status> {
        let author = self.may_change(&request)?;
        let req = request.into_inner();
        if !(60..=MAX_SUPPRESSION_S).contains(&req.expires_in_s) {
            return Err(Status::invalid_argument(format!(
                "expires_in_s = {}: a suppression applies for 60 s to 90 days",
                req.expires_in_s
            )));
        }
        let now = outlier_common::now_ns();
        let s = Suppression {
            suppression_id: format!("sup-{}", uuid::Uuid::now_v7().simple()),
            org: req.org,
            workload: req.workload,
            host: req.host,
            program: req.program,
            argv: req.argv,
            path: req.path,
            remote: req.remote,
            expires_ns: now.saturating_add(req.expires_in_s.saturating_mul(1_000_000_000)),
            reason: req.reason,
            author,
            created_ns: now,
            revoked: false,
            revoked_by: String::new(),
        };
        outlier_common::suppress::validate(&s).map_err(Status::invalid_argument)?;
        self.publish_suppression(&s).await?;
        tracing::info!(author = %s.author, org = %s.org, id = %s.suppression_id, "suppression created");
        Ok(Response::new(CreateSuppressionResponse {
            suppression: Some(s),
        }))
    }

    async fn list_suppressions(
        &self,
        request: Request<ListSuppressionsRequest>,
    ) -> Result<Response<ListSuppressionsResponse>, Status> {
        self.may_read(&request)?;
        let req = request.into_inner();
        Ok(Response::new(ListSuppressionsResponse {
            suppressions: self
                .suppressions
                .list(&req.org, req.all, outlier_common::now_ns()),
        }))
    }

    async fn revoke_suppression(
        &self,
        request: Request<RevokeSuppressionRequest>,
    ) -> Result<Response<RevokeSuppressionResponse>, Status> {
        let actor = self.may_change(&request)?;
        let req = request.into_inner();
        let mut s = self
            .suppressions
            .get(&req.org, &req.suppression_id)
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no suppression {} in org {}",
                    req.suppression_id, req.org
                ))
            })?;
        s.revoked = true;
        s.revoked_by = actor;
        self.publish_suppression(&s).await?;
        tracing::info!(by = %s.revoked_by, org = %s.org, id = %s.suppression_id, "suppression revoked");
        Ok(Response::new(RevokeSuppressionResponse {
            suppression: Some(s),
        }))
    }
}

/// Distinct behaviours of one incident made into signatures, at most.
pub const MAX_SIGNATURES_PER_INCIDENT: usize = 32;

impl Services {
    async fn publish_signature(&self, s: &Signature) -> Result<(), Status> {
        outlier_common::immune::publish(
            &self.producer,
            &self.kafka.topics,
            s,
            Duration::from_secs(10),
        )
        .await
        .map_err(|e| Status::unavailable(format!("signature not delivered to Kafka: {e}")))?;
        let _ = self.signatures.apply(s.clone());
        Ok(())
    }
}

#[tonic::async_trait]
impl SignatureService for Services {
    async fn confirm_incident(
        &self,
        request: Request<ConfirmIncidentRequest>,
    ) -> Result<Response<ConfirmIncidentResponse>, Status> {
        let author = self.may_change(&request)?;
        let req = request.into_inner();
        if req.reason.trim().is_empty() {
            return Err(Status::invalid_argument(
                "reason: say why (it is kept with the signatures)",
            ));
        }
        let expires_in_s = match req.expires_in_s {
            0 => 90 * 86_400,
            s if (60..=365 * 86_400).contains(&s) => s,
            s => {
                return Err(Status::invalid_argument(format!(
                    "expires_in_s = {s}: a signature applies for 60 s to 365 days"
                )));
            }
        };
        let row = crate::incidents::get(&self.ch, &req.org, &req.incident_id)
            .await
            .map_err(clickhouse_status)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no incident {} in org {}",
                    req.incident_id, req.org
                ))
            })?;
        let keys: Vec<(u64, &str)> = row
            .event_ts_ns
            .iter()
            .zip(&row.event_ids)
            .map(|(t, id)| (*t, id.as_str()))
            .collect();
        let mut events = query::events_by_id(&self.ch, &req.org, &keys)
            .await
            .map_err(status)?;
        events.sort_by(|a, b| (a.ts_ns, &a.event_id).cmp(&(b.ts_ns, &b.event_id)));
        events.dedup_by(|a, b| a.event_id == b.event_id);
        let now = outlier_common::now_ns();
        // An incident is grouped from the alerts topic, a little ahead of
        // its events' rows: a just-changed incident whose events are not all
        // stored yet is confirmed once they are, never in part.
        let recent = now.saturating_sub(row.updated_ns) < 120_000_000_000;
        if recent && events.len() < keys.len() {
            return Err(Status::unavailable(format!(
                "incident {}: {} of its {} events are stored so far; retry in a few seconds",
                row.incident_id,
                events.len(),
                keys.len()
            )));
        }
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for r in &events {
            if out.len() >= MAX_SIGNATURES_PER_INCIDENT {
                break;
            }
            let scored = r.to_scored();
            let Some(event) = scored.event.clone() else {
                continue;
            };
            let mut s = outlier_common::immune::signature_of(
                &event,
                format!("sig-{}", uuid::Uuid::now_v7().simple()),
            );
            // One signature per behaviour (the same embedding: the same key).
            let key = outlier_common::featurize::behaviour_key(
                &<[f32; outlier_common::featurize::DIM]>::try_from(s.embedding.as_slice())
                    .expect("embedding of DIM values"),
            );
            if !seen.insert(key) {
                continue;
            }
            s.tactic = scored.tactic.clone();
            s.technique = scored.technique.clone();
            s.incident_id = row.incident_id.clone();
            s.summary = crate::incidents::step_of(&scored);
            s.author = author.clone();
            s.reason = req.reason.clone();
            s.created_ns = now;
            s.expires_ns = now.saturating_add(expires_in_s.saturating_mul(1_000_000_000));
            self.publish_signature(&s).await?;
            // The workload that learned it (in its warm-up) forgets it.
            let feedback = outlier_proto::Feedback {
                event: Some(event),
                label: outlier_proto::FeedbackLabel::Malicious as i32,
                actor: author.clone(),
                note: format!(
                    "incident {} confirmed malicious: {}",
                    row.incident_id, req.reason
                ),
                ts_ns: now,
            };
            outlier_common::kafka::send_feedback(
                &self.producer,
                &self.kafka.topics,
                &feedback,
                Duration::from_secs(10),
            )
            .await
            .map_err(|e| Status::unavailable(format!("feedback not delivered to Kafka: {e}")))?;
            out.push(s);
        }
        if out.is_empty() {
            return Err(Status::failed_precondition(format!(
                "incident {}: none of its events is stored any more",
                row.incident_id
            )));
        }
        tracing::info!(author = %author, org = %req.org, incident = %row.incident_id, signatures = out.len(), "incident confirmed malicious");
        Ok(Response::new(ConfirmIncidentResponse { signatures: out }))
    }

    async fn list_signatures(
        &self,
        request: Request<ListSignaturesRequest>,
    ) -> Result<Response<ListSignaturesResponse>, Status> {
        self.may_read(&request)?;
        let req = request.into_inner();
        Ok(Response::new(ListSignaturesResponse {
            signatures: self
                .signatures
                .list(&req.org, req.all, outlier_common::now_ns()),
        }))
    }

    async fn revoke_signature(
        &self,
        request: Request<RevokeSignatureRequest>,
    ) -> Result<Response<RevokeSignatureResponse>, Status> {
        let actor = self.may_change(&request)?;
        let req = request.into_inner();
        let mut s = self
            .signatures
            .get(&req.org, &req.signature_id)
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no signature {} in org {}",
                    req.signature_id, req.org
                ))
            })?;
        s.revoked = true;
        s.revoked_by = actor;
        self.publish_signature(&s).await?;
        tracing::info!(by = %s.revoked_by, org = %s.org, id = %s.signature_id, "signature revoked");
        Ok(Response::new(RevokeSignatureResponse {
            signature: Some(s),
        }))
    }
}

/// Serves the gRPC services on `addr` until `shutdown` fires. Returns the
/// bound address once listening.
pub async fn serve(
    addr: SocketAddr,
    services: Services,
    tls: Option<tonic::transport::Identity>,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(outlier_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(std::io::Error::other)?;
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<EventQueryServer<Services>>().await;
    health.set_serving::<SearchServer<Services>>().await;
    health.set_serving::<AlertStreamServer<Services>>().await;
    health
        .set_serving::<FeedbackServiceServer<Services>>()
        .await;
    health
        .set_serving::<IncidentServiceServer<Services>>()
        .await;
    health
        .set_serving::<SuppressionServiceServer<Services>>()
        .await;
    health
        .set_serving::<SignatureServiceServer<Services>>()
        .await;
    let mut builder = tonic::transport::Server::builder();
    crate::install_crypto_provider();
    if let Some(identity) = tls {
        builder = builder
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .map_err(std::io::Error::other)?;
    }
    let server = builder
        .timeout(CALL_DEADLINE)
        .add_service(reflection)
        .add_service(health_service)
        .add_service(EventQueryServer::new(services.clone()))
        .add_service(SearchServer::new(services.clone()))
        .add_service(AlertStreamServer::new(services.clone()))
        .add_service(FeedbackServiceServer::new(services.clone()))
        .add_service(IncidentServiceServer::new(services.clone()))
        .add_service(SuppressionServiceServer::new(services.clone()))
        .add_service(SignatureServiceServer::new(services));
    tokio::spawn(async move {
        // No Nagle: a TLS response goes out in several writes, and Nagle
        // with the client's delayed ACK would hold the later ones ~40 ms.
        let incoming = tokio_stream::StreamExt::map(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            |s| {
                if let Ok(s) = &s {
                    let _ = s.set_nodelay(true);
                }
                s
            },
        );
        if let Err(e) = server
            .serve_with_incoming_shutdown(incoming, async move { shutdown.cancelled().await })
            .await
        {
            tracing::error!(error = %e, "grpc server failed");
        }
    });
    tracing::info!(addr = %bound, "serving gRPC (EventQuery, Search, AlertStream, FeedbackService, IncidentService, SuppressionService, SignatureService, reflection, health)");
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_cursors_round_trip_within_their_org_only() {
        let p: BTreeMap<i32, i64> = [(0, 5), (2, 17)].into_iter().collect();
        let c = encode_positions("acme", &p);
        assert_eq!(decode_positions("acme", &c).unwrap(), p);
        let e = decode_positions("globex", &c).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(decode_positions("acme", "garbage").is_err());
        assert!(decode_positions("acme", "v1.3d").is_err());
    }

    #[test]
    fn incident_cursors_round_trip_within_their_org_only() {
        let c = encode_incident_cursor("acme", 1_700_000_000_123);
        assert_eq!(
            decode_incident_cursor("acme", &c).unwrap(),
            1_700_000_000_123
        );
        let e = decode_incident_cursor("globex", &c).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(decode_incident_cursor("acme", "i1.zz.1").is_err());
        assert!(
            decode_incident_cursor("acme", &encode_positions("acme", &BTreeMap::new())).is_err()
        );
    }
}
