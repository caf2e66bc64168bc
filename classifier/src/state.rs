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
    /// Hosts tracked (per generation).
    pub hosts: usize,
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

    fn rotate_if_full(&mut self) {
        if self.young.len() >= self.cap {
            self.old = std::mem::take(&mut self.young);
        }
    }

    pub fn get(&self, k: &K) -> Option<&V> {
        self.young.get(k).or_else(|| self.old.get(k))
    }

    /// The entry for `k`, moved into the young generation (created with
    /// `make` when absent).
    pub fn entry(&mut self, k: K, make: impl FnOnce() -> V) -> &mut V {
        if !self.young.contains_key(&k) {
            let v = self.old.remove(&k).unwrap_or_else(make);
            self.rotate_if_full();
            self.young.insert(k, v);
        }
        self.young.get_mut(&k).expect("present")
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
    /// Whether the process (or a parent shell of its pipeline) connected out.
    pub connected: bool,
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
