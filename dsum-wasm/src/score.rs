//! The Score tab: a predictions CSV against a references CSV, joined by `fname` exactly as
//! `dsum-cli score` joins them (several references as `summary1..N` columns or repeated
//! rows, an optional `topic` column), scored by `dsum_core::rouge`. Returns everything the
//! page draws (metrics, per-topic means, worst rows, the per-row CSV) as one JSON object
//! whose metric keys are those of `dsum-cli score --json`, so the two can be compared.

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Result};
use dsum_core::io::csv::Table;
use dsum_core::rouge::tables::{self, metrics_json, per_item_csv, EmptyPolicy, Item, Refs};
use dsum_core::rouge::{self, Flavor, MultiRef, Scores, Tokenize};
use serde::Deserialize;
use serde_json::{json, Value};

/// The page's settings (the CLI's flags of the same names).
#[derive(Deserialize)]
#[serde(default)]
pub struct ScoreOptions {
    pub flavor: String,
    pub tokenize: String,
    pub multi_ref: String,
    pub empty: String,
    /// How many of the lowest-scoring rows to list.
    pub worst: usize,
}

impl Default for ScoreOptions {
    fn default() -> Self {
        ScoreOptions {
            flavor: "rouge".into(),
            tokenize: "default".into(),
            multi_ref: "max".into(),
            empty: "zero".into(),
            worst: 10,
        }
    }
}

fn parse_flavor(s: &str) -> Result<Flavor> {
    Ok(match s {
        "rouge" => Flavor::Rouge,
        "rouge-score" | "rouge_score" => Flavor::RougeScore,
        _ => bail!("flavor {s:?}: expected `rouge` or `rouge-score`"),
    })
}

/// `mecab` is the analyzer loaded from the dictionary files the user dropped, if any.
fn parse_tokenize(s: &str, flavor: Flavor, mecab: Option<Tokenize>) -> Result<Tokenize> {
    Ok(match s {
        "whitespace" => Tokenize::Whitespace,
        "char" => Tokenize::Char,
        "default" => flavor.default_tokenize(),
        "mecab" => match mecab {
            Some(t) => t,
            None => bail!(
                "Mecab-ko tokens need the compiled mecab-ko-dic files first \
                 (sys.dic, matrix.bin, char.bin, unk.dic, dicrc)"
            ),
        },
        _ => bail!("tokenize {s:?}: expected `whitespace`, `char`, `mecab` or `default`"),
    })
}

/// Scores `pred` against `reference` (both parsed CSV tables) with `opts`.
pub fn score_tables(
    pred: &Table,
    reference: &Table,
    opts: &ScoreOptions,
    mecab: Option<Tokenize>,
) -> Result<Value> {
    let flavor = parse_flavor(&opts.flavor)?;
    let tokenize = parse_tokenize(&opts.tokenize, flavor, mecab)?;
    let how = match opts.multi_ref.as_str() {
        "max" => MultiRef::Max,
        "mean" => MultiRef::Mean,
        s => bail!("multi_ref {s:?}: expected `max` or `mean`"),
    };
    let policy = EmptyPolicy::parse(&opts.empty).ok_or_else(|| {
        anyhow::anyhow!("empty {:?}: expected `zero`, `skip` or `error`", opts.empty)
    })?;
    let report = tables::score_tables(pred, reference, flavor, &tokenize, how, policy)?;
    let mut warnings = Vec::new();
    let deleted = report.deleted_by_default_tokenizer;
    if deleted > 0 {
        warnings.push(format!(
            "rouge_score's default tokenizer deletes every character outside [a-z0-9] \
             (Hangul included) in {deleted} texts; they are scored on what is left. \
             Use Mecab-ko or whitespace tokens for Korean."
        ));
    }
    warnings.extend(report.empty_warnings.iter().cloned());
    let (items, total) = (&report.items, &report.total);

    let mut out = metrics_json(total);
    out["final_score"] = json!(rouge::final_score(total));
    out["sum_score"] = json!(rouge::sum_score(total));
    out["count"] = json!(items.len());
    out["empty"] = json!(report.empty_predictions.len() + report.empty_references.len());
    out["flavor"] = json!(flavor.name());
    out["tokenize"] = json!(opts.tokenize);
    out["multi_ref"] = json!(opts.multi_ref);
    out["warnings"] = json!(warnings);
    out["items"] = Value::Array(
        items
            .iter()
            .map(|i| {
                let mut v = metrics_json(&i.scores);
                v["fname"] = json!(i.fname);
                v
            })
            .collect(),
    );
    if report.has_topic {
        out["topics"] = topics_json(items);
    }
    out["worst"] = worst_json(items, &report.refs, opts.worst);
    out["per_item_csv"] = json!(String::from_utf8(per_item_csv(items, flavor)?)?);
    Ok(out)
}

/// Parses both CSVs (names are what errors call them) and scores them.
pub fn score_csv(
    pred_name: &str,
    pred: &[u8],
    ref_name: &str,
    reference: &[u8],
    opts: &ScoreOptions,
    mecab: Option<Tokenize>,
) -> Result<Value> {
    let pred = Table::parse(pred_name, pred)?;
    let reference = Table::parse(ref_name, reference)?;
    score_tables(&pred, &reference, opts, mecab)
}

/// F1 x 100 per topic (rows without one under `(none)`), topics in sorted order.
fn topics_json(items: &[Item]) -> Value {
    let mut by_topic: BTreeMap<&str, Vec<&Scores>> = BTreeMap::new();
    for i in items {
        let topic = i.topic.unwrap_or("(none)");
        by_topic.entry(topic).or_default().push(&i.scores);
    }
    let rows = by_topic.iter().filter_map(|(topic, list)| {
        let m = rouge::mean(list.iter().copied())?;
        Some(json!({
            "topic": topic,
            "count": list.len(),
            "rouge-1": m.rouge1.f * 100.0,
            "rouge-2": m.rouge2.f * 100.0,
            "rouge-l": m.rouge_l.f * 100.0,
            "final": rouge::final_score(&m),
        }))
    });
    Value::Array(rows.collect())
}

/// The `n` rows with the lowest final score, with their texts.
fn worst_json(items: &[Item], refs: &HashMap<&str, Refs>, n: usize) -> Value {
    let mut worst: Vec<&Item> = items.iter().collect();
    worst.sort_by(|a, b| rouge::final_score(&a.scores).total_cmp(&rouge::final_score(&b.scores)));
    let rows = worst.iter().take(n).map(|i| {
        json!({
            "fname": i.fname,
            "line": i.line,
            "rouge-1": i.scores.rouge1.f * 100.0,
            "rouge-2": i.scores.rouge2.f * 100.0,
            "rouge-l": i.scores.rouge_l.f * 100.0,
            "final": rouge::final_score(&i.scores),
            "prediction": i.prediction,
            "references": refs.get(i.fname).map(|r| r.texts.clone()).unwrap_or_default(),
        })
    });
    Value::Array(rows.collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixtures() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/rouge/cli")
    }

    fn read(name: &str) -> Vec<u8> {
        std::fs::read(fixtures().join(name)).expect("fixture")
    }

    fn close(a: &Value, b: &Value, at: &str) {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => {
                let (x, y) = (
                    x.as_f64().unwrap_or(f64::NAN),
                    y.as_f64().unwrap_or(f64::NAN),
                );
                assert!((x - y).abs() <= 1e-12, "{at}: {x} != {y}");
            }
            (Value::Object(x), Value::Object(y)) => {
                for (k, v) in y {
                    let got = x.get(k).unwrap_or_else(|| panic!("{at}: no key {k}"));
                    close(got, v, &format!("{at}.{k}"));
                }
            }
            (Value::Array(x), Value::Array(y)) => {
                assert_eq!(x.len(), y.len(), "{at}: lengths");
                for (i, (p, q)) in x.iter().zip(y).enumerate() {
                    close(p, q, &format!("{at}[{i}]"));
                }
            }
            _ => assert_eq!(a, b, "{at}"),
        }
    }

    /// The cases of the shared fixture (reference values from pltrdy `rouge` and
    /// `rouge_score`), except Mecab ones, which need the dictionary.
    #[test]
    fn matches_the_python_references() {
        let text = std::fs::read_to_string(fixtures().join("expected.json")).expect("fixture");
        let cases: Vec<Value> = serde_json::from_str(&text).expect("json");
        let pred = read("pred.csv");
        let mut n = 0;
        for case in &cases {
            let opt = |k: &str| case[k].as_str().unwrap_or_default().to_string();
            if opt("tokenize") == "mecab" {
                continue;
            }
            let opts = ScoreOptions {
                flavor: opt("flavor"),
                tokenize: opt("tokenize"),
                multi_ref: opt("multi_ref"),
                empty: opt("empty"),
                worst: 5,
            };
            let r = opt("ref");
            let got = score_csv("pred.csv", &pred, &r, &read(&r), &opts, None).expect("scores");
            close(&got, &case["expected"], &format!("{case}"));
            n += 1;
        }
        assert!(n >= 10, "only {n} cases ran");
    }

    #[test]
    fn wrong_columns_name_the_file() {
        let bad = b"id,text\n1,hello\n";
        let e = score_csv(
            "p.csv",
            bad,
            "ref.csv",
            &read("ref.csv"),
            &ScoreOptions::default(),
            None,
        )
        .expect_err("must fail");
        let msg = e.to_string();
        assert!(msg.contains("p.csv") && msg.contains("fname"), "{msg}");
    }

    #[test]
    fn mecab_without_dictionary_is_an_error() {
        let opts = ScoreOptions {
            tokenize: "mecab".into(),
            ..Default::default()
        };
        let e = score_csv("p", &read("pred.csv"), "r", &read("ref.csv"), &opts, None)
            .expect_err("must fail");
        assert!(e.to_string().contains("mecab-ko-dic"), "{e}");
    }

    #[test]
    fn topics_and_worst_rows() {
        let v = score_csv(
            "p",
            &read("pred.csv"),
            "r",
            &read("ref.csv"),
            &ScoreOptions::default(),
            None,
        )
        .expect("scores");
        let topics = v["topics"].as_array().expect("topics");
        let count: u64 = topics
            .iter()
            .map(|t| t["count"].as_u64().unwrap_or(0))
            .sum();
        assert_eq!(count, v["count"].as_u64().unwrap_or(0));
        let worst = v["worst"].as_array().expect("worst");
        let finals: Vec<f64> = worst
            .iter()
            .map(|w| w["final"].as_f64().unwrap_or(-1.0))
            .collect();
        assert!(finals.windows(2).all(|w| w[0] <= w[1]), "{finals:?}");
        let csv = v["per_item_csv"].as_str().expect("csv");
        assert_eq!(
            csv.lines().count(),
            1 + v["count"].as_u64().unwrap_or(0) as usize
        );
    }
}
