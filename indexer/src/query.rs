//! Reading scored events back from ClickHouse for the query services. Every
//! query is scoped by org, and every value a caller gives is bound by the
//! client library (`?`), never spliced into the SQL text.

use std::collections::HashMap;

use clickhouse::Client;
use outlier_proto::{EventKind, QueryEventsRequest, SortOrder, Verdict};
use thiserror::Error;

use crate::row::EventRow;
use crate::schema::{COLUMNS, TABLE};
use crate::search_index::Hit;

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

#[derive(Debug, serde::Deserialize, clickhouse::Row)]
struct IdRow {
    event_id: String,
    ts_ns: u64,
}

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

    // Two steps: the page's ids, reading only the filtered and sorted
    // columns, then those rows whole by primary key. (Reading every column
    // of every candidate row with FINAL was 5x slower over 10M rows.)
    let mut sql = format!("SELECT event_id, ts_ns FROM {TABLE} FINAL WHERE org = ?");
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
        .filter_map(EventKind::label)
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
    let mut ids: Vec<IdRow> = q.fetch_all().await?;
    let mut next = String::new();
    if ids.len() > page as usize {
        ids.truncate(page as usize);
        let last = ids.last().expect("page is not empty");
        next = encode_cursor(&if keyset {
            Cursor::After {
                ts_ns: last.ts_ns,
                event_id: last.event_id.clone(),
            }
        } else {
            Cursor::Offset(offset + u64::from(page))
        });
    }
    let examples: Vec<(u64, &str)> = ids.iter().map(|r| (r.ts_ns, r.event_id.as_str())).collect();
    let mut by_id: HashMap<String, EventRow> = events_by_id(ch, &req.org, &examples)
        .await?
        .into_iter()
        .map(|r| (r.event_id.clone(), r))
        .collect();
    // In the page's order (a row dropped between the steps, by retention,
    // is left out).
    let rows: Vec<EventRow> = ids
        .iter()
        .filter_map(|r| by_id.remove(&r.event_id))
        .collect();
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
        "SELECT {} FROM {TABLE} PREWHERE event_id = ? WHERE org = ? LIMIT 1",
        columns()
    );
    // No FINAL: a replayed event's copies are the same event, and PREWHERE
    // reads only the ids of the org's rows before the one that matches.
    Ok(ch
        .query(&sql)
        .bind(event_id)
        .bind(org)
        .fetch_all::<EventRow>()
        .await?
        .into_iter()
        .next())
}

/// The events to show for search hits, nearest first, with their
/// similarity: each behaviour's example event, found by its primary key;
/// only behaviours without an example since `since_ns` are looked up by
/// behaviour key (a scan of the org's rows since then).
pub async fn events_of_hits(
    ch: &Client,
    org: &str,
    hits: &[Hit],
    since_ns: u64,
) -> Result<Vec<(EventRow, f32)>, QueryError> {
    let (with_example, without): (Vec<&Hit>, Vec<&Hit>) = hits
        .iter()
        .partition(|h| !h.event_id.is_empty() && h.ts_ns >= since_ns);
    let examples: Vec<(u64, &str)> = with_example
        .iter()
        .map(|h| (h.ts_ns, h.event_id.as_str()))
        .collect();
    let mut keys: Vec<u64> = without.iter().map(|h| h.behaviour_key).collect();
    let (by_id, mut by_behaviour) = futures::try_join!(
        events_by_id(ch, org, &examples),
        events_by_behaviour(ch, org, &keys, since_ns, 1),
    )?;
    let mut by_id: HashMap<String, EventRow> =
        by_id.into_iter().map(|r| (r.event_id.clone(), r)).collect();
    // An example gone from ClickHouse (past retention): the behaviour's
    // latest event instead.
    keys.clear();
    keys.extend(
        with_example
            .iter()
            .filter(|h| !by_id.contains_key(&h.event_id))
            .map(|h| h.behaviour_key),
    );
    if !keys.is_empty() {
        by_behaviour.extend(events_by_behaviour(ch, org, &keys, since_ns, 1).await?);
    }
    let mut by_key: HashMap<(String, u64), EventRow> = by_behaviour
        .into_iter()
        .map(|r| ((r.workload.clone(), r.behaviour_key), r))
        .collect();
    Ok(hits
        .iter()
        .filter_map(|h| {
            let row = by_id
                .remove(&h.event_id)
                .or_else(|| by_key.remove(&(h.workload.clone(), h.behaviour_key)))?;
            Some((row, 1.0 - h.distance))
        })
        .collect())
}

/// Events of an org by id and time (`(ts_ns, event_id)` pairs, as the
/// search index keeps them): a primary-key lookup, however large the table.
pub async fn events_by_id(
    ch: &Client,
    org: &str,
    examples: &[(u64, &str)],
) -> Result<Vec<EventRow>, QueryError> {
    if examples.is_empty() {
        return Ok(Vec::new());
    }
    let mut secs: Vec<u64> = examples.iter().map(|(t, _)| t / 1_000_000_000).collect();
    secs.sort_unstable();
    secs.dedup();
    // `ts IN (…)` narrows the primary key (org, ts, event_id) to a few
    // granules, of which PREWHERE reads only the ids before the whole rows
    // of the matches. No FINAL (it reads every column of those granules):
    // a replayed event's copies are the same event, kept once here.
    let slots = vec!["toDateTime(?)"; secs.len()].join(", ");
    let sql = format!(
        "SELECT {} FROM {TABLE} PREWHERE has(?, event_id) WHERE org = ? AND ts IN ({slots})",
        columns()
    );
    let ids: Vec<&str> = examples.iter().map(|(_, id)| *id).collect();
    let mut q = ch.query(&sql).bind(ids).bind(org);
    for s in secs {
        q = q.bind(s);
    }
    let mut rows: Vec<EventRow> = q.fetch_all().await?;
    let mut seen = std::collections::HashSet::new();
    rows.retain(|r| seen.insert(r.event_id.clone()));
    Ok(rows)
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
    let mut seen: HashMap<u64, usize> = HashMap::new();
    Ok(rows
        .into_iter()
        .filter(|r| {
            let n = seen.entry(r.behaviour_key).or_default();
            *n += 1;
            *n <= per_key
        })
        .collect())
}

/// Events an org flagged in one hour on one host of one workload.
#[derive(Debug, Clone, serde::Deserialize, clickhouse::Row)]
pub struct FlaggedRow {
    /// Start of the hour, seconds since the epoch.
    pub hour: u32,
    pub workload: String,
    pub host: String,
    /// Distinct flagged events (warn or alert), and how many alerted.
    pub flagged: u64,
    pub alerts: u64,
}

/// What an org flagged since `since_ns`, by hour, workload and host
/// (the console's overview). Counts distinct events: a replayed event's
/// copies count once.
pub async fn flagged_by_hour(
    ch: &Client,
    org: &str,
    since_ns: u64,
) -> Result<Vec<FlaggedRow>, QueryError> {
    Ok(ch
        .query(&format!(
            "SELECT toUInt32(toStartOfHour(ts)) AS hour, workload, host, \
             uniqExact(event_id) AS flagged, uniqExactIf(event_id, verdict = 'alert') AS alerts \
             FROM {TABLE} WHERE org = ? AND ts >= toDateTime(?) AND verdict IN ('warn', 'alert') \
             GROUP BY hour, workload, host ORDER BY hour"
        ))
        .bind(org)
        .bind(since_ns / 1_000_000_000)
        .fetch_all()
        .await?)
}

/// What the scored events say about one workload's baseline.
#[derive(Debug, Clone, serde::Deserialize, clickhouse::Row)]
pub struct BaselineRow {
    pub workload: String,
    /// Events and distinct behaviours since the window's start.
    pub events: u64,
    pub behaviours_seen: u64,
    /// Behaviours the baseline had at the latest event, and at the first
    /// event of the last day (0: none that day).
    pub known: u64,
    pub known_day_ago: u64,
    /// Events whose behaviour was learned in the last day; the latest.
    pub learned_day: u64,
    pub last_learned_ns: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    /// Events flagged (warn or alert) in the last day, and all its events.
    pub flagged_day: u64,
    pub events_day: u64,
}

/// Every workload of an org with events since `since_ns`: its baseline's
/// size, growth over the last day (from `day_ns`) and what it learned.
pub async fn baselines(
    ch: &Client,
    org: &str,
    since_ns: u64,
    day_ns: u64,
) -> Result<Vec<BaselineRow>, QueryError> {
    let day = day_ns / 1_000_000_000;
    Ok(ch
        .query(&format!(
            "SELECT workload, count() AS events, uniqExact(behaviour_key) AS behaviours_seen, \
             argMax(baseline_size, ts_ns) AS known, \
             argMinIf(baseline_size, ts_ns, ts >= toDateTime(?)) AS known_day_ago, \
             countIf(learned = 1 AND ts >= toDateTime(?)) AS learned_day, \
             maxIf(ts_ns, learned = 1) AS last_learned_ns, min(ts_ns) AS first_ns, \
             max(ts_ns) AS last_ns, \
             countIf(verdict IN ('warn', 'alert') AND ts >= toDateTime(?)) AS flagged_day, \
             countIf(ts >= toDateTime(?)) AS events_day \
             FROM {TABLE} WHERE org = ? AND ts >= toDateTime(?) GROUP BY workload ORDER BY workload"
        ))
        .bind(day)
        .bind(day)
        .bind(day)
        .bind(day)
        .bind(org)
        .bind(since_ns / 1_000_000_000)
        .fetch_all()
        .await?)
}

#[derive(Debug, serde::Deserialize, clickhouse::Row)]
struct KeyCount {
    behaviour_key: u64,
    n: u64,
}

/// How many distinct events of `workload` had each of `keys` as their
/// behaviour since `since_ns`.
pub async fn behaviour_counts(
    ch: &Client,
    org: &str,
    workload: &str,
    keys: &[u64],
    since_ns: u64,
) -> Result<HashMap<u64, u64>, QueryError> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<KeyCount> = ch
        .query(&format!(
            "SELECT behaviour_key, uniqExact(event_id) AS n FROM {TABLE} \
             PREWHERE workload = ? AND has(?, behaviour_key) \
             WHERE org = ? AND ts >= toDateTime(?) GROUP BY behaviour_key"
        ))
        .bind(workload)
        .bind(keys)
        .bind(org)
        .bind(since_ns / 1_000_000_000)
        .fetch_all()
        .await?;
    Ok(rows.into_iter().map(|r| (r.behaviour_key, r.n)).collect())
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
