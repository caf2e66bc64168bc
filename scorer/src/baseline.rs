//! The in-memory baseline of one (org, workload): every distinct behaviour
//! seen (an embedding), stored once with a count and the time it was last
//! seen, answering exact k-nearest-neighbour queries by cosine distance.

use std::collections::HashMap;

use outlier_common::featurize::{DIM, Embedding, cosine_distance, dot};
use xxhash_rust::xxh3::xxh3_64;

/// One distinct behaviour of a workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Behaviour {
    /// Hash of the embedding: identical behaviour, identical key.
    pub key: u64,
    pub vector: Embedding,
    pub count: u64,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
}

/// A neighbour found by [`Baseline::nearest`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbour {
    pub index: usize,
    pub distance: f32,
}

#[derive(Debug, Default)]
pub struct Baseline {
    entries: Vec<Behaviour>,
    by_key: HashMap<u64, usize>,
    /// Indices of entries changed since the last [`Baseline::take_dirty`].
    dirty: Vec<usize>,
    is_dirty: Vec<bool>,
}

/// The key of a behaviour: a hash of its embedding's bytes.
pub fn behaviour_key(v: &Embedding) -> u64 {
    let mut bytes = [0u8; DIM * 4];
    for (chunk, x) in bytes.chunks_exact_mut(4).zip(v) {
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    xxh3_64(&bytes)
}

impl Baseline {
    /// Builds a baseline from stored behaviours (none of them dirty).
    pub fn from_behaviours(rows: impl IntoIterator<Item = Behaviour>) -> Self {
        let mut b = Self::default();
        for row in rows {
            if let Some(&i) = b.by_key.get(&row.key) {
                // Two stored rows for one key (two writers): merge them.
                let e = &mut b.entries[i];
                e.count += row.count;
                e.first_seen_ns = e.first_seen_ns.min(row.first_seen_ns);
                e.last_seen_ns = e.last_seen_ns.max(row.last_seen_ns);
                continue;
            }
            b.by_key.insert(row.key, b.entries.len());
            b.entries.push(row);
            b.is_dirty.push(false);
        }
        b
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, index: usize) -> &Behaviour {
        &self.entries[index]
    }

    /// The `k` behaviours nearest to `q`, nearest first (exact search).
    pub fn nearest(&self, q: &Embedding, k: usize) -> Vec<Neighbour> {
        if k == 0 {
            return Vec::new();
        }
        // Top-k by similarity with a small sorted buffer: k is ~10.
        let mut top: Vec<(f32, usize)> = Vec::with_capacity(k + 1);
        for (i, e) in self.entries.iter().enumerate() {
            let s = dot(q, &e.vector);
            if top.len() == k && s <= top[k - 1].0 {
                continue;
            }
            let pos = top.partition_point(|(ts, _)| *ts >= s);
            top.insert(pos, (s, i));
            top.truncate(k);
        }
        top.into_iter()
            .map(|(s, index)| Neighbour {
                index,
                distance: (1.0 - s).clamp(0.0, 2.0),
            })
            .collect()
    }

    /// Records that behaviour `v` happened at `ts_ns`. Returns true when it
    /// is new to the baseline.
    pub fn observe(&mut self, v: &Embedding, ts_ns: u64) -> bool {
        let key = behaviour_key(v);
        let (index, new) = match self.by_key.get(&key) {
            Some(&i) => {
                let e = &mut self.entries[i];
                e.count += 1;
                e.last_seen_ns = e.last_seen_ns.max(ts_ns);
                (i, false)
            }
            None => {
                let i = self.entries.len();
                self.entries.push(Behaviour {
                    key,
                    vector: *v,
                    count: 1,
                    first_seen_ns: ts_ns,
                    last_seen_ns: ts_ns,
                });
                self.is_dirty.push(false);
                self.by_key.insert(key, i);
                (i, true)
            }
        };
        if !self.is_dirty[index] {
            self.is_dirty[index] = true;
            self.dirty.push(index);
        }
        new
    }

    /// Copies of the behaviours changed since the last call, to persist.
    pub fn take_dirty(&mut self) -> Vec<Behaviour> {
        let out = self
            .dirty
            .iter()
            .map(|&i| self.entries[i].clone())
            .collect();
        for &i in &self.dirty {
            self.is_dirty[i] = false;
        }
        self.dirty.clear();
        out
    }

    pub fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Forgets behaviours last seen before `cutoff_ns`; returns how many.
    pub fn prune(&mut self, cutoff_ns: u64) -> usize {
        let before = self.entries.len();
        if self.entries.iter().all(|e| e.last_seen_ns >= cutoff_ns) {
            return 0;
        }
        // Keep dirty flags with their entries while compacting.
        let entries = std::mem::take(&mut self.entries);
        let flags = std::mem::take(&mut self.is_dirty);
        self.by_key.clear();
        self.dirty.clear();
        for (e, d) in entries.into_iter().zip(flags) {
            if e.last_seen_ns < cutoff_ns {
                continue;
            }
            let i = self.entries.len();
            self.by_key.insert(e.key, i);
            self.entries.push(e);
            self.is_dirty.push(d);
            if d {
                self.dirty.push(i);
            }
        }
        before - self.entries.len()
    }

    /// Cosine distance from `q` to its nearest behaviour, if any.
    pub fn min_distance(&self, q: &Embedding) -> Option<(f32, usize)> {
        self.nearest(q, 1).first().map(|n| (n.distance, n.index))
    }
}

/// Distance between two stored behaviours (for tests and tools).
pub fn distance(a: &Behaviour, b: &Behaviour) -> f32 {
    cosine_distance(&a.vector, &b.vector)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: u64) -> Embedding {
        let mut v = [0f32; DIM];
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        for slot in &mut v {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *slot = ((x % 2001) as f32 / 1000.0) - 1.0;
        }
        let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
        v.iter_mut().for_each(|a| *a /= n);
        v
    }

    #[test]
    fn repeated_behaviour_is_stored_once_with_a_count() {
        let mut b = Baseline::default();
        assert!(b.observe(&unit(1), 10));
        assert!(!b.observe(&unit(1), 20));
        assert!(b.observe(&unit(2), 30));
        assert_eq!(b.len(), 2);
        let e = b.get(0);
        assert_eq!((e.count, e.first_seen_ns, e.last_seen_ns), (2, 10, 20));
        let dirty = b.take_dirty();
        assert_eq!(dirty.len(), 2);
        assert!(b.take_dirty().is_empty());
        b.observe(&unit(2), 40);
        assert_eq!(b.take_dirty().len(), 1);
    }

    #[test]
    fn nearest_matches_brute_force() {
        let mut b = Baseline::default();
        for s in 0..200 {
            b.observe(&unit(s), s);
        }
        let q = unit(1000);
        let got = b.nearest(&q, 10);
        let mut all: Vec<(f32, usize)> = (0..b.len())
            .map(|i| (cosine_distance(&q, &b.get(i).vector), i))
            .collect();
        all.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert_eq!(got.len(), 10);
        for (g, w) in got.iter().zip(&all) {
            assert_eq!(g.index, w.1);
            assert!((g.distance - w.0).abs() < 1e-6);
        }
        assert_eq!(
            b.min_distance(&unit(5)).map(|(d, i)| (d < 1e-6, i)),
            Some((true, 5))
        );
    }

    #[test]
    fn prune_forgets_old_behaviour_and_keeps_dirty_state() {
        let mut b = Baseline::default();
        b.observe(&unit(1), 10);
        b.observe(&unit(2), 100);
        b.take_dirty();
        b.observe(&unit(3), 200);
        assert_eq!(b.prune(50), 1);
        assert_eq!(b.len(), 2);
        let dirty = b.take_dirty();
        assert_eq!(dirty.len(), 1);
        assert_eq!(dirty[0].last_seen_ns, 200);
        assert!(!b.observe(&unit(2), 300), "index still finds kept keys");
    }

    #[test]
    fn loading_merges_duplicate_keys() {
        let v = unit(7);
        let row = |count, first, last| Behaviour {
            key: behaviour_key(&v),
            vector: v,
            count,
            first_seen_ns: first,
            last_seen_ns: last,
        };
        let b = Baseline::from_behaviours([row(2, 5, 50), row(3, 1, 40)]);
        assert_eq!(b.len(), 1);
        let e = b.get(0);
        assert_eq!((e.count, e.first_seen_ns, e.last_seen_ns), (5, 1, 50));
        assert!(!b.has_dirty());
    }
}
