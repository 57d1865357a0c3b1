//! Slow, obviously-correct ports of the two Python packages, line by line over strings
//! (sets of `Vec<&str>`, full `Vec<Vec<_>>` LCS tables). The fast path in [`super::Scorer`]
//! is property-tested against these; nothing else should call them.

use std::collections::{BTreeMap, BTreeSet};
use std::string::String;
use std::vec::Vec;

use super::tokenize::py_split;
use super::{Score, Scores};

/// pltrdy: `[" ".join(_.split()) for _ in text.split(".") if len(_) > 0]`.
pub fn pltrdy_sentences(text: &str) -> Vec<String> {
    text.split('.')
        .filter(|s| !s.is_empty())
        .map(|s| py_split(s).collect::<Vec<_>>().join(" "))
        .collect()
}

/// pltrdy `_split_into_words`.
fn split_into_words(sentences: &[String]) -> Vec<&str> {
    sentences.iter().flat_map(|s| s.split(' ')).collect()
}

fn lcs_table(x: &[&str], y: &[&str]) -> Vec<Vec<usize>> {
    let mut t = vec![vec![0usize; y.len() + 1]; x.len() + 1];
    for i in 1..=x.len() {
        for j in 1..=y.len() {
            t[i][j] = if x[i - 1] == y[j - 1] {
                t[i - 1][j - 1] + 1
            } else {
                t[i - 1][j].max(t[i][j - 1])
            };
        }
    }
    t
}

/// pltrdy `_recon_lcs(x, y)` as a set of tokens.
fn recon_lcs<'a>(x: &[&'a str], y: &[&'a str]) -> BTreeSet<&'a str> {
    let t = lcs_table(x, y);
    let (mut i, mut j) = (x.len(), y.len());
    let mut out = BTreeSet::new();
    while i > 0 && j > 0 {
        if x[i - 1] == y[j - 1] {
            out.insert(x[i - 1]);
            i -= 1;
            j -= 1;
        } else if t[i - 1][j] > t[i][j - 1] {
            i -= 1;
        } else {
            j -= 1;
        }
    }
    out
}

fn pltrdy_f(p: f64, r: f64) -> Score {
    Score {
        p,
        r,
        f: 2.0 * ((p * r) / (p + r + 1e-8)),
    }
}

/// pltrdy `Rouge().get_scores(hyp, ref)[0]`; `None` where pltrdy raises (a side with no
/// sentence).
pub fn pltrdy(hyp: &str, reference: &str) -> Option<Scores> {
    let hs = pltrdy_sentences(hyp);
    let rs = pltrdy_sentences(reference);
    if hs.is_empty() || rs.is_empty() {
        return None;
    }
    let hw = split_into_words(&hs);
    let rw = split_into_words(&rs);
    let rouge_n = |n: usize| {
        let grams = |w: &[&str]| -> BTreeSet<Vec<String>> {
            if w.len() < n {
                return BTreeSet::new();
            }
            (0..=w.len() - n)
                .map(|i| w[i..i + n].iter().map(|s| s.to_string()).collect())
                .collect()
        };
        let (eg, rg) = (grams(&hw), grams(&rw));
        let overlap = eg.intersection(&rg).count();
        let p = if eg.is_empty() {
            0.0
        } else {
            overlap as f64 / eg.len() as f64
        };
        let r = if rg.is_empty() {
            0.0
        } else {
            overlap as f64 / rg.len() as f64
        };
        pltrdy_f(p, r)
    };
    let m = rw.iter().collect::<BTreeSet<_>>().len();
    let n = hw.iter().collect::<BTreeSet<_>>().len();
    let mut union = BTreeSet::new();
    for r in &rs {
        let rwords: Vec<&str> = r.split(' ').collect();
        for h in &hs {
            let hwords: Vec<&str> = h.split(' ').collect();
            union.extend(recon_lcs(&rwords, &hwords));
        }
    }
    let llcs = union.len() as f64;
    Some(Scores {
        rouge1: rouge_n(1),
        rouge2: rouge_n(2),
        rouge_l: pltrdy_f(llcs / n as f64, llcs / m as f64),
        rouge_lsum: None,
    })
}

fn counter(w: &[String], n: usize) -> BTreeMap<&[String], usize> {
    let mut c: BTreeMap<&[String], usize> = BTreeMap::new();
    if w.len() >= n {
        for i in 0..=w.len() - n {
            *c.entry(&w[i..i + n]).or_default() += 1;
        }
    }
    c
}

fn as_str(v: &[String]) -> Vec<&str> {
    v.iter().map(|s| s.as_str()).collect()
}

fn fmeasure(p: f64, r: f64) -> Score {
    Score {
        p,
        r,
        f: if p + r > 0.0 {
            2.0 * p * r / (p + r)
        } else {
            0.0
        },
    }
}

/// rouge_score `RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], tokenizer=t)
/// .score(target, prediction)` with `tokenize` as `t.tokenize`.
pub fn rouge_score(
    target: &str,
    prediction: &str,
    tokenize: &dyn Fn(&str) -> Vec<String>,
) -> Scores {
    let tt = tokenize(target);
    let pt = tokenize(prediction);
    let rouge_n = |n: usize| {
        let (tg, pg) = (counter(&tt, n), counter(&pt, n));
        let inter: usize = tg
            .iter()
            .map(|(k, &v)| v.min(pg.get(k).copied().unwrap_or(0)))
            .sum();
        let tc: usize = tg.values().sum();
        let pc: usize = pg.values().sum();
        fmeasure(
            inter as f64 / pc.max(1) as f64,
            inter as f64 / tc.max(1) as f64,
        )
    };
    let rouge_l = if tt.is_empty() || pt.is_empty() {
        Score::default()
    } else {
        let l = lcs_table(&as_str(&tt), &as_str(&pt))[tt.len()][pt.len()] as f64;
        fmeasure(l / pt.len() as f64, l / tt.len() as f64)
    };
    // rougeLsum
    let sents = |text: &str| -> Vec<Vec<String>> {
        text.split('\n')
            .filter(|s| !s.is_empty())
            .map(tokenize)
            .collect()
    };
    let (rsents, csents) = (sents(target), sents(prediction));
    let m: usize = rsents.iter().map(|s| s.len()).sum();
    let n: usize = csents.iter().map(|s| s.len()).sum();
    let rouge_lsum = if rsents.is_empty() || csents.is_empty() || m == 0 || n == 0 {
        Score::default()
    } else {
        let mut cnt_r: BTreeMap<&str, usize> = BTreeMap::new();
        let mut cnt_c: BTreeMap<&str, usize> = BTreeMap::new();
        rsents
            .iter()
            .flatten()
            .for_each(|t| *cnt_r.entry(t).or_default() += 1);
        csents
            .iter()
            .flatten()
            .for_each(|t| *cnt_c.entry(t).or_default() += 1);
        let mut hits = 0usize;
        for r in &rsents {
            let rw = as_str(r);
            let mut union = BTreeSet::new();
            for c in &csents {
                let cw = as_str(c);
                let t = lcs_table(&rw, &cw);
                let (mut i, mut j) = (rw.len(), cw.len());
                while i > 0 && j > 0 {
                    if rw[i - 1] == cw[j - 1] {
                        union.insert(i - 1);
                        i -= 1;
                        j -= 1;
                    } else if t[i][j - 1] > t[i - 1][j] {
                        j -= 1;
                    } else {
                        i -= 1;
                    }
                }
            }
            for i in union {
                let t = rw[i];
                let (cc, cr) = (
                    cnt_c.get(t).copied().unwrap_or(0),
                    cnt_r.get(t).copied().unwrap_or(0),
                );
                if cc > 0 && cr > 0 {
                    hits += 1;
                    cnt_c.insert(t, cc - 1);
                    cnt_r.insert(t, cr - 1);
                }
            }
        }
        fmeasure(hits as f64 / n as f64, hits as f64 / m as f64)
    };
    Scores {
        rouge1: rouge_n(1),
        rouge2: rouge_n(2),
        rouge_l,
        rouge_lsum: Some(rouge_lsum),
    }
}
