//! The Score tab: a predictions CSV against a references CSV, joined by `fname` exactly as
//! `dsum-cli score` joins them (several references as `summary1..N` columns or repeated
//! rows, an optional `topic` column), scored by `dsum_core::rouge`. Returns everything the
//! page draws (metrics, per-topic means, worst rows, the per-row CSV) as one JSON object
//! whose metric keys are those of `dsum-cli score --json`, so the two can be compared.

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Result};
use dsum_core::io::csv::{list_some, Table};
use dsum_core::rouge::{self, Empty, Flavor, MultiRef, Score, Scores, Tokenize};
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum EmptyPolicy {
    Zero,
    Skip,
    Error,
}

/// The references of one `fname`.
struct Refs<'a> {
    texts: Vec<&'a str>,
    line: u64,
    topic: Option<&'a str>,
}

struct Item<'a> {
    fname: &'a str,
    line: u64,
    topic: Option<&'a str>,
    prediction: &'a str,
    scores: Scores,
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

/// `summary`, then `summary1`, `summary2`, ... in numeric order.
fn summary_columns(t: &Table) -> Result<Vec<usize>> {
    let mut cols: Vec<(u64, usize)> = t
        .headers()
        .iter()
        .enumerate()
        .filter_map(|(i, h)| {
            let rest = h.strip_prefix("summary")?;
            if rest.is_empty() {
                Some((0, i))
            } else {
                rest.parse::<u64>().ok().map(|n| (n, i))
            }
        })
        .collect();
    if cols.is_empty() {
        bail!(
            "{}: missing column `summary` (or `summary1`..`summaryN`); the header has: {}",
            t.name(),
            t.headers().join(", ")
        );
    }
    cols.sort();
    Ok(cols.into_iter().map(|(_, i)| i).collect())
}

fn read_refs(t: &Table) -> Result<(Vec<&str>, HashMap<&str, Refs<'_>>)> {
    let fname = t.column("fname")?;
    let cols = summary_columns(t)?;
    let topic = t.find_column("topic");
    let mut order = Vec::new();
    let mut refs: HashMap<&str, Refs> = HashMap::new();
    for row in t.rows() {
        let entry = refs.entry(row.get(fname)).or_insert_with(|| {
            order.push(row.get(fname));
            Refs {
                texts: Vec::new(),
                line: row.line(),
                topic: None,
            }
        });
        // An empty cell is a missing reference (rows with fewer references than columns).
        entry
            .texts
            .extend(cols.iter().map(|&c| row.get(c)).filter(|s| !s.is_empty()));
        if entry.topic.is_none() {
            entry.topic = topic.map(|c| row.get(c)).filter(|s| !s.is_empty());
        }
    }
    Ok((order, refs))
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
    let policy = match opts.empty.as_str() {
        "zero" => EmptyPolicy::Zero,
        "skip" => EmptyPolicy::Skip,
        "error" => EmptyPolicy::Error,
        s => bail!("empty {s:?}: expected `zero`, `skip` or `error`"),
    };
    let (pf, ps) = (pred.column("fname")?, pred.column("summary")?);
    pred.check_unique(pf)?;
    let (ref_order, refs) = read_refs(reference)?;
    if pred.is_empty() {
        bail!("{}: no predictions (only a header)", pred.name());
    }

    // Both files must cover the same fnames.
    let pred_names: HashMap<&str, ()> = pred.rows().map(|r| (r.get(pf), ())).collect();
    let only_pred: Vec<String> = pred
        .rows()
        .map(|r| r.get(pf))
        .filter(|f| !refs.contains_key(f))
        .map(String::from)
        .collect();
    let only_ref: Vec<String> = ref_order
        .iter()
        .filter(|f| !pred_names.contains_key(*f))
        .map(|f| f.to_string())
        .collect();
    if !only_pred.is_empty() || !only_ref.is_empty() {
        let mut msg = String::from("the two files do not have the same fnames");
        if !only_pred.is_empty() {
            msg += &format!("\n  only in {}: {}", pred.name(), list_some(&only_pred, 20));
        }
        if !only_ref.is_empty() {
            let name = reference.name();
            msg += &format!("\n  only in {name}: {}", list_some(&only_ref, 20));
        }
        bail!(msg);
    }

    let mut warnings = Vec::new();
    if matches!(tokenize, Tokenize::RougeScoreDefault) {
        let deleted = pred
            .rows()
            .map(|r| r.get(ps))
            .chain(refs.values().flat_map(|r| r.texts.iter().copied()))
            .filter(|t| rouge::default_tokenizer_deletes_text(t))
            .count();
        if deleted > 0 {
            warnings.push(format!(
                "rouge_score's default tokenizer deletes every character outside [a-z0-9] \
                 (Hangul included) in {deleted} texts; they are scored on what is left. \
                 Use Mecab-ko or whitespace tokens for Korean."
            ));
        }
    }

    let pairs: Vec<(&str, &[&str])> = pred
        .rows()
        .map(|r| {
            let texts = refs.get(r.get(pf)).map(|x| &x.texts[..]).unwrap_or(&[]);
            (r.get(ps), texts)
        })
        .collect();
    let results = rouge::score_all(flavor, &tokenize, how, &pairs);

    let mut items = Vec::with_capacity(results.len());
    let (mut empty_hyp, mut empty_ref) = (Vec::new(), Vec::new());
    for (row, result) in pred.rows().zip(results) {
        let fname = row.get(pf);
        let scores = match result {
            Ok(s) => s,
            Err(e) => {
                match e {
                    Empty::Hypothesis => empty_hyp.push(format!("{fname} (line {})", row.line())),
                    Empty::Reference => {
                        let line = refs.get(fname).map(|r| r.line).unwrap_or(0);
                        empty_ref.push(format!("{fname} (line {line})"))
                    }
                }
                if policy == EmptyPolicy::Skip {
                    continue;
                }
                Scores::zero(flavor)
            }
        };
        items.push(Item {
            fname,
            line: row.line(),
            topic: refs.get(fname).and_then(|r| r.topic),
            prediction: row.get(ps),
            scores,
        });
    }
    for (what, file, rows) in [
        ("predictions", pred.name(), &empty_hyp),
        ("references", reference.name(), &empty_ref),
    ] {
        if rows.is_empty() {
            continue;
        }
        let msg = format!(
            "{} empty {what} (no tokens after {} splitting) for: {}",
            rows.len(),
            flavor.name(),
            list_some(rows, 20)
        );
        match policy {
            EmptyPolicy::Error => bail!("{file}: {msg}"),
            EmptyPolicy::Zero => warnings.push(format!("{file}: {msg}; scored 0")),
            EmptyPolicy::Skip => warnings.push(format!("{file}: {msg}; left out")),
        }
    }
    let Some(total) = rouge::mean(items.iter().map(|i| &i.scores)) else {
        bail!("no items left to score (every prediction was empty and empty = skip)");
    };

    let mut out = metrics_json(&total);
    out["final_score"] = json!(rouge::final_score(&total));
    out["sum_score"] = json!(rouge::sum_score(&total));
    out["count"] = json!(items.len());
    out["empty"] = json!(empty_hyp.len() + empty_ref.len());
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
    if reference.find_column("topic").is_some() {
        out["topics"] = topics_json(&items);
    }
    out["worst"] = worst_json(&items, &refs, opts.worst);
    out["per_item_csv"] = json!(per_item_csv(&items, flavor)?);
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

/// `{"rouge-1": {"p", "r", "f"}, ...}`, as `dsum-cli score --json` writes it.
fn metrics_json(s: &Scores) -> Value {
    let m = |x: &Score| json!({"p": x.p, "r": x.r, "f": x.f});
    let mut v = json!({"rouge-1": m(&s.rouge1), "rouge-2": m(&s.rouge2), "rouge-l": m(&s.rouge_l)});
    if let Some(l) = &s.rouge_lsum {
        v["rouge-lsum"] = m(l);
    }
    v
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

fn metric_rows(s: &Scores) -> Vec<(&'static str, Score)> {
    let mut v = vec![
        ("rouge-1", s.rouge1),
        ("rouge-2", s.rouge2),
        ("rouge-l", s.rouge_l),
    ];
    if let Some(l) = s.rouge_lsum {
        v.push(("rouge-lsum", l));
    }
    v
}

/// `fname,rouge-1-p,rouge-1-r,rouge-1-f,...` as `dsum-cli score --per-item` writes it.
fn per_item_csv(items: &[Item], flavor: Flavor) -> Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec![String::from("fname")];
    for (name, _) in metric_rows(&Scores::zero(flavor)) {
        header.extend(["p", "r", "f"].map(|k| format!("{name}-{k}")));
    }
    w.write_record(&header)?;
    for i in items {
        let mut rec = vec![i.fname.to_string()];
        for (_, s) in metric_rows(&i.scores) {
            rec.extend([s.p, s.r, s.f].map(|x| format!("{x}")));
        }
        w.write_record(&rec)?;
    }
    let bytes = w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(String::from_utf8(bytes)?)
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
