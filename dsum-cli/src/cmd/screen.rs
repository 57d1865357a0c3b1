//! `dsum-cli screen`: compare several models zero-shot on a dev CSV
//! (`fname,dialogue,summary`): each summarizes the same dialogues with the same prompt and
//! settings, and is scored with the competition's ROUGE (pltrdy `rouge` on Mecab-ko
//! morphemes when a dictionary is available). The right way — chat template, Korean
//! prompt, blocked foreign scripts — is the default way.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use argh::FromArgs;
use dsum_core::io::csv::Table;
use dsum_core::rouge::{final_score, mean, sum_score, Flavor, Scorer, Scores, Tokenize};
use serde_json::json;

use super::common::{
    apply_allow_scripts, generation_config, load_model, progress, prompt_builder, set_threads,
};
use super::gen_flags::with_generation_flags;
use super::summarize::Summarizer;

with_generation_flags! {
    /// screen models zero-shot: summarize a dev CSV with each and rank them by ROUGE
    #[derive(FromArgs)]
    #[argh(subcommand, name = "screen")]
    pub struct ScreenArgs {
        /// model folders or Hub repo ids (`org/name[@revision]`), comma separated
        #[argh(option)]
        pub models: String,
        /// dev CSV with fname, dialogue and summary columns
        #[argh(option)]
        pub input: PathBuf,
        /// use the first N rows (default 50)
        #[argh(option, default = "50")]
        pub limit: usize,
        /// dialogues per generate call (default 4)
        #[argh(option, default = "4")]
        pub batch_size: usize,
        /// compiled mecab-ko-dic folder for morpheme ROUGE (default: $DSUM_MECAB_DIC or a system install)
        #[argh(option)]
        pub mecab_dic: Option<PathBuf>,
        /// write the report (scores and every prediction) as JSON, atomically
        #[argh(option)]
        pub output: Option<PathBuf>,
        /// worker threads (default: all cores)
        #[argh(option)]
        pub threads: Option<usize>,
        /// no progress bar
        #[argh(switch)]
        pub quiet: bool,
    }
}

pub fn run(args: ScreenArgs) -> Result<()> {
    anyhow::ensure!(
        args.batch_size > 0 && args.limit > 0,
        "--batch-size and --limit must be at least 1"
    );
    set_threads(args.threads)?;
    let kwargs = args.generation_kwargs()?;
    let table = Table::read(&args.input)?;
    let (fi, di, si) = (
        table.column("fname")?,
        table.column("dialogue")?,
        table.column("summary")?,
    );
    let rows: Vec<_> = table.rows().take(args.limit).collect();
    anyhow::ensure!(!rows.is_empty(), "{}: no rows", args.input.display());

    let (tokenize, tok_name) = match dsum_core::mecab::locate_dictionary(args.mecab_dic.as_deref())
    {
        Ok(dir) => {
            let m = dsum_core::mecab::Mecab::load(&dir)?;
            (Tokenize::custom(move |t| m.morphs(t)), "mecab")
        }
        Err(e) if args.mecab_dic.is_some() => return Err(e.into()),
        Err(_) => {
            eprintln!("warning: no mecab-ko dictionary found; scoring on whitespace tokens (pass --mecab-dic for the competition's metric)");
            (Tokenize::Whitespace, "whitespace")
        }
    };

    let pflags = args.prompt_flags();
    let mut report = Vec::new();
    for dir in args
        .models
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let dir = PathBuf::from(dir);
        let model = load_model(&dir)?;
        let (mut gen, user_max) = generation_config(&model, &kwargs)?;
        apply_allow_scripts(&model, &mut gen, &pflags, args.quiet)?;
        let mut sm = Summarizer {
            model: &model,
            gen,
            user_max,
            prompts: prompt_builder(&model, &pflags)?,
            remove: ["<usr>", "<s>", "</s>", "<pad>"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            max_in: 512.min(model.max_input_tokens()),
            truncated: 0,
            generated: 0,
        };
        let pb = progress(rows.len() as u64, args.quiet, &format!("{}", dir.display()));
        let start = Instant::now();
        let mut preds = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(args.batch_size) {
            let texts: Vec<&str> = chunk.iter().map(|r| r.get(di)).collect();
            preds.extend(
                sm.summarize(&texts)
                    .with_context(|| format!("screening {}", dir.display()))?,
            );
            pb.inc(chunk.len() as u64);
        }
        pb.finish_and_clear();
        let secs = start.elapsed().as_secs_f64();
        let mut scorer = Scorer::new(Flavor::Rouge, tokenize.clone());
        let scores: Vec<Scores> = rows
            .iter()
            .zip(&preds)
            .map(|(r, p)| {
                scorer
                    .score(p, r.get(si))
                    .unwrap_or_else(|_| Scores::zero(Flavor::Rouge))
            })
            .collect();
        let total = mean(&scores).unwrap_or_else(|| Scores::zero(Flavor::Rouge));
        report.push(json!({
            "model": dir.display().to_string(),
            "rows": rows.len(),
            "rouge-1": total.rouge1.f, "rouge-2": total.rouge2.f, "rouge-l": total.rouge_l.f,
            "final_score": final_score(&total), "sum": sum_score(&total),
            "seconds": secs, "tokens_per_second": sm.generated as f64 / secs.max(1e-9),
            "empty_predictions": preds.iter().filter(|p| p.trim().is_empty()).count(),
            "predictions": rows.iter().zip(&preds).map(|(r, p)| json!({"fname": r.get(fi), "summary": p})).collect::<Vec<_>>(),
        }));
    }
    report.sort_by(|a, b| {
        b["final_score"]
            .as_f64()
            .partial_cmp(&a["final_score"].as_f64())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    println!(
        "ROUGE F1 x100 (pltrdy rouge on {tok_name} tokens), {} rows, best first:",
        rows.len()
    );
    println!(
        "{:<40} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8} {:>6}",
        "model", "R-1", "R-2", "R-L", "final", "sum", "tok/s", "empty"
    );
    for r in &report {
        let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
        println!(
            "{:<40} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>8.1} {:>6}",
            r["model"].as_str().unwrap_or(""),
            f("rouge-1") * 100.0,
            f("rouge-2") * 100.0,
            f("rouge-l") * 100.0,
            f("final_score"),
            f("sum"),
            f("tokens_per_second"),
            r["empty_predictions"]
        );
    }
    if let Some(out) = &args.output {
        let text =
            serde_json::to_string_pretty(&json!({ "tokenize": tok_name, "models": report }))?;
        dsum_core::io::atomic::write_atomic(out, text.as_bytes())?;
    }
    Ok(())
}
