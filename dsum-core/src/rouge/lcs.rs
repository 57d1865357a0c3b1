//! Longest common subsequence over token ids: the DP table and the two ways the reference
//! packages read one LCS back out of it. Their tie-breaking differs and decides which
//! tokens are counted, so each is kept exactly:
//! - pltrdy `_recon_lcs`: on a mismatch go up (`i-1`) only if `T[i-1][j] > T[i][j-1]`;
//! - rouge_score `_backtrack_norec`: go left (`j-1`) only if `T[i][j-1] > T[i-1][j]`.
//!
//! [`LcsTable`] stores the table bit-parallel (Hyyrö 2004, "Bit-parallel LCS-length
//! computation revisited"): row i is a bit vector `V_i` over the columns whose zero bits
//! mark where `T[i][.]` steps up, so `T[i][j] = zeros of V_i below bit j`, one word per 64
//! columns. [`LcsTableRef`] is the plain `(n+1) x (m+1)` table it is tested against.

use std::vec::Vec;

/// Bit-parallel LCS table for rows `x` and columns `y`.
#[derive(Default)]
pub(crate) struct LcsTable {
    /// Words per row: `ceil(|y| / 64)`.
    words: usize,
    /// Rows `V_0..=V_|x|`, `words` each; `V_0` is all ones.
    rows: Vec<u64>,
    /// Match masks, `words` per distinct token of `y`.
    masks: Vec<u64>,
    /// Token id -> 1 + its mask slot (0: not in `y`); zero again after each `fill`.
    slot: Vec<u32>,
}

impl LcsTable {
    /// Fills the table for rows `x` and columns `y` (ids below `vocab`); returns the LCS
    /// length.
    pub(crate) fn fill(&mut self, x: &[u32], y: &[u32], vocab: usize) -> u32 {
        self.set_columns(y, vocab);
        let n = self.fill_rows(x, y.len());
        self.clear_columns(y);
        n
    }

    /// Builds the match masks of columns `y`; several `fill_rows` may follow (pltrdy
    /// compares every reference sentence with the same hypothesis sentence), then
    /// `clear_columns(y)`.
    pub(crate) fn set_columns(&mut self, y: &[u32], vocab: usize) {
        let w = y.len().div_ceil(64);
        self.words = w;
        if self.slot.len() < vocab {
            self.slot.resize(vocab, 0);
        }
        self.masks.clear();
        let mut slots = 0u32;
        for (j, &t) in y.iter().enumerate() {
            let s = &mut self.slot[t as usize];
            if *s == 0 {
                slots += 1;
                *s = slots;
                self.masks.extend(core::iter::repeat_n(0, w));
            }
            self.masks[(*s as usize - 1) * w + j / 64] |= 1 << (j % 64);
        }
    }

    /// Undoes `set_columns(y)`.
    pub(crate) fn clear_columns(&mut self, y: &[u32]) {
        for &t in y {
            self.slot[t as usize] = 0;
        }
    }

    /// Fills rows `x` against the columns set by `set_columns` (of length `cols`); returns
    /// the LCS length.
    pub(crate) fn fill_rows(&mut self, x: &[u32], cols: usize) -> u32 {
        let w = self.words;
        self.rows.clear();
        self.rows.resize(w, !0);
        if w == 1 {
            // one word per row: no carries between words
            let mut v = !0u64;
            for &t in x {
                let s = self.slot[t as usize] as usize;
                let m = if s == 0 { 0 } else { self.masks[s - 1] };
                v = v.wrapping_add(v & m) | (v & !m);
                self.rows.push(v);
            }
        } else {
            for (i, &t) in x.iter().enumerate() {
                let s = self.slot[t as usize] as usize;
                let mut carry = 0u64;
                for k in 0..w {
                    let v = self.rows[i * w + k];
                    let m = if s == 0 {
                        0
                    } else {
                        self.masks[(s - 1) * w + k]
                    };
                    let u = v & m;
                    // V' = (V + U) | (V & !M), the addition carried across words
                    let (sum, c1) = v.overflowing_add(u);
                    let (sum, c2) = sum.overflowing_add(carry);
                    carry = (c1 | c2) as u64;
                    self.rows.push(sum | (v & !m));
                }
            }
        }
        self.at(x.len(), cols)
    }

    /// `T[i][j]`: the LCS length of `x[..i]` and `y[..j]`.
    #[inline]
    pub(crate) fn at(&self, i: usize, j: usize) -> u32 {
        if self.words == 1 {
            // the common case, a sentence of at most 64 tokens
            let below_j = if j >= 64 { !0 } else { (1u64 << j) - 1 };
            return (!self.rows[i] & below_j).count_ones();
        }
        let row = &self.rows[i * self.words..(i + 1) * self.words];
        let (full, rest) = (j / 64, j % 64);
        let mut n: u32 = row[..full].iter().map(|v| (!v).count_ones()).sum();
        if rest > 0 {
            n += (!row[full] & ((1u64 << rest) - 1)).count_ones();
        }
        n
    }

    /// pltrdy's `_recon_lcs(x, y)` after `fill(x, y)`: calls `take(i)` for each row index
    /// `i` (into `x`) of the reconstructed LCS, last first.
    pub(crate) fn recon_pltrdy(&self, x: &[u32], y: &[u32], take: impl FnMut(usize)) {
        recon_pltrdy(|i, j| self.at(i, j), x, y, take)
    }

    /// rouge_score's `_backtrack_norec(t, ref, can)` after `fill(ref, can)`: calls
    /// `take(i)` for each row index of the LCS, last first.
    pub(crate) fn backtrack_rouge_score(&self, x: &[u32], y: &[u32], take: impl FnMut(usize)) {
        backtrack_rouge_score(|i, j| self.at(i, j), x, y, take)
    }
}

fn recon_pltrdy(
    t: impl Fn(usize, usize) -> u32,
    x: &[u32],
    y: &[u32],
    mut take: impl FnMut(usize),
) {
    let (mut i, mut j) = (x.len(), y.len());
    while i > 0 && j > 0 {
        if x[i - 1] == y[j - 1] {
            take(i - 1);
            i -= 1;
            j -= 1;
        } else if t(i - 1, j) > t(i, j - 1) {
            i -= 1;
        } else {
            j -= 1;
        }
    }
}

fn backtrack_rouge_score(
    t: impl Fn(usize, usize) -> u32,
    x: &[u32],
    y: &[u32],
    mut take: impl FnMut(usize),
) {
    let (mut i, mut j) = (x.len(), y.len());
    while i > 0 && j > 0 {
        if x[i - 1] == y[j - 1] {
            take(i - 1);
            i -= 1;
            j -= 1;
        } else if t(i, j - 1) > t(i - 1, j) {
            j -= 1;
        } else {
            i -= 1;
        }
    }
}

/// The plain DP table, as both packages build it (`_lcs` / `_lcs_table`); the reference
/// for [`LcsTable`].
#[cfg(test)]
#[derive(Default)]
pub(crate) struct LcsTableRef {
    t: Vec<u32>,
    cols: usize,
}

#[cfg(test)]
impl LcsTableRef {
    pub(crate) fn fill(&mut self, x: &[u32], y: &[u32]) -> u32 {
        self.cols = y.len() + 1;
        self.t = vec![0; (x.len() + 1) * self.cols];
        for i in 1..=x.len() {
            for j in 1..=y.len() {
                self.t[i * self.cols + j] = if x[i - 1] == y[j - 1] {
                    self.at(i - 1, j - 1) + 1
                } else {
                    self.at(i - 1, j).max(self.at(i, j - 1))
                };
            }
        }
        self.at(x.len(), y.len())
    }

    pub(crate) fn at(&self, i: usize, j: usize) -> u32 {
        self.t[i * self.cols + j]
    }

    pub(crate) fn recon_pltrdy(&self, x: &[u32], y: &[u32], take: impl FnMut(usize)) {
        recon_pltrdy(|i, j| self.at(i, j), x, y, take)
    }

    pub(crate) fn backtrack_rouge_score(&self, x: &[u32], y: &[u32], take: impl FnMut(usize)) {
        backtrack_rouge_score(|i, j| self.at(i, j), x, y, take)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// Every cell and both read-outs agree with the plain table, across word
        /// boundaries (up to 200 columns) and with tiny vocabularies (many ties).
        #[test]
        fn bit_parallel_equals_plain_table(
            vocab in 1u32..6,
            x in prop::collection::vec(0u32..6, 0..150),
            y in prop::collection::vec(0u32..6, 0..200),
        ) {
            let x: Vec<u32> = x.into_iter().map(|t| t % vocab).collect();
            let y: Vec<u32> = y.into_iter().map(|t| t % vocab).collect();
            let (mut fast, mut slow) = (LcsTable::default(), LcsTableRef::default());
            prop_assert_eq!(fast.fill(&x, &y, 6), slow.fill(&x, &y));
            for i in 0..=x.len() {
                for j in 0..=y.len() {
                    prop_assert_eq!(fast.at(i, j), slow.at(i, j), "T[{}][{}]", i, j);
                }
            }
            let (mut a, mut b) = (Vec::new(), Vec::new());
            fast.recon_pltrdy(&x, &y, |i| a.push(i));
            slow.recon_pltrdy(&x, &y, |i| b.push(i));
            prop_assert_eq!(&a, &b);
            a.clear();
            b.clear();
            fast.backtrack_rouge_score(&x, &y, |i| a.push(i));
            slow.backtrack_rouge_score(&x, &y, |i| b.push(i));
            prop_assert_eq!(a, b);
        }
    }
}
