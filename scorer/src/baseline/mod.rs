//! The in-memory baseline of one (org, workload): every distinct behaviour
//! seen (an embedding), stored once with a count and the time it was last
//! seen, answering k-nearest-neighbour queries by cosine distance.
//!
//! Lookups, fastest first:
//! 1. a behaviour seen before hashes to its own entry: distance 0, O(1);
//! 2. small baselines are scanned whole, exactly. Every row is kept twice:
//!    as f32, and as 8-bit codes stored column by column ([`Cols`]). An
//!    event's feature-hashed embedding sets ~20 of its 128 dimensions, and
//!    the scan reads only those columns (a sixth of the bytes of a row-major
//!    8-bit scan, which was bound by memory bandwidth). It gives each row a
//!    similarity with a proven error bound; only rows whose upper bound
//!    reaches the k-th best lower bound are compared again in f32, so the
//!    result is the exact k nearest, not an approximation;
//! 3. baselines above [`IndexParams::ivf_threshold`] get an inverted-file
//!    index (spherical k-means, √n lists) and scan only the `nprobe` lists
//!    nearest to the query, the same way. In the scorer the index is built
//!    (and rebuilt, each time the baseline doubles) on a thread of its own
//!    while lookups go on over the previous structure, so one workload's
//!    build never holds up the scoring of the others (see
//!    [`IndexParams::background`]).

use std::collections::HashMap;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

mod ivf;
mod quant;
mod topk;

use lance_linalg::distance::Dot;
use outlier_common::featurize::{DIM, Embedding};

use ivf::{Ivf, build_ivf, nearest_centroid};
use quant::{Cols, Query, Scan};
use topk::TopK;

/// One distinct behaviour of a workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Behaviour {
    /// Hash of the embedding: identical behaviour, identical key.
    pub key: u64,
    pub vector: Embedding,
    /// Events it stands for. In a baseline, all of them; in the rows that
    /// [`Baseline::take_dirty`] hands out for storage, those since its
    /// previous write (storage keeps increments, summed on load).
    pub count: u64,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    /// Whether a row of it is in storage already (else this row is its
    /// first: storage counts it as a distinct behaviour).
    pub stored: bool,
}

/// A neighbour found by [`Baseline::nearest`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbour {
    pub index: usize,
    pub distance: f32,
}

/// When and how a baseline switches from exact scans to an IVF index.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IndexParams {
    /// Baselines with at least this many behaviours get an IVF index.
    pub ivf_threshold: usize,
    /// Lists scanned per query.
    pub nprobe: usize,
    /// Build the index on a background thread and adopt it once built;
    /// meanwhile lookups use the previous structure (exact scans, or the
    /// previous index with the new rows in their nearest lists). The
    /// scorer's setting: a build of a large baseline takes seconds (minutes
    /// in a debug build), and done in place it stalled every partition of
    /// the scorer. Off, the index is built in place when due, so results do
    /// not depend on thread timing (offline evaluation, benches, tests).
    pub background: bool,
}

impl Default for IndexParams {
    fn default() -> Self {
        Self {
            ivf_threshold: 20_000,
            nprobe: 16,
            background: false,
        }
    }
}

/// Background index builds running, over all baselines of the process.
static BUILDS_RUNNING: AtomicUsize = AtomicUsize::new(0);

/// A slot among the background builds: at most half the cores build at
/// once (at least one), so a fleet of baselines crossing the threshold
/// together (a scorer taking partitions over) does not starve scoring.
struct BuildSlot;

impl BuildSlot {
    fn take() -> Option<Self> {
        // Read once: on Linux it reads the cgroup's CPU quota.
        static MAX: LazyLock<usize> = LazyLock::new(|| {
            std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
        });
        let max = *MAX;
        BUILDS_RUNNING
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| BuildSlot)
    }
}

impl Drop for BuildSlot {
    fn drop(&mut self) {
        BUILDS_RUNNING.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Meta {
    key: u64,
    count: u64,
    first_seen_ns: u64,
    last_seen_ns: u64,
    /// Last-seen time as of the last write to storage; 0: never written.
    persisted_ns: u64,
    /// Count as of the last write to storage.
    persisted_count: u64,
}

#[derive(Debug, Default)]
pub struct Baseline {
    /// `len × DIM`, row i is behaviour i.
    vectors: Vec<f32>,
    /// The same rows quantised, while there is no IVF index (then they are
    /// in its lists).
    cols: Cols,
    meta: Vec<Meta>,
    by_key: HashMap<u64, usize>,
    /// Entries changed since the last [`Baseline::take_dirty`].
    dirty: Vec<usize>,
    is_dirty: Vec<bool>,
    /// Keys forgotten since the last [`Baseline::take_forgotten`].
    forgotten: Vec<u64>,
    /// Events observed over the baseline's life (sum of counts).
    events: u64,
    ivf: Option<Ivf>,
    /// An index being built in the background over the first rows (its
    /// `built_at`); adopted by the first observation after it is done.
    building: Option<JoinHandle<Ivf>>,
    /// An index is due but every build slot was taken: tried again at the
    /// next observation.
    reindex_due: bool,
    params: IndexParams,
}

pub use outlier_common::featurize::behaviour_key;

impl Baseline {
    pub fn with_params(params: IndexParams) -> Self {
        Self {
            params,
            ..Self::default()
        }
    }

    /// Builds a baseline from stored behaviours (none of them dirty).
    pub fn from_behaviours(rows: impl IntoIterator<Item = Behaviour>, params: IndexParams) -> Self {
        let mut b = Self::with_params(params);
        for row in rows {
            b.events += row.count;
            if let Some(&i) = b.by_key.get(&row.key) {
                // Several stored rows for one key (increments written
                // one after another, or by two writers): add them up.
                let m = &mut b.meta[i];
                m.count += row.count;
                m.first_seen_ns = m.first_seen_ns.min(row.first_seen_ns);
                m.last_seen_ns = m.last_seen_ns.max(row.last_seen_ns);
                continue;
            }
            let i = b.push(
                row.key,
                &row.vector,
                row.count,
                row.first_seen_ns,
                row.last_seen_ns,
            );
            b.meta[i].persisted_ns = row.last_seen_ns.max(1);
        }
        for m in &mut b.meta {
            m.persisted_count = m.count;
        }
        b.maybe_reindex();
        b
    }

    fn push(&mut self, key: u64, v: &Embedding, count: u64, first: u64, last: u64) -> usize {
        let i = self.meta.len();
        self.vectors.extend_from_slice(v);
        match &mut self.ivf {
            None => self.cols.push(v),
            Some(ivf) => {
                let l = nearest_centroid(&ivf.centroids, v);
                ivf.lists[l].push(i as u32);
                ivf.list_cols[l].push(v);
            }
        }
        self.meta.push(Meta {
            key,
            count,
            first_seen_ns: first,
            last_seen_ns: last,
            persisted_ns: 0,
            persisted_count: 0,
        });
        self.is_dirty.push(false);
        self.by_key.insert(key, i);
        i
    }

    pub fn len(&self) -> usize {
        self.meta.len()
    }

    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    /// Events observed over the baseline's life.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Whether an IVF index serves queries.
    pub fn is_indexed(&self) -> bool {
        self.ivf.is_some()
    }

    pub fn get(&self, index: usize) -> Behaviour {
        let m = self.meta[index];
        let mut vector = [0f32; DIM];
        vector.copy_from_slice(self.row(index));
        Behaviour {
            key: m.key,
            vector,
            count: m.count,
            first_seen_ns: m.first_seen_ns,
            last_seen_ns: m.last_seen_ns,
            stored: m.persisted_ns != 0,
        }
    }

    pub fn count_of(&self, index: usize) -> u64 {
        self.meta[index].count
    }

    fn row(&self, i: usize) -> &[f32] {
        &self.vectors[i * DIM..(i + 1) * DIM]
    }

    /// The `k` behaviours nearest to `q`, nearest first.
    pub fn nearest(&self, q: &Embedding, k: usize) -> Vec<Neighbour> {
        self.nearest_keyed(q, behaviour_key(q), k)
    }

    /// [`Baseline::nearest`] for a query whose [`behaviour_key`] is known.
    pub fn nearest_keyed(&self, q: &Embedding, key: u64, k: usize) -> Vec<Neighbour> {
        let mut top = TopK::new(k);
        if k == 0 || self.is_empty() {
            return Vec::new();
        }
        if let Some(&i) = self.by_key.get(&key) {
            top.offer(1.0, i);
            if k == 1 {
                return top.into_neighbours();
            }
        }
        let query = Query::new(q);
        let mut scan = Scan::new(k);
        match &self.ivf {
            None => scan.scan(&query, &self.cols, |j| j),
            Some(ivf) => {
                let nlist = ivf.lists.len();
                let mut csims = vec![0f32; nlist];
                f32::dot_batch_into(q, &ivf.centroids, DIM, &mut csims);
                let mut order: Vec<usize> = (0..nlist).collect();
                let nprobe = self.params.nprobe.clamp(1, nlist);
                order.select_nth_unstable_by(nprobe - 1, |a, b| csims[*b].total_cmp(&csims[*a]));
                for &l in &order[..nprobe] {
                    let ids = &ivf.lists[l];
                    scan.scan(&query, &ivf.list_cols[l], |j| ids[j] as usize);
                }
            }
        }
        scan.finish(&query, &self.vectors, &mut top);
        top.into_neighbours()
    }

    /// Cosine distance from `q` to its nearest behaviour, if any.
    pub fn min_distance(&self, q: &Embedding) -> Option<(f32, usize)> {
        self.nearest(q, 1).first().map(|n| (n.distance, n.index))
    }

    /// Records that behaviour `v` happened at `ts_ns`. Returns true when it
    /// is new to the baseline.
    pub fn observe(&mut self, v: &Embedding, ts_ns: u64) -> bool {
        self.observe_keyed(v, behaviour_key(v), ts_ns)
    }

    /// [`Baseline::observe`] for a behaviour whose [`behaviour_key`] is known.
    pub fn observe_keyed(&mut self, v: &Embedding, key: u64, ts_ns: u64) -> bool {
        self.events += 1;
        let (index, new) = match self.by_key.get(&key) {
            Some(&i) => {
                let m = &mut self.meta[i];
                m.count += 1;
                m.last_seen_ns = m.last_seen_ns.max(ts_ns);
                (i, false)
            }
            None => (self.push(key, v, 1, ts_ns, ts_ns), true),
        };
        if !self.is_dirty[index] {
            self.is_dirty[index] = true;
            self.dirty.push(index);
        }
        if new || self.reindex_due || self.building.as_ref().is_some_and(|b| b.is_finished()) {
            self.maybe_reindex();
        }
        new
    }

    /// Removes a behaviour (an operator said it is malicious). Returns
    /// whether it was there.
    pub fn forget(&mut self, v: &Embedding) -> bool {
        let key = behaviour_key(v);
        if !self.by_key.contains_key(&key) {
            return false;
        }
        self.retain(|m| m.key != key);
        self.forgotten.push(key);
        true
    }

    /// What to write for the behaviours changed since the last call: each
    /// with the events since its previous write as its count.
    pub fn take_dirty(&mut self) -> Vec<Behaviour> {
        self.take(|_| true)
    }

    /// Like [`Baseline::take_dirty`], but a behaviour already stored is
    /// returned only once its last-seen time is `touch_ns` past what was
    /// stored: new behaviour is written at once, while the count and
    /// last-seen updates of repeated behaviour (most of a fleet's stream)
    /// are written at most once per `touch_ns` of event time. The rest stay
    /// dirty for a later call (or a full [`Baseline::take_dirty`]).
    pub fn take_dirty_due(&mut self, touch_ns: u64) -> Vec<Behaviour> {
        self.take(|m| {
            m.persisted_ns == 0 || m.last_seen_ns >= m.persisted_ns.saturating_add(touch_ns)
        })
    }

    fn take(&mut self, due: impl Fn(&Meta) -> bool) -> Vec<Behaviour> {
        let mut out = Vec::new();
        let mut keep = Vec::new();
        for &i in &self.dirty {
            let m = self.meta[i];
            if due(&m) {
                let mut row = self.get(i);
                row.count = m.count - m.persisted_count;
                out.push(row);
                let m = &mut self.meta[i];
                m.persisted_ns = m.last_seen_ns.max(1);
                m.persisted_count = m.count;
                self.is_dirty[i] = false;
            } else {
                keep.push(i);
            }
        }
        self.dirty = keep;
        out
    }

    /// Keys forgotten since the last call, to delete from storage.
    pub fn take_forgotten(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.forgotten)
    }

    pub fn has_dirty(&self) -> bool {
        !self.dirty.is_empty() || !self.forgotten.is_empty()
    }

    /// Forgets behaviours last seen before `cutoff_ns`; returns how many.
    pub fn prune(&mut self, cutoff_ns: u64) -> usize {
        let before = self.len();
        if self.meta.iter().all(|m| m.last_seen_ns >= cutoff_ns) {
            return 0;
        }
        self.retain(|m| m.last_seen_ns >= cutoff_ns);
        before - self.len()
    }

    /// Keeps the entries `keep` accepts, with their dirty flags, and
    /// rebuilds the lookup structures.
    fn retain(&mut self, keep: impl Fn(&Meta) -> bool) {
        let vectors = std::mem::take(&mut self.vectors);
        self.cols = Cols::default();
        let meta = std::mem::take(&mut self.meta);
        let flags = std::mem::take(&mut self.is_dirty);
        self.by_key.clear();
        self.dirty.clear();
        self.ivf = None;
        // A build under way indexes rows that are renumbered now: drop it
        // (its thread finishes on its own and its result is discarded).
        self.building = None;
        for (i, (m, d)) in meta.into_iter().zip(flags).enumerate() {
            if !keep(&m) {
                continue;
            }
            let mut v = [0f32; DIM];
            v.copy_from_slice(&vectors[i * DIM..(i + 1) * DIM]);
            let j = self.push(m.key, &v, m.count, m.first_seen_ns, m.last_seen_ns);
            self.meta[j].persisted_ns = m.persisted_ns;
            self.meta[j].persisted_count = m.persisted_count;
            if d {
                self.is_dirty[j] = true;
                self.dirty.push(j);
            }
        }
        self.maybe_reindex();
    }

    fn maybe_reindex(&mut self) {
        if self.building.as_ref().is_some_and(|b| b.is_finished()) {
            self.adopt_index();
        }
        if self.building.is_some() {
            return;
        }
        let n = self.len();
        self.reindex_due = match &self.ivf {
            None => n >= self.params.ivf_threshold,
            Some(ivf) => n >= ivf.built_at * 2,
        };
        if !self.reindex_due {
            return;
        }
        if !self.params.background {
            let ivf = timed_build(&self.vectors, n);
            self.install(ivf);
            return;
        }
        // With every build slot taken, `reindex_due` stays set and the next
        // observation tries again.
        let Some(slot) = BuildSlot::take() else {
            return;
        };
        let rows = self.vectors[..n * DIM].to_vec();
        let spawned = std::thread::Builder::new()
            .name("baseline-index".into())
            .spawn(move || {
                let _slot = slot;
                timed_build(&rows, n)
            });
        match spawned {
            Ok(handle) => {
                self.building = Some(handle);
                self.reindex_due = false;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot start a baseline index build; retried later")
            }
        }
    }

    /// Takes over the background build if it has finished.
    fn adopt_index(&mut self) {
        let Some(handle) = self.building.take() else {
            return;
        };
        match handle.join() {
            Ok(ivf) => self.install(ivf),
            // Retried at the next new behaviour.
            Err(_) => tracing::error!("a baseline index build panicked"),
        }
    }

    /// Waits until the index this baseline is due is built and adopted
    /// (benches and tests that need the indexed path).
    pub fn wait_for_index(&mut self) {
        loop {
            self.adopt_index();
            self.maybe_reindex();
            if self.building.is_none() && !self.reindex_due {
                return;
            }
            if self.building.is_none() {
                // Every build slot taken (by other baselines' builds).
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    }

    /// Whether an index build is under way in the background.
    pub fn is_indexing(&self) -> bool {
        self.building.is_some()
    }

    /// Makes `ivf` the index, first filing the rows added since it was
    /// built into their nearest lists.
    fn install(&mut self, mut ivf: Ivf) {
        self.reindex_due = false;
        for i in ivf.built_at..self.len() {
            let row = &self.vectors[i * DIM..(i + 1) * DIM];
            let l = nearest_centroid(&ivf.centroids, row);
            ivf.lists[l].push(i as u32);
            ivf.list_cols[l].push(row);
        }
        self.ivf = Some(ivf);
        self.cols = Cols::default();
    }
}

fn timed_build(vectors: &[f32], n: usize) -> Ivf {
    let t = Instant::now();
    let ivf = build_ivf(vectors, n);
    crate::metrics::INDEX_BUILD_SECONDS.observe(t.elapsed().as_secs_f64());
    tracing::debug!(
        behaviours = n,
        seconds = t.elapsed().as_secs_f64(),
        "baseline index built"
    );
    ivf
}

#[cfg(test)]
mod tests {
    use super::*;
    use outlier_common::featurize::cosine_distance;

    pub(super) fn unit(seed: u64) -> Embedding {
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
        assert_eq!(b.events(), 3);
        let e = b.get(0);
        assert_eq!((e.count, e.first_seen_ns, e.last_seen_ns), (2, 10, 20));
        let dirty = b.take_dirty();
        assert_eq!(dirty.len(), 2);
        assert_eq!(dirty[0].count, 2);
        assert!(b.take_dirty().is_empty());
        b.observe(&unit(2), 40);
        b.observe(&unit(2), 45);
        // Storage gets the increment since the last write; the baseline
        // keeps the total.
        let dirty = b.take_dirty();
        assert_eq!(dirty.len(), 1);
        assert_eq!((dirty[0].count, dirty[0].first_seen_ns), (2, 30));
        assert_eq!(b.count_of(1), 3);
    }

    #[test]
    fn repeated_behaviour_is_written_back_at_most_once_per_touch_interval() {
        let mut b = Baseline::default();
        b.observe(&unit(1), 1_000);
        assert_eq!(b.take_dirty_due(100).len(), 1, "new behaviour at once");
        b.observe(&unit(1), 1_050);
        b.observe(&unit(2), 1_060);
        let due = b.take_dirty_due(100);
        assert_eq!(due.len(), 1, "only the new one: the repeat is not due");
        assert_eq!(due[0].key, behaviour_key(&unit(2)));
        assert!(b.has_dirty(), "the repeat waits");
        b.observe(&unit(1), 1_100);
        let due = b.take_dirty_due(100);
        assert_eq!(due.len(), 1);
        assert_eq!(
            (due[0].count, due[0].last_seen_ns),
            (2, 1_100),
            "two since the write"
        );
        b.observe(&unit(1), 1_150);
        assert!(b.take_dirty_due(100).is_empty());
        // A full take (hand-over, shutdown) writes everything pending.
        let all = b.take_dirty();
        assert_eq!((all.len(), all[0].count), (1, 1));
        assert!(!b.has_dirty());
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
            assert!((g.distance - w.0).abs() < 1e-5);
        }
        assert_eq!(
            b.min_distance(&unit(5)).map(|(d, i)| (d < 1e-5, i)),
            Some((true, 5))
        );
    }

    #[test]
    fn nearest_matches_brute_force_on_sparse_behaviours() {
        // Feature-hashed behaviours: few non-zeros, many shared dimensions.
        let mut b = Baseline::default();
        for s in 0..1_000u64 {
            b.observe(&sparse(s % 97 * 1_000 + s, 4 + s as usize % 30), s);
        }
        for t in 0..50u64 {
            let q = sparse(t * 13 % 97 * 1_000 + 5_000 + t, 4 + t as usize % 30);
            let got = b.nearest(&q, 3);
            let mut all: Vec<(f32, usize)> = (0..b.len())
                .map(|i| (cosine_distance(&q, &b.get(i).vector), i))
                .collect();
            all.sort_by(|a, b| a.0.total_cmp(&b.0));
            for (g, w) in got.iter().zip(&all) {
                assert!((g.distance - w.0).abs() < 1e-5, "query {t}: {g:?} vs {w:?}");
            }
            assert_eq!(got.len(), 3);
        }
    }

    /// A sparse unit vector with `nnz` non-zeros, as feature hashing makes.
    pub(super) fn sparse(seed: u64, nnz: usize) -> Embedding {
        let x = unit(seed);
        let mut v = [0f32; DIM];
        for i in 0..nnz {
            v[(i * 37 + seed as usize) % DIM] = x[i];
        }
        let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
        v.iter_mut().for_each(|a| *a /= n);
        v
    }

    #[test]
    fn near_ties_are_ordered_exactly_despite_quantisation() {
        // Rows closer to each other than the quantisation step: the scan
        // must still return the exact nearest, in exact order.
        let base = unit(42);
        let mut b = Baseline::default();
        for s in 0..300u64 {
            let noise = unit(900 + s);
            let mut v = base;
            for (a, n) in v.iter_mut().zip(noise) {
                *a += 0.01 * n;
            }
            let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
            v.iter_mut().for_each(|a| *a /= n);
            b.observe(&v, s);
        }
        let mut q = base;
        q[3] += 0.005;
        let n = q.iter().map(|a| a * a).sum::<f32>().sqrt();
        q.iter_mut().for_each(|a| *a /= n);
        let got = b.nearest(&q, 5);
        let mut all: Vec<(f32, usize)> = (0..b.len())
            .map(|i| (cosine_distance(&q, &b.get(i).vector), i))
            .collect();
        all.sort_by(|a, b| a.0.total_cmp(&b.0));
        let want: Vec<usize> = all[..5].iter().map(|w| w.1).collect();
        assert_eq!(got.iter().map(|g| g.index).collect::<Vec<_>>(), want);
    }

    #[test]
    fn ivf_index_finds_near_neighbours() {
        let params = IndexParams {
            ivf_threshold: 2_000,
            nprobe: 8,
            background: false,
        };
        let mut b = Baseline::with_params(params);
        // Clustered data, as behaviours of a workload are: 40 themes with
        // small variations.
        for s in 0..4_000u64 {
            b.observe(&clustered(s), s);
        }
        assert!(b.is_indexed());
        let mut worse = 0;
        for s in 0..200u64 {
            let q = themed(s % 40, 50_000 + s);
            let approx = b.min_distance(&q).unwrap().0;
            let exact = (0..b.len())
                .map(|i| cosine_distance(&q, &b.get(i).vector))
                .fold(f32::MAX, f32::min);
            assert!(approx >= exact - 1e-5);
            if approx > exact + 0.02 {
                worse += 1;
            }
        }
        assert!(
            worse <= 10,
            "{worse} of 200 queries missed their nearest neighbour by > 0.02"
        );
        // Exact repeats are always found.
        assert_eq!(b.min_distance(&b.get(1234).vector).unwrap().1, 1234);
    }

    /// Behaviour `s` of a workload with 40 themes and small variations.
    fn clustered(s: u64) -> Embedding {
        themed(s % 40, 10_000 + s)
    }

    /// Theme `theme` with a small variation drawn from `noise_seed`.
    fn themed(theme: u64, noise_seed: u64) -> Embedding {
        let mut v = unit(theme);
        let noise = unit(noise_seed);
        for (a, n) in v.iter_mut().zip(noise) {
            *a += 0.15 * n;
        }
        let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
        v.iter_mut().for_each(|a| *a /= n);
        v
    }

    /// Every row is in exactly one list of the index.
    fn assert_every_row_filed_once(b: &Baseline) {
        let ivf = b.ivf.as_ref().expect("indexed");
        let mut seen = vec![0u32; b.len()];
        for (l, ids) in ivf.lists.iter().enumerate() {
            assert_eq!(ids.len(), ivf.list_cols[l].len());
            ids.iter().for_each(|&i| seen[i as usize] += 1);
        }
        assert!(seen.iter().all(|&c| c == 1), "rows missing or filed twice");
    }

    #[test]
    fn a_background_build_leaves_lookups_running_and_files_the_rows_added_meanwhile() {
        let params = IndexParams {
            ivf_threshold: 2_000,
            nprobe: 8,
            background: true,
        };
        let mut b = Baseline::with_params(params);
        for s in 0..2_000u64 {
            assert!(b.observe(&clustered(s), s));
        }
        // The 2,000th behaviour started the build on another thread; this
        // one goes on with exact scans.
        assert!(b.is_indexing());
        assert!(!b.is_indexed());
        let q = clustered(1_999);
        assert_eq!(b.nearest_keyed(&q, 0, 1)[0].index, 1_999);
        for s in 2_000..2_600u64 {
            b.observe(&clustered(s), s);
        }
        b.wait_for_index();
        assert!(b.is_indexed() && !b.is_indexing());
        assert_every_row_filed_once(&b);
        // Rows added while the index was built are found by its scan (a
        // key that matches nothing, so the lookup by key cannot answer).
        for s in [2_000u64, 2_301, 2_599] {
            let got = b.nearest_keyed(&clustered(s), 0, 1);
            assert_eq!(got[0].index, s as usize);
            assert!(got[0].distance < 1e-4);
        }
        // The next build is due at twice the size; renumbering rows while
        // it runs (pruning) drops it and starts one over the rows kept.
        for s in 2_600..4_000u64 {
            b.observe(&clustered(s), s);
        }
        assert!(b.is_indexing());
        assert_eq!(b.prune(100), 100);
        assert!(!b.is_indexed());
        b.wait_for_index();
        assert!(b.is_indexed());
        assert_eq!(b.len(), 3_900);
        assert_every_row_filed_once(&b);
        assert_eq!(b.nearest_keyed(&clustered(3_999), 0, 1)[0].index, 3_899);
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
    fn forget_removes_a_behaviour_and_reports_its_key() {
        let mut b = Baseline::default();
        b.observe(&unit(1), 10);
        b.observe(&unit(2), 10);
        assert!(b.forget(&unit(1)));
        assert!(!b.forget(&unit(1)));
        assert_eq!(b.len(), 1);
        assert_eq!(b.take_forgotten(), vec![behaviour_key(&unit(1))]);
        assert!(b.min_distance(&unit(1)).unwrap().0 > 0.1);
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
            stored: true,
        };
        let b = Baseline::from_behaviours([row(2, 5, 50), row(3, 1, 40)], IndexParams::default());
        assert_eq!(b.len(), 1);
        assert_eq!(b.events(), 5);
        let e = b.get(0);
        assert_eq!((e.count, e.first_seen_ns, e.last_seen_ns), (5, 1, 50));
        assert!(!b.has_dirty());
        // What was loaded is not written again: the next write is the
        // increment.
        let mut b = b;
        b.observe(&v, 60);
        assert_eq!(b.take_dirty()[0].count, 1);
    }
}
