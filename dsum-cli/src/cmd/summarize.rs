//! `dsum-cli summarize`: a competition CSV (`fname,dialogue[,summary,topic]`) in, a
//! submission CSV (`fname,summary`) out. Rows are written to `OUT.partial` as batches
//! finish and renamed into place at the end, so Ctrl-C keeps the work done and `--resume`
//! continues it; the output file itself is never half-written.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use anyhow::{bail, Context, Result};
use argh::FromArgs;
use dsum_core::generation::GenerationConfig;
use dsum_core::io::atomic::{commit, temp_path};
use dsum_core::io::csv::Table;
use dsum_core::models::LoadedModel;
use dsum_core::prompt::{clean_answer, PromptBuilder};

use super::common::{
    apply_allow_scripts, generation_config, interrupt_flag, load_model_with_adapter, progress,
    prompt_builder, set_threads,
};
use super::gen_flags::with_generation_flags;

with_generation_flags! {
    /// summarize the dialogues of a competition CSV into a submission CSV
    #[derive(FromArgs)]
    #[argh(subcommand, name = "summarize")]
    pub struct SummarizeArgs {
        /// model folder (config.json, tokenizer.json, safetensors or pytorch_model.bin weights),
        /// or Hub repo id `org/name[@revision]` (Hugging Face cache, downloaded if missing)
        #[argh(option)]
        pub model: PathBuf,
        /// a PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors),
        /// merged into the model's weights at load
        #[argh(option)]
        pub adapter: Option<PathBuf>,
        /// input CSV with columns fname and dialogue
        #[argh(option)]
        pub input: PathBuf,
        /// output CSV (fname,summary), written atomically; `-` prints it to stdout
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
    let table = Table::read(path)?;
    let (fi, di) = (table.column("fname")?, table.column("dialogue")?);
    table.check_unique(fi)?;
    let shown = path.display();
    let mut out = Vec::with_capacity(table.len());
    for row in table.rows() {
        let (fname, dialogue) = (row.get(fi), row.get(di));
        if fname.is_empty() {
            bail!("{shown}: line {}: empty fname", row.line());
        }
        if dialogue.trim().is_empty() {
            bail!(
                "{shown}: line {}: the dialogue of `{fname}` is empty",
                row.line()
            );
        }
        out.push(Dialogue {
            fname: fname.into(),
            dialogue: dialogue.into(),
        });
    }
    if out.is_empty() {
        bail!("{shown}: no rows");
    }
    Ok(out)
}

/// Turns dialogues into summaries with one model and one set of settings: BART takes the
/// dialogue (truncated to the encoder limit), a causal LM takes the rendered chat prompt.
pub struct Summarizer<'a> {
    pub model: &'a LoadedModel,
    pub gen: GenerationConfig,
    pub user_max: bool,
    pub prompts: Option<PromptBuilder>,
    pub remove: Vec<String>,
    pub max_in: usize,
    /// Dialogues cut to `max_in` tokens so far.
    pub truncated: usize,
    /// Tokens generated so far (new tokens of the best hypotheses).
    pub generated: usize,
}

impl Summarizer<'_> {
    pub fn summarize(&mut self, dialogues: &[&str]) -> Result<Vec<String>> {
        let mut ids = Vec::with_capacity(dialogues.len());
        for d in dialogues {
            if let Some(p) = &self.prompts {
                // The rendered chat prompt already holds its special tokens.
                ids.push(self.model.tokenizer.encode_plain(&p.render_dialogue(d)?)?);
                continue;
            }
            if self.model.tokenizer.encode(d, None)?.len() > self.max_in {
                self.truncated += 1;
            }
            ids.push(self.model.tokenizer.encode(d, Some(self.max_in))?);
        }
        let hyps = self.model.generate(&ids, &self.gen, self.user_max)?;
        let remove: Vec<&str> = self.remove.iter().map(String::as_str).collect();
        let mut out = Vec::with_capacity(hyps.len());
        for h in &hyps {
            let best = h.first().map(|h| h.tokens.as_slice()).unwrap_or(&[]);
            self.generated += best.len();
            out.push(if self.prompts.is_some() {
                clean_answer(&self.model.tokenizer.decode(best, true)?)
            } else {
                clean_summary(&self.model.tokenizer.decode(best, false)?, &remove)
            });
        }
        Ok(out)
    }
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

/// fnames already written by an interrupted run, and the byte length of `partial` up to
/// its last complete row. A run killed mid-write (SIGKILL, power loss) can leave half a row
/// at the end; it is cut off and summarized again instead of being taken as done.
fn done_rows(partial: &Path) -> Result<(HashSet<String>, u64)> {
    let bytes =
        std::fs::read(partial).with_context(|| format!("cannot read {}", partial.display()))?;
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes.as_slice());
    let (mut done, mut keep, mut header) = (HashSet::new(), 0u64, true);
    let mut rec = csv::ByteRecord::new();
    let malformed = || {
        format!(
            "{}: malformed row; delete it to start over",
            partial.display()
        )
    };
    while rdr.read_byte_record(&mut rec).with_context(malformed)? {
        let end = rdr.position().byte();
        if end == 0 || bytes.get(end as usize - 1) != Some(&b'\n') {
            break; // the last row was cut short
        }
        anyhow::ensure!(rec.len() == 2, malformed());
        if header {
            anyhow::ensure!(&rec[0] == b"fname", malformed());
            header = false;
        } else {
            let fname = std::str::from_utf8(&rec[0]).with_context(malformed)?;
            done.insert(fname.to_string());
        }
        keep = end;
    }
    Ok((done, keep))
}

pub fn run(args: SummarizeArgs) -> Result<()> {
    anyhow::ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    set_threads(args.threads)?;
    let load_opts = args.load_options()?;
    let kwargs = args.generation_kwargs()?;
    let rows = read_dialogues(&args.input)?;
    let model = load_model_with_adapter(&args.model, args.adapter.as_deref(), load_opts)?;
    let (mut gen, user_max) = generation_config(&model, &kwargs)?;
    let pflags = args.prompt_flags();
    apply_allow_scripts(&model, &mut gen, &pflags, args.quiet)?;
    let max_in = args.encoder_max_length.min(model.max_input_tokens());
    anyhow::ensure!(max_in > 0, "--encoder-max-length must be at least 1");
    let mut sm = Summarizer {
        model: &model,
        gen,
        user_max,
        prompts: prompt_builder(&model, &pflags)?,
        remove: args
            .remove_tokens
            .split(',')
            .map(|s| s.trim().to_string())
            .collect(),
        max_in,
        truncated: 0,
        generated: 0,
    };

    // `--output -` streams the CSV to stdout (no resume); a file goes through OUT.partial.
    let to_stdout = args.output.as_os_str() == "-";
    let partial = temp_path(&args.output);
    let (done, keep) = if args.resume && !to_stdout && partial.is_file() {
        done_rows(&partial)?
    } else {
        (HashSet::new(), 0)
    };
    let todo: Vec<&Dialogue> = rows.iter().filter(|r| !done.contains(&r.fname)).collect();
    if !done.is_empty() {
        eprintln!(
            "resuming: {} rows already in {}, {} to go",
            done.len(),
            partial.display(),
            todo.len()
        );
    }
    let (sink, file): (Box<dyn std::io::Write>, Option<std::fs::File>) = if to_stdout {
        (Box::new(std::io::stdout()), None)
    } else {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(done.is_empty())
            .open(&partial)
            .with_context(|| format!("cannot write {}", partial.display()))?;
        if !done.is_empty() {
            // Drop a half-written last row, then append after the complete ones.
            use std::io::Seek;
            f.set_len(keep)
                .and_then(|_| f.seek(std::io::SeekFrom::End(0)))
                .with_context(|| format!("cannot write {}", partial.display()))?;
        }
        (Box::new(f.try_clone()?), Some(f))
    };
    let mut w = csv::Writer::from_writer(sink);
    if done.is_empty() {
        w.write_record(["fname", "summary"])?;
    }

    let stop = interrupt_flag();
    let pb = progress(todo.len() as u64, args.quiet, "summarize");
    for (i, chunk) in todo.chunks(args.batch_size).enumerate() {
        let texts: Vec<&str> = chunk.iter().map(|r| r.dialogue.as_str()).collect();
        let summaries = sm.summarize(&texts).with_context(|| {
            let names: Vec<&str> = chunk.iter().map(|r| r.fname.as_str()).collect();
            format!("generating for {}", names.join(", "))
        });
        let summaries = match summaries {
            Ok(s) => s,
            Err(e) if i == 0 && done.is_empty() && file.is_some() => {
                // Nothing summarized yet: leave no partial file behind.
                drop(w);
                let _ = std::fs::remove_file(&partial);
                return Err(e);
            }
            Err(e) => {
                return Err(e.context(format!(
                    "finished rows are kept in {}; rerun with --resume to continue",
                    partial.display()
                )))
            }
        };
        for (r, summary) in chunk.iter().zip(&summaries) {
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
    if sm.truncated > 0 {
        eprintln!(
            "warning: {} dialogue(s) longer than {max_in} tokens were truncated",
            sm.truncated
        );
    }
    w.flush()
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    drop(w);
    let Some(file) = file else { return Ok(()) };
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
