//! A predictions CSV scored against a references CSV: the join by `fname` that `dsum-cli
//! score` and the browser's Score tab share (several references as `summary1..N` columns or
//! repeated rows, an optional `topic` column, the same `fname`s on both sides), the handling
//! of empty texts, and the JSON / per-item CSV both write.

use std::collections::HashMap;
use std::string::{String, ToString};
use std::vec::Vec;
use std::{format, vec};

use serde_json::{json, Value};

use super::{score_all, Empty, Flavor, MultiRef, Score, Scores, Tokenize};
use crate::error::{Error, Result};
use crate::io::csv::{list_some, Table};

/// What to do with a prediction or reference that has no tokens after splitting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmptyPolicy {
    /// Score it 0 (and warn).
    Zero,
    /// Leave it out of the means (and warn).
    Skip,
    /// Stop with an error naming the rows.
    Error,
}

impl EmptyPolicy {
    /// `zero`, `skip` or `error`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "zero" => Some(EmptyPolicy::Zero),
            "skip" => Some(EmptyPolicy::Skip),
            "error" => Some(EmptyPolicy::Error),
            _ => None,
        }
    }
}

/// The references of one `fname`.
pub struct Refs<'a> {
    pub texts: Vec<&'a str>,
    /// The line of the first row with this `fname`.
    pub line: u64,
    pub topic: Option<&'a str>,
}

/// One scored prediction.
pub struct Item<'a> {
    pub fname: &'a str,
    pub line: u64,
    pub topic: Option<&'a str>,
    pub prediction: &'a str,
    pub scores: Scores,
}

/// The scores of every prediction, their mean, and what was found on the way.
pub struct Report<'a> {
    pub items: Vec<Item<'a>>,
    pub refs: HashMap<&'a str, Refs<'a>>,
    pub total: Scores,
    /// Predictions and references with no tokens, as `fname (line N)`.
    pub empty_predictions: Vec<String>,
    pub empty_references: Vec<String>,
    /// Texts rouge_score's default tokenizer empties of everything but #PersonN#, digits and
    /// Latin words (Hangul included): 0 unless that tokenizer is in use.
    pub deleted_by_default_tokenizer: usize,
    /// The references have a `topic` column.
    pub has_topic: bool,
    /// The warnings about empty texts (`file: n empty ... for: ...; scored 0 | left out`).
    pub empty_warnings: Vec<String>,
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
        return Err(Error::Data {
            path: t.name().to_string(),
            message: format!(
                "missing column `summary` (or `summary1`..`summaryN`); the header has: {}",
                t.headers().join(", ")
            ),
        });
    }
    cols.sort();
    Ok(cols.into_iter().map(|(_, i)| i).collect())
}

/// The references by `fname`, and the `fname`s in file order.
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

/// Scores every row of `pred` (`fname`, `summary`) against its references in `reference`.
pub fn score_tables<'a>(
    pred: &'a Table,
    reference: &'a Table,
    flavor: Flavor,
    tokenize: &Tokenize,
    how: MultiRef,
    policy: EmptyPolicy,
) -> Result<Report<'a>> {
    let data_error = |t: &Table, message: String| Error::Data {
        path: t.name().to_string(),
        message,
    };
    let (pf, ps) = (pred.column("fname")?, pred.column("summary")?);
    pred.check_unique(pf)?;
    let (ref_order, refs) = read_refs(reference)?;
    if pred.is_empty() {
        return Err(data_error(pred, "no predictions (only a header)".into()));
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
        return Err(data_error(pred, msg));
    }

    let deleted_by_default_tokenizer = match tokenize {
        Tokenize::RougeScoreDefault => pred
            .rows()
            .map(|r| r.get(ps))
            .chain(refs.values().flat_map(|r| r.texts.iter().copied()))
            .filter(|t| super::default_tokenizer_deletes_text(t))
            .count(),
        _ => 0,
    };

    let pairs: Vec<(&str, &[&str])> = pred
        .rows()
        .map(|r| {
            let texts = refs.get(r.get(pf)).map(|x| &x.texts[..]).unwrap_or(&[]);
            (r.get(ps), texts)
        })
        .collect();
    let results = score_all(flavor, tokenize, how, &pairs);

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
    let mut empty_warnings = Vec::new();
    for (what, table, rows) in [
        ("predictions", pred, &empty_hyp),
        ("references", reference, &empty_ref),
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
            EmptyPolicy::Error => return Err(data_error(table, msg)),
            EmptyPolicy::Zero => empty_warnings.push(format!("{}: {msg}; scored 0", table.name())),
            EmptyPolicy::Skip => empty_warnings.push(format!("{}: {msg}; left out", table.name())),
        }
    }
    let Some(total) = super::mean(items.iter().map(|i| &i.scores)) else {
        return Err(data_error(
            pred,
            "no items left to score (every prediction was empty, and empty ones are skipped)"
                .into(),
        ));
    };
    Ok(Report {
        items,
        refs,
        total,
        empty_predictions: empty_hyp,
        empty_references: empty_ref,
        deleted_by_default_tokenizer,
        has_topic: reference.find_column("topic").is_some(),
        empty_warnings,
    })
}

/// `{"rouge-1": {"p", "r", "f"}, ...}` (and `rouge-lsum` with rouge_score).
pub fn metrics_json(s: &Scores) -> Value {
    let m = |x: &Score| json!({"p": x.p, "r": x.r, "f": x.f});
    let mut v = json!({"rouge-1": m(&s.rouge1), "rouge-2": m(&s.rouge2), "rouge-l": m(&s.rouge_l)});
    if let Some(l) = &s.rouge_lsum {
        v["rouge-lsum"] = m(l);
    }
    v
}

/// The metrics of `s` by name, in report order.
pub fn metric_rows(s: &Scores) -> Vec<(&'static str, Score)> {
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

/// `fname,rouge-1-p,rouge-1-r,rouge-1-f,...`, floats in Rust's shortest round-trip form.
pub fn per_item_csv(items: &[Item], flavor: Flavor) -> Result<Vec<u8>> {
    let err = |e: &dyn core::fmt::Display| Error::Data {
        path: "per-item CSV".into(),
        message: e.to_string(),
    };
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec![String::from("fname")];
    for (name, _) in metric_rows(&Scores::zero(flavor)) {
        header.extend(["p", "r", "f"].map(|k| format!("{name}-{k}")));
    }
    w.write_record(&header).map_err(|e| err(&e))?;
    for i in items {
        let mut rec = vec![i.fname.to_string()];
        for (_, s) in metric_rows(&i.scores) {
            rec.extend([s.p, s.r, s.f].map(|x| format!("{x}")));
        }
        w.write_record(&rec).map_err(|e| err(&e))?;
    }
    w.into_inner().map_err(|e| err(&e))
}
