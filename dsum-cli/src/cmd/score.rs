//! `dsum-cli score`: ROUGE of a predictions CSV against a references CSV, exactly as pltrdy
//! `rouge` 1.0.1 (the competition's) or `rouge_score` 0.1.2 computes it. Reads and joins
//! the two tables by `fname`, prints; the scoring is `dsum_core::rouge`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::bail;
use argh::FromArgs;
use dsum_core::io::csv::{list_some, Table};
use dsum_core::rouge::{self, Empty, Flavor, MultiRef, Score, Scores, Tokenize};
use serde_json::{json, Value};

/// score predictions against references with ROUGE-1/2/L (pltrdy `rouge` 1.0.1 or
/// `rouge_score` 0.1.2, reproduced exactly)
#[derive(FromArgs)]
#[argh(subcommand, name = "score")]
pub struct ScoreArgs {
    /// predictions CSV with columns `fname` and `summary`
    #[argh(option)]
    pred: PathBuf,
    /// references CSV: `fname` and `summary` (several references: columns `summary1..N` or
    /// repeated `fname` rows); an optional `topic` column gives a per-topic breakdown
    #[argh(option, long = "ref")]
    reference: PathBuf,
    /// rouge (pltrdy rouge 1.0.1, the competition's; default) or rouge-score
    #[argh(option, default = "String::from(\"rouge\")")]
    flavor: String,
    /// whitespace, char, mecab (needs --mecab-dic) or default (the flavor's own:
    /// whitespace for rouge, rouge_score's [a-z0-9] tokenizer for rouge-score; default)
    #[argh(option, default = "String::from(\"default\")")]
    tokenize: String,
    /// compiled mecab-ko-dic folder (sys.dic, matrix.bin, char.bin, unk.dic, dicrc)
    #[argh(option)]
    mecab_dic: Option<PathBuf>,
    /// combine several references per metric: max (the best F; default) or mean
    #[argh(option, default = "String::from(\"max\")")]
    multi_ref: String,
    /// a prediction with no tokens after the flavor's splitting: zero (score 0; default),
    /// skip (leave it out of the means) or error; zero and skip warn naming the rows
    #[argh(option, default = "String::from(\"zero\")")]
    empty: String,
    /// write per-item scores to this CSV (floats at full precision)
    #[argh(option)]
    per_item: Option<PathBuf>,
    /// print one JSON object instead of the table
    #[argh(switch)]
    json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum EmptyPolicy {
    Zero,
    Skip,
    Error,
}

/// The Mecab-ko morpheme tokenizer for `--tokenize mecab` (tokens joined by spaces are what
/// the competition feeds to `rouge`).
fn mecab_tokenizer(dic: Option<&Path>) -> anyhow::Result<Tokenize> {
    let dir = dsum_core::mecab::locate_dictionary(dic)?;
    let m = dsum_core::mecab::Mecab::load(&dir)?;
    Ok(Tokenize::custom(move |t| m.morphs(t)))
}

fn parse_flavor(s: &str) -> anyhow::Result<Flavor> {
    Ok(match s {
        "rouge" => Flavor::Rouge,
        "rouge-score" | "rouge_score" => Flavor::RougeScore,
        _ => bail!("--flavor {s:?}: expected `rouge` or `rouge-score`"),
    })
}

fn parse_tokenize(args: &ScoreArgs, flavor: Flavor) -> anyhow::Result<Tokenize> {
    Ok(match args.tokenize.as_str() {
        "whitespace" => Tokenize::Whitespace,
        "char" => Tokenize::Char,
        "default" => flavor.default_tokenize(),
        "mecab" => mecab_tokenizer(args.mecab_dic.as_deref())?,
        s => bail!("--tokenize {s:?}: expected `whitespace`, `char`, `mecab` or `default`"),
    })
}

/// One scored prediction.
struct Item<'a> {
    fname: &'a str,
    line: u64,
    topic: Option<&'a str>,
    scores: Scores,
}

/// The references of one `fname`.
struct Refs<'a> {
    texts: Vec<&'a str>,
    /// The line of the first row with this `fname`.
    line: u64,
    topic: Option<&'a str>,
}

/// `summary`, then `summary1`, `summary2`, ... in numeric order.
fn summary_columns(t: &Table) -> anyhow::Result<Vec<usize>> {
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

fn read_refs(t: &Table) -> anyhow::Result<(Vec<&str>, HashMap<&str, Refs<'_>>)> {
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

pub fn run(args: ScoreArgs) -> anyhow::Result<()> {
    let flavor = parse_flavor(&args.flavor)?;
    let tokenize = parse_tokenize(&args, flavor)?;
    let how = match args.multi_ref.as_str() {
        "max" => MultiRef::Max,
        "mean" => MultiRef::Mean,
        s => bail!("--multi-ref {s:?}: expected `max` or `mean`"),
    };
    let policy = match args.empty.as_str() {
        "zero" => EmptyPolicy::Zero,
        "skip" => EmptyPolicy::Skip,
        "error" => EmptyPolicy::Error,
        s => bail!("--empty {s:?}: expected `zero`, `skip` or `error`"),
    };

    // the two files are read side by side
    let (pred, reference) = std::thread::scope(|s| {
        let r = s.spawn(|| Table::read(&args.reference));
        let p = Table::read(&args.pred);
        (p, r.join())
    });
    let pred = pred?;
    let reference =
        reference.map_err(|_| anyhow::anyhow!("reading {} failed", args.reference.display()))??;
    let (pf, ps) = (pred.column("fname")?, pred.column("summary")?);
    pred.check_unique(pf)?;
    let (ref_order, refs) = read_refs(&reference)?;
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
            msg += &format!(
                "\n  only in {}: {}",
                reference.name(),
                list_some(&only_ref, 20)
            );
        }
        bail!(msg);
    }

    if matches!(tokenize, Tokenize::RougeScoreDefault) {
        let deleted = pred
            .rows()
            .map(|r| r.get(ps))
            .chain(refs.values().flat_map(|r| r.texts.iter().copied()))
            .filter(|t| rouge::default_tokenizer_deletes_text(t))
            .count();
        if deleted > 0 {
            eprintln!(
                "warning: rouge_score's default tokenizer deletes every character outside [a-z0-9] \
                 (Hangul included) in {deleted} texts; they are scored on what is left \
                 (#PersonN#, digits, Latin words). Use --tokenize mecab or whitespace for Korean."
            );
        }
    }

    let pairs: Vec<(&str, &[&str])> = pred
        .rows()
        .map(|r| {
            (
                r.get(ps),
                refs.get(r.get(pf)).map(|x| &x.texts[..]).unwrap_or(&[]),
            )
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
        let topic = refs.get(fname).and_then(|r| r.topic);
        items.push(Item {
            fname,
            line: row.line(),
            topic,
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
            EmptyPolicy::Zero => eprintln!("warning: {file}: {msg}; scored 0"),
            EmptyPolicy::Skip => eprintln!("warning: {file}: {msg}; left out"),
        }
    }
    let Some(total) = rouge::mean(items.iter().map(|i| &i.scores)) else {
        bail!("no items left to score (every prediction was empty and --empty skip)");
    };

    if let Some(path) = &args.per_item {
        dsum_core::io::atomic::write_atomic(path, &per_item_csv(&items, flavor)?)?;
    }
    if args.json {
        let mut out = metrics_json(&total);
        out["final_score"] = json!(rouge::final_score(&total));
        out["sum_score"] = json!(rouge::sum_score(&total));
        out["count"] = json!(items.len());
        out["empty"] = json!(empty_hyp.len() + empty_ref.len());
        out["flavor"] = json!(flavor.name());
        out["tokenize"] = json!(args.tokenize);
        out["multi_ref"] = json!(args.multi_ref);
        if args.per_item.is_some() {
            let list: Vec<Value> = items
                .iter()
                .map(|i| {
                    let mut v = metrics_json(&i.scores);
                    v["fname"] = json!(i.fname);
                    v
                })
                .collect();
            out["items"] = Value::Array(list);
        }
        println!("{out}");
    } else {
        print_report(
            &args,
            flavor,
            &total,
            &items,
            reference.find_column("topic").is_some(),
        );
    }
    Ok(())
}

/// The metrics of `s` as `{"rouge-1": {"p", "r", "f"}, ...}`.
fn metrics_json(s: &Scores) -> Value {
    let m = |x: &Score| json!({"p": x.p, "r": x.r, "f": x.f});
    let mut v = json!({"rouge-1": m(&s.rouge1), "rouge-2": m(&s.rouge2), "rouge-l": m(&s.rouge_l)});
    if let Some(l) = &s.rouge_lsum {
        v["rouge-lsum"] = m(l);
    }
    v
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

/// `fname,rouge-1-p,rouge-1-r,rouge-1-f,...`, floats in Rust's shortest round-trip form.
fn per_item_csv(items: &[Item], flavor: Flavor) -> anyhow::Result<Vec<u8>> {
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
    w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))
}

fn print_report(args: &ScoreArgs, flavor: Flavor, total: &Scores, items: &[Item], has_topic: bool) {
    let package = match flavor {
        Flavor::Rouge => "pltrdy rouge 1.0.1",
        Flavor::RougeScore => "rouge_score 0.1.2",
    };
    println!(
        "ROUGE as {package} (--flavor {}), --tokenize {}, --multi-ref {}: {} items",
        flavor.name(),
        args.tokenize,
        args.multi_ref,
        items.len()
    );
    println!("{:<11} {:>8} {:>8} {:>8}", "metric", "P", "R", "F");
    for (name, s) in metric_rows(total) {
        println!("{name:<11} {:>8.4} {:>8.4} {:>8.4}", s.p, s.r, s.f);
    }
    println!(
        "final score (mean of R-1, R-2, R-L F1 x 100): {:.4}",
        rouge::final_score(total)
    );
    println!(
        "sum of R-1, R-2, R-L F1 x 100:                {:.4}",
        rouge::sum_score(total)
    );

    if has_topic {
        let mut by_topic: BTreeMap<&str, Vec<&Scores>> = BTreeMap::new();
        for i in items {
            by_topic
                .entry(i.topic.unwrap_or("(none)"))
                .or_default()
                .push(&i.scores);
        }
        println!("\nby topic (F1 x 100)");
        println!(
            "{:<24} {:>6} {:>7} {:>7} {:>7} {:>7}",
            "topic", "count", "R-1", "R-2", "R-L", "final"
        );
        for (topic, list) in &by_topic {
            if let Some(m) = rouge::mean(list.iter().copied()) {
                println!(
                    "{:<24} {:>6} {:>7.2} {:>7.2} {:>7.2} {:>7.2}",
                    topic,
                    list.len(),
                    m.rouge1.f * 100.0,
                    m.rouge2.f * 100.0,
                    m.rouge_l.f * 100.0,
                    rouge::final_score(&m)
                );
            }
        }
    }

    let mut worst: Vec<&Item> = items.iter().collect();
    worst.sort_by(|a, b| rouge::final_score(&a.scores).total_cmp(&rouge::final_score(&b.scores)));
    let n = worst.len().min(5);
    println!("\nworst {n} rows (F1 x 100)");
    println!(
        "{:<24} {:>6} {:>7} {:>7} {:>7} {:>7}",
        "fname", "line", "R-1", "R-2", "R-L", "final"
    );
    for i in &worst[..n] {
        println!(
            "{:<24} {:>6} {:>7.2} {:>7.2} {:>7.2} {:>7.2}",
            i.fname,
            i.line,
            i.scores.rouge1.f * 100.0,
            i.scores.rouge2.f * 100.0,
            i.scores.rouge_l.f * 100.0,
            rouge::final_score(&i.scores)
        );
    }
}
