//! Google's `rouge_score` 0.1.2 (`rouge_scorer.py`, `scoring.py`) as the second flavor:
//! clipped n-gram counts, `rougeL` as the plain LCS of the whole token lists, `rougeLsum`
//! as its summary-level LCS over lines (`text.split("\n")`, empty lines dropped) with its
//! `_backtrack_norec` tie-breaking and per-token hit budget, and
//! `F = 2 * p * r / (p + r)` (0 when `p + r == 0`).

use std::vec::Vec;

use super::lcs::LcsTable;
use super::ngram::{overlap, Counting, NgramScratch};
use super::text::Sentences;
use super::Score;

/// `scoring.fmeasure`.
#[inline]
pub(crate) fn fmeasure(p: f64, r: f64) -> Score {
    let f = if p + r > 0.0 {
        2.0 * p * r / (p + r)
    } else {
        0.0
    };
    Score { p, r, f }
}

/// `_score_ngrams(_create_ngrams(target, n), _create_ngrams(prediction, n))`.
pub(crate) fn rouge_n(
    hyp: &[u32],
    target: &[u32],
    n: usize,
    vocab: usize,
    s: &mut NgramScratch,
) -> Score {
    let o = overlap(hyp, target, n, Counting::Clipped, vocab, s);
    let p = o.overlap as f64 / o.hyp.max(1) as f64;
    let r = o.overlap as f64 / o.reference.max(1) as f64;
    fmeasure(p, r)
}

/// `_score_lcs(target, prediction)`.
pub(crate) fn rouge_l(hyp: &[u32], target: &[u32], vocab: usize, table: &mut LcsTable) -> Score {
    if hyp.is_empty() || target.is_empty() {
        return Score::default();
    }
    let lcs = table.fill(target, hyp, vocab) as f64;
    fmeasure(lcs / hyp.len() as f64, lcs / target.len() as f64)
}

/// Scratch space of `rouge_lsum`.
#[derive(Default)]
pub(crate) struct LsumScratch {
    table: LcsTable,
    count_ref: Vec<u32>,
    count_hyp: Vec<u32>,
    selected: Vec<bool>,
}

/// `_summary_level_lcs(ref_sents, can_sents)`; `vocab` bounds the ids.
pub(crate) fn rouge_lsum(
    hyp: &Sentences,
    target: &Sentences,
    vocab: usize,
    s: &mut LsumScratch,
) -> Score {
    if hyp.num_sentences() == 0 || target.num_sentences() == 0 {
        return Score::default();
    }
    let (m, n) = (target.ids.len(), hyp.ids.len());
    if m == 0 || n == 0 {
        return Score::default();
    }
    if s.count_ref.len() < vocab {
        s.count_ref.resize(vocab, 0);
        s.count_hyp.resize(vocab, 0);
    }
    for &t in &target.ids {
        s.count_ref[t as usize] += 1;
    }
    for &t in &hyp.ids {
        s.count_hyp[t as usize] += 1;
    }
    let mut hits = 0usize;
    for r in target.sentences() {
        s.selected.clear();
        s.selected.resize(r.len(), false);
        for c in hyp.sentences() {
            s.table.fill(r, c, vocab);
            let selected = &mut s.selected;
            s.table.backtrack_rouge_score(r, c, |i| selected[i] = true);
        }
        for (i, _) in s.selected.iter().enumerate().filter(|(_, &sel)| sel) {
            let t = r[i] as usize;
            if s.count_hyp[t] > 0 && s.count_ref[t] > 0 {
                hits += 1;
                s.count_hyp[t] -= 1;
                s.count_ref[t] -= 1;
            }
        }
    }
    // leave the counters zeroed for the next pair
    for &t in target.ids.iter().chain(&hyp.ids) {
        s.count_ref[t as usize] = 0;
        s.count_hyp[t as usize] = 0;
    }
    fmeasure(hits as f64 / n as f64, hits as f64 / m as f64)
}
