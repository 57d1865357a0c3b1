//! `dsum-cli screen`: compare several models zero-shot on a dev CSV
//! (`fname,dialogue,summary`): each summarizes the same dialogues with its own chat template
//! and the same prompt and settings, and is scored with the competition's ROUGE (pltrdy
//! `rouge` on Mecab-ko morphemes when a dictionary is available). Models load one at a time;
//! one that fails gets a row saying why and the screen goes on. The right way — chat
//! template, Korean prompt, blocked foreign scripts — is the default way.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use argh::FromArgs;
use dsum_core::io::atomic::write_atomic;
use dsum_core::io::csv::Table;
use dsum_core::rouge::{final_score, mean, sum_score, Flavor, Scorer, Scores, Tokenize};
use serde::Deserialize;
use serde_json::{json, Value};

use super::common::{
    apply_allow_scripts, generation_config, load_model, parse_device, progress, prompt_builder,
    set_threads,
};
use super::gen_flags::{with_generation_flags, PromptFlags};
use super::summarize::Summarizer;
use dsum_core::models::LoadOptions;

with_generation_flags! {
    /// screen models zero-shot: summarize a dev CSV with each and rank them by ROUGE
    #[derive(FromArgs)]
    #[argh(subcommand, name = "screen")]
    pub struct ScreenArgs {
        /// a TOML screen config (see configs/screen.toml); flags given here override it
        #[argh(option)]
        pub config: Option<PathBuf>,
        /// model folders, .gguf files or Hub repo ids (`org/name[@revision]`), comma separated (added to the config's models)
        #[argh(option)]
        pub models: Option<String>,
        /// dev CSV with fname, dialogue and summary columns
        #[argh(option)]
        pub input: Option<PathBuf>,
        /// use the first N rows (default 50)
        #[argh(option)]
        pub limit: Option<usize>,
        /// dialogues per generate call (default 4)
        #[argh(option)]
        pub batch_size: Option<usize>,
        /// compiled mecab-ko-dic folder for morpheme ROUGE (default: $DSUM_MECAB_DIC or a system install)
        #[argh(option)]
        pub mecab_dic: Option<PathBuf>,
        /// folder for results.md, results.csv, results.json and predictions/<model>.csv
        #[argh(option)]
        pub output_dir: Option<PathBuf>,
        /// worker threads (default: all cores)
        #[argh(option)]
        pub threads: Option<usize>,
        /// no progress bar
        #[argh(switch)]
        pub quiet: bool,
    }
}

/// `configs/screen.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScreenConfig {
    input: Option<PathBuf>,
    limit: Option<usize>,
    batch_size: Option<usize>,
    mecab_dic: Option<PathBuf>,
    output_dir: Option<PathBuf>,
    /// transformers `generate` kwargs shared by every model
    #[serde(default)]
    generation: toml::Table,
    allow_scripts: Option<String>,
    prompt_preset: Option<String>,
    system_prompt: Option<String>,
    prompt_template: Option<String>,
    /// where every model runs unless its entry says otherwise: cpu, cuda or cuda:N
    device: Option<String>,
    #[serde(default)]
    models: Vec<ModelEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelEntry {
    name: Option<String>,
    path: PathBuf,
    /// per-model `generate` kwargs, over the shared ones
    #[serde(default)]
    generation: toml::Table,
    /// chat-template variables, e.g. `{ enable_thinking = false }` for Qwen3
    template_kwargs: Option<toml::Table>,
    /// where this model runs: cpu, cuda or cuda:N (`--device` overrides it)
    device: Option<String>,
}

fn toml_to_json(t: &toml::Table) -> Result<Value> {
    Ok(serde_json::to_value(t)?)
}

/// Peak resident memory of this process since the last reset, in bytes (Linux).
fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|kb| kb * 1024)
}

fn reset_peak_rss() {
    // Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

pub fn run(args: ScreenArgs) -> Result<()> {
    set_threads(args.threads)?;
    // A bad --device fails at once; a bad per-model device fails that model's row only.
    let base_opts = args.load_options()?;
    let cfg: ScreenConfig = match &args.config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            toml::from_str(&text)
                .with_context(|| format!("{}: invalid screen config", p.display()))?
        }
        None => ScreenConfig::default(),
    };
    // Relative paths in the config are relative to the config file.
    let base = args
        .config
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let rel = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    let mut models: Vec<ModelEntry> = cfg
        .models
        .into_iter()
        .map(|m| ModelEntry {
            path: rel(&m.path),
            ..m
        })
        .collect();
    for p in args
        .models
        .iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        models.push(ModelEntry {
            name: None,
            path: p.into(),
            generation: toml::Table::new(),
            template_kwargs: None,
            device: None,
        });
    }
    if models.is_empty() {
        bail!("no models to screen: give --models or a config with [[models]]");
    }
    let input = args
        .input
        .clone()
        .or(cfg.input.as_deref().map(rel))
        .context("no dev CSV: give --input or `input` in the config")?;
    let limit = args.limit.or(cfg.limit).unwrap_or(50);
    let batch_size = args.batch_size.or(cfg.batch_size).unwrap_or(4);
    anyhow::ensure!(
        batch_size > 0 && limit > 0,
        "batch_size and limit must be at least 1"
    );
    let output_dir = args
        .output_dir
        .clone()
        .or(cfg.output_dir.as_deref().map(rel));

    let table = Table::read(&input)?;
    let (fi, di, si) = (
        table.column("fname")?,
        table.column("dialogue")?,
        table.column("summary")?,
    );
    let rows: Vec<_> = table.rows().take(limit).collect();
    anyhow::ensure!(!rows.is_empty(), "{}: no rows", input.display());

    let mecab_dic = args.mecab_dic.clone().or(cfg.mecab_dic.as_deref().map(rel));
    let (tokenize, tok_name) = match dsum_core::mecab::locate_dictionary(mecab_dic.as_deref()) {
        Ok(dir) => {
            let m = dsum_core::mecab::Mecab::load(&dir)?;
            (Tokenize::custom(move |t| m.morphs(t)), "mecab")
        }
        Err(e) if mecab_dic.is_some() => return Err(e.into()),
        Err(_) => {
            eprintln!("warning: no mecab-ko dictionary found; scoring on whitespace tokens (pass --mecab-dic for the competition's metric)");
            (Tokenize::Whitespace, "whitespace")
        }
    };

    // Shared settings: config first, flags over it.
    let mut shared = toml_to_json(&cfg.generation)?;
    if let (Value::Object(m), Value::Object(f)) = (&mut shared, args.generation_kwargs()?) {
        m.extend(f);
    }
    let flags = args.prompt_flags();
    let allow = flags.allow_scripts.map(String::from).or(cfg.allow_scripts);
    let preset = flags.prompt_preset.map(String::from).or(cfg.prompt_preset);
    let system = flags.system_prompt.map(String::from).or(cfg.system_prompt);
    let template = flags
        .prompt_template
        .map(String::from)
        .or(cfg.prompt_template);

    let mut report: Vec<Value> = Vec::new();
    let mut predictions: Vec<(String, Vec<String>)> = Vec::new();
    for entry in &models {
        let name = entry
            .name
            .clone()
            .unwrap_or_else(|| entry.path.display().to_string());
        let mut kwargs = shared.clone();
        if let (Value::Object(m), Value::Object(o)) =
            (&mut kwargs, toml_to_json(&entry.generation)?)
        {
            m.extend(o);
        }
        let tkw = entry
            .template_kwargs
            .as_ref()
            .map(toml_to_json)
            .transpose()?
            .map(|v| v.to_string());
        let pflags = PromptFlags {
            allow_scripts: allow.as_deref(),
            prompt_preset: preset.as_deref(),
            system_prompt: system.as_deref(),
            prompt_template: template.as_deref(),
            no_chat_template: flags.no_chat_template,
            template_kwargs: tkw.as_deref().or(flags.template_kwargs),
        };
        // Flags over the config: --device, then the model's own device, then the shared one.
        let device = args
            .device
            .as_deref()
            .or(entry.device.as_deref())
            .or(cfg.device.as_deref());
        reset_peak_rss();
        let opts = parse_device(device).map(|device| LoadOptions {
            device,
            ..base_opts
        });
        let run = opts.and_then(|opts| {
            screen_one(
                &entry.path,
                &kwargs,
                &pflags,
                &rows,
                di,
                batch_size,
                args.quiet,
                opts,
            )
        });
        let peak = peak_rss();
        match run {
            Ok((preds, params, secs, generated)) => {
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
                    "model": name, "path": entry.path.display().to_string(), "parameters": params, "rows": rows.len(),
                    "rouge-1": total.rouge1.f, "rouge-2": total.rouge2.f, "rouge-l": total.rouge_l.f,
                    "final_score": final_score(&total), "sum": sum_score(&total),
                    "seconds": secs, "tokens_per_second": generated as f64 / secs.max(1e-9),
                    "peak_memory_bytes": peak,
                    "empty_predictions": preds.iter().filter(|p| p.trim().is_empty()).count(),
                    "error": null,
                    "predictions": rows.iter().zip(&preds).map(|(r, p)| json!({"fname": r.get(fi), "summary": p})).collect::<Vec<_>>(),
                }));
                predictions.push((name, preds));
            }
            Err(e) => {
                eprintln!("error: {name}: {e:#}");
                report.push(json!({"model": name, "path": entry.path.display().to_string(), "error": format!("{e:#}")}));
            }
        }
    }
    report.sort_by(|a, b| {
        let s = |v: &Value| v["final_score"].as_f64().unwrap_or(f64::NEG_INFINITY);
        s(b).partial_cmp(&s(a)).unwrap_or(std::cmp::Ordering::Equal)
    });
    let md = markdown(&report, rows.len(), tok_name);
    print!("{md}");
    if let Some(dir) = output_dir {
        std::fs::create_dir_all(dir.join("predictions"))
            .with_context(|| format!("cannot create {}", dir.display()))?;
        write_atomic(&dir.join("results.md"), md.as_bytes())?;
        write_atomic(&dir.join("results.csv"), &results_csv(&report)?)?;
        let j = serde_json::to_string_pretty(
            &json!({ "input": input.display().to_string(), "tokenize": tok_name, "models": report }),
        )?;
        write_atomic(&dir.join("results.json"), j.as_bytes())?;
        for (name, preds) in &predictions {
            let mut w = csv::Writer::from_writer(Vec::new());
            w.write_record(["fname", "summary"])?;
            for (r, p) in rows.iter().zip(preds) {
                w.write_record([r.get(fi), p.as_str()])?;
            }
            let file: String = name
                .chars()
                .map(|c| {
                    if c.is_alphanumeric() || "-_.".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            write_atomic(
                &dir.join("predictions").join(format!("{file}.csv")),
                &w.into_inner()?,
            )?;
        }
    }
    if report.iter().all(|r| !r["error"].is_null()) {
        bail!("every model failed");
    }
    Ok(())
}

/// Summarize `rows` with one model: predictions, parameters, seconds, generated tokens.
#[allow(clippy::too_many_arguments)]
fn screen_one(
    path: &Path,
    kwargs: &Value,
    pflags: &PromptFlags,
    rows: &[dsum_core::io::csv::Row],
    di: usize,
    batch_size: usize,
    quiet: bool,
    opts: LoadOptions,
) -> Result<(Vec<String>, usize, f64, usize)> {
    let model = load_model(path, opts)?;
    let (mut gen, user_max) = generation_config(&model, kwargs)?;
    apply_allow_scripts(&model, &mut gen, pflags, quiet)?;
    let mut sm = Summarizer {
        model: &model,
        gen,
        user_max,
        prompts: prompt_builder(&model, pflags)?,
        remove: ["<usr>", "<s>", "</s>", "<pad>"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        max_in: 512.min(model.max_input_tokens()),
        truncated: 0,
        generated: 0,
    };
    let pb = progress(rows.len() as u64, quiet, &path.display().to_string());
    let start = Instant::now();
    let mut preds = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(batch_size) {
        let texts: Vec<&str> = chunk.iter().map(|r| r.get(di)).collect();
        preds.extend(sm.summarize(&texts)?);
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    Ok((
        preds,
        model.num_parameters(),
        start.elapsed().as_secs_f64(),
        sm.generated,
    ))
}

fn markdown(report: &[Value], rows: usize, tok: &str) -> String {
    let mut s =
        format!("ROUGE F1 x100 (pltrdy rouge on {tok} tokens), {rows} rows, best first:\n\n");
    s +=
        "| model | params | R-1 | R-2 | R-L | final | sum | seconds | tok/s | peak MiB | empty |\n";
    s += "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for r in report {
        let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
        if let Some(e) = r["error"].as_str() {
            s += &format!(
                "| {} | failed: {} | | | | | | | | | |\n",
                r["model"].as_str().unwrap_or(""),
                e.replace('|', "/")
            );
            continue;
        }
        s += &format!(
            "| {} | {:.1}M | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} | {} | {} |\n",
            r["model"].as_str().unwrap_or(""),
            f("parameters") / 1e6,
            f("rouge-1") * 100.0,
            f("rouge-2") * 100.0,
            f("rouge-l") * 100.0,
            f("final_score"),
            f("sum"),
            f("seconds"),
            f("tokens_per_second"),
            r["peak_memory_bytes"]
                .as_u64()
                .map(|b| (b >> 20).to_string())
                .unwrap_or_else(|| "?".into()),
            r["empty_predictions"],
        );
    }
    s
}

fn results_csv(report: &[Value]) -> Result<Vec<u8>> {
    let cols = [
        "model",
        "parameters",
        "rows",
        "rouge-1",
        "rouge-2",
        "rouge-l",
        "final_score",
        "sum",
        "seconds",
        "tokens_per_second",
        "peak_memory_bytes",
        "empty_predictions",
        "error",
    ];
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(cols)?;
    for r in report {
        w.write_record(cols.iter().map(|c| match &r[*c] {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            v => v.to_string(),
        }))?;
    }
    Ok(w.into_inner()?)
}
