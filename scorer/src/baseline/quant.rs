//! The exact quantised scan: rows as 8-bit codes stored column by column
//! ([`Cols`]), the kernels that read only a query's non-zero columns, and
//! the two-pass top-k ([`Scan`]) that compares again in f32 only the rows
//! whose error bound keeps them in the running.

use lance_linalg::distance::Dot;
use outlier_common::featurize::DIM;

use super::topk::TopK;

/// Smallest capacity of a [`Cols`], in rows; capacities double from it.
pub(super) const MIN_CAP: usize = 8;

/// Rows quantised to 8 bits, symmetrically per row (`x[d] ≈ scale × code[d]`,
/// so a zero stays exactly zero), laid out column by column: a query reads
/// only the columns of its non-zero dimensions. Grows like a `Vec`; slots
/// past the last row are zero.
#[derive(Debug, Default)]
pub(super) struct Cols {
    /// `DIM × cap`: column d is `codes[d × cap ..][.. cap]`.
    pub(super) codes: Vec<i8>,
    /// Per row: the value of one code step.
    pub(super) scale: Vec<f32>,
    pub(super) cap: usize,
}

impl Cols {
    pub(super) fn len(&self) -> usize {
        self.scale.len()
    }

    /// Appends a row; only its non-zero dimensions are written.
    pub(super) fn push(&mut self, v: &[f32]) {
        let i = self.len();
        if i == self.cap {
            self.grow();
        }
        let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
        let scale = max / 127.0;
        if scale > 0.0 {
            for (d, &x) in v.iter().enumerate() {
                if x != 0.0 {
                    self.codes[d * self.cap + i] = (x / scale).round().clamp(-127.0, 127.0) as i8;
                }
            }
        }
        self.scale.push(scale);
    }

    pub(super) fn grow(&mut self) {
        let cap = (self.cap * 2).max(MIN_CAP);
        let n = self.len();
        let mut codes = vec![0i8; DIM * cap];
        for d in 0..DIM {
            codes[d * cap..d * cap + n].copy_from_slice(&self.codes[d * self.cap..][..n]);
        }
        self.codes = codes;
        self.cap = cap;
    }
}

/// `out[i] = Σ w × code[d][i]` over the query's non-zero `(d, w)`, for the
/// first `out.len()` rows (a multiple of 8, at most `cap`): 64 rows at a
/// time, their sums kept in registers while the columns stream past.
pub(super) type ColDots = unsafe fn(&[i8], &[(u32, f32)], usize, &mut [f32]);

#[inline(always)]
pub(super) fn col_block<const W: usize, const FMA: bool>(
    codes: &[i8],
    cap: usize,
    nz: &[(u32, f32)],
    base: usize,
    out: &mut [f32],
) {
    let mut acc = [0f32; W];
    for &(d, w) in nz {
        let col: &[i8; W] = codes[d as usize * cap + base..][..W]
            .try_into()
            .expect("W codes");
        for (a, &c) in acc.iter_mut().zip(col) {
            *a = if FMA {
                w.mul_add(f32::from(c), *a)
            } else {
                *a + w * f32::from(c)
            };
        }
    }
    out[base..base + W].copy_from_slice(&acc);
}

#[inline(always)]
pub(super) fn col_dots<const FMA: bool>(
    codes: &[i8],
    nz: &[(u32, f32)],
    cap: usize,
    out: &mut [f32],
) {
    let n = out.len();
    assert!(n.is_multiple_of(8) && n <= cap && codes.len() == DIM * cap);
    let mut base = 0;
    while base + 64 <= n {
        col_block::<64, FMA>(codes, cap, nz, base, out);
        base += 64;
    }
    while base < n {
        col_block::<8, FMA>(codes, cap, nz, base, out);
        base += 8;
    }
}

#[cfg(target_arch = "x86_64")]
lance_core::target_kernel! {
    #[target_features("avx2", "fma")]
    #[candidate(COL_DOTS_AVX2: ColDots)]
    /// AVX2: eight registers of eight sums; each code is sign-extended,
    /// converted and fused-multiply-added.
    pub(super) fn col_dots_avx2(codes: &[i8], nz: &[(u32, f32)], cap: usize, out: &mut [f32]) {
        col_dots::<true>(codes, nz, cap, out)
    }
}

lance_core::target_kernel! {
    #[target_features()]
    #[candidate(COL_DOTS_BASE: ColDots)]
    pub(super) fn col_dots_base(codes: &[i8], nz: &[(u32, f32)], cap: usize, out: &mut [f32]) {
        col_dots::<false>(codes, nz, cap, out)
    }
}

lance_core::dispatch! {
    static COL_DOTS: Dispatch<ColDots> = {
        #[cfg(target_arch = "x86_64")]
        {
            &[COL_DOTS_AVX2, COL_DOTS_BASE]
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            &[COL_DOTS_BASE]
        }
    };
}

/// A query prepared for the quantised scan.
pub(super) struct Query<'a> {
    pub(super) v: &'a [f32],
    /// The query's non-zero dimensions and their values.
    pub(super) nz: Vec<(u32, f32)>,
    /// The error of a row's quantised similarity per unit of its scale.
    pub(super) err_per_scale: f32,
}

impl<'a> Query<'a> {
    pub(super) fn new(v: &'a [f32]) -> Self {
        let nz: Vec<(u32, f32)> = v
            .iter()
            .enumerate()
            .filter(|(_, x)| **x != 0.0)
            .map(|(d, &x)| (d as u32, x))
            .collect();
        let l1: f32 = nz.iter().map(|(_, x)| x.abs()).sum();
        Self {
            v,
            nz,
            // Each code is off by at most half a step, so `q·x` is off by at
            // most `scale/2 × ‖q‖₁`; the f32 sum of ≤ 128 terms of at most
            // `127 × |q_d|` adds < 0.001 × ‖q‖₁ steps.
            err_per_scale: 0.502 * l1,
        }
    }

    /// Bounds on the similarity `q·x` of a quantised row: `(lower, upper)`.
    /// 1e-5 covers the f32 rounding of the exact comparison itself.
    #[inline]
    pub(super) fn bounds(&self, dot: f32, scale: f32) -> (f32, f32) {
        let approx = scale * dot;
        let err = scale * self.err_per_scale + 1e-5;
        (approx - err, approx + err)
    }
}

/// The exact top-k over quantised rows: a first pass keeps the rows whose
/// upper bound reaches the k-th best lower bound seen so far, a second
/// compares those in f32.
pub(super) struct Scan {
    pub(super) k: usize,
    /// The k best lower bounds, best first.
    pub(super) lowers: Vec<f32>,
    /// `(upper bound, row)` of the rows still in the running.
    pub(super) candidates: Vec<(f32, usize)>,
    /// Scratch: the code dot products of one list, and their bounds.
    pub(super) dots: Vec<f32>,
    pub(super) bounds: Vec<(f32, f32)>,
}

impl Scan {
    pub(super) fn new(k: usize) -> Self {
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
    pub(super) fn threshold(&self) -> f32 {
        if self.lowers.len() < self.k {
            f32::NEG_INFINITY
        } else {
            self.lowers[self.k - 1]
        }
    }

    #[inline]
    pub(super) fn offer(&mut self, lower: f32, upper: f32, row: usize) {
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

    pub(super) fn scan(&mut self, q: &Query<'_>, cols: &Cols, row: impl Fn(usize) -> usize) {
        let n = cols.len();
        if n == 0 {
            return;
        }
        let mut dots = std::mem::take(&mut self.dots);
        dots.clear();
        dots.resize(n.next_multiple_of(8), 0.0);
        COL_DOTS.get().call(&cols.codes, &q.nz, cols.cap, &mut dots);
        // Bounds in one branch-free (vectorisable) pass, then the few rows
        // that can still matter are picked out.
        let mut bounds = std::mem::take(&mut self.bounds);
        bounds.clear();
        bounds.extend(
            dots[..n]
                .iter()
                .zip(&cols.scale)
                .map(|(&dot, &scale)| q.bounds(dot, scale)),
        );
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
    pub(super) fn finish(self, q: &Query<'_>, vectors: &[f32], top: &mut TopK) {
        let t = self.threshold();
        for (upper, i) in self.candidates {
            if upper >= t {
                top.offer(f32::dot(q.v, &vectors[i * DIM..(i + 1) * DIM]), i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::tests::{sparse, unit};

    #[test]
    fn quantised_bounds_hold_the_exact_similarity() {
        for s in 0..500u64 {
            let q = if s % 2 == 0 { unit(s) } else { sparse(s, 18) };
            let rows = [unit(s + 7_000), sparse(s + 7_000, 20), sparse(s, 3), q];
            let mut cols = Cols::default();
            for r in &rows {
                cols.push(r);
            }
            let query = Query::new(&q);
            let mut dots = vec![0f32; cols.len().next_multiple_of(8)];
            COL_DOTS
                .get()
                .call(&cols.codes, &query.nz, cols.cap, &mut dots);
            for (i, row) in rows.iter().enumerate() {
                let (lo, hi) = query.bounds(dots[i], cols.scale[i]);
                let exact = f32::dot(&q, row);
                assert!(lo <= exact && exact <= hi, "{lo} <= {exact} <= {hi}");
                assert!(hi - lo < 0.1, "bound too loose: {}", hi - lo);
            }
        }
    }

    #[test]
    fn every_column_kernel_the_host_runs_agrees_with_the_plain_sum() {
        let mut cols = Cols::default();
        for s in 0..203 {
            cols.push(&sparse(s, 1 + s as usize % 40));
        }
        assert_eq!((cols.len(), cols.cap), (203, 256));
        let q = sparse(9_999, 25);
        let nz = Query::new(&q).nz;
        assert_eq!(nz.len(), 25);
        let want: Vec<f64> = (0..208)
            .map(|i| {
                nz.iter()
                    .map(|&(d, w)| f64::from(w) * f64::from(cols.codes[d as usize * cols.cap + i]))
                    .sum()
            })
            .collect();
        let mut ran = 0;
        for c in COL_DOTS.candidates() {
            if let Some(kernel) = c.kernel() {
                let mut out = vec![f32::NAN; 208];
                kernel.call(&cols.codes, &nz, cols.cap, &mut out);
                for (i, (o, w)) in out.iter().zip(&want).enumerate() {
                    assert!(
                        (f64::from(*o) - w).abs() < 1e-3,
                        "{} row {i}: {o} vs {w}",
                        c.name()
                    );
                }
                ran += 1;
            }
        }
        assert!(ran >= 1);
        // Rows past the last are zero, and growing keeps every code.
        assert!(want[203..].iter().all(|w| *w == 0.0));
        let before: Vec<i8> = (0..DIM).map(|d| cols.codes[d * cols.cap + 100]).collect();
        for s in 0..60 {
            cols.push(&sparse(500 + s, 10));
        }
        assert_eq!(cols.cap, 512);
        let after: Vec<i8> = (0..DIM).map(|d| cols.codes[d * cols.cap + 100]).collect();
        assert_eq!(before, after);
    }
}
