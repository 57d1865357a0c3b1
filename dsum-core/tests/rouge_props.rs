//! The fast scorer (interned ids, reused buffers) against the naive string ports, on random
//! small-vocabulary texts where repeats, LCS ties, `.` pieces and blank lines are common.

use dsum_core::rouge::{self, Flavor, Scorer, Scores, Tokenize};
use proptest::prelude::*;

const TOL: f64 = 1e-12;

fn close(a: &Scores, b: &Scores) -> bool {
    let s = |x: &rouge::Score, y: &rouge::Score| {
        (x.p - y.p).abs() <= TOL && (x.r - y.r).abs() <= TOL && (x.f - y.f).abs() <= TOL
    };
    s(&a.rouge1, &b.rouge1)
        && s(&a.rouge2, &b.rouge2)
        && s(&a.rouge_l, &b.rouge_l)
        && match (&a.rouge_lsum, &b.rouge_lsum) {
            (Some(x), Some(y)) => s(x, y),
            (None, None) => true,
            _ => false,
        }
}

fn text() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "가", "나", "다", "a", "b", ".", " ", "\n", "\t", "..", "#P1#",
    ]);
    prop::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    #[test]
    fn pltrdy_fast_equals_naive(h in text(), r in text()) {
        let mut s = Scorer::new(Flavor::Rouge, Tokenize::Whitespace);
        let fast = s.score(&h, &r).ok();
        let slow = rouge::naive::pltrdy(&h, &r);
        prop_assert_eq!(fast.is_some(), slow.is_some());
        if let (Some(f), Some(n)) = (fast, slow) {
            prop_assert!(close(&f, &n), "{:?} vs {:?}", f, n);
        }
    }

    #[test]
    fn rouge_score_fast_equals_naive(h in text(), r in text()) {
        let mut s = Scorer::new(Flavor::RougeScore, Tokenize::Whitespace);
        let fast = s.score(&h, &r).unwrap_or(Scores::zero(Flavor::RougeScore));
        let ws = |t: &str| rouge::py_split(t).map(String::from).collect::<Vec<_>>();
        let slow = rouge::naive::rouge_score(&r, &h, &ws);
        prop_assert!(close(&fast, &slow), "{:?} vs {:?}", fast, slow);
    }

    #[test]
    fn scorer_reuse_does_not_leak_between_pairs(pairs in prop::collection::vec((text(), text()), 1..8)) {
        for flavor in [Flavor::Rouge, Flavor::RougeScore] {
            let mut reused = Scorer::new(flavor, Tokenize::Char);
            for (h, r) in &pairs {
                let fresh = Scorer::new(flavor, Tokenize::Char).score(h, r);
                prop_assert_eq!(reused.score(h, r), fresh);
            }
        }
    }

    #[test]
    fn never_panics_on_arbitrary_text(h in any::<String>(), r in any::<String>()) {
        for flavor in [Flavor::Rouge, Flavor::RougeScore] {
            for t in [Tokenize::Whitespace, Tokenize::Char, Tokenize::RougeScoreDefault] {
                let _ = Scorer::new(flavor, t).score(&h, &r);
            }
        }
    }
}
