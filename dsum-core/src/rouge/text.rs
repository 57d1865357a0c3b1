//! A scored text: token ids in order, cut into sentences (pltrdy's `.`-pieces or
//! `rouge_score`'s lines). Buffers are reused from pair to pair.

use std::vec::Vec;

#[derive(Default, Debug, Clone)]
pub(crate) struct Sentences {
    /// All token ids, sentence after sentence.
    pub(crate) ids: Vec<u32>,
    /// `ends[k]` is one past the last id of sentence k in `ids`.
    pub(crate) ends: Vec<usize>,
}

impl Sentences {
    pub(crate) fn clear(&mut self) {
        self.ids.clear();
        self.ends.clear();
    }

    /// Closes the sentence started after the previous `end_sentence`.
    pub(crate) fn end_sentence(&mut self) {
        self.ends.push(self.ids.len());
    }

    pub(crate) fn num_sentences(&self) -> usize {
        self.ends.len()
    }

    /// Sentence `k` as token ids.
    pub(crate) fn sentence(&self, k: usize) -> &[u32] {
        let start = if k == 0 { 0 } else { self.ends[k - 1] };
        &self.ids[start..self.ends[k]]
    }

    pub(crate) fn sentences(&self) -> impl Iterator<Item = &[u32]> {
        (0..self.ends.len()).map(move |k| self.sentence(k))
    }
}
