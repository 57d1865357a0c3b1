//! A set of token ids that empties in O(1): each slot holds the generation that last put
//! the id in, so starting a new set is bumping the generation.

use std::vec::Vec;

#[derive(Default)]
pub(crate) struct Marks {
    stamp: Vec<u32>,
    generation: u32,
}

impl Marks {
    /// Starts an empty set able to hold ids below `len`.
    pub(crate) fn reset(&mut self, len: usize) {
        if self.stamp.len() < len {
            self.stamp.resize(len, 0);
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            // wrapped: old stamps could alias the new generation
            self.stamp.iter_mut().for_each(|s| *s = 0);
            self.generation = 1;
        }
    }

    /// Inserts `id`; true if it was not in the set.
    #[inline]
    pub(crate) fn insert(&mut self, id: u32) -> bool {
        let s = &mut self.stamp[id as usize];
        let new = *s != self.generation;
        *s = self.generation;
        new
    }

    /// Number of distinct ids in `ids` (resets the set).
    pub(crate) fn count_distinct(&mut self, ids: &[u32], len: usize) -> usize {
        self.reset(len);
        ids.iter().filter(|&&id| self.insert(id)).count()
    }
}
