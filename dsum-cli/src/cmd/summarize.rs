//! `dsum-cli summarize`: a competition CSV (`fname,dialogue[,summary,topic]`) in, a
//! submission CSV (`fname,summary`) out. Rows are written to `OUT.partial` as batches
//! finish and renamed into place at the end, so Ctrl-C keeps the work done and `--resume`
//! continues it; the output file itself is never half-written.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use anyhow::{bail, Context, Result};
use argh::FromArgs;
use dsum_core::io::atomic::{commit, temp_path};

use super::common::{
    apply_allow_scripts, generation_config, interrupt_flag, load_model, progress, prompt_builder,
    set_threads,
};
use super::gen_flags::with_generation_flags;
use dsum_core::prompt::clean_answer;

with_generation_flags! {
    /// summarize the dialogues of a competition CSV into a submission CSV
    #[derive(FromArgs)]
    #[argh(subcommand, name = "summarize")]
    pub struct SummarizeArgs {
        /// model folder (config.json, tokenizer.json, safetensors weights)
        #[argh(option)]
        pub model: PathBuf,
        /// input CSV with columns fname and dialogue
        #[argh(option)]
        pub input: PathBuf,
        /// output CSV (fname,summary), written atomically
        #[argh(option)]
        pub output: PathBuf,
        /// dialogues per generate call (default 8)
        #[argh(option, default = "8")]
        pub batch_size: usize,
        /// encoder input length limit in tokens; longer dialogues are truncated (default 512)
        #[argh(option, default = "512")]
        pub encoder_max_length: usize,
        /// strings removed from the decoded summaries (default "<usr>,<s>,</s>,<pad>")
        #[argh(option, default = "String::from(\"<usr>,<s>,</s>,<pad>\")")]
        pub remove_tokens: String,
        /// continue an interrupted run from OUT.partial
        #[argh(switch)]
        pub resume: bool,
        /// worker threads (default: all cores)
        #[argh(option)]
        pub threads: Option<usize>,
        /// no progress bar
        #[argh(switch)]
        pub quiet: bool,
    }
}

pub struct Dialogue {
    pub fname: String,
    pub dialogue: String,
}

/// Read `fname` and `dialogue` from a competition CSV, with errors that name the row.
pub fn read_dialogues(path: &Path) -> Result<Vec<Dialogue>> {
    let shown = path.display();
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(false)
        .from_path(path)
        .with_context(|| format!("cannot open {shown}"))?;
    let headers = rdr
        .headers()
        .with_context(|| format!("{shown}: cannot read the header row"))?
        .clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim_start_matches('\u{feff}') == name)
    };
    let (Some(fi), Some(di)) = (col("fname"), col("dialogue")) else {
        bail!(
            "{shown}: needs columns `fname` and `dialogue`; found {:?}",
            headers.iter().collect::<Vec<_>>()
        );
    };
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec.with_context(|| format!("{shown}: record {} is malformed", i + 1))?;
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        let fname = rec.get(fi).unwrap_or("").to_string();
        let dialogue = rec.get(di).unwrap_or("").to_string();
        if fname.is_empty() {
            bail!("{shown}: line {line}: empty fname");
        }
        if dialogue.trim().is_empty() {
            bail!("{shown}: line {line}: the dialogue of `{fname}` is empty");
        }
        if !seen.insert(fname.clone()) {
            bail!("{shown}: line {line}: fname `{fname}` appears twice");
        }
        out.push(Dialogue { fname, dialogue });
    }
    if out.is_empty() {
        bail!("{shown}: no rows");
    }
    Ok(out)
}

/// The competition's cleanup: drop the listed special-token strings, trim spaces.
pub fn clean_summary(text: &str, remove: &[&str]) -> String {
    let mut s = text.to_string();
    for r in remove {
        if !r.is_empty() {
            s = s.replace(r, "");
        }
    }
    s.trim().to_string()
}

/// fnames already written by an interrupted run.
fn done_rows(partial: &Path) -> Result<HashSet<String>> {
    let mut rdr = csv::Reader::from_path(partial)
        .with_context(|| format!("cannot read {}", partial.display()))?;
    let mut done = HashSet::new();
    for rec in rdr.records() {
        let rec = rec.with_context(|| {
            format!(
                "{}: malformed row; delete it to start over",
                partial.display()
            )
        })?;
        if let Some(f) = rec.get(0) {
            done.insert(f.to_string());
        }
    }
    Ok(done)
}

pub fn run(args: SummarizeArgs) -> Result<()> {
    anyhow::ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    set_threads(args.threads)?;
    let kwargs = args.generation_kwargs()?;
    let rows = read_dialogues(&args.input)?;
    let model = load_model(&args.model)?;
    let (mut gen, user_max) = generation_config(&model, &kwargs)?;
    let pflags = args.prompt_flags();
    apply_allow_scripts(&model, &mut gen, &pflags, args.quiet)?;
    let prompts = prompt_builder(&model, &pflags)?;
    let remove: Vec<&str> = args.remove_tokens.split(',').map(|s| s.trim()).collect();
    let max_in = args.encoder_max_length.min(model.max_input_tokens());
    anyhow::ensure!(max_in > 0, "--encoder-max-length must be at least 1");

    let partial = temp_path(&args.output);
    let done = if args.resume && partial.is_file() {
        done_rows(&partial)?
    } else {
        HashSet::new()
    };
    let todo: Vec<&Dialogue> = rows.iter().filter(|r| !done.contains(&r.fname)).collect();
    if args.resume && !done.is_empty() {
        eprintln!(
            "resuming: {} rows already in {}, {} to go",
            done.len(),
            partial.display(),
            todo.len()
        );
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(!done.is_empty())
        .truncate(done.is_empty())
        .open(&partial)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    let mut w = csv::Writer::from_writer(file);
    if done.is_empty() {
        w.write_record(["fname", "summary"])?;
    }

    let stop = interrupt_flag();
    let pb = progress(todo.len() as u64, args.quiet, "summarize");
    let mut truncated = 0usize;
    for chunk in todo.chunks(args.batch_size) {
        let mut ids = Vec::with_capacity(chunk.len());
        for r in chunk {
            if let Some(p) = &prompts {
                // Causal LM: the rendered chat prompt already holds its special tokens.
                let text = p.render_dialogue(&r.dialogue)?;
                ids.push(model.tokenizer.encode_plain(&text)?);
                continue;
            }
            let full = model.tokenizer.encode(&r.dialogue, None)?;
            if full.len() > max_in {
                truncated += 1;
            }
            ids.push(model.tokenizer.encode(&r.dialogue, Some(max_in))?);
        }
        let hyps = model.generate(&ids, &gen, user_max).with_context(|| {
            format!(
                "generating for {}",
                chunk
                    .iter()
                    .map(|r| r.fname.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        for (r, h) in chunk.iter().zip(&hyps) {
            let best = h.first().map(|h| h.tokens.as_slice()).unwrap_or(&[]);
            let summary = if prompts.is_some() {
                clean_answer(&model.tokenizer.decode(best, true)?)
            } else {
                clean_summary(&model.tokenizer.decode(best, false)?, &remove)
            };
            w.write_record([r.fname.as_str(), summary.as_str()])?;
        }
        w.flush()
            .with_context(|| format!("cannot write {}", partial.display()))?;
        pb.inc(chunk.len() as u64);
        if stop.load(Ordering::SeqCst) {
            pb.abandon();
            eprintln!(
                "stopped: {} rows saved in {}; rerun with --resume to continue",
                pb.position() as usize + done.len(),
                partial.display()
            );
            std::process::exit(130);
        }
    }
    pb.finish_and_clear();
    if truncated > 0 {
        eprintln!("warning: {truncated} dialogue(s) longer than {max_in} tokens were truncated");
    }
    let file = w
        .into_inner()
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", partial.display()))?;
    file.sync_all()
        .with_context(|| format!("cannot write {}", partial.display()))?;
    commit(&partial, &args.output)?;
    if !args.quiet {
        eprintln!(
            "wrote {} summaries to {}",
            rows.len(),
            args.output.display()
        );
    }
    Ok(())
}
