//! The `k` most similar rows seen so far.

use super::Neighbour;

/// Keeps the `k` most similar candidates seen, most similar first.
pub(super) struct TopK {
    pub(super) k: usize,
    pub(super) items: Vec<(f32, usize)>,
}

impl TopK {
    pub(super) fn new(k: usize) -> Self {
        Self {
            k,
            items: Vec::with_capacity(k + 1),
        }
    }

    #[inline]
    pub(super) fn offer(&mut self, sim: f32, index: usize) {
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

    pub(super) fn into_neighbours(self) -> Vec<Neighbour> {
        self.items
            .into_iter()
            .map(|(s, index)| Neighbour {
                index,
                distance: (1.0 - s).clamp(0.0, 2.0),
            })
            .collect()
    }
}
