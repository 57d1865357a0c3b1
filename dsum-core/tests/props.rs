//! Property tests over the fixture models and the scorer: tokenizer round-trips, batched
//! generation equal to one-row-at-a-time generation (BART right padding, Llama left
//! padding), and ROUGE invariants (bounds, identical texts, symmetric F).

mod common;

use std::sync::OnceLock;

use dsum_core::generation::GenerationConfig;
use dsum_core::models::LoadedModel;
use dsum_core::rouge::{Flavor, Scorer, Tokenize};
use dsum_core::tokenizer::clean_up_tokenization;
use proptest::prelude::*;

fn load(family: &str, name: &str) -> LoadedModel {
    let dir = common::fixtures(family).join("models").join(name);
    LoadedModel::load(&dir).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn bart() -> &'static LoadedModel {
    static M: OnceLock<LoadedModel> = OnceLock::new();
    M.get_or_init(|| load("bart", "tiny-a"))
}

fn qwen2() -> &'static LoadedModel {
    static M: OnceLock<LoadedModel> = OnceLock::new();
    M.get_or_init(|| load("llama", "qwen2"))
}

fn llama() -> &'static LoadedModel {
    static M: OnceLock<LoadedModel> = OnceLock::new();
    M.get_or_init(|| load("llama", "llama-tied"))
}

/// `clean_up_tokenization_spaces` of a llama fixture's tokenizer_config.json.
fn cleans_up(name: &str) -> bool {
    let cfg = common::load_json("llama", &format!("models/{name}/tokenizer_config.json"));
    cfg["clean_up_tokenization_spaces"]
        .as_bool()
        .unwrap_or(false)
}

/// Korean/English dialogue-like text, NFC already (the Qwen tokenizer normalizes to NFC),
/// with the tokens and markup the competition data has.
fn text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        prop::sample::select(vec![
            "안녕",
            "하세요",
            "#Person1#:",
            "#Person2#:",
            " ",
            "  ",
            "\n",
            ".",
            ",",
            "?",
            "!",
            "회의",
            "3시",
            "ok",
            "Hello",
            "😀",
            "'s",
            " n't",
            "<s>",
            "<|im_start|>",
        ])
        .prop_map(String::from),
        "[가-힣a-zA-Z0-9 .,!?~]{1,6}",
    ];
    prop::collection::vec(piece, 0..16).prop_map(|v| v.concat())
}

/// Token rows of length 1..=9 with ids from the plain part of the vocabulary.
fn rows(vocab: u32) -> impl Strategy<Value = Vec<Vec<u32>>> {
    prop::collection::vec(prop::collection::vec(10..vocab, 1..=9), 2..=4)
}

/// `generate` on all rows at once equals generating each row alone: same tokens, same
/// scores to `score_tol` (f32 rounding of the padded matmuls).
fn batched_equals_unbatched(m: &LoadedModel, rows: &[Vec<u32>], beams: usize, score_tol: f32) {
    let mut gen = m.generation.clone();
    gen.apply_json(
        &serde_json::json!({"max_new_tokens": 6, "num_beams": beams, "num_return_sequences": beams}),
        "test",
    )
    .unwrap();
    let gen: GenerationConfig = gen;
    let together = m.generate(rows, &gen, false).unwrap();
    for (row, want) in rows.iter().zip(&together) {
        let alone = m.generate(std::slice::from_ref(row), &gen, false).unwrap();
        assert_eq!(alone.len(), 1);
        assert_eq!(alone[0].len(), want.len());
        for (a, b) in alone[0].iter().zip(want) {
            assert_eq!(a.tokens, b.tokens, "row {row:?}, {beams} beam(s)");
            let close = match (a.score, b.score) {
                (Some(x), Some(y)) => (x - y).abs() <= score_tol,
                (x, y) => x == y,
            };
            assert!(
                close,
                "row {row:?}: score {:?} alone vs {:?} batched",
                a.score, b.score
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Byte-level BPE (Llama 3, Qwen2) is lossless: decoding the ids of any text, special
    /// tokens kept, gives the text back, up to transformers' `clean_up_tokenization` where
    /// the tokenizer_config.json asks for it (Llama 3 does, Qwen2 does not).
    #[test]
    fn byte_level_tokenizers_round_trip(t in text()) {
        for (name, m) in [("qwen2", qwen2()), ("llama-tied", llama())] {
            let ids = m.tokenizer.encode_plain(&t).unwrap();
            let want = if cleans_up(name) { clean_up_tokenization(&t) } else { t.clone() };
            prop_assert_eq!(m.tokenizer.decode(&ids, false).unwrap(), want, "{}", name);
        }
    }

    /// The BART tokenizer normalizes (Metaspace spaces, unknown characters), so one
    /// round-trip may change the text, but a second one changes nothing but whitespace.
    #[test]
    fn bart_tokenizer_round_trip_is_stable(t in text()) {
        let tok = &bart().tokenizer;
        let once = tok.decode(&tok.encode(&t, None).unwrap(), true).unwrap();
        let twice = tok.decode(&tok.encode(&once, None).unwrap(), true).unwrap();
        let words = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        prop_assert_eq!(words(&twice), words(&once));
    }

    /// Truncation never exceeds the limit and keeps a prefix of the content.
    #[test]
    fn truncation_respects_max_length(t in text(), max in 3usize..20) {
        for m in [bart(), qwen2()] {
            let full = m.tokenizer.encode(&t, None).unwrap();
            let cut = m.tokenizer.encode(&t, Some(max)).unwrap();
            prop_assert!(cut.len() <= max.max(2), "{} > {max}", cut.len());
            if full.len() <= max {
                prop_assert_eq!(cut, full);
            }
        }
    }
}

/// tiny-a is deliberately sharp, so f32 rounding moves its beam scores further than the
/// Llama fixtures'. On the rows below (a CI proptest draw that failed a 1e-3 bound: dsum
/// -1.0590 alone vs -1.0609 batched), transformers 4.57.6 in float32 gives -1.0592 / -1.0621
/// alone and -1.0580 / -1.0585 batched for the two beams, identical tokens; in float64 it gives
/// the same scores both ways. So its scores are compared at 1e-2, the tokens exactly.
const BART_SCORE_TOL: f32 = 1e-2;
const LLAMA_SCORE_TOL: f32 = 1e-3;

#[test]
fn bart_batched_generation_on_rows_where_f32_scores_drift() {
    let rows = vec![
        vec![220, 769, 726, 936, 270, 245, 643],
        vec![365, 111, 73, 1240, 1205, 723],
        vec![880, 1064, 68, 1334, 511],
    ];
    batched_equals_unbatched(bart(), &rows, 2, BART_SCORE_TOL);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn bart_batched_generation_equals_unbatched(rows in rows(1400), beams in 1usize..=2) {
        batched_equals_unbatched(bart(), &rows, beams, BART_SCORE_TOL);
    }

    #[test]
    fn qwen2_batched_generation_equals_unbatched(rows in rows(1100), beams in 1usize..=2) {
        batched_equals_unbatched(qwen2(), &rows, beams, LLAMA_SCORE_TOL);
    }

    #[test]
    fn llama_batched_generation_equals_unbatched(rows in rows(1100), beams in 1usize..=2) {
        batched_equals_unbatched(llama(), &rows, beams, LLAMA_SCORE_TOL);
    }
}

fn words() -> impl Strategy<Value = String> {
    let w = prop::sample::select(vec!["가", "나", "다", "라", "a", "b", ".", " ", "\n"]);
    prop::collection::vec(w, 0..30).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn rouge_scores_are_in_bounds(h in words(), r in words()) {
        for flavor in [Flavor::Rouge, Flavor::RougeScore] {
            for tok in [Tokenize::Whitespace, Tokenize::Char] {
                if let Ok(s) = Scorer::new(flavor, tok).score(&h, &r) {
                    for m in [s.rouge1, s.rouge2, s.rouge_l].iter().chain(s.rouge_lsum.iter()) {
                        for v in [m.p, m.r, m.f] {
                            prop_assert!((0.0..=1.0).contains(&v), "{v} in {s:?}");
                        }
                    }
                }
            }
        }
    }

    /// A text scores F = 1 against itself (pltrdy adds 1e-8 to denominators).
    #[test]
    fn identical_texts_score_one(t in words()) {
        for flavor in [Flavor::Rouge, Flavor::RougeScore] {
            let mut s = Scorer::new(flavor, Tokenize::Char);
            if let Ok(sc) = s.score(&t, &t) {
                prop_assert!((sc.rouge1.f - 1.0).abs() < 1e-6, "{sc:?}");
                prop_assert!((sc.rouge1.p - 1.0).abs() < 1e-6 && (sc.rouge1.r - 1.0).abs() < 1e-6);
                if flavor == Flavor::RougeScore {
                    prop_assert!((sc.rouge_l.f - 1.0).abs() < 1e-6, "{sc:?}");
                }
            }
        }
    }

    /// Swapping hypothesis and reference swaps P and R and keeps F, for every metric that
    /// is a harmonic mean (pltrdy's summary-level ROUGE-L weights P and R unequally).
    #[test]
    fn f_is_symmetric(h in words(), r in words()) {
        for flavor in [Flavor::Rouge, Flavor::RougeScore] {
            let mut s = Scorer::new(flavor, Tokenize::Whitespace);
            if let (Ok(a), Ok(b)) = (s.score(&h, &r), s.score(&r, &h)) {
                let mut pairs = vec![(a.rouge1, b.rouge1), (a.rouge2, b.rouge2)];
                if flavor == Flavor::RougeScore {
                    pairs.push((a.rouge_l, b.rouge_l));
                }
                for (x, y) in pairs {
                    prop_assert!((x.f - y.f).abs() < 1e-9, "{x:?} vs {y:?}");
                    prop_assert!((x.p - y.r).abs() < 1e-9 && (x.r - y.p).abs() < 1e-9);
                }
            }
        }
    }
}
