//! Aggregation: several references for one hypothesis (best-F per metric, as rouge_score's
//! `score_multi`, or the mean), the mean over a corpus (as pltrdy's `avg=True`: a running
//! sum in order, divided by the count), and the competition's final score.

use super::{Score, Scores};

/// How scores against several references of one hypothesis are combined, per metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MultiRef {
    /// The reference with the highest F (the first one on ties: `np.argmax`), its p, r, f.
    Max,
    /// Mean of p, r and f over the references.
    Mean,
}

fn combine_metric(
    all: &[Scores],
    how: MultiRef,
    get: impl Fn(&Scores) -> Option<Score>,
) -> Option<Score> {
    let mut it = all.iter().filter_map(&get);
    let first = it.next()?;
    Some(match how {
        MultiRef::Max => it.fold(first, |best, s| if s.f > best.f { s } else { best }),
        MultiRef::Mean => {
            let (mut sum, mut k) = (first, 1usize);
            for s in it {
                sum.p += s.p;
                sum.r += s.r;
                sum.f += s.f;
                k += 1;
            }
            let k = k as f64;
            Score {
                p: sum.p / k,
                r: sum.r / k,
                f: sum.f / k,
            }
        }
    })
}

/// Combines one hypothesis' scores against each of its references; `None` when `all` is
/// empty.
pub(crate) fn combine(all: &[Scores], how: MultiRef) -> Option<Scores> {
    Some(Scores {
        rouge1: combine_metric(all, how, |s| Some(s.rouge1))?,
        rouge2: combine_metric(all, how, |s| Some(s.rouge2))?,
        rouge_l: combine_metric(all, how, |s| Some(s.rouge_l))?,
        rouge_lsum: combine_metric(all, how, |s| s.rouge_lsum),
    })
}

/// Mean over a corpus, summed in order like pltrdy's `_get_avg_scores`; `None` for no
/// items.
pub fn mean<'a>(items: impl IntoIterator<Item = &'a Scores>) -> Option<Scores> {
    let mut sum = Scores::default();
    let mut has_lsum = false;
    let mut count = 0usize;
    let add = |acc: &mut Score, s: &Score| {
        acc.p += s.p;
        acc.r += s.r;
        acc.f += s.f;
    };
    for s in items {
        add(&mut sum.rouge1, &s.rouge1);
        add(&mut sum.rouge2, &s.rouge2);
        add(&mut sum.rouge_l, &s.rouge_l);
        if let Some(l) = &s.rouge_lsum {
            has_lsum = true;
            add(sum.rouge_lsum.get_or_insert_with(Score::default), l);
        }
        count += 1;
    }
    if count == 0 {
        return None;
    }
    let n = count as f64;
    let div = |s: Score| Score {
        p: s.p / n,
        r: s.r / n,
        f: s.f / n,
    };
    Some(Scores {
        rouge1: div(sum.rouge1),
        rouge2: div(sum.rouge2),
        rouge_l: div(sum.rouge_l),
        rouge_lsum: if has_lsum {
            sum.rouge_lsum.map(div)
        } else {
            None
        },
    })
}

/// The competition's score: mean of the ROUGE-1, ROUGE-2 and ROUGE-L F1, times 100.
pub fn final_score(s: &Scores) -> f64 {
    (s.rouge1.f + s.rouge2.f + s.rouge_l.f) / 3.0 * 100.0
}

/// The sum of the three F1, times 100, which the seed notebook also prints.
pub fn sum_score(s: &Scores) -> f64 {
    (s.rouge1.f + s.rouge2.f + s.rouge_l.f) * 100.0
}
