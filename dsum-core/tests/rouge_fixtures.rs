//! dsum's ROUGE against the numbers pltrdy `rouge` 1.0.1 and `rouge_score` 0.1.2 give on the
//! same texts (tests/fixtures/rouge/, written by tools/fixtures/make_rouge_fixtures.py).

use std::collections::HashMap;
use std::sync::Arc;

use dsum_core::rouge::{self, Empty, Flavor, MultiRef, Score, Scorer, Scores, Tokenize};
use serde_json::Value;

/// Every score must equal the reference package's to this.
const TOL: f64 = 1e-12;

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/../tests/fixtures/rouge/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn morphs() -> Arc<HashMap<String, Vec<String>>> {
    Arc::new(serde_json::from_value(fixture("morphs.json")).expect("morphs.json"))
}

/// Mecab-ko morphemes replayed from the fixture, plugged in as the competition plugs Mecab.
fn mecab_replay(morphs: &Arc<HashMap<String, Vec<String>>>) -> Tokenize {
    let m = Arc::clone(morphs);
    Tokenize::custom(move |text| {
        m.get(text)
            .unwrap_or_else(|| panic!("no morphs recorded for {text:?}"))
            .clone()
    })
}

fn tokenizers(morphs: &Arc<HashMap<String, Vec<String>>>) -> Vec<(&'static str, Tokenize)> {
    vec![
        ("whitespace", Tokenize::Whitespace),
        ("char", Tokenize::Char),
        ("default", Tokenize::RougeScoreDefault),
        ("mecab", mecab_replay(morphs)),
    ]
}

fn assert_score(got: &Score, want: &Value, what: &str) {
    for (k, g) in [("p", got.p), ("r", got.r), ("f", got.f)] {
        let w = want[k]
            .as_f64()
            .unwrap_or_else(|| panic!("{what}: no {k} in {want}"));
        assert!((g - w).abs() <= TOL, "{what} {k}: dsum {g} reference {w}");
    }
}

fn assert_pltrdy(got: &Result<Scores, Empty>, want: &Value, what: &str) {
    match (got, want.get("error").and_then(Value::as_str)) {
        (Err(Empty::Hypothesis), Some("Hypothesis is empty.")) => {}
        (Err(Empty::Reference), Some("Reference is empty.")) => {}
        (Ok(s), None) => {
            assert_score(&s.rouge1, &want["rouge-1"], &format!("{what} rouge-1"));
            assert_score(&s.rouge2, &want["rouge-2"], &format!("{what} rouge-2"));
            assert_score(&s.rouge_l, &want["rouge-l"], &format!("{what} rouge-l"));
            assert!(s.rouge_lsum.is_none());
        }
        (g, w) => panic!("{what}: dsum {g:?}, pltrdy {w:?}"),
    }
}

fn assert_rouge_score(s: &Scores, want: &Value, what: &str) {
    assert_score(&s.rouge1, &want["rouge1"], &format!("{what} rouge1"));
    assert_score(&s.rouge2, &want["rouge2"], &format!("{what} rouge2"));
    assert_score(&s.rouge_l, &want["rougeL"], &format!("{what} rougeL"));
    let lsum = s
        .rouge_lsum
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: no rougeLsum"));
    assert_score(lsum, &want["rougeLsum"], &format!("{what} rougeLsum"));
}

fn cases(name: &str) -> Vec<Value> {
    fixture(name).as_array().cloned().unwrap_or_default()
}

fn text<'a>(case: &'a Value, key: &str) -> &'a str {
    case[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in case"))
}

#[test]
fn pltrdy_pairs_match_rouge_1_0_1() {
    let morphs = morphs();
    for (name, tokenize) in tokenizers(&morphs) {
        let mut scorer = Scorer::new(Flavor::Rouge, tokenize);
        for case in cases("pairs.json") {
            let (h, r) = (text(&case, "hyp"), text(&case, "ref"));
            let what = format!("case {} rouge/{name}", case["id"]);
            let got = scorer.score(h, r);
            assert_pltrdy(&got, &case["rouge"][name], &what);
            assert_eq!(
                scorer.is_empty(h),
                got == Err(Empty::Hypothesis),
                "{what}: is_empty"
            );
        }
    }
}

#[test]
fn rouge_score_pairs_match_rouge_score_0_1_2() {
    let morphs = morphs();
    for (name, tokenize) in tokenizers(&morphs) {
        let mut scorer = Scorer::new(Flavor::RougeScore, tokenize);
        for case in cases("pairs.json") {
            let (h, r) = (text(&case, "hyp"), text(&case, "ref"));
            let what = format!("case {} rouge-score/{name}", case["id"]);
            // An empty side is dsum's `Empty`; rouge_score scores it as all zeros.
            let got = scorer
                .score(h, r)
                .unwrap_or(Scores::zero(Flavor::RougeScore));
            assert_rouge_score(&got, &case["rouge-score"][name], &what);
        }
    }
}

#[test]
fn naive_ports_match_the_packages() {
    for case in cases("pairs.json") {
        let (h, r) = (text(&case, "hyp"), text(&case, "ref"));
        let what = format!("case {} naive", case["id"]);
        let got = rouge::naive::pltrdy(h, r).ok_or(Empty::Hypothesis);
        if got.is_ok() || case["rouge"]["whitespace"].get("error").is_some() {
            let want = &case["rouge"]["whitespace"];
            if let Ok(s) = &got {
                assert_pltrdy(&Ok(*s), want, &what);
            } else {
                assert!(want.get("error").is_some(), "{what}");
            }
        }
        let ws = |t: &str| rouge::py_split(t).map(String::from).collect::<Vec<_>>();
        let s = rouge::naive::rouge_score(r, h, &ws);
        assert_rouge_score(&s, &case["rouge-score"]["whitespace"], &what);
    }
}

#[test]
fn multi_reference_max_matches_score_multi() {
    let morphs = morphs();
    for (name, tokenize) in tokenizers(&morphs) {
        let mut scorer = Scorer::new(Flavor::RougeScore, tokenize);
        for (i, case) in cases("multi.json").iter().enumerate() {
            let refs: Vec<&str> = case["refs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let got = scorer
                .score_multi(text(case, "hyp"), &refs, MultiRef::Max)
                .unwrap_or(Scores::zero(Flavor::RougeScore));
            assert_rouge_score(
                &got,
                &case["rouge-score"][name],
                &format!("multi {i} {name}"),
            );
        }
    }
}

#[test]
fn corpus_mean_matches_pltrdy_avg() {
    let f = fixture("avg.json");
    let hyps = f["hyps"].as_array().cloned().unwrap_or_default();
    let refs = f["refs"].as_array().cloned().unwrap_or_default();
    let mut scorer = Scorer::new(Flavor::Rouge, Tokenize::Whitespace);
    let per_pair: Vec<Scores> = hyps
        .iter()
        .zip(&refs)
        .map(|(h, r)| {
            scorer
                .score(h.as_str().unwrap_or(""), r.as_str().unwrap_or(""))
                .expect("scorable")
        })
        .collect();
    let avg = rouge::mean(&per_pair).expect("pairs");
    assert_pltrdy(&Ok(avg), &f["avg"], "avg");
    // the batch entry point gives the same per-pair numbers
    let ref_lists: Vec<[&str; 1]> = refs.iter().map(|r| [r.as_str().unwrap_or("")]).collect();
    let pairs: Vec<(&str, &[&str])> = hyps
        .iter()
        .zip(&ref_lists)
        .map(|(h, r)| (h.as_str().unwrap_or(""), &r[..]))
        .collect();
    let batch = rouge::score_all(Flavor::Rouge, &Tokenize::Whitespace, MultiRef::Max, &pairs);
    assert_eq!(
        batch
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .expect("scorable"),
        per_pair
    );
}

#[test]
fn whitespace_and_lowercase_agree_with_python() {
    let f = fixture("python_chars.json");
    let py_ws: Vec<u32> = f["isspace"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_u64())
        .map(|v| v as u32)
        .collect();
    let ours: Vec<u32> = (0..=0x10FFFFu32)
        .filter_map(char::from_u32)
        .filter(|&c| rouge::is_py_whitespace(c))
        .map(u32::from)
        .collect();
    assert_eq!(ours, py_ws);
    // the byte-level splitter agrees with the character predicate on every character
    for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
        let text = format!("a{c}b{c}");
        let n = rouge::py_split(&text).count();
        assert_eq!(n == 2, rouge::is_py_whitespace(c), "U+{:04X}", u32::from(c));
    }
    let py_lower = f["lower_to_ascii_alnum"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut ours = serde_json::Map::new();
    for c in (0x80..=0x10FFFFu32).filter_map(char::from_u32) {
        if c.to_lowercase()
            .any(|l| l.is_ascii_lowercase() || l.is_ascii_digit())
        {
            ours.insert(
                u32::from(c).to_string(),
                Value::String(c.to_lowercase().collect()),
            );
        }
    }
    assert_eq!(ours, py_lower);
}

#[test]
fn default_tokenizer_deletion_is_detected() {
    assert!(rouge::default_tokenizer_deletes_text(
        "#Person1#은 밥을 먹었다"
    ));
    assert!(!rouge::default_tokenizer_deletes_text(
        "#Person1# ate 11,500 won... İK"
    ));
}
