//! The in-memory baseline of one (org, workload): every distinct behaviour
//! seen (an embedding), stored once with a count and the time it was last
//! seen, answering k-nearest-neighbour queries by cosine distance.
//!
//! Lookups, fastest first:
//! 1. a behaviour seen before hashes to its own entry: distance 0, O(1);
//! 2. small baselines are scanned whole, exactly: every row is kept twice,
//!    as f32 and as 8-bit scalar-quantised codes (a quarter of the memory
//!    traffic, runtime-dispatched AVX2/AVX-512-VNNI u8 kernels from
//!    lance-linalg). The scan over the codes gives each row a similarity
//!    with a proven error bound; only rows whose upper bound reaches the
//!    k-th best lower bound are compared again in f32, so the result is the
//!    exact k nearest, not an approximation;
//! 3. baselines above [`IndexParams::ivf_threshold`] get an inverted-file
//!    index (spherical k-means, √n lists) and scan only the `nprobe` lists
//!    nearest to the query, the same way.

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
    /// Whether a version of it is in storage already (else it is new, and
    /// can be appended instead of merged).
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
    /// Last-seen time as of the last write to storage; 0: never written.
    persisted_ns: u64,
}

/// The 8-bit scalar quantisation of one row: `x[i] ≈ lo + step × code[i]`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Sq {
    lo: f32,
    step: f32,
    /// Σ code[i], for the affine terms of the dot product.
    code_sum: f32,
    /// ‖x̂‖₁ of the reconstruction, for the error bound.
    l1: f32,
}

/// Quantises `v` into `codes` (appended).
fn quantise(v: &[f32], codes: &mut Vec<u8>) -> Sq {
    let lo = v.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let step = (hi - lo) / 255.0;
    let (mut code_sum, mut l1) = (0f32, 0f32);
    for &x in v {
        let c = if step > 0.0 {
            ((x - lo) / step).round().clamp(0.0, 255.0) as u8
        } else {
            0
        };
        codes.push(c);
        code_sum += f32::from(c);
        l1 += (lo + step * f32::from(c)).abs();
    }
    Sq {
        lo,
        step,
        code_sum,
        l1,
    }
}

/// `out[j] = q · row j` over 8-bit codes, for every `DIM`-wide row of
/// `rows`: one call per list, a loop LLVM vectorises (AVX2 `vpmaddwd` where
/// the host has it, chosen once at run time; SSE2 otherwise).
type DotsU8 = unsafe fn(&[i16], &[u8], usize, &mut [u32]);

#[inline(always)]
fn dots_u8_portable(q: &[i16], rows: &[u8], dim: usize, out: &mut [u32]) {
    // The query's codes come widened to i16, so each row is zero-extended
    // once and multiplied pairwise-added (`pmaddwd`) straight from memory.
    let q: &[i16; DIM] = q.try_into().expect("a query of DIM codes");
    debug_assert_eq!(dim, DIM);
    for (o, row) in out.iter_mut().zip(rows.chunks_exact(DIM)) {
        let row: &[u8; DIM] = row.try_into().expect("rows of DIM codes");
        let sum: i32 = q
            .iter()
            .zip(row)
            .map(|(a, b)| i32::from(*a) * i32::from(*b))
            .sum();
        *o = sum as u32;
    }
}

#[cfg(target_arch = "x86_64")]
lance_core::target_kernel! {
    #[target_features("avx2")]
    #[candidate(DOTS_U8_AVX2: DotsU8)]
    /// AVX2: the query's 128 i16 codes stay in eight registers; each row is
    /// zero-extended 16 codes at a time and multiplied pairwise-added
    /// (`vpmaddwd`) into eight i32 lanes.
    fn dots_u8_avx2(q: &[i16], rows: &[u8], dim: usize, out: &mut [u32]) {
        use std::arch::x86_64::{
            __m128i, __m256i, _mm256_add_epi32, _mm256_cvtepu8_epi16, _mm256_madd_epi16,
            _mm256_setzero_si256,
        };
        debug_assert_eq!(dim, DIM);
        let q: &[i16; DIM] = q.try_into().expect("a query of DIM codes");
        let mut qv = [_mm256_setzero_si256(); DIM / 16];
        for (v, chunk) in qv.iter_mut().zip(q.chunks_exact(16)) {
            let chunk: [i16; 16] = chunk.try_into().expect("16 codes");
            *v = bytemuck::cast(chunk);
        }
        for (o, row) in out.iter_mut().zip(rows.chunks_exact(DIM)) {
            let mut acc = _mm256_setzero_si256();
            for (qj, chunk) in qv.iter().zip(row.chunks_exact(16)) {
                let chunk: [u8; 16] = chunk.try_into().expect("16 codes");
                let wide = _mm256_cvtepu8_epi16(bytemuck::cast::<[u8; 16], __m128i>(chunk));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(wide, *qj));
            }
            let lanes: [i32; 8] = bytemuck::cast::<__m256i, [i32; 8]>(acc);
            *o = lanes.iter().sum::<i32>() as u32;
        }
    }
}

lance_core::target_kernel! {
    #[target_features()]
    #[candidate(DOTS_U8_BASE: DotsU8)]
    fn dots_u8_base(q: &[i16], rows: &[u8], dim: usize, out: &mut [u32]) {
        dots_u8_portable(q, rows, dim, out)
    }
}

lance_core::dispatch! {
    static DOTS_U8: Dispatch<DotsU8> = {
        #[cfg(target_arch = "x86_64")]
        {
            &[DOTS_U8_AVX2, DOTS_U8_BASE]
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            &[DOTS_U8_BASE]
        }
    };
}

/// A query prepared for the quantised scan.
struct SqQuery<'a> {
    v: &'a [f32],
    /// The query's codes, widened for the kernel.
    wide: Vec<i16>,
    sq: Sq,
    /// ‖q‖₁.
    l1: f32,
}

impl<'a> SqQuery<'a> {
    fn new(v: &'a [f32]) -> Self {
        let mut codes = Vec::with_capacity(DIM);
        let sq = quantise(v, &mut codes);
        Self {
            v,
            wide: codes.iter().map(|&c| i16::from(c)).collect(),
            sq,
            l1: v.iter().map(|x| x.abs()).sum(),
        }
    }

    /// Bounds on the similarity `q·x` of a quantised row: `(lower, upper)`.
    ///
    /// With `x = x̂ + e`, `|e[i]| ≤ step/2` (and the same for `q`),
    /// `q·x − q̂·x̂ = q·e_x + e_q·x̂`, so the error is at most
    /// `step_x/2 × ‖q‖₁ + step_q/2 × ‖x̂‖₁`; 1e-4 covers f32 rounding of the
    /// affine terms.
    #[inline]
    fn bounds(&self, dot: u32, r: &Sq) -> (f32, f32) {
        let q = &self.sq;
        let dot = dot as f32;
        let approx = DIM as f32 * q.lo * r.lo
            + q.lo * r.step * r.code_sum
            + r.lo * q.step * q.code_sum
            + q.step * r.step * dot;
        let err = 0.5 * r.step * self.l1 + 0.5 * q.step * r.l1 + 1e-4;
        (approx - err, approx + err)
    }
}

/// The exact top-k over quantised rows: a first pass keeps the rows whose
/// upper bound reaches the k-th best lower bound seen so far, a second
/// compares those in f32.
struct SqScan {
    k: usize,
    /// The k best lower bounds, best first.
    lowers: Vec<f32>,
    /// `(upper bound, row)` of the rows still in the running.
    candidates: Vec<(f32, usize)>,
    /// Scratch: the code dot products of one list, and their bounds.
    dots: Vec<u32>,
    bounds: Vec<(f32, f32)>,
}

impl SqScan {
    fn new(k: usize) -> Self {
        Self {
            k,
            lowers: Vec::with_capacity(k + 1),
            candidates: Vec::new(),
            dots: Vec::new(),
            bounds: Vec::new(),
        }
    }

    /// The bound below which a row cannot be among the k nearest.
    #[inline]
    fn threshold(&self) -> f32 {
        if self.lowers.len() < self.k {
            f32::NEG_INFINITY
        } else {
            self.lowers[self.k - 1]
        }
    }

    #[inline]
    fn offer(&mut self, lower: f32, upper: f32, row: usize) {
        if upper < self.threshold() {
            return;
        }
        self.candidates.push((upper, row));
        if self.lowers.len() < self.k || lower > self.lowers[self.k - 1] {
            let pos = self.lowers.partition_point(|&l| l >= lower);
            self.lowers.insert(pos, lower);
            self.lowers.truncate(self.k);
        }
    }

    fn scan(&mut self, q: &SqQuery<'_>, codes: &[u8], sq: &[Sq], row: impl Fn(usize) -> usize) {
        let mut dots = std::mem::take(&mut self.dots);
        dots.clear();
        dots.resize(sq.len(), 0);
        DOTS_U8.get().call(&q.wide, codes, DIM, &mut dots);
        // Bounds in one branch-free (vectorisable) pass, then the few rows
        // that can still matter are picked out.
        let mut bounds = std::mem::take(&mut self.bounds);
        bounds.clear();
        bounds.extend(dots.iter().zip(sq).map(|(&dot, r)| q.bounds(dot, r)));
        let best_lower = bounds.iter().fold(f32::NEG_INFINITY, |m, b| m.max(b.0));
        if self.k == 1 && best_lower > self.threshold() {
            self.lowers.clear();
            self.lowers.push(best_lower);
        }
        for (j, &(lower, upper)) in bounds.iter().enumerate() {
            if upper >= self.threshold() {
                self.offer(lower, upper, row(j));
            }
        }
        self.dots = dots;
        self.bounds = bounds;
    }

    /// Compares the remaining candidates exactly.
    fn finish(self, q: &SqQuery<'_>, vectors: &[f32], top: &mut TopK) {
        let t = self.threshold();
        for (upper, i) in self.candidates {
            if upper >= t {
                top.offer(f32::dot(q.v, &vectors[i * DIM..(i + 1) * DIM]), i);
            }
        }
    }
}

#[derive(Debug)]
struct Ivf {
    /// `nlist × DIM`, unit vectors.
    centroids: Vec<f32>,
    lists: Vec<Vec<u32>>,
    /// The quantised rows of each list, contiguous.
    list_codes: Vec<Vec<u8>>,
    list_sq: Vec<Vec<Sq>>,
    /// Baseline size when the index was built; rebuilt at twice that.
    built_at: usize,
}

#[derive(Debug, Default)]
pub struct Baseline {
    /// `len × DIM`, row i is behaviour i.
    vectors: Vec<f32>,
    /// The same rows, quantised to 8 bits (`len × DIM`), and their scales.
    codes: Vec<u8>,
    sq: Vec<Sq>,
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
            let i = b.push(
                row.key,
                &row.vector,
                row.count,
                row.first_seen_ns,
                row.last_seen_ns,
            );
            b.meta[i].persisted_ns = row.last_seen_ns.max(1);
        }
        b.maybe_reindex();
        b
    }

    fn push(&mut self, key: u64, v: &Embedding, count: u64, first: u64, last: u64) -> usize {
        let i = self.meta.len();
        self.vectors.extend_from_slice(v);
        let sq = quantise(v, &mut self.codes);
        self.sq.push(sq);
        self.meta.push(Meta {
            key,
            count,
            first_seen_ns: first,
            last_seen_ns: last,
            persisted_ns: 0,
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
        let query = SqQuery::new(q);
        let mut scan = SqScan::new(k);
        match &self.ivf {
            None => scan.scan(&query, &self.codes, &self.sq, |j| j),
            Some(ivf) => {
                let nlist = ivf.lists.len();
                let mut csims = vec![0f32; nlist];
                f32::dot_batch_into(q, &ivf.centroids, DIM, &mut csims);
                let mut order: Vec<usize> = (0..nlist).collect();
                let nprobe = self.params.nprobe.clamp(1, nlist);
                order.select_nth_unstable_by(nprobe - 1, |a, b| csims[*b].total_cmp(&csims[*a]));
                for &l in &order[..nprobe] {
                    let ids = &ivf.lists[l];
                    scan.scan(&query, &ivf.list_codes[l], &ivf.list_sq[l], |j| {
                        ids[j] as usize
                    });
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
            None => {
                let i = self.push(key, v, 1, ts_ns, ts_ns);
                if let Some(ivf) = &mut self.ivf {
                    let l = nearest_centroid(&ivf.centroids, v);
                    ivf.lists[l].push(i as u32);
                    ivf.list_codes[l].extend_from_slice(&self.codes[i * DIM..(i + 1) * DIM]);
                    ivf.list_sq[l].push(self.sq[i]);
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
            self.meta[i].persisted_ns = self.meta[i].last_seen_ns.max(1);
        }
        self.dirty.clear();
        out
    }

    /// Like [`Baseline::take_dirty`], but a behaviour already stored is
    /// returned only once its last-seen time is `touch_ns` past what was
    /// stored: new behaviour is written at once, while the count and
    /// last-seen updates of repeated behaviour (most of a fleet's stream)
    /// are written at most once per `touch_ns` of event time. The rest stay
    /// dirty for a later call (or a full [`Baseline::take_dirty`]).
    pub fn take_dirty_due(&mut self, touch_ns: u64) -> Vec<Behaviour> {
        let mut out = Vec::new();
        let mut keep = Vec::new();
        for &i in &self.dirty {
            let m = self.meta[i];
            if m.persisted_ns == 0 || m.last_seen_ns >= m.persisted_ns.saturating_add(touch_ns) {
                out.push(self.get(i));
                self.meta[i].persisted_ns = m.last_seen_ns.max(1);
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
        self.codes.clear();
        self.sq.clear();
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
            self.meta[j].persisted_ns = m.persisted_ns;
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
            self.ivf = Some(build_ivf(&self.vectors, &self.codes, &self.sq, n));
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
fn build_ivf(vectors: &[f32], codes: &[u8], sq: &[Sq], n: usize) -> Ivf {
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
    let mut list_codes = vec![Vec::new(); nlist];
    let mut list_sq = vec![Vec::new(); nlist];
    for i in 0..n {
        let row = &vectors[i * DIM..(i + 1) * DIM];
        let l = nearest_centroid(&centroids, row);
        lists[l].push(i as u32);
        list_codes[l].extend_from_slice(&codes[i * DIM..(i + 1) * DIM]);
        list_sq[l].push(sq[i]);
    }
    Ivf {
        centroids,
        lists,
        list_codes,
        list_sq,
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
        assert_eq!((due[0].count, due[0].last_seen_ns), (3, 1_100));
        b.observe(&unit(1), 1_150);
        assert!(b.take_dirty_due(100).is_empty());
        // A full take (hand-over, shutdown) writes everything pending.
        let all = b.take_dirty();
        assert_eq!((all.len(), all[0].count), (1, 4));
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
    fn quantised_bounds_hold_the_exact_similarity() {
        for s in 0..500u64 {
            let (q, x) = (unit(s), unit(s + 7_000));
            // Sparse rows too, as feature-hashed behaviours are.
            let mut sparse = [0f32; DIM];
            for (i, slot) in sparse.iter_mut().enumerate().take(20) {
                *slot = x[i * 5 % DIM];
            }
            let n = sparse.iter().map(|a| a * a).sum::<f32>().sqrt();
            sparse.iter_mut().for_each(|a| *a /= n);
            for row in [x, sparse, q] {
                let query = SqQuery::new(&q);
                let mut codes = Vec::new();
                let sq = quantise(&row, &mut codes);
                let mut dot = [0u32];
                dots_u8_portable(&query.wide, &codes, DIM, &mut dot);
                let (lo, hi) = query.bounds(dot[0], &sq);
                let exact: f32 = q.iter().zip(&row).map(|(a, b)| a * b).sum();
                assert!(lo <= exact && exact <= hi, "{lo} <= {exact} <= {hi}");
                assert!(hi - lo < 0.1, "bound too loose: {}", hi - lo);
            }
        }
    }

    #[test]
    fn every_dot_kernel_the_host_runs_agrees_with_the_plain_sum() {
        let mut rng = 12345u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng as u8
        };
        let q: Vec<i16> = (0..DIM).map(|_| i16::from(next())).collect();
        let rows: Vec<u8> = (0..DIM * 37).map(|_| next()).collect();
        let want: Vec<u32> = rows
            .chunks_exact(DIM)
            .map(|r| {
                q.iter()
                    .zip(r)
                    .map(|(a, b)| *a as u32 * u32::from(*b))
                    .sum()
            })
            .collect();
        let mut ran = 0;
        for c in DOTS_U8.candidates() {
            if let Some(kernel) = c.kernel() {
                let mut out = vec![0u32; 37];
                kernel.call(&q, &rows, DIM, &mut out);
                assert_eq!(out, want, "kernel {}", c.name());
                ran += 1;
            }
        }
        assert!(ran >= 1);
        // All-255 rows: the largest sums fit.
        let mut out = [0u32];
        DOTS_U8
            .get()
            .call(&[255i16; DIM], &[255u8; DIM], DIM, &mut out);
        assert_eq!(out[0], 255 * 255 * DIM as u32);
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
            stored: true,
        };
        let b = Baseline::from_behaviours([row(2, 5, 50), row(3, 1, 40)], IndexParams::default());
        assert_eq!(b.len(), 1);
        assert_eq!(b.events(), 5);
        let e = b.get(0);
        assert_eq!((e.count, e.first_seen_ns, e.last_seen_ns), (5, 1, 50));
        assert!(!b.has_dirty());
    }
}
