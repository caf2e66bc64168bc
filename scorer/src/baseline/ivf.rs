//! The inverted-file index of large baselines: spherical k-means with √n
//! lists, each list's rows quantised for the exact scan.

use lance_linalg::distance::Dot;
use outlier_common::featurize::DIM;

use super::quant::Cols;

#[derive(Debug)]
pub(super) struct Ivf {
    /// `nlist × DIM`, unit vectors.
    pub(super) centroids: Vec<f32>,
    pub(super) lists: Vec<Vec<u32>>,
    /// The quantised rows of each list.
    pub(super) list_cols: Vec<Cols>,
    /// Baseline size when the index was built; rebuilt at twice that.
    pub(super) built_at: usize,
}

pub(super) fn nearest_centroid(centroids: &[f32], v: &[f32]) -> usize {
    let mut sims = vec![0f32; centroids.len() / DIM];
    f32::dot_batch_into(v, centroids, DIM, &mut sims);
    sims.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

/// Spherical k-means over `n` rows with √n lists: deterministic (seeded
/// initial picks), a few iterations on a sample, then every row assigned.
pub(super) fn build_ivf(vectors: &[f32], n: usize) -> Ivf {
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
    let mut list_cols: Vec<Cols> = (0..nlist).map(|_| Cols::default()).collect();
    for i in 0..n {
        let row = &vectors[i * DIM..(i + 1) * DIM];
        let l = nearest_centroid(&centroids, row);
        lists[l].push(i as u32);
        list_cols[l].push(row);
    }
    Ivf {
        centroids,
        lists,
        list_cols,
        built_at: n,
    }
}
