//! pltrdy `rouge` 1.0.1 (`rouge/rouge.py`, `rouge/rouge_score.py`), the package the
//! competition's seed code scores with. Reproduced exactly:
//! - sentences: `text.split(".")`, pieces of length 0 dropped, then each piece's
//!   whitespace collapsed (`" ".join(piece.split())`), so a whitespace-only piece becomes
//!   one empty token `""`;
//! - ROUGE-N over the concatenated words, n-grams as *sets* (crossing sentence ends);
//! - ROUGE-L summary level: the union, over reference sentence x hypothesis sentence, of
//!   the token *sets* of each reconstructed LCS (`_recon_lcs`, its tie-breaking), divided
//!   by the numbers of distinct tokens;
//! - `F = 2 * (p * r / (p + r + 1e-8))`.
//!
//! pltrdy's `_recon_lcs` recurses once per step and overflows Python's stack near 500
//! tokens; the loop here gives the value pltrdy gives with the recursion limit raised.

use super::intern::Interner;
use super::lcs::LcsTable;
use super::marks::Marks;
use super::ngram::{overlap, Counting, NgramScratch};
use super::text::Sentences;
use super::tokenize::{token_end, whitespace_len, CLASS, DOT};
use super::Score;

/// Cuts `text` into pltrdy sentences of token ids. No sentence at all means pltrdy would
/// raise "Hypothesis is empty." / "Reference is empty.".
pub(crate) fn sentences(text: &str, interner: &mut Interner, out: &mut Sentences) {
    out.clear();
    let b = text.as_bytes();
    // One pass for `split(".")`, the length-0 filter and `split()`: `piece` says whether
    // the current `.`-piece has any character, `start` where its tokens begin.
    let (mut i, mut piece, mut start) = (0, false, 0);
    let close = |out: &mut Sentences, interner: &mut Interner, start: &mut usize| {
        if out.ids.len() == *start {
            // a whitespace-only piece: `" ".join([]).split(" ") == [""]`
            out.ids.push(interner.id(""));
        }
        out.end_sentence();
        *start = out.ids.len();
    };
    while i < b.len() {
        if CLASS[b[i] as usize] == DOT {
            if piece {
                close(out, interner, &mut start);
            }
            piece = false;
            i += 1;
            continue;
        }
        piece = true;
        let w = whitespace_len(b, i);
        if w > 0 {
            i += w;
            continue;
        }
        let end = token_end(b, i, true);
        out.ids.push(interner.id(text.get(i..end).unwrap_or("")));
        i = end;
    }
    if piece {
        close(out, interner, &mut start);
    }
}

/// `f_r_p_rouge_n` and the end of `rouge_l_summary_level`.
#[inline]
pub(crate) fn f_score(p: f64, r: f64) -> Score {
    Score {
        p,
        r,
        f: 2.0 * ((p * r) / (p + r + 1e-8)),
    }
}

/// `rouge_n(hyp, ref, n)` on non-empty sentence lists; `vocab` bounds the ids.
pub(crate) fn rouge_n(
    hyp: &Sentences,
    reference: &Sentences,
    n: usize,
    vocab: usize,
    s: &mut NgramScratch,
) -> Score {
    let o = overlap(&hyp.ids, &reference.ids, n, Counting::Set, vocab, s);
    let p = if o.hyp == 0 {
        0.0
    } else {
        o.overlap as f64 / o.hyp as f64
    };
    let r = if o.reference == 0 {
        0.0
    } else {
        o.overlap as f64 / o.reference as f64
    };
    f_score(p, r)
}

/// Scratch space of `rouge_l`.
#[derive(Default)]
pub(crate) struct LScratch {
    pub(crate) table: LcsTable,
    pub(crate) union: Marks,
    pub(crate) distinct: Marks,
}

/// `rouge_l_summary_level(hyp, ref)` on non-empty sentence lists; `vocab` bounds the ids.
pub(crate) fn rouge_l(
    hyp: &Sentences,
    reference: &Sentences,
    vocab: usize,
    s: &mut LScratch,
) -> Score {
    let m = s.distinct.count_distinct(&reference.ids, vocab);
    let n = s.distinct.count_distinct(&hyp.ids, vocab);
    s.union.reset(vocab);
    let mut llcs = 0usize;
    // The union is a set, so the loops may run hypothesis-major: each hypothesis
    // sentence's match masks are then built once.
    for h in hyp.sentences() {
        s.table.set_columns(h, vocab);
        for r in reference.sentences() {
            s.table.fill_rows(r, h.len());
            let union = &mut s.union;
            s.table
                .recon_pltrdy(r, h, |i| llcs += union.insert(r[i]) as usize);
        }
        s.table.clear_columns(h);
    }
    f_score(llcs as f64 / n as f64, llcs as f64 / m as f64)
}
