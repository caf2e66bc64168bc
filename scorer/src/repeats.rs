//! Alerts awaiting an operator. An event that alerts after a workload's
//! warm-up is not learned until an operator confirms it benign (the
//! poisoning guard), so without this the same behaviour would alert again
//! on every repeat: a build box's test loop that execs the same file 2,000
//! times in a second raised 2,000 alerts (docs/detection.md, "Unseen
//! hosts"). Here a repeat of an alert still awaiting feedback, on the same
//! host, within `decision.repeat_window_s` of event time, is not alerted
//! again: it is published `ok`, not learned, with the first alert's id in
//! its explanation. After the window the behaviour alerts once more (a
//! reminder) and a new window starts. Feedback of either label ends the
//! wait: benign is learned, malicious becomes a fleet signature that
//! alerts on every match.
//!
//! Kept in memory by the scorer that owns the workload, like its history:
//! after a restart or a hand-over a pending behaviour alerts once more.

use std::collections::HashMap;

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Pending alerts remembered per workload; past this the oldest is
/// forgotten (and its behaviour alerts again).
const MAX_PENDING: usize = 4096;

#[derive(Debug, Clone)]
struct Entry {
    first_ns: u64,
    event_id: String,
    repeats: u64,
}

/// What a repeat refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repeat {
    /// The event that alerted.
    pub event_id: String,
    /// When it did (event time).
    pub first_ns: u64,
    /// Repeats since, this one included.
    pub repeats: u64,
}

/// One workload's alerted behaviours awaiting feedback, keyed by host and
/// behaviour.
#[derive(Debug, Clone, Default)]
pub struct Pending {
    entries: HashMap<u64, Entry>,
}

/// The key of a behaviour on a host: the same attack spreading to another
/// host alerts there too.
pub fn key(host: &str, behaviour: u64) -> u64 {
    xxh3_64_with_seed(host.as_bytes(), behaviour)
}

impl Pending {
    /// If `key` alerted within `window_ns` before `ts_ns` and is still
    /// awaiting feedback, counts and returns the repeat.
    pub fn repeat_of(&mut self, key: u64, ts_ns: u64, window_ns: u64) -> Option<Repeat> {
        let e = self.entries.get_mut(&key)?;
        if ts_ns.saturating_sub(e.first_ns) >= window_ns {
            return None;
        }
        e.repeats += 1;
        Some(Repeat {
            event_id: e.event_id.clone(),
            first_ns: e.first_ns,
            repeats: e.repeats,
        })
    }

    /// Remembers an alert that was not learned; starts a new window if the
    /// behaviour was pending already.
    pub fn alerted(&mut self, key: u64, ts_ns: u64, event_id: &str) {
        if self.entries.len() >= MAX_PENDING
            && !self.entries.contains_key(&key)
            && let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.first_ns)
                .map(|(k, _)| *k)
        {
            self.entries.remove(&oldest);
        }
        self.entries.insert(
            key,
            Entry {
                first_ns: ts_ns,
                event_id: event_id.to_string(),
                repeats: 0,
            },
        );
    }

    /// Feedback arrived for the behaviour: it no longer waits.
    pub fn resolved(&mut self, key: u64) {
        self.entries.remove(&key);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_repeat_within_the_window_refers_to_the_first_alert_and_after_it_alerts_again() {
        let mut p = Pending::default();
        let k = key("web-1", 42);
        assert_eq!(p.repeat_of(k, 10 * S, 60 * S), None, "nothing alerted yet");
        p.alerted(k, 10 * S, "e1");
        let r = p.repeat_of(k, 20 * S, 60 * S).unwrap();
        assert_eq!(
            (r.event_id.as_str(), r.first_ns, r.repeats),
            ("e1", 10 * S, 1)
        );
        assert_eq!(p.repeat_of(k, 69 * S, 60 * S).unwrap().repeats, 2);
        assert_eq!(p.repeat_of(k, 70 * S, 60 * S), None, "the window is over");
        p.alerted(k, 70 * S, "e9");
        assert_eq!(p.repeat_of(k, 71 * S, 60 * S).unwrap().event_id, "e9");
    }

    #[test]
    fn another_host_or_behaviour_is_not_a_repeat_and_feedback_ends_the_wait() {
        let mut p = Pending::default();
        p.alerted(key("web-1", 42), S, "e1");
        assert_eq!(p.repeat_of(key("web-2", 42), 2 * S, 60 * S), None);
        assert_eq!(p.repeat_of(key("web-1", 43), 2 * S, 60 * S), None);
        p.resolved(key("web-1", 42));
        assert_eq!(p.repeat_of(key("web-1", 42), 2 * S, 60 * S), None);
        assert!(p.is_empty());
    }

    #[test]
    fn past_its_bound_the_oldest_alert_is_forgotten() {
        let mut p = Pending::default();
        for i in 0..MAX_PENDING as u64 + 1 {
            p.alerted(key("h", i), (i + 1) * S, "e");
        }
        assert_eq!(p.len(), MAX_PENDING);
        let now = (MAX_PENDING as u64 + 2) * S;
        assert_eq!(
            p.repeat_of(key("h", 0), now, u64::MAX),
            None,
            "oldest dropped"
        );
        assert!(p.repeat_of(key("h", 1), now, u64::MAX).is_some());
    }
}
