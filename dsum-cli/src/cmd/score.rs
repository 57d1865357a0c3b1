//! `dsum-cli score`: ROUGE of a predictions CSV against a references CSV, exactly as pltrdy
//! `rouge` 1.0.1 (the competition's) or `rouge_score` 0.1.2 computes it. Reads and joins
//! the two tables by `fname`, prints; the scoring is `dsum_core::rouge`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::bail;
use argh::FromArgs;
use dsum_core::io::csv::Table;
use dsum_core::rouge::tables::{
    metric_rows, metrics_json, per_item_csv, score_tables, EmptyPolicy, Item,
};
use dsum_core::rouge::{self, Flavor, MultiRef, Scores, Tokenize};
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

pub fn run(args: ScoreArgs) -> anyhow::Result<()> {
    let flavor = parse_flavor(&args.flavor)?;
    let tokenize = parse_tokenize(&args, flavor)?;
    let how = match args.multi_ref.as_str() {
        "max" => MultiRef::Max,
        "mean" => MultiRef::Mean,
        s => bail!("--multi-ref {s:?}: expected `max` or `mean`"),
    };
    let policy = EmptyPolicy::parse(&args.empty).ok_or_else(|| {
        anyhow::anyhow!(
            "--empty {:?}: expected `zero`, `skip` or `error`",
            args.empty
        )
    })?;

    // the two files are read side by side
    let (pred, reference) = std::thread::scope(|s| {
        let r = s.spawn(|| Table::read(&args.reference));
        let p = Table::read(&args.pred);
        (p, r.join())
    });
    let pred = pred?;
    let reference =
        reference.map_err(|_| anyhow::anyhow!("reading {} failed", args.reference.display()))??;
    let report = score_tables(&pred, &reference, flavor, &tokenize, how, policy)?;
    let deleted = report.deleted_by_default_tokenizer;
    if deleted > 0 {
        eprintln!(
            "warning: rouge_score's default tokenizer deletes every character outside [a-z0-9] \
             (Hangul included) in {deleted} texts; they are scored on what is left \
             (#PersonN#, digits, Latin words). Use --tokenize mecab or whitespace for Korean."
        );
    }
    for w in &report.empty_warnings {
        eprintln!("warning: {w}");
    }
    let (items, total) = (&report.items, &report.total);

    if let Some(path) = &args.per_item {
        dsum_core::io::atomic::write_atomic(path, &per_item_csv(items, flavor)?)?;
    }
    if args.json {
        let mut out = metrics_json(total);
        out["final_score"] = json!(rouge::final_score(total));
        out["sum_score"] = json!(rouge::sum_score(total));
        out["count"] = json!(items.len());
        out["empty"] = json!(report.empty_predictions.len() + report.empty_references.len());
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
        print_report(&args, flavor, total, items, report.has_topic);
    }
    Ok(())
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
