//! The scorer: turns texts into token ids with the chosen tokenizer, then runs the chosen
//! flavor. Keeps its interner and scratch buffers from pair to pair, so scoring a corpus
//! allocates almost nothing per pair.

use std::string::String;
use std::vec::Vec;

use super::intern::Interner;
use super::lcs::LcsTable;
use super::multi_ref::{combine, MultiRef};
use super::ngram::NgramScratch;
use super::text::Sentences;
use super::tokenize::Tokenize;
use super::{pltrdy, rouge_score, Flavor, Scores};

/// Why a pair has no score: its hypothesis (or every reference) has no tokens after the
/// flavor's own splitting. pltrdy raises on these ("Hypothesis is empty."); dsum lets the
/// caller decide per row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Empty {
    Hypothesis,
    Reference,
}

impl core::fmt::Display for Empty {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Empty::Hypothesis => "empty hypothesis",
            Empty::Reference => "empty reference",
        })
    }
}

/// One side of a pair, prepared for scoring.
#[derive(Default)]
struct Prepared {
    /// pltrdy sentences, or rouge_score lines (for `rougeLsum`).
    sentences: Sentences,
    /// rouge_score: the whole text's tokens.
    tokens: Vec<u32>,
}

/// Scores hypotheses against references with one flavor and one tokenizer.
pub struct Scorer {
    flavor: Flavor,
    tokenize: Tokenize,
    interner: Interner,
    hyp: Prepared,
    reference: Prepared,
    joined: String,
    ngram: NgramScratch,
    l: pltrdy::LScratch,
    lsum: rouge_score::LsumScratch,
    table: LcsTable,
    per_ref: Vec<Scores>,
}

impl Scorer {
    pub fn new(flavor: Flavor, tokenize: Tokenize) -> Self {
        Scorer {
            flavor,
            tokenize,
            interner: Interner::default(),
            hyp: Prepared::default(),
            reference: Prepared::default(),
            joined: String::new(),
            ngram: NgramScratch::default(),
            l: pltrdy::LScratch::default(),
            lsum: rouge_score::LsumScratch::default(),
            table: LcsTable::default(),
            per_ref: Vec::new(),
        }
    }

    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    pub fn tokenize(&self) -> &Tokenize {
        &self.tokenize
    }

    /// Whether `text` has no tokens after this flavor's own splitting: for pltrdy no
    /// `.`-sentence (`""`, `"..."`; a whitespace-only text is one empty token, not empty),
    /// for rouge_score no token.
    pub fn is_empty(&mut self, text: &str) -> bool {
        let mut p = core::mem::take(&mut self.hyp);
        self.prepare(text, &mut p);
        let empty = self.prepared_is_empty(&p);
        self.hyp = p;
        empty
    }

    /// Scores `hyp` against one reference.
    pub fn score(&mut self, hyp: &str, reference: &str) -> Result<Scores, Empty> {
        let mut h = core::mem::take(&mut self.hyp);
        let mut r = core::mem::take(&mut self.reference);
        self.prepare(hyp, &mut h);
        let result = if self.prepared_is_empty(&h) {
            Err(Empty::Hypothesis)
        } else {
            self.prepare(reference, &mut r);
            if self.prepared_is_empty(&r) {
                Err(Empty::Reference)
            } else {
                Ok(self.score_prepared(&h, &r))
            }
        };
        self.hyp = h;
        self.reference = r;
        result
    }

    /// Scores `hyp` against each reference and combines per metric. Empty references are
    /// left out; if all are, the pair is [`Empty::Reference`].
    pub fn score_multi(
        &mut self,
        hyp: &str,
        refs: &[&str],
        how: MultiRef,
    ) -> Result<Scores, Empty> {
        let mut h = core::mem::take(&mut self.hyp);
        let mut r = core::mem::take(&mut self.reference);
        let mut per_ref = core::mem::take(&mut self.per_ref);
        per_ref.clear();
        self.prepare(hyp, &mut h);
        let hyp_empty = self.prepared_is_empty(&h);
        if !hyp_empty {
            for reference in refs {
                self.prepare(reference, &mut r);
                if !self.prepared_is_empty(&r) {
                    per_ref.push(self.score_prepared(&h, &r));
                }
            }
        }
        let result = if hyp_empty {
            Err(Empty::Hypothesis)
        } else {
            combine(&per_ref, how).ok_or(Empty::Reference)
        };
        self.hyp = h;
        self.reference = r;
        self.per_ref = per_ref;
        result
    }

    fn prepared_is_empty(&self, p: &Prepared) -> bool {
        match self.flavor {
            Flavor::Rouge => p.sentences.num_sentences() == 0,
            Flavor::RougeScore => p.tokens.is_empty(),
        }
    }

    fn prepare(&mut self, text: &str, out: &mut Prepared) {
        let interner = &mut self.interner;
        match self.flavor {
            Flavor::Rouge => match &self.tokenize {
                Tokenize::Whitespace => pltrdy::sentences(text, interner, &mut out.sentences),
                // The competition joins its tokens with spaces and hands the string to pltrdy.
                tokenize => {
                    let joined = &mut self.joined;
                    joined.clear();
                    tokenize.for_each_token(text, |t| {
                        if !joined.is_empty() {
                            joined.push(' ');
                        }
                        joined.push_str(t);
                    });
                    pltrdy::sentences(joined, interner, &mut out.sentences);
                }
            },
            Flavor::RougeScore => {
                out.tokens.clear();
                self.tokenize
                    .for_each_token(text, |t| out.tokens.push(interner.id(t)));
                let s = &mut out.sentences;
                s.clear();
                if !text.contains('\n') {
                    // one line: its tokens are the whole text's
                    if !text.is_empty() {
                        s.ids.extend_from_slice(&out.tokens);
                        s.end_sentence();
                    }
                    return;
                }
                for line in text.split('\n').filter(|l| !l.is_empty()) {
                    self.tokenize
                        .for_each_token(line, |t| s.ids.push(interner.id(t)));
                    s.end_sentence();
                }
            }
        }
    }

    fn score_prepared(&mut self, h: &Prepared, r: &Prepared) -> Scores {
        let vocab = self.interner.len();
        match self.flavor {
            Flavor::Rouge => Scores {
                rouge1: pltrdy::rouge_n(&h.sentences, &r.sentences, 1, vocab, &mut self.ngram),
                rouge2: pltrdy::rouge_n(&h.sentences, &r.sentences, 2, vocab, &mut self.ngram),
                rouge_l: pltrdy::rouge_l(&h.sentences, &r.sentences, vocab, &mut self.l),
                rouge_lsum: None,
            },
            Flavor::RougeScore => Scores {
                rouge1: rouge_score::rouge_n(&h.tokens, &r.tokens, 1, vocab, &mut self.ngram),
                rouge2: rouge_score::rouge_n(&h.tokens, &r.tokens, 2, vocab, &mut self.ngram),
                rouge_l: rouge_score::rouge_l(&h.tokens, &r.tokens, vocab, &mut self.table),
                rouge_lsum: Some(rouge_score::rouge_lsum(
                    &h.sentences,
                    &r.sentences,
                    vocab,
                    &mut self.lsum,
                )),
            },
        }
    }
}

/// Scores every `(hypothesis, references)` pair, in order; in parallel with the `rayon`
/// feature (one [`Scorer`] per worker).
pub fn score_all(
    flavor: Flavor,
    tokenize: &Tokenize,
    how: MultiRef,
    pairs: &[(&str, &[&str])],
) -> Vec<Result<Scores, Empty>> {
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        pairs
            .par_chunks(512)
            .map_init(
                || Scorer::new(flavor, tokenize.clone()),
                |s, chunk| {
                    chunk
                        .iter()
                        .map(|(h, r)| s.score_multi(h, r, how))
                        .collect::<Vec<_>>()
                },
            )
            .flatten_iter()
            .collect()
    }
    #[cfg(not(feature = "rayon"))]
    {
        let mut s = Scorer::new(flavor, tokenize.clone());
        pairs
            .iter()
            .map(|(h, r)| s.score_multi(h, r, how))
            .collect()
    }
}
