//! Pieces shared by the verbs: model loading, threads, progress, Ctrl-C.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use dsum_core::backend::Device;
use dsum_core::generation::scripts::{blocked_tokens, ScriptSet};
use dsum_core::generation::GenerationConfig;
use dsum_core::hub::{resolve_model, NoProgress, Progress};
use dsum_core::models::{LoadOptions, LoadedModel, Model};
use dsum_core::prompt::{
    PromptBuilder, DEFAULT_SYSTEM_PROMPT, DEFAULT_USER_TEMPLATE, ENGLISH_SYSTEM_PROMPT,
    ENGLISH_USER_TEMPLATE,
};

use super::gen_flags::PromptFlags;

/// `--device`: cpu (the default), cuda or cuda:N.
pub fn parse_device(arg: Option<&str>) -> Result<Device> {
    arg.unwrap_or("cpu").parse::<Device>().context("--device")
}

/// How to load: `--dequantize` (a GGUF's weights all decoded to f32 at load), `--device`,
/// `--tf32`.
pub fn load_options(dequantize: bool, device: Option<&str>, tf32: bool) -> Result<LoadOptions> {
    Ok(LoadOptions {
        dequantize,
        device: parse_device(device)?,
        tf32,
    })
}

/// Load `--model`: a folder, or a Hub repo id `org/name[@revision]` resolved in the Hugging
/// Face cache (downloaded when missing).
pub fn load_model(arg: &Path, opts: LoadOptions) -> Result<LoadedModel> {
    load_model_with_adapter(arg, None, opts)
}

/// Load `--model` with a PEFT LoRA adapter folder (`--adapter`) merged into its weights
/// (W += scaling·B·A, as peft's `merge_and_unload`).
pub fn load_model_with_adapter(
    arg: &Path,
    adapter: Option<&Path>,
    opts: LoadOptions,
) -> Result<LoadedModel> {
    let dir = resolve_model_arg(arg, false)?;
    let Some(adapter_dir) = adapter else {
        return LoadedModel::load_with(&dir, opts, Ok)
            .with_context(|| format!("cannot load the model in {}", dir.display()));
    };
    anyhow::ensure!(
        dir.is_dir(),
        "--adapter needs a model folder (safetensors or pytorch_model.bin), not the file {}",
        dir.display()
    );
    let adapter = dsum_core::lora::adapter::Adapter::load(adapter_dir)
        .with_context(|| format!("cannot load the adapter in {}", adapter_dir.display()))?;
    let shown = adapter_dir.display().to_string();
    LoadedModel::load_with(&dir, opts, |ck| {
        dsum_core::lora::merge::merge(&ck, &adapter, &shown)
    })
    .with_context(|| {
        format!(
            "cannot load the model in {} with the adapter {}",
            dir.display(),
            adapter_dir.display()
        )
    })
}

/// A local folder wins; otherwise a repo id from the Hub cache, downloading what is missing.
pub fn resolve_model_arg(arg: &Path, quiet: bool) -> Result<PathBuf> {
    // A local folder or file (a .gguf) always wins over a Hub repo id.
    if arg.is_dir() || arg.is_file() {
        return Ok(arg.to_path_buf());
    }
    let text = arg.to_string_lossy();
    let progress: Box<dyn Progress> = if quiet {
        Box::new(NoProgress)
    } else {
        Box::new(DownloadBar::default())
    };
    resolve_model(&text, &*progress).with_context(|| format!("cannot find the model `{text}`"))
}

/// One indicatif bar per downloaded file, on stderr.
#[derive(Default)]
struct DownloadBar(RefCell<Option<indicatif::ProgressBar>>);

impl Progress for DownloadBar {
    fn start(&self, file: &str, total: u64, done: u64) {
        let pb = indicatif::ProgressBar::new(total);
        pb.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        let style = indicatif::ProgressStyle::with_template(&format!(
            "{file} {{bar:30}} {{bytes}}/{{total_bytes}}  {{bytes_per_sec}}  ETA {{eta}}"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        pb.set_style(style);
        pb.set_position(done);
        *self.0.borrow_mut() = Some(pb);
    }
    fn advance(&self, bytes: u64) {
        if let Some(pb) = &*self.0.borrow() {
            pb.inc(bytes);
        }
    }
    fn finish(&self) {
        if let Some(pb) = self.0.borrow_mut().take() {
            pb.finish();
        }
    }
}

/// The model's generation defaults with the CLI kwargs applied.
pub fn generation_config(
    model: &LoadedModel,
    kwargs: &serde_json::Value,
) -> Result<(GenerationConfig, bool)> {
    let mut gen = model.generation.clone();
    gen.apply_json(kwargs, "generation flags")?;
    // Check the settings once, up front, instead of failing on the first batch.
    gen.resolve(1, None, true)
        .context("invalid generation settings")?;
    Ok((gen, kwargs.get("max_length").is_some()))
}

/// `--allow-scripts`: add every token writing another script to `suppress_tokens`.
pub fn apply_allow_scripts(
    model: &LoadedModel,
    gen: &mut GenerationConfig,
    flags: &PromptFlags,
    quiet: bool,
) -> Result<()> {
    let Some(list) = flags.allow_scripts else {
        return Ok(());
    };
    let allow = ScriptSet::parse(list)?;
    let vocab = match &model.model {
        Model::Bart(m) => m.vocab_size(),
        Model::Llama(m) => m.vocab_size(),
    };
    let blocked = blocked_tokens(
        &model.tokenizer,
        &allow,
        vocab.min(model.tokenizer.vocab_size()),
    );
    if !quiet {
        eprintln!(
            "--allow-scripts {list}: blocking {} of {} tokens",
            blocked.len(),
            vocab
        );
    }
    let mut all = gen.suppress_tokens.clone().unwrap_or_default();
    all.extend(blocked);
    gen.suppress_tokens = Some(all);
    Ok(())
}

/// The prompt builder of a causal LM (None for encoder-decoder models, which take the raw text).
pub fn prompt_builder(model: &LoadedModel, flags: &PromptFlags) -> Result<Option<PromptBuilder>> {
    if !matches!(model.model, Model::Llama(_)) {
        return Ok(None);
    }
    let kwargs = match flags.template_kwargs {
        Some(s) => serde_json::from_str(s).context("--template-kwargs must be a JSON object")?,
        None => serde_json::Value::Null,
    };
    let (system, user) = match flags.prompt_preset.unwrap_or("ko") {
        "ko" => (DEFAULT_SYSTEM_PROMPT, DEFAULT_USER_TEMPLATE),
        "en" => (ENGLISH_SYSTEM_PROMPT, ENGLISH_USER_TEMPLATE),
        other => anyhow::bail!("--prompt-preset must be ko or en, not `{other}`"),
    };
    let b = PromptBuilder::new(
        &model.tokenizer,
        Some(flags.system_prompt.unwrap_or(system)),
        flags.prompt_template.unwrap_or(user),
        !flags.no_chat_template,
        kwargs,
    )?;
    if !b.has_chat_template() && !flags.no_chat_template {
        anyhow::bail!(
            "{} has no chat template (no `chat_template` in tokenizer_config.json or the GGUF \
             metadata); pass --no-chat-template to use a plain-text prompt",
            model.dir.display()
        );
    }
    Ok(Some(b))
}

/// Start the global thread pool (`--threads`, default all cores). Idempotent: `main` starts it
/// before the verb runs on it, and the verbs' own calls then find it running.
pub fn set_threads(threads: Option<usize>) -> Result<()> {
    static STARTED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    if STARTED.get().is_some() {
        return Ok(());
    }
    anyhow::ensure!(threads != Some(0), "--threads must be at least 1");
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.unwrap_or(0))
        // The verbs run on a worker (see main.rs): give it a main thread's stack.
        .stack_size(8 << 20)
        .build_global()
        .context("cannot start the thread pool")?;
    let _ = STARTED.set(());
    Ok(())
}

/// A flag set by the first Ctrl-C so long loops can stop at a safe point; a second Ctrl-C
/// exits at once (the output is still never half-written: it lives in a temp file).
pub fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    let _ = ctrlc::set_handler(move || {
        if f.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupted: finishing the current batch, then saving what is done (Ctrl-C again to quit now)");
    });
    flag
}

pub fn progress(total: u64, quiet: bool, what: &str) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(total);
    pb.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    let style = indicatif::ProgressStyle::with_template(&format!(
        "{what} {{bar:30}} {{pos}}/{{len}} rows  {{per_sec}}  ETA {{eta}}"
    ))
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    pb.set_style(style);
    pb
}
