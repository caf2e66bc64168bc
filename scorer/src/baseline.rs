//! The in-memory baseline of one (org, workload): every distinct behaviour
//! seen (an embedding), stored once with a count and the time it was last
//! seen, answering k-nearest-neighbour queries by cosine distance.
//!
//! Lookups, fastest first:
//! 1. a behaviour seen before hashes to its own entry: distance 0, O(1);
//! 2. small baselines are scanned exactly with a SIMD batch dot product
//!    (runtime-dispatched AVX/FMA/AVX-512 kernels from lance-linalg);
//! 3. baselines above [`IndexParams::ivf_threshold`] get an inverted-file
//!    index (spherical k-means, √n lists) and scan only the `nprobe` lists
//!    nearest to the query.

use std::collections::HashMap;

use lance_linalg::distance::Dot;
use outlier_common::featurize::{DIM, Embedding};

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

/// When and how a baseline switches from exact scans to an IVF index.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IndexParams {
    /// Baselines with at least this many behaviours get an IVF index.
    pub ivf_threshold: usize,
    /// Lists scanned per query.
    pub nprobe: usize,
}

impl Default for IndexParams {
    fn default() -> Self {
        Self {
            ivf_threshold: 20_000,
            nprobe: 16,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Meta {
    key: u64,
    count: u64,
    first_seen_ns: u64,
    last_seen_ns: u64,
}

#[derive(Debug)]
struct Ivf {
    /// `nlist × DIM`, unit vectors.
    centroids: Vec<f32>,
    lists: Vec<Vec<u32>>,
    /// The vectors of each list, contiguous, for one batch kernel call per list.
    list_vectors: Vec<Vec<f32>>,
    /// Baseline size when the index was built; rebuilt at twice that.
    built_at: usize,
}

#[derive(Debug, Default)]
pub struct Baseline {
    /// `len × DIM`, row i is behaviour i.
    vectors: Vec<f32>,
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
                // Two stored rows for one key (two writers): merge them.
                let m = &mut b.meta[i];
                m.count += row.count;
                m.first_seen_ns = m.first_seen_ns.min(row.first_seen_ns);
                m.last_seen_ns = m.last_seen_ns.max(row.last_seen_ns);
                continue;
            }
            b.push(
                row.key,
                &row.vector,
                row.count,
                row.first_seen_ns,
                row.last_seen_ns,
            );
        }
        b.maybe_reindex();
        b
    }

    fn push(&mut self, key: u64, v: &Embedding, count: u64, first: u64, last: u64) -> usize {
        let i = self.meta.len();
        self.vectors.extend_from_slice(v);
        self.meta.push(Meta {
            key,
            count,
            first_seen_ns: first,
            last_seen_ns: last,
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
        match &self.ivf {
            None => {
                let mut sims = vec![0f32; self.len()];
                f32::dot_batch_into(q, &self.vectors, DIM, &mut sims);
                for (i, s) in sims.into_iter().enumerate() {
                    top.offer(s, i);
                }
            }
            Some(ivf) => {
                let nlist = ivf.lists.len();
                let mut csims = vec![0f32; nlist];
                f32::dot_batch_into(q, &ivf.centroids, DIM, &mut csims);
                let mut order: Vec<usize> = (0..nlist).collect();
                let nprobe = self.params.nprobe.clamp(1, nlist);
                order.select_nth_unstable_by(nprobe - 1, |a, b| csims[*b].total_cmp(&csims[*a]));
                let mut sims = Vec::new();
                for &l in &order[..nprobe] {
                    sims.clear();
                    sims.resize(ivf.lists[l].len(), 0f32);
                    f32::dot_batch_into(q, &ivf.list_vectors[l], DIM, &mut sims);
                    for (&i, &s) in ivf.lists[l].iter().zip(&sims) {
                        top.offer(s, i as usize);
                    }
                }
            }
        }
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
            None => {
                let i = self.push(key, v, 1, ts_ns, ts_ns);
                if let Some(ivf) = &mut self.ivf {
                    let l = nearest_centroid(&ivf.centroids, v);
                    ivf.lists[l].push(i as u32);
                    ivf.list_vectors[l].extend_from_slice(v);
                }
                (i, true)
            }
        };
        if !self.is_dirty[index] {
            self.is_dirty[index] = true;
            self.dirty.push(index);
        }
        if new {
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

    /// Copies of the behaviours changed since the last call, to persist.
    pub fn take_dirty(&mut self) -> Vec<Behaviour> {
        let out = self.dirty.iter().map(|&i| self.get(i)).collect();
        for &i in &self.dirty {
            self.is_dirty[i] = false;
        }
        self.dirty.clear();
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
        let meta = std::mem::take(&mut self.meta);
        let flags = std::mem::take(&mut self.is_dirty);
        self.by_key.clear();
        self.dirty.clear();
        self.ivf = None;
        for (i, (m, d)) in meta.into_iter().zip(flags).enumerate() {
            if !keep(&m) {
                continue;
            }
            let mut v = [0f32; DIM];
            v.copy_from_slice(&vectors[i * DIM..(i + 1) * DIM]);
            let j = self.push(m.key, &v, m.count, m.first_seen_ns, m.last_seen_ns);
            if d {
                self.is_dirty[j] = true;
                self.dirty.push(j);
            }
        }
        self.maybe_reindex();
    }

    fn maybe_reindex(&mut self) {
        let n = self.len();
        let due = match &self.ivf {
            None => n >= self.params.ivf_threshold,
            Some(ivf) => n >= ivf.built_at * 2,
        };
        if due {
            self.ivf = Some(build_ivf(&self.vectors, n));
        }
    }
}

/// Keeps the `k` most similar candidates seen, most similar first.
struct TopK {
    k: usize,
    items: Vec<(f32, usize)>,
}

impl TopK {
    fn new(k: usize) -> Self {
        Self {
            k,
            items: Vec::with_capacity(k + 1),
        }
    }

    #[inline]
    fn offer(&mut self, sim: f32, index: usize) {
        if self.items.len() == self.k && sim <= self.items[self.k - 1].0 {
            return;
        }
        if self.items.iter().any(|(_, i)| *i == index) {
            return;
        }
        let pos = self.items.partition_point(|(s, _)| *s >= sim);
        self.items.insert(pos, (sim, index));
        self.items.truncate(self.k);
    }

    fn into_neighbours(self) -> Vec<Neighbour> {
        self.items
            .into_iter()
            .map(|(s, index)| Neighbour {
                index,
                distance: (1.0 - s).clamp(0.0, 2.0),
            })
            .collect()
    }
}

fn nearest_centroid(centroids: &[f32], v: &[f32]) -> usize {
    let mut sims = vec![0f32; centroids.len() / DIM];
    f32::dot_batch_into(v, centroids, DIM, &mut sims);
    sims.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

/// Spherical k-means over `n` rows with √n lists: deterministic (seeded
/// initial picks), a few iterations on a sample, then every row assigned.
fn build_ivf(vectors: &[f32], n: usize) -> Ivf {
    let nlist = ((n as f64).sqrt() as usize).max(1);
    let sample_step = (n / 50_000).max(1);
    let sample: Vec<usize> = (0..n).step_by(sample_step).collect();
    // Initial centroids: evenly spaced sample rows.
    let mut centroids = Vec::with_capacity(nlist * DIM);
    for c in 0..nlist {
        let i = sample[c * sample.len() / nlist];
        centroids.extend_from_slice(&vectors[i * DIM..(i + 1) * DIM]);
    }
    for _ in 0..6 {
        let mut sums = vec![0f32; nlist * DIM];
        let mut counts = vec![0usize; nlist];
        for &i in &sample {
            let row = &vectors[i * DIM..(i + 1) * DIM];
            let l = nearest_centroid(&centroids, row);
            counts[l] += 1;
            for (s, x) in sums[l * DIM..(l + 1) * DIM].iter_mut().zip(row) {
                *s += x;
            }
        }
        for l in 0..nlist {
            let sum = &sums[l * DIM..(l + 1) * DIM];
            let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt();
            if counts[l] > 0 && norm > 0.0 {
                for (c, s) in centroids[l * DIM..(l + 1) * DIM].iter_mut().zip(sum) {
                    *c = s / norm;
                }
            }
        }
    }
    let mut lists = vec![Vec::new(); nlist];
    let mut list_vectors = vec![Vec::new(); nlist];
    for i in 0..n {
        let row = &vectors[i * DIM..(i + 1) * DIM];
        let l = nearest_centroid(&centroids, row);
        lists[l].push(i as u32);
        list_vectors[l].extend_from_slice(row);
    }
    Ivf {
        centroids,
        lists,
        list_vectors,
        built_at: n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outlier_common::featurize::cosine_distance;

    pub(crate) fn unit(seed: u64) -> Embedding {
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
            assert!((g.distance - w.0).abs() < 1e-5);
        }
        assert_eq!(
            b.min_distance(&unit(5)).map(|(d, i)| (d < 1e-5, i)),
            Some((true, 5))
        );
    }

    #[test]
    fn ivf_index_finds_near_neighbours() {
        let params = IndexParams {
            ivf_threshold: 2_000,
            nprobe: 8,
        };
        let mut b = Baseline::with_params(params);
        // Clustered data, as behaviours of a workload are: 40 themes with
        // small variations.
        for s in 0..4_000u64 {
            let mut v = unit(s % 40);
            let noise = unit(10_000 + s);
            for (a, n) in v.iter_mut().zip(noise) {
                *a += 0.15 * n;
            }
            let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
            v.iter_mut().for_each(|a| *a /= n);
            b.observe(&v, s);
        }
        assert!(b.is_indexed());
        let mut worse = 0;
        for s in 0..200u64 {
            let mut q = unit(s % 40);
            let noise = unit(50_000 + s);
            for (a, n) in q.iter_mut().zip(noise) {
                *a += 0.15 * n;
            }
            let n = q.iter().map(|a| a * a).sum::<f32>().sqrt();
            q.iter_mut().for_each(|a| *a /= n);
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
        };
        let b = Baseline::from_behaviours([row(2, 5, 50), row(3, 1, 40)], IndexParams::default());
        assert_eq!(b.len(), 1);
        assert_eq!(b.events(), 5);
        let e = b.get(0);
        assert_eq!((e.count, e.first_seen_ns, e.last_seen_ns), (5, 1, 50));
        assert!(!b.has_dirty());
    }
}
