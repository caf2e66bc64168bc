//! The JSON Lines replay format, v1 (architecture.md, "JSON Lines replay
//! format"): one event per line, unknown fields ignored, `event_id` and
//! `ts_ns` optional. Lines become the same protobuf events live capture makes.

use outlier_proto::{
    AddressFamily, Connect, Event, EventKind, Exec, Open, Protocol, event::Detail,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::names::{self, NameError};

/// Most arguments kept of one command line.
pub const MAX_ARGS: usize = 64;
/// Most bytes kept of one command line (all arguments together).
pub const MAX_ARGV_BYTES: usize = 4096;
/// Most bytes kept of a path.
pub const MAX_PATH_BYTES: usize = 4096;

#[derive(Debug, Error)]
pub enum JsonError {
    #[error("not a JSON event object: {0}")]
    Syntax(#[from] serde_json::Error),
    #[error("missing required field `{0}`")]
    Missing(&'static str),
    #[error("invalid name: {0}")]
    Name(#[from] NameError),
    #[error("unknown kind `{0}` (expected exec, connect or open)")]
    UnknownKind(String),
    #[error("invalid remote_ip `{0}`")]
    BadIp(String),
    #[error("port {0} is out of range")]
    BadPort(u32),
    #[error("unknown protocol `{0}` (expected tcp or udp)")]
    BadProtocol(String),
}

/// One line of the v1 format. Field names are the contract; see architecture.md.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct JsonEvent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts_ns: Option<u64>,
    #[serde(default)]
    pub org: Option<String>,
    #[serde(default)]
    pub workload: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ppid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_comm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<u32>,
}

/// Parses one line into an event. `now_ns` stamps events without `ts_ns`;
/// `new_id` names events without `event_id`.
pub fn parse_line(
    line: &str,
    now_ns: u64,
    new_id: impl FnOnce() -> String,
) -> Result<Event, JsonError> {
    let raw: JsonEvent = serde_json::from_str(line)?;
    to_event(raw, now_ns, new_id)
}

/// Converts a decoded line into an event, validating and bounding it.
pub fn to_event(
    raw: JsonEvent,
    now_ns: u64,
    new_id: impl FnOnce() -> String,
) -> Result<Event, JsonError> {
    let org = raw.org.ok_or(JsonError::Missing("org"))?;
    let workload = raw.workload.ok_or(JsonError::Missing("workload"))?;
    let host = raw.host.ok_or(JsonError::Missing("host"))?;
    names::validate("org", &org)?;
    names::validate("workload", &workload)?;
    names::validate("host", &host)?;
    let kind = raw.kind.ok_or(JsonError::Missing("kind"))?;
    let detail = match EventKind::from_label(&kind).unwrap_or_default() {
        EventKind::Exec => {
            let argv = raw.argv.unwrap_or_default();
            let argc = u32::try_from(argv.len()).unwrap_or(u32::MAX);
            let (argv, argv_truncated) = bound_argv(argv);
            Detail::Exec(Exec {
                argv,
                argv_truncated,
                argc,
                cwd: raw.cwd.unwrap_or_default(),
                retval: None,
            })
        }
        EventKind::Connect => {
            let remote_ip = raw.remote_ip.ok_or(JsonError::Missing("remote_ip"))?;
            let addr: std::net::IpAddr = remote_ip
                .parse()
                .map_err(|_| JsonError::BadIp(remote_ip.clone()))?;
            let family = if addr.is_ipv4() {
                AddressFamily::Inet
            } else {
                AddressFamily::Inet6
            };
            let remote_port = port(raw.remote_port.ok_or(JsonError::Missing("remote_port"))?)?;
            let local_port = port(raw.local_port.unwrap_or(0))?;
            let protocol = match raw.protocol.as_deref().unwrap_or("tcp") {
                "tcp" | "TCP" => Protocol::Tcp,
                "udp" | "UDP" => Protocol::Udp,
                other => return Err(JsonError::BadProtocol(other.to_string())),
            };
            Detail::Connect(Connect {
                family: family as i32,
                remote_ip: addr.to_string(),
                remote_port,
                local_ip: raw.local_ip.unwrap_or_default(),
                local_port,
                protocol: protocol as i32,
                retval: None,
            })
        }
        EventKind::Open => {
            let path = raw.path.ok_or(JsonError::Missing("path"))?;
            let (path, path_truncated) = bound_str(path, MAX_PATH_BYTES);
            Detail::Open(Open {
                path,
                path_truncated,
                flags: raw.flags.unwrap_or(0),
                retval: None,
            })
        }
        EventKind::Unspecified => return Err(JsonError::UnknownKind(kind)),
    };
    let event_id = match raw.event_id {
        Some(id) if !id.is_empty() => id,
        _ => new_id(),
    };
    Ok(Event {
        event_id,
        org,
        workload,
        host,
        ts_ns: raw.ts_ns.unwrap_or(now_ns),
        pid: raw.pid.unwrap_or(0),
        ppid: raw.ppid.unwrap_or(0),
        uid: raw.uid.unwrap_or(0),
        gid: raw.gid.unwrap_or(0),
        comm: raw.comm.unwrap_or_default(),
        parent_comm: raw.parent_comm.unwrap_or_default(),
        exe: raw.exe.unwrap_or_default(),
        cgroup: raw.cgroup.unwrap_or_default(),
        source: "replay".to_string(),
        detail: Some(detail),
    })
}

fn port(p: u32) -> Result<u32, JsonError> {
    if p > u32::from(u16::MAX) {
        Err(JsonError::BadPort(p))
    } else {
        Ok(p)
    }
}

/// Keeps at most [`MAX_ARGS`] arguments and [`MAX_ARGV_BYTES`] bytes, cutting
/// on a character boundary; the flag says whether anything was cut.
pub fn bound_argv(argv: Vec<String>) -> (Vec<String>, bool) {
    let mut out = Vec::with_capacity(argv.len().min(MAX_ARGS));
    let mut budget = MAX_ARGV_BYTES;
    let total = argv.len();
    for arg in argv {
        if out.len() == MAX_ARGS || budget == 0 {
            return (out, true);
        }
        if arg.len() > budget {
            let (cut, _) = bound_str(arg, budget);
            out.push(cut);
            return (out, true);
        }
        budget -= arg.len();
        out.push(arg);
    }
    debug_assert_eq!(out.len(), total);
    (out, false)
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn bound_str(mut s: String, max: usize) -> (String, bool) {
    if s.len() <= max {
        return (s, false);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    (s, true)
}

/// Renders an event back into the v1 JSON form (the inverse of [`to_event`]).
pub fn from_event(e: &Event) -> JsonEvent {
    let mut j = JsonEvent {
        event_id: Some(e.event_id.clone()),
        ts_ns: Some(e.ts_ns),
        org: Some(e.org.clone()),
        workload: Some(e.workload.clone()),
        host: Some(e.host.clone()),
        kind: Some(e.kind_name().to_string()),
        pid: Some(e.pid),
        ppid: Some(e.ppid),
        uid: Some(e.uid),
        gid: Some(e.gid),
        comm: Some(e.comm.clone()),
        parent_comm: Some(e.parent_comm.clone()),
        exe: Some(e.exe.clone()),
        cgroup: Some(e.cgroup.clone()),
        ..JsonEvent::default()
    };
    match &e.detail {
        Some(Detail::Exec(x)) => {
            j.argv = Some(x.argv.clone());
            j.cwd = Some(x.cwd.clone());
        }
        Some(Detail::Connect(c)) => {
            j.remote_ip = Some(c.remote_ip.clone());
            j.remote_port = Some(c.remote_port);
            j.local_ip = Some(c.local_ip.clone()).filter(|s| !s.is_empty());
            j.local_port = Some(c.local_port);
            j.protocol = Some(
                if c.protocol == Protocol::Udp as i32 {
                    "udp"
                } else {
                    "tcp"
                }
                .into(),
            );
        }
        Some(Detail::Open(o)) => {
            j.path = Some(o.path.clone());
            j.flags = Some(o.flags);
        }
        None => {}
    }
    j
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Event, JsonError> {
        parse_line(line, 42, || "generated".to_string())
    }

    #[test]
    fn parses_the_three_kinds_of_the_spec() {
        let e = parse(r#"{"event_id":"e-1","ts_ns":1763800000000000000,"org":"acme","workload":"web","host":"web-1","kind":"exec","pid":4242,"ppid":4200,"uid":33,"gid":33,"comm":"bash","parent_comm":"nginx","exe":"/usr/bin/bash","argv":["bash","-c","id"],"cwd":"/var/www","cgroup":"/system.slice/nginx.service"}"#).unwrap();
        assert_eq!(e.event_id, "e-1");
        assert_eq!(e.ts_ns, 1_763_800_000_000_000_000);
        assert_eq!(e.parent_comm, "nginx");
        let Some(Detail::Exec(x)) = &e.detail else {
            panic!("not exec")
        };
        assert_eq!(x.argv, ["bash", "-c", "id"]);
        assert_eq!(x.argc, 3);
        assert!(!x.argv_truncated);

        let e = parse(r#"{"event_id":"e-2","org":"acme","workload":"web","host":"web-1","kind":"connect","pid":4243,"comm":"bash","remote_ip":"203.0.113.7","remote_port":4444,"local_port":51544,"protocol":"tcp"}"#).unwrap();
        assert_eq!(e.ts_ns, 42, "missing ts_ns is stamped");
        let Some(Detail::Connect(c)) = &e.detail else {
            panic!("not connect")
        };
        assert_eq!(
            (c.remote_ip.as_str(), c.remote_port, c.local_port),
            ("203.0.113.7", 4444, 51544)
        );
        assert_eq!(c.family, AddressFamily::Inet as i32);

        let e = parse(r#"{"org":"acme","workload":"web","host":"web-1","kind":"open","pid":4244,"comm":"cat","path":"/etc/shadow","flags":0,"extra":"ignored"}"#).unwrap();
        assert_eq!(e.event_id, "generated", "missing event_id is generated");
        let Some(Detail::Open(o)) = &e.detail else {
            panic!("not open")
        };
        assert_eq!(o.path, "/etc/shadow");
    }

    #[test]
    fn rejects_bad_lines_with_a_reason() {
        let cases = [
            ("not json", "not a JSON event object"),
            (
                r#"{"workload":"w","host":"h","kind":"exec"}"#,
                "missing required field `org`",
            ),
            (
                r#"{"org":"o","workload":"w","host":"h","kind":"fork"}"#,
                "unknown kind `fork`",
            ),
            (
                r#"{"org":"o","workload":"w","host":"h","kind":"connect","remote_ip":"x","remote_port":1}"#,
                "invalid remote_ip",
            ),
            (
                r#"{"org":"o","workload":"w","host":"h","kind":"connect","remote_ip":"::1","remote_port":70000}"#,
                "out of range",
            ),
            (
                r#"{"org":"","workload":"w","host":"h","kind":"exec"}"#,
                "org is empty",
            ),
            (
                r#"{"org":"o","workload":"w","host":"h","kind":"open"}"#,
                "missing required field `path`",
            ),
            (
                r#"{"org":"o","workload":"w","host":"h","kind":"exec","pid":-1}"#,
                "not a JSON event object",
            ),
        ];
        for (line, want) in cases {
            let err = parse(line).unwrap_err().to_string();
            assert!(err.contains(want), "{line}: {err}");
        }
    }

    #[test]
    fn oversized_argv_is_truncated_with_a_flag() {
        let many: Vec<String> = (0..100).map(|i| format!("a{i}")).collect();
        let (kept, cut) = bound_argv(many);
        assert_eq!(kept.len(), MAX_ARGS);
        assert!(cut);

        let big = vec!["x".repeat(3000), "é".repeat(1000)];
        let (kept, cut) = bound_argv(big);
        assert!(cut);
        assert_eq!(kept.iter().map(String::len).sum::<usize>(), MAX_ARGV_BYTES);
        assert!(kept[1].chars().all(|c| c == 'é'));

        let line = serde_json::json!({"org":"o","workload":"w","host":"h","kind":"exec",
            "argv": (0..80).map(|i| i.to_string()).collect::<Vec<_>>()})
        .to_string();
        let e = parse(&line).unwrap();
        let Some(Detail::Exec(x)) = e.detail else {
            panic!()
        };
        assert!(x.argv_truncated);
        assert_eq!(x.argc, 80, "the original count is kept");
    }

    #[test]
    fn json_round_trip() {
        let line = r#"{"event_id":"e-9","ts_ns":5,"org":"o","workload":"w","host":"h","kind":"connect","remote_ip":"2001:db8::1","remote_port":443,"protocol":"udp"}"#;
        let e = parse(line).unwrap();
        let back = to_event(from_event(&e), 0, || unreachable!()).unwrap();
        assert_eq!(back.detail, e.detail);
        assert_eq!(back.event_id, e.event_id);
    }
}
