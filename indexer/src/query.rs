//! Reading scored events back from ClickHouse for the query services. Every
//! query is scoped by org, and every value a caller gives is bound by the
//! client library (`?`), never spliced into the SQL text.

use clickhouse::Client;
use outlier_proto::{EventKind, QueryEventsRequest, SortOrder, Verdict};
use thiserror::Error;

use crate::row::EventRow;
use crate::schema::{COLUMNS, TABLE};

#[derive(Debug, Error)]
pub enum QueryError {
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
}

/// Largest page a caller can ask for.
pub const MAX_PAGE: u32 = 1000;
const DEFAULT_PAGE: u32 = 50;

fn columns() -> String {
    COLUMNS
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| *n != "inserted_at")
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where a page starts: after an event (time orders) or at an offset.
#[derive(Debug, Clone, PartialEq)]
enum Cursor {
    After { ts_ns: u64, event_id: String },
    Offset(u64),
}

fn encode_cursor(c: &Cursor) -> String {
    let raw = match c {
        Cursor::After { ts_ns, event_id } => format!("t:{ts_ns}:{event_id}"),
        Cursor::Offset(o) => format!("o:{o}"),
    };
    hex::encode(raw)
}

fn decode_cursor(token: &str) -> Result<Cursor, QueryError> {
    let bad = || QueryError::Invalid("page_token is not a token this service issued".into());
    let raw = String::from_utf8(hex::decode(token).map_err(|_| bad())?).map_err(|_| bad())?;
    if let Some(rest) = raw.strip_prefix("t:") {
        let (ts, id) = rest.split_once(':').ok_or_else(bad)?;
        return Ok(Cursor::After {
            ts_ns: ts.parse().map_err(|_| bad())?,
            event_id: id.to_string(),
        });
    }
    if let Some(o) = raw.strip_prefix("o:") {
        return Ok(Cursor::Offset(o.parse().map_err(|_| bad())?));
    }
    Err(bad())
}

fn kind_name(k: EventKind) -> Option<&'static str> {
    match k {
        EventKind::Exec => Some("exec"),
        EventKind::Connect => Some("connect"),
        EventKind::Open => Some("open"),
        EventKind::Unspecified => None,
    }
}

/// Runs a QueryEvents request: the page of rows and the next page's token.
pub async fn query_events(
    ch: &Client,
    req: &QueryEventsRequest,
) -> Result<(Vec<EventRow>, String), QueryError> {
    if req.org.is_empty() {
        return Err(QueryError::Invalid("org is required".into()));
    }
    let page = match req.page_size {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    };
    let order = req.order();
    let cursor = if req.page_token.is_empty() {
        None
    } else {
        Some(decode_cursor(&req.page_token)?)
    };

    let mut sql = format!("SELECT {} FROM {TABLE} FINAL WHERE org = ?", columns());
    // Values are collected in order and bound after the text is complete.
    enum V {
        S(String),
        U(u64),
        F(f32),
        L(Vec<String>),
    }
    let mut binds = vec![V::S(req.org.clone())];
    if req.since_ns > 0 {
        sql.push_str(" AND ts >= toDateTime(?) AND ts_ns >= ?");
        binds.push(V::U(req.since_ns / 1_000_000_000));
        binds.push(V::U(req.since_ns));
    }
    if req.until_ns > 0 {
        sql.push_str(" AND ts <= toDateTime(?) AND ts_ns < ?");
        binds.push(V::U(req.until_ns / 1_000_000_000));
        binds.push(V::U(req.until_ns));
    }
    if !req.hosts.is_empty() {
        sql.push_str(" AND has(?, host)");
        binds.push(V::L(req.hosts.clone()));
    }
    if !req.workloads.is_empty() {
        sql.push_str(" AND has(?, workload)");
        binds.push(V::L(req.workloads.clone()));
    }
    let kinds: Vec<String> = req
        .kinds()
        .filter_map(kind_name)
        .map(String::from)
        .collect();
    if !kinds.is_empty() {
        sql.push_str(" AND has(?, kind)");
        binds.push(V::L(kinds));
    }
    let verdicts: Vec<String> = req
        .verdicts()
        .filter(|v| *v != Verdict::Unspecified)
        .map(|v| v.label().to_string())
        .collect();
    if !verdicts.is_empty() {
        sql.push_str(" AND has(?, verdict)");
        binds.push(V::L(verdicts));
    }
    if req.min_score > 0.0 {
        sql.push_str(" AND anomaly_score >= ?");
        binds.push(V::F(req.min_score));
    }
    if !req.text_contains.is_empty() {
        sql.push_str(
            " AND (position(lowerUTF8(arrayStringConcat(argv, ' ')), lowerUTF8(?)) > 0 \
             OR position(lowerUTF8(path), lowerUTF8(?)) > 0 OR position(remote_ip, ?) > 0 \
             OR position(lowerUTF8(comm), lowerUTF8(?)) > 0)",
        );
        for _ in 0..4 {
            binds.push(V::S(req.text_contains.clone()));
        }
    }
    let (order_sql, keyset) = match order {
        SortOrder::OldestFirst => ("ts_ns ASC, event_id ASC", true),
        SortOrder::ScoreDesc => ("anomaly_score DESC, ts_ns DESC, event_id DESC", false),
        SortOrder::NewestFirst | SortOrder::Unspecified => ("ts_ns DESC, event_id DESC", true),
    };
    let mut offset = 0u64;
    match (&cursor, keyset) {
        (Some(Cursor::After { ts_ns, event_id }), true) => {
            let cmp = if order == SortOrder::OldestFirst {
                ">"
            } else {
                "<"
            };
            sql.push_str(&format!(
                " AND (ts_ns {cmp} ? OR (ts_ns = ? AND event_id {cmp} ?))"
            ));
            binds.push(V::U(*ts_ns));
            binds.push(V::U(*ts_ns));
            binds.push(V::S(event_id.clone()));
        }
        (Some(Cursor::Offset(o)), false) => offset = *o,
        (Some(_), _) => {
            return Err(QueryError::Invalid(
                "page_token belongs to another sort order".into(),
            ));
        }
        (None, _) => {}
    }
    sql.push_str(&format!(" ORDER BY {order_sql} LIMIT ?, ?"));
    binds.push(V::U(offset));
    binds.push(V::U(u64::from(page) + 1));

    let mut q = ch.query(&sql);
    for b in binds {
        q = match b {
            V::S(s) => q.bind(s),
            V::U(u) => q.bind(u),
            V::F(f) => q.bind(f),
            V::L(l) => q.bind(l),
        };
    }
    let mut rows: Vec<EventRow> = q.fetch_all().await?;
    let mut next = String::new();
    if rows.len() > page as usize {
        rows.truncate(page as usize);
        let last = rows.last().expect("page is not empty");
        next = encode_cursor(&if keyset {
            Cursor::After {
                ts_ns: last.ts_ns,
                event_id: last.event_id.clone(),
            }
        } else {
            Cursor::Offset(offset + u64::from(page))
        });
    }
    Ok((rows, next))
}

/// One event of an org by id.
pub async fn get_event(
    ch: &Client,
    org: &str,
    event_id: &str,
) -> Result<Option<EventRow>, QueryError> {
    if org.is_empty() || event_id.is_empty() {
        return Err(QueryError::Invalid("org and event_id are required".into()));
    }
    let sql = format!(
        "SELECT {} FROM {TABLE} FINAL WHERE org = ? AND event_id = ? LIMIT 1",
        columns()
    );
    Ok(ch
        .query(&sql)
        .bind(org)
        .bind(event_id)
        .fetch_all::<EventRow>()
        .await?
        .into_iter()
        .next())
}

/// The most recent events of an org with the given behaviour keys (newest
/// first, at most `per_key` for each key).
pub async fn events_by_behaviour(
    ch: &Client,
    org: &str,
    keys: &[u64],
    since_ns: u64,
    per_key: usize,
) -> Result<Vec<EventRow>, QueryError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {} FROM {TABLE} FINAL WHERE org = ? AND has(?, behaviour_key) AND ts_ns >= ? \
         ORDER BY ts_ns DESC LIMIT ?",
        columns()
    );
    let rows: Vec<EventRow> = ch
        .query(&sql)
        .bind(org)
        .bind(keys.to_vec())
        .bind(since_ns)
        .bind((keys.len() * per_key * 4) as u64)
        .fetch_all()
        .await?;
    let mut seen: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    Ok(rows
        .into_iter()
        .filter(|r| {
            let n = seen.entry(r.behaviour_key).or_default();
            *n += 1;
            *n <= per_key
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        for c in [
            Cursor::After {
                ts_ns: 17,
                event_id: "a:b".into(),
            },
            Cursor::Offset(50),
        ] {
            assert_eq!(decode_cursor(&encode_cursor(&c)).unwrap(), c);
        }
        assert!(decode_cursor("zz").is_err());
        assert!(decode_cursor(&hex::encode("x:1")).is_err());
    }
}
