//! Longest common subsequence over token ids: the DP table and the two ways the reference
//! packages read one LCS back out of it. Their tie-breaking differs and decides which
//! tokens are counted, so each is kept exactly:
//! - pltrdy `_recon_lcs`: on a mismatch go up (`i-1`) only if `T[i-1][j] > T[i][j-1]`;
//! - rouge_score `_backtrack_norec`: go left (`j-1`) only if `T[i][j-1] > T[i-1][j]`.

use std::vec::Vec;

/// A reusable `(n+1) x (m+1)` LCS length table, row-major.
#[derive(Default)]
pub(crate) struct LcsTable {
    t: Vec<u32>,
    cols: usize,
}

impl LcsTable {
    /// Fills the table for rows `x` and columns `y`; returns the LCS length.
    pub(crate) fn fill(&mut self, x: &[u32], y: &[u32]) -> u32 {
        let cols = y.len() + 1;
        self.cols = cols;
        let len = (x.len() + 1) * cols;
        if self.t.len() < len {
            self.t.resize(len, 0);
        }
        // Only row 0 and column 0 need zeros; every other cell is written before it is read.
        self.t[..cols].iter_mut().for_each(|c| *c = 0);
        for (i, &xi) in x.iter().enumerate() {
            // rows i (prev) and i+1 (cur) of the table
            let (prev, cur) = self.t[i * cols..(i + 2) * cols].split_at_mut(cols);
            cur[0] = 0;
            for (j, &yj) in y.iter().enumerate() {
                cur[j + 1] = if xi == yj {
                    prev[j] + 1
                } else {
                    prev[j + 1].max(cur[j])
                };
            }
        }
        self.t[x.len() * cols + y.len()]
    }

    #[inline]
    fn at(&self, i: usize, j: usize) -> u32 {
        self.t[i * self.cols + j]
    }

    /// pltrdy's `_recon_lcs(x, y)` after `fill(x, y)`: calls `take(i)` for each row index
    /// `i` (into `x`) of the reconstructed LCS, last first.
    pub(crate) fn recon_pltrdy(&self, x: &[u32], y: &[u32], mut take: impl FnMut(usize)) {
        let (mut i, mut j) = (x.len(), y.len());
        while i > 0 && j > 0 {
            if x[i - 1] == y[j - 1] {
                take(i - 1);
                i -= 1;
                j -= 1;
            } else if self.at(i - 1, j) > self.at(i, j - 1) {
                i -= 1;
            } else {
                j -= 1;
            }
        }
    }

    /// rouge_score's `_backtrack_norec(t, ref, can)` after `fill(ref, can)`: calls
    /// `take(i)` for each row index of the LCS, last first.
    pub(crate) fn backtrack_rouge_score(&self, x: &[u32], y: &[u32], mut take: impl FnMut(usize)) {
        let (mut i, mut j) = (x.len(), y.len());
        while i > 0 && j > 0 {
            if x[i - 1] == y[j - 1] {
                take(i - 1);
                i -= 1;
                j -= 1;
            } else if self.at(i, j - 1) > self.at(i - 1, j) {
                j -= 1;
            } else {
                i -= 1;
            }
        }
    }
}

/// LCS length only, in O(min) memory (rouge_score's plain `rougeL`).
pub(crate) fn lcs_len(x: &[u32], y: &[u32], row: &mut Vec<u32>) -> u32 {
    let (x, y) = if y.len() > x.len() { (y, x) } else { (x, y) };
    row.clear();
    row.resize(y.len() + 1, 0);
    for &xi in x {
        let mut diag = 0; // T[i-1][j-1]
        for (j, &yj) in y.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = if xi == yj { diag + 1 } else { up.max(row[j]) };
            diag = up;
        }
    }
    row[y.len()]
}
