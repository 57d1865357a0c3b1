//! Pieces shared by the verbs: model loading, threads, progress, Ctrl-C.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use dsum_core::generation::GenerationConfig;
use dsum_core::models::LoadedModel;

pub fn load_model(dir: &Path) -> Result<LoadedModel> {
    LoadedModel::load(dir).with_context(|| format!("cannot load the model in {}", dir.display()))
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

pub fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(n) = threads {
        anyhow::ensure!(n > 0, "--threads must be at least 1");
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("cannot start the thread pool")?;
    }
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
