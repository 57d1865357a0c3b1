//! N-gram overlap counts over token ids, in the two semantics the reference packages use:
//! sets (pltrdy `rouge`: a repeated n-gram counts once) and clipped multisets
//! (`rouge_score`: `min(count_ref, count_hyp)` per n-gram).

use std::vec::Vec;

/// Counts of one n-gram comparison: n-grams of the hypothesis, of the reference, shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Overlap {
    pub(crate) hyp: usize,
    pub(crate) reference: usize,
    pub(crate) overlap: usize,
}

/// Reusable sort buffers.
#[derive(Default)]
pub(crate) struct NgramScratch {
    a: Vec<u64>,
    b: Vec<u64>,
}

/// `tokens`' n-grams (n = 1 or 2, all the competition uses) packed into sorted `u64` keys.
fn packed_sorted(tokens: &[u32], n: usize, out: &mut Vec<u64>) {
    out.clear();
    debug_assert!(n == 1 || n == 2);
    if n == 1 {
        out.extend(tokens.iter().map(|&t| t as u64));
    } else {
        out.extend(
            tokens
                .windows(2)
                .map(|w| ((w[0] as u64) << 32) | w[1] as u64),
        );
    }
    out.sort_unstable();
}

/// Walks two sorted sequences of runs of equal keys; calls `run(count_a, count_b)` for every
/// distinct key (0 where a side lacks it).
fn merge_runs<T>(
    a: &[T],
    b: &[T],
    eq: impl Fn(&T, &T) -> core::cmp::Ordering,
    mut run: impl FnMut(usize, usize),
) {
    use core::cmp::Ordering;
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let ord = if i == a.len() {
            Ordering::Greater
        } else if j == b.len() {
            Ordering::Less
        } else {
            eq(&a[i], &b[j])
        };
        let (mut ca, mut cb) = (0, 0);
        match ord {
            Ordering::Less => {
                let k = &a[i];
                while i < a.len() && eq(&a[i], k) == Ordering::Equal {
                    i += 1;
                    ca += 1;
                }
            }
            Ordering::Greater => {
                let k = &b[j];
                while j < b.len() && eq(&b[j], k) == Ordering::Equal {
                    j += 1;
                    cb += 1;
                }
            }
            Ordering::Equal => {
                let (ka, kb) = (&a[i], &b[j]);
                while i < a.len() && eq(&a[i], ka) == Ordering::Equal {
                    i += 1;
                    ca += 1;
                }
                while j < b.len() && eq(&b[j], kb) == Ordering::Equal {
                    j += 1;
                    cb += 1;
                }
            }
        }
        run(ca, cb);
    }
}

/// How the two packages count n-grams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Counting {
    /// pltrdy: distinct n-grams.
    Set,
    /// rouge_score: every occurrence, overlap clipped per n-gram.
    Clipped,
}

/// N-gram counts of `hyp` against `reference`, n = 1 or 2.
pub(crate) fn overlap(
    hyp: &[u32],
    reference: &[u32],
    n: usize,
    counting: Counting,
    s: &mut NgramScratch,
) -> Overlap {
    let mut o = Overlap {
        hyp: 0,
        reference: 0,
        overlap: 0,
    };
    let mut run = |ca: usize, cb: usize| match counting {
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
    };
    packed_sorted(hyp, n, &mut s.a);
    packed_sorted(reference, n, &mut s.b);
    merge_runs(&s.a, &s.b, |x, y| x.cmp(y), &mut run);
    o
}
