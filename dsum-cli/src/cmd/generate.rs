//! `dsum-cli generate`: the research / parity interface. Each input line is
//! `{"text": ...}` or `{"input_ids": [...]}`; each output line repeats it and adds
//! `input_ids`, `sequences` (exactly what transformers' `generate` returns for the row,
//! without pad tail), `texts` and, for beam search, `sequence_scores`.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use anyhow::{bail, Context, Result};
use argh::FromArgs;
use dsum_core::io::atomic::{commit, temp_path};
use serde_json::{json, Value};

use super::common::{
    apply_allow_scripts, generation_config, interrupt_flag, load_model_with_adapter, progress,
    prompt_builder, set_threads,
};
use super::gen_flags::with_generation_flags;
use dsum_core::chat::Message;

with_generation_flags! {
    /// generate token ids for JSONL inputs (text or input_ids), transformers-compatible output
    #[derive(FromArgs)]
    #[argh(subcommand, name = "generate")]
    pub struct GenerateArgs {
        /// model folder, or Hub repo id `org/name[@revision]` (Hugging Face cache)
        #[argh(option)]
        pub model: PathBuf,
        /// a PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors),
        /// merged into the model's weights at load
        #[argh(option)]
        pub adapter: Option<PathBuf>,
        /// input JSONL: one {"text": ...} or {"input_ids": [...]} per line
        #[argh(option)]
        pub input: PathBuf,
        /// output JSONL, written atomically
        #[argh(option)]
        pub output: PathBuf,
        /// inputs per generate call (default 1)
        #[argh(option, default = "1")]
        pub batch_size: usize,
        /// truncate text inputs to this many tokens (default: the model's limit)
        #[argh(option)]
        pub max_input_length: Option<usize>,
        /// worker threads (default: all cores)
        #[argh(option)]
        pub threads: Option<usize>,
        /// no progress bar
        #[argh(switch)]
        pub quiet: bool,
    }
}

pub fn run(args: GenerateArgs) -> Result<()> {
    anyhow::ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    set_threads(args.threads)?;
    let load_opts = args.load_options()?;
    let kwargs = args.generation_kwargs()?;
    let shown = args.input.display().to_string();
    let f = std::fs::File::open(&args.input).with_context(|| format!("cannot open {shown}"))?;
    let mut lines: Vec<(usize, serde_json::Map<String, Value>)> = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.with_context(|| format!("{shown}: line {} is not UTF-8 text", i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&line)
            .with_context(|| format!("{shown}: line {}: invalid JSON", i + 1))?;
        match v {
            Value::Object(o) => lines.push((i + 1, o)),
            _ => bail!("{shown}: line {}: expected a JSON object", i + 1),
        }
    }
    let model = load_model_with_adapter(&args.model, args.adapter.as_deref(), load_opts)?;
    let (mut gen, user_max) = generation_config(&model, &kwargs)?;
    let pflags = args.prompt_flags();
    apply_allow_scripts(&model, &mut gen, &pflags, args.quiet)?;
    let prompts = prompt_builder(&model, &pflags)?;
    let max_in = args
        .max_input_length
        .unwrap_or(usize::MAX)
        .min(model.max_input_tokens());
    let beams = gen.num_beams.unwrap_or(1) > 1;

    let mut inputs = Vec::with_capacity(lines.len());
    let mut rendered: Vec<Option<String>> = Vec::with_capacity(lines.len());
    for (n, o) in &lines {
        if let Some(m) = o.get("messages") {
            let messages: Vec<Message> = serde_json::from_value(m.clone()).with_context(|| {
                format!("{shown}: line {n}: messages must be a list of {{role, content}}")
            })?;
            let Some(p) = &prompts else {
                bail!("{shown}: line {n}: \"messages\" needs a causal LM with a chat template");
            };
            let text = p.render(&messages)?;
            inputs.push(model.tokenizer.encode_plain(&text)?);
            rendered.push(Some(text));
            continue;
        }
        rendered.push(None);
        let ids = match (o.get("input_ids"), o.get("text")) {
            (Some(Value::Array(a)), _) => a
                .iter()
                .map(|x| x.as_u64().and_then(|x| u32::try_from(x).ok()))
                .collect::<Option<Vec<u32>>>()
                .with_context(|| {
                    format!("{shown}: line {n}: input_ids must be non-negative integers")
                })?,
            (None, Some(Value::String(t))) => model.tokenizer.encode(t, Some(max_in))?,
            _ => bail!("{shown}: line {n}: needs \"text\" (a string) or \"input_ids\" (a list)"),
        };
        if ids.is_empty() {
            bail!("{shown}: line {n}: no input tokens");
        }
        if ids.len() > model.max_input_tokens() {
            bail!(
                "{shown}: line {n}: {} input ids exceed the model's {} positions",
                ids.len(),
                model.max_input_tokens()
            );
        }
        inputs.push(ids);
    }

    let partial = temp_path(&args.output);
    let file = std::fs::File::create(&partial)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let stop = interrupt_flag();
    let pb = progress(inputs.len() as u64, args.quiet, "generate");
    for (ci, chunk) in inputs.chunks(args.batch_size).enumerate() {
        let hyps = model.generate(chunk, &gen, user_max)?;
        for (j, (ids, h)) in chunk.iter().zip(&hyps).enumerate() {
            let mut o = lines[ci * args.batch_size + j].1.clone();
            let seqs: Vec<&[u32]> = h.iter().map(|h| h.tokens.as_slice()).collect();
            let texts = seqs
                .iter()
                .map(|s| model.tokenizer.decode(s, true))
                .collect::<Result<Vec<_>, _>>()?;
            if let Some(p) = &rendered[ci * args.batch_size + j] {
                o.insert("prompt".into(), json!(p));
            }
            o.insert("input_ids".into(), json!(ids));
            o.insert("sequences".into(), json!(seqs));
            o.insert("texts".into(), json!(texts));
            if beams {
                o.insert(
                    "sequence_scores".into(),
                    json!(h.iter().map(|h| h.score).collect::<Vec<_>>()),
                );
            }
            serde_json::to_writer(&mut out, &Value::Object(o))?;
            out.write_all(b"\n")?;
        }
        pb.inc(chunk.len() as u64);
        if stop.load(Ordering::SeqCst) {
            drop(out);
            let _ = std::fs::remove_file(&partial);
            bail!("interrupted; {} was not written", args.output.display());
        }
    }
    pb.finish_and_clear();
    let file = out
        .into_inner()
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", partial.display()))?;
    file.sync_all()?;
    commit(&partial, &args.output)?;
    Ok(())
}
