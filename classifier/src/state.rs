//! Stateful context: per host, a process table with ancestry, and what the
//! host did recently (executions, connections, file writes, ports and
//! remotes it talked to, programs it ran).
//!
//! Memory is bounded: every table is a two-generation map — when the young
//! generation reaches its capacity it becomes the old one and the previous
//! old generation is dropped — so a table holds at most twice its capacity,
//! recently used entries survive, and there is no per-entry bookkeeping.
//! Time windows are ring buffers of timestamps capped in length.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// Capacities of the state store.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Hosts tracked, all orgs together (per generation): past twice this,
    /// the org holding the most drops its older generation.
    pub hosts: usize,
    /// Hosts tracked per org (per generation): an org past it ages out its
    /// own, never another org's.
    pub hosts_per_org: usize,
    /// Processes per host (per generation).
    pub procs: usize,
    /// Ports, remotes, programs and written directories per host (per generation).
    pub seen: usize,
    /// Timestamps kept per window.
    pub window: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            hosts: 4096,
            hosts_per_org: 4096,
            procs: 512,
            seen: 512,
            window: 512,
        }
    }
}

/// A map that forgets its least recently refreshed half when full.
#[derive(Debug)]
pub struct TwoGen<K, V> {
    young: HashMap<K, V>,
    old: HashMap<K, V>,
    cap: usize,
}

impl<K: Hash + Eq + Copy, V> TwoGen<K, V> {
    pub fn new(cap: usize) -> Self {
        Self {
            young: HashMap::new(),
            old: HashMap::new(),
            cap: cap.max(1),
        }
    }

    /// Entries dropped.
    fn rotate_if_full(&mut self) -> usize {
        if self.young.len() >= self.cap {
            let dropped = std::mem::replace(&mut self.old, std::mem::take(&mut self.young));
            dropped.len()
        } else {
            0
        }
    }

    /// Drops the old generation, or the young one when the old is empty.
    /// Entries dropped.
    pub fn drop_older(&mut self) -> usize {
        if self.old.is_empty() {
            std::mem::take(&mut self.young).len()
        } else {
            std::mem::take(&mut self.old).len()
        }
    }

    pub fn get(&self, k: &K) -> Option<&V> {
        self.young.get(k).or_else(|| self.old.get(k))
    }

    /// The entry for `k`, moved into the young generation (created with
    /// `make` when absent).
    pub fn entry(&mut self, k: K, make: impl FnOnce() -> V) -> &mut V {
        self.entry_dropping(k, make).1
    }

    /// [`TwoGen::entry`], and how many entries making room for it dropped.
    pub fn entry_dropping(&mut self, k: K, make: impl FnOnce() -> V) -> (usize, &mut V) {
        let mut dropped = 0;
        if !self.young.contains_key(&k) {
            let v = self.old.remove(&k).unwrap_or_else(make);
            dropped = self.rotate_if_full();
            self.young.insert(k, v);
        }
        (dropped, self.young.get_mut(&k).expect("present"))
    }

    pub fn insert(&mut self, k: K, v: V) {
        if !self.young.contains_key(&k) {
            self.old.remove(&k);
            self.rotate_if_full();
        }
        self.young.insert(k, v);
    }

    pub fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.young.values().chain(self.old.values())
    }
}

/// The bound host state was dropped for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostBound {
    /// [`Limits::hosts_per_org`]: the org aged out its own hosts.
    Org,
    /// [`Limits::hosts`]: all orgs together were full and this org held
    /// the most.
    Total,
}

/// Host state dropped from one org to stay within a bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub org: String,
    pub bound: HostBound,
    pub hosts: usize,
}

/// Most distinct (org, bound) records kept between two drains; past it,
/// drops are added to one record for `OTHER_ORGS`.
const DROPPED_RECORDS: usize = 256;
/// The org named by the record that gathers drops past [`DROPPED_RECORDS`].
pub const OTHER_ORGS: &str = "(other orgs)";

struct OrgHosts<V> {
    name: String,
    hosts: TwoGen<u64, V>,
}

/// Per-host state grouped by org. Each org's hosts are a two-generation map
/// of their own, so an org with many (or churning) hosts ages out its own
/// state; all orgs together hold at most twice `total` hosts, and past it
/// the org holding the most drops its older generation. A quiet org's
/// context is therefore never pushed out by a noisy one.
pub struct HostStore<V> {
    orgs: HashMap<u64, OrgHosts<V>>,
    len: usize,
    per_org: usize,
    total: usize,
    dropped: Vec<Dropped>,
}

impl<V> HostStore<V> {
    pub fn new(per_org: usize, total: usize) -> Self {
        Self {
            orgs: HashMap::new(),
            len: 0,
            per_org: per_org.max(1),
            total: total.max(1),
            dropped: Vec::new(),
        }
    }

    /// Hosts tracked, all orgs together.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Orgs with hosts tracked.
    pub fn orgs(&self) -> usize {
        self.orgs.len()
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.orgs.values().flat_map(|o| o.hosts.values())
    }

    pub fn get(&self, org: &str, host: u64) -> Option<&V> {
        self.orgs.get(&org_key(org))?.hosts.get(&host)
    }

    /// The state of `host` of `org` (made with `make` when absent), after
    /// dropping what the bounds require.
    pub fn entry(&mut self, org: &str, host: u64, make: impl FnOnce() -> V) -> &mut V {
        let key = org_key(org);
        let known = self
            .orgs
            .get(&key)
            .is_some_and(|o| o.hosts.get(&host).is_some());
        if !known && self.len >= 2 * self.total {
            self.make_room();
        }
        let per_org = self.per_org;
        let o = self.orgs.entry(key).or_insert_with(|| OrgHosts {
            name: org.to_string(),
            hosts: TwoGen::new(per_org),
        });
        let (dropped, v) = o.hosts.entry_dropping(host, make);
        self.len = self.len + usize::from(!known) - dropped;
        if dropped > 0 {
            record(&mut self.dropped, &o.name, HostBound::Org, dropped);
        }
        v
    }

    /// Drops the older generation of the org holding the most hosts until
    /// there is room for one more.
    fn make_room(&mut self) {
        while self.len >= 2 * self.total {
            let Some(key) = self
                .orgs
                .iter()
                .max_by_key(|(_, o)| o.hosts.len())
                .map(|(k, _)| *k)
            else {
                return;
            };
            let o = self.orgs.get_mut(&key).expect("present");
            let n = o.hosts.drop_older();
            self.len -= n;
            record(&mut self.dropped, &o.name, HostBound::Total, n);
            if o.hosts.is_empty() {
                self.orgs.remove(&key);
            }
        }
    }

    /// What was dropped since the last call, one record per org and bound.
    pub fn drain_dropped(&mut self) -> Vec<Dropped> {
        std::mem::take(&mut self.dropped)
    }
}

fn org_key(org: &str) -> u64 {
    crate::features::fnv(&[org.as_bytes()])
}

fn record(dropped: &mut Vec<Dropped>, org: &str, bound: HostBound, hosts: usize) {
    if let Some(d) = dropped
        .iter_mut()
        .find(|d| d.org == org && d.bound == bound)
    {
        d.hosts += hosts;
        return;
    }
    let org = if dropped.len() >= DROPPED_RECORDS {
        if let Some(d) = dropped
            .iter_mut()
            .find(|d| d.org == OTHER_ORGS && d.bound == bound)
        {
            d.hosts += hosts;
            return;
        }
        OTHER_ORGS
    } else {
        org
    };
    dropped.push(Dropped {
        org: org.to_string(),
        bound,
        hosts,
    });
}

/// Counts events in recent time windows.
#[derive(Debug, Default)]
pub struct Window {
    ts: VecDeque<u64>,
}

impl Window {
    pub fn push(&mut self, ts: u64, cap: usize) {
        if self.ts.len() >= cap {
            self.ts.pop_front();
        }
        // Timestamps arrive nearly in order; keep the buffer sorted.
        let at = self.ts.partition_point(|&t| t <= ts);
        self.ts.insert(at, ts);
    }

    /// Events in `(now - span, now]`.
    pub fn count(&self, now: u64, span: u64) -> usize {
        let from = now.saturating_sub(span);
        let lo = self.ts.partition_point(|&t| t <= from);
        let hi = self.ts.partition_point(|&t| t <= now);
        hi.saturating_sub(lo)
    }

    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }
}

/// What the table remembers of a process.
#[derive(Debug, Clone, Default)]
pub struct Proc {
    pub ppid: u32,
    pub comm: String,
    pub parent_comm: String,
    pub uid: u32,
    pub start_ns: u64,
    /// Program families of `comm` (bit set over `lexicon::FAMILIES`).
    pub families: u32,
    /// Command-line indicators of the process's exec (bit set).
    pub indicators: u64,
    /// Numeric command-line features of the exec, for its later events.
    pub cmd_shape: [f32; crate::features::CmdShape::LEN],
    /// The technique the exec's arguments name, for its later events.
    pub command_technique: &'static str,
    /// Whether the exec's arguments start a shell, for its later events.
    pub shell_in_arguments: bool,
    /// Whether the process (or a parent shell of its pipeline) connected out.
    pub connected: bool,
    /// Whether it descends from a program that installs software or
    /// provisions accounts (`features::provisioning`).
    pub provisioning: bool,
}

/// First-seen bookkeeping: how often, and when last.
#[derive(Debug, Clone, Copy, Default)]
pub struct Seen {
    pub count: u32,
    pub last_ns: u64,
}

/// Everything remembered of one host.
#[derive(Debug)]
pub struct HostState {
    pub procs: TwoGen<u32, Proc>,
    pub ports: TwoGen<u32, Seen>,
    pub remotes: TwoGen<u64, Seen>,
    pub programs: TwoGen<u64, Seen>,
    pub write_dirs: TwoGen<u64, Seen>,
    pub children: TwoGen<u32, Window>,
    pub execs: Window,
    pub connects: Window,
    pub writes: Window,
    pub sensitive: Window,
    pub events: u64,
}

impl HostState {
    pub fn new(l: &Limits) -> Self {
        Self {
            procs: TwoGen::new(l.procs),
            ports: TwoGen::new(l.seen),
            remotes: TwoGen::new(l.seen),
            programs: TwoGen::new(l.seen),
            write_dirs: TwoGen::new(l.seen),
            children: TwoGen::new(l.seen / 4),
            execs: Window::default(),
            connects: Window::default(),
            writes: Window::default(),
            sensitive: Window::default(),
            events: 0,
        }
    }

    /// Rough heap footprint in bytes (entries × entry size, strings included).
    pub fn approx_bytes(&self) -> usize {
        let map = |n: usize, entry: usize| n * (entry + 16);
        let procs: usize = self
            .procs
            .values()
            .map(|p| {
                std::mem::size_of::<Proc>() + p.comm.capacity() + p.parent_comm.capacity() + 20
            })
            .sum();
        let children: usize = self.children.values().map(|w| 8 * w.len() + 48).sum();
        procs
            + children
            + map(self.ports.len(), 4 + 16)
            + map(self.remotes.len(), 8 + 16)
            + map(self.programs.len(), 8 + 16)
            + map(self.write_dirs.len(), 8 + 16)
            + 8 * (self.execs.len()
                + self.connects.len()
                + self.writes.len()
                + self.sensitive.len())
            + std::mem::size_of::<Self>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_gen_is_bounded_and_keeps_recent_entries() {
        let mut m = TwoGen::new(4);
        for i in 0..100u32 {
            m.insert(i, i);
            assert!(m.len() <= 8);
        }
        assert_eq!(m.get(&99), Some(&99));
        assert_eq!(m.get(&0), None);
        // Touching an old entry moves it to the young generation.
        let mut m = TwoGen::new(2);
        m.insert(1, 1);
        m.insert(2, 2);
        m.insert(3, 3); // rotates: old = {1, 2}
        *m.entry(1, || 0) += 10;
        m.insert(4, 4); // rotates: old = {3, 1}
        assert_eq!(m.get(&1), Some(&11));
        assert_eq!(m.get(&2), None);
    }

    fn dropped_for(d: &[Dropped], org: &str, bound: HostBound) -> usize {
        d.iter()
            .filter(|d| d.org == org && d.bound == bound)
            .map(|d| d.hosts)
            .sum()
    }

    #[test]
    fn an_org_past_its_own_bound_ages_out_its_own_hosts_only() {
        let mut s: HostStore<u64> = HostStore::new(8, 1000);
        for h in 0..5 {
            *s.entry("quiet", h, || 0) += 1;
        }
        for h in 0..100 {
            *s.entry("noisy", h, || 0) += 1;
        }
        // The quiet org's hosts all kept, with what they saw.
        for h in 0..5 {
            assert_eq!(s.get("quiet", h), Some(&1), "quiet host {h}");
        }
        // The noisy one holds at most two generations of 8, its latest.
        assert_eq!(s.get("noisy", 99), Some(&1));
        assert_eq!(s.get("noisy", 0), None);
        assert!(s.len() <= 5 + 16, "{}", s.len());
        assert_eq!(s.len(), s.values().count());
        let d = s.drain_dropped();
        assert_eq!(
            dropped_for(&d, "noisy", HostBound::Org),
            100 - (s.len() - 5)
        );
        assert_eq!(dropped_for(&d, "quiet", HostBound::Org), 0);
        assert_eq!(dropped_for(&d, "noisy", HostBound::Total), 0);
        assert!(s.drain_dropped().is_empty(), "drained");
    }

    #[test]
    fn past_the_total_the_org_holding_the_most_drops_its_older_hosts() {
        // Every org may hold 100 per generation, all together 2 × 10.
        let mut s: HostStore<u64> = HostStore::new(100, 10);
        for h in 0..5 {
            s.entry("quiet", h, || h);
        }
        for h in 0..200 {
            s.entry("noisy", h, || h);
            assert!(s.len() <= 20, "{} hosts after {h}", s.len());
        }
        for h in 0..5 {
            assert_eq!(s.get("quiet", h), Some(&h), "quiet host {h}");
        }
        assert_eq!(s.get("noisy", 199), Some(&199));
        let d = s.drain_dropped();
        assert_eq!(
            dropped_for(&d, "noisy", HostBound::Total),
            200 - (s.len() - 5)
        );
        assert_eq!(dropped_for(&d, "quiet", HostBound::Total), 0);
        // A new org still gets room: the noisy one gives it.
        s.entry("third", 1, || 1);
        assert_eq!(s.get("third", 1), Some(&1));
        assert_eq!(s.orgs(), 3);
        for h in 0..5 {
            assert_eq!(s.get("quiet", h), Some(&h));
        }
    }

    #[test]
    fn dropped_records_are_bounded_whatever_the_number_of_orgs() {
        let mut s: HostStore<u64> = HostStore::new(1, 1);
        for o in 0..1000 {
            s.entry(&format!("org-{o}"), 1, || 0);
            s.entry(&format!("org-{o}"), 2, || 0);
        }
        let d = s.drain_dropped();
        assert!(d.len() <= DROPPED_RECORDS + 2, "{}", d.len());
        assert!(d.iter().any(|d| d.org == OTHER_ORGS));
        assert!(s.len() <= 2);
    }

    #[test]
    fn window_counts_spans_and_stays_capped() {
        let mut w = Window::default();
        for t in [10, 20, 30, 25, 40] {
            w.push(t, 100);
        }
        assert_eq!(w.count(40, 15), 2); // (25, 40]: 30 and 40
        assert_eq!(w.count(40, 100), 5);
        for t in 0..1000 {
            w.push(1000 + t, 64);
        }
        assert_eq!(w.len(), 64);
    }
}
