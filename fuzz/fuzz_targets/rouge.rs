//! ROUGE on arbitrary strings, both flavors, every built-in tokenizer: never a panic, and
//! every score is a number in [0, 1].
#![no_main]
use dsum_core::rouge::{Flavor, MultiRef, Score, Scorer, Tokenize};
use libfuzzer_sys::fuzz_target;

fn check(s: &Score) {
    for v in [s.p, s.r, s.f] {
        assert!((0.0..=1.0).contains(&v), "score {v} out of [0, 1]: {s:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let hyp = parts.next().unwrap_or_default();
    let refs: Vec<&str> = parts.collect();
    let reference = refs.first().copied().unwrap_or_default();
    for flavor in [Flavor::Rouge, Flavor::RougeScore] {
        for tok in [
            Tokenize::Whitespace,
            Tokenize::Char,
            Tokenize::RougeScoreDefault,
        ] {
            let mut s = Scorer::new(flavor, tok);
            let _ = s.is_empty(hyp);
            if let Ok(sc) = s.score(hyp, reference) {
                check(&sc.rouge1);
                check(&sc.rouge2);
                check(&sc.rouge_l);
                if let Some(l) = &sc.rouge_lsum {
                    check(l);
                }
            }
            if !refs.is_empty() {
                for how in [MultiRef::Max, MultiRef::Mean] {
                    if let Ok(sc) = s.score_multi(hyp, &refs, how) {
                        check(&sc.rouge1);
                        check(&sc.rouge_l);
                    }
                }
            }
        }
    }
});
