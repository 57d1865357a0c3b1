//! N-gram overlap counts over token ids, in the two semantics the reference packages use:
//! sets (pltrdy `rouge`: a repeated n-gram counts once) and clipped multisets
//! (`rouge_score`: `min(count_ref, count_hyp)` per n-gram). Unigrams are counted in arrays
//! indexed by token id; bigrams are packed into `u64` keys, sorted and merged.

use std::vec::Vec;

/// Counts of one n-gram comparison: n-grams of the hypothesis, of the reference, shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Overlap {
    pub(crate) hyp: usize,
    pub(crate) reference: usize,
    pub(crate) overlap: usize,
}

/// How the two packages count n-grams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Counting {
    /// pltrdy: distinct n-grams.
    Set,
    /// rouge_score: every occurrence, overlap clipped per n-gram.
    Clipped,
}

/// Reusable buffers; the count arrays are all zero between calls.
#[derive(Default)]
pub(crate) struct NgramScratch {
    count_hyp: Vec<u32>,
    count_ref: Vec<u32>,
    a: Vec<u64>,
    b: Vec<u64>,
}

/// N-gram counts of `hyp` against `reference`, n = 1 or 2; ids are below `vocab`.
pub(crate) fn overlap(
    hyp: &[u32],
    reference: &[u32],
    n: usize,
    counting: Counting,
    vocab: usize,
    s: &mut NgramScratch,
) -> Overlap {
    debug_assert!(n == 1 || n == 2);
    if n == 1 {
        unigrams(hyp, reference, counting, vocab, s)
    } else {
        bigrams(hyp, reference, counting, s)
    }
}

fn unigrams(
    hyp: &[u32],
    reference: &[u32],
    counting: Counting,
    vocab: usize,
    s: &mut NgramScratch,
) -> Overlap {
    if s.count_ref.len() < vocab {
        s.count_ref.resize(vocab, 0);
        s.count_hyp.resize(vocab, 0);
    }
    for &t in reference {
        s.count_ref[t as usize] += 1;
    }
    for &t in hyp {
        s.count_hyp[t as usize] += 1;
    }
    let (mut distinct_ref, mut distinct_hyp, mut shared, mut clipped) = (0, 0, 0, 0);
    // Each distinct id is visited once: its count is zeroed on the first visit.
    for &t in reference {
        let cr = core::mem::take(&mut s.count_ref[t as usize]) as usize;
        if cr > 0 {
            distinct_ref += 1;
            let ch = s.count_hyp[t as usize] as usize;
            shared += (ch > 0) as usize;
            clipped += cr.min(ch);
        }
    }
    for &t in hyp {
        distinct_hyp += (core::mem::take(&mut s.count_hyp[t as usize]) > 0) as usize;
    }
    match counting {
        Counting::Set => Overlap {
            hyp: distinct_hyp,
            reference: distinct_ref,
            overlap: shared,
        },
        Counting::Clipped => Overlap {
            hyp: hyp.len(),
            reference: reference.len(),
            overlap: clipped,
        },
    }
}

/// `tokens`' bigrams packed into sorted `u64` keys.
fn packed_sorted(tokens: &[u32], out: &mut Vec<u64>) {
    out.clear();
    out.extend(
        tokens
            .windows(2)
            .map(|w| ((w[0] as u64) << 32) | w[1] as u64),
    );
    out.sort_unstable();
}

/// Length of the run of `v[i]`'s value starting at `i`.
#[inline]
fn run_len(v: &[u64], i: usize) -> usize {
    v[i..].iter().take_while(|&&x| x == v[i]).count()
}

fn bigrams(hyp: &[u32], reference: &[u32], counting: Counting, s: &mut NgramScratch) -> Overlap {
    packed_sorted(hyp, &mut s.a);
    packed_sorted(reference, &mut s.b);
    let (a, b) = (&s.a, &s.b);
    let mut o = Overlap {
        hyp: 0,
        reference: 0,
        overlap: 0,
    };
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let (ca, cb) = if j == b.len() || (i < a.len() && a[i] < b[j]) {
            (run_len(a, i), 0)
        } else if i == a.len() || b[j] < a[i] {
            (0, run_len(b, j))
        } else {
            (run_len(a, i), run_len(b, j))
        };
        i += ca;
        j += cb;
        match counting {
            Counting::Set => {
                o.hyp += (ca > 0) as usize;
                o.reference += (cb > 0) as usize;
                o.overlap += (ca > 0 && cb > 0) as usize;
            }
            Counting::Clipped => {
                o.hyp += ca;
                o.reference += cb;
                o.overlap += ca.min(cb);
            }
        }
    }
    o
}
