//! The web console (docs/console.md): incidents, events with their process
//! tree and reasons, search and the fleet, in a browser, over HTTPS.
//!
//! Served by the indexer beside its gRPC services, on them: every page
//! calls the same service methods a gRPC client does, in process, with the
//! signed-in identity's token, so the identities, the org rules and the
//! feedback rights are the services' own and checked on every request
//! (docs/security.md). Signing in takes a token of the tokens file; the
//! session is a random id in an `HttpOnly`, `Secure`, `SameSite=Strict`
//! cookie, and every form carries the session's own anti-forgery value.
//! Pages are rendered on the server; the one script (`console.js`) only
//! shows live alerts and incidents. Every asset is in this crate: nothing
//! is fetched from elsewhere.

pub mod html;
mod pages;
mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

use crate::grpc::Services;

/// The console's settings (`[console]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Address of the console, e.g. `127.0.0.1:8443`; empty: no console.
    /// HTTPS with the gRPC services' certificate (`tls.cert`, `tls.key`);
    /// plain HTTP only with `auth.insecure` on a loopback address.
    pub addr: String,
    /// Hours a sign-in lasts.
    pub session_hours: u64,
    /// Sessions held at once; beyond it the oldest is signed out.
    pub max_sessions: usize,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            addr: String::new(),
            session_hours: 8,
            max_sessions: 10_000,
        }
    }
}

impl ConsoleConfig {
    /// The address to serve on (`None`: no console); the error names the key.
    pub fn address(&self, insecure: bool) -> Result<Option<SocketAddr>, String> {
        if self.addr.is_empty() {
            return Ok(None);
        }
        let addr: SocketAddr = self.addr.parse().map_err(|_| {
            format!(
                "console.addr = {:?} is not an address (host:port)",
                self.addr
            )
        })?;
        if insecure && !addr.ip().is_loopback() {
            return Err(format!(
                "console.addr = {addr}: with auth.insecure the console serves plain HTTP without sign-in, on a loopback address only"
            ));
        }
        if !(1..=720).contains(&self.session_hours) {
            return Err(format!(
                "console.session_hours = {} is out of range (1..=720)",
                self.session_hours
            ));
        }
        if self.max_sessions == 0 {
            return Err("console.max_sessions must be at least 1".into());
        }
        Ok(Some(addr))
    }
}

/// What every page handler shares.
#[derive(Clone)]
pub(crate) struct Console {
    services: Services,
    sessions: Arc<Mutex<HashMap<String, Session>>>,
    /// Served over TLS: cookies are `Secure`.
    secure: bool,
    ttl: Duration,
    max_sessions: usize,
}

/// A signed-in browser.
#[derive(Clone, Debug)]
pub(crate) struct Session {
    /// The token it signed in with: every service call carries it.
    token: String,
    /// The identity's name; `None` without authentication.
    pub who: Option<String>,
    /// The orgs it may read (`None`: every org).
    pub orgs: Option<Vec<String>>,
    /// May give feedback.
    pub feedback: bool,
    /// This session's anti-forgery value, in every form it is shown.
    pub csrf: String,
    expires: Instant,
}

impl Session {
    /// `msg` as a service request made by this session's identity.
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if !self.token.is_empty()
            && let Ok(v) = format!("Bearer {}", self.token).parse()
        {
            r.metadata_mut().insert("authorization", v);
        }
        r
    }

    /// Whether `value` is this session's anti-forgery value.
    pub fn check_csrf(&self, value: &str) -> Result<(), PageError> {
        if self.who.is_none() || (!value.is_empty() && value == self.csrf) {
            Ok(())
        } else {
            Err(PageError::new(
                StatusCode::FORBIDDEN,
                "This form is stale or was not sent from the console: reload the page and try again.",
            ))
        }
    }
}

const COOKIE: &str = "outlier_session";

fn random_hex(bytes: usize) -> String {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut b = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut b)
        .expect("the system's random source answers");
    hex::encode(b)
}

impl Console {
    fn auth_enabled(&self) -> bool {
        self.services.auth.enabled()
    }

    /// Signs in with `token`: the new session's id, or `None` for a token
    /// the tokens file does not know.
    fn sign_in(&self, token: &str) -> Option<(String, Session)> {
        let id = self.services.auth.identify(token)?;
        let session = Session {
            token: token.trim().to_string(),
            who: Some(id.name.clone()),
            orgs: id.orgs().map(<[String]>::to_vec),
            feedback: id.feedback,
            csrf: random_hex(16),
            expires: Instant::now() + self.ttl,
        };
        let sid = random_hex(32);
        let mut sessions = self.sessions.lock().expect("sessions lock");
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        while sessions.len() >= self.max_sessions {
            let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            sessions.remove(&oldest);
        }
        sessions.insert(sid.clone(), session.clone());
        Some((sid, session))
    }

    fn sign_out(&self, sid: &str) {
        self.sessions.lock().expect("sessions lock").remove(sid);
    }

    fn cookie(&self, sid: &str, max_age_s: u64) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{COOKIE}={sid}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}"
        ))
        .expect("a cookie of hex digits is a header value")
    }
}

/// The session cookie's value, if the request carries one.
fn session_id(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

impl FromRequestParts<Console> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, c: &Console) -> Result<Self, Self::Rejection> {
        if !c.auth_enabled() {
            return Ok(Session {
                token: String::new(),
                who: None,
                orgs: None,
                feedback: true,
                csrf: String::new(),
                expires: Instant::now() + c.ttl,
            });
        }
        let found = session_id(&parts.headers).and_then(|sid| {
            let mut sessions = c.sessions.lock().expect("sessions lock");
            match sessions.get(&sid) {
                Some(s) if s.expires > Instant::now() => Some(s.clone()),
                Some(_) => {
                    sessions.remove(&sid);
                    None
                }
                None => None,
            }
        });
        found.ok_or_else(|| {
            // Pages redirect to the sign-in; the live stream (an
            // EventSource) gets a plain 401.
            if parts.uri.path().ends_with("/live") || parts.uri.path().contains("/live/") {
                StatusCode::UNAUTHORIZED.into_response()
            } else {
                Redirect::to("/login").into_response()
            }
        })
    }
}

/// A page that could not be shown: its status and a sentence for the
/// person who asked.
#[derive(Debug)]
pub(crate) struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl From<Status> for PageError {
    fn from(s: Status) -> Self {
        let status = match s.code() {
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::InvalidArgument => StatusCode::BAD_REQUEST,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(status, s.message().to_string())
    }
}

impl From<crate::query::QueryError> for PageError {
    fn from(e: crate::query::QueryError) -> Self {
        match e {
            crate::query::QueryError::Invalid(m) => Self::new(StatusCode::BAD_REQUEST, m),
            crate::query::QueryError::ClickHouse(e) => {
                tracing::warn!(error = %e, "console query failed");
                Self::new(StatusCode::SERVICE_UNAVAILABLE, format!("clickhouse: {e}"))
            }
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        if self.status == StatusCode::UNAUTHORIZED {
            return Redirect::to("/login").into_response();
        }
        let title = self.status.canonical_reason().unwrap_or("Error");
        let body = html::Page {
            title,
            org: None,
            who: None,
            csrf: "",
            current: "",
        }
        .render(&format!(
            "<p class=\"error\">{}</p><p><a href=\"/\">Back to the start</a></p>",
            html::esc(&self.message)
        ));
        (
            self.status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response()
    }
}

/// Headers every response carries: no framing, no sniffing, no referrer,
/// scripts and styles from the console only (bar widths are the one inline
/// style), and HSTS over TLS.
async fn security_headers(secure: bool, mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if secure {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    r
}

/// The console's routes over `services`.
pub(crate) fn router(services: Services, cfg: &ConsoleConfig, secure: bool) -> axum::Router {
    let console = Console {
        services,
        sessions: Arc::new(Mutex::new(HashMap::new())),
        secure,
        ttl: Duration::from_secs(cfg.session_hours * 3600),
        max_sessions: cfg.max_sessions,
    };
    pages::routes()
        .layer(axum::middleware::map_response(move |r: Response| {
            security_headers(secure, r)
        }))
        .with_state(console)
}

/// Serves the console on `addr` until `shutdown` fires: HTTPS with the
/// certificate and key at `tls` (PEM paths), plain HTTP without. Returns
/// the bound address once listening.
pub async fn serve(
    addr: SocketAddr,
    services: Services,
    cfg: &ConsoleConfig,
    tls: Option<(&str, &str)>,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let app = router(services, cfg, tls.is_some());
    let bound = match tls {
        Some((cert, key)) => {
            let listener = tls::TlsListener::bind(addr, cert, key, shutdown.clone()).await?;
            spawn_server(listener, app, shutdown)?
        }
        None => spawn_server(tokio::net::TcpListener::bind(addr).await?, app, shutdown)?,
    };
    tracing::info!(addr = %bound, https = tls.is_some(), "serving the web console");
    Ok(bound)
}

fn spawn_server<L>(
    listener: L,
    app: axum::Router,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
        {
            tracing::error!(error = %e, "console server failed");
        }
    });
    Ok(bound)
}
