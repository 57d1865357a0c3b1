//! Checkpoints: `checkpoints/step-N/` holds the trainable parameters in the output format
//! (PEFT adapter files, or a full model folder), the optimizer moments
//! (`optimizer.safetensors`) and `trainer_state.json` (step, epoch, position in the epoch,
//! RNG, best metric, patience, and a fingerprint of the model). A folder is built under
//! `step-N.partial` and renamed, so a crash never leaves a half-written checkpoint, and a
//! resume refuses a checkpoint of another model instead of loading mismatched tensors.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::optim::{AdamW, Moments};
use super::rng::Rng;
use super::Trainable;
use crate::error::{Error, Result};
use crate::io::checkpoint::Checkpoint;
use crate::lora::config::LoraConfig;

pub const STATE_FILE: &str = "trainer_state.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// What identifies the model being trained: the base model and every trainable tensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub base_model: String,
    pub params: Vec<(String, Vec<usize>)>,
}

impl Fingerprint {
    pub fn of(model: &dyn Trainable, base_model: &str) -> Self {
        Fingerprint {
            base_model: base_model.to_string(),
            params: model
                .params()
                .iter()
                .map(|p| (p.name.clone(), p.shape.clone()))
                .collect(),
        }
    }

    /// Explains the first difference, naming the checkpoint.
    pub fn check(&self, saved: &Fingerprint, dir: &Path) -> Result<()> {
        let shown = dir.display();
        if self.base_model != saved.base_model {
            return Err(Error::Train(format!(
                "{shown}: this checkpoint was trained from `{}`, not `{}`; resume with the same \
                 [model] path or start a new run",
                saved.base_model, self.base_model
            )));
        }
        if self.params != saved.params {
            let diff = self
                .params
                .iter()
                .zip(&saved.params)
                .find(|(a, b)| a != b)
                .map(|(a, b)| format!("now `{}` {:?}, saved `{}` {:?}", a.0, a.1, b.0, b.1))
                .unwrap_or_else(|| {
                    format!(
                        "now {} trainable tensors, saved {}",
                        self.params.len(),
                        saved.params.len()
                    )
                });
            return Err(Error::Train(format!(
                "{shown}: the checkpoint's trainable parameters differ from this model's ({diff}); \
                 it belongs to another model or method"
            )));
        }
        Ok(())
    }
}

/// The loop's position and bookkeeping, saved with every checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps done.
    pub step: u64,
    /// The epoch in progress (0-based).
    pub epoch: usize,
    /// Micro-batches of this epoch already consumed.
    pub position: usize,
    /// The RNG as it was when this epoch's order was drawn (a resume redraws the order).
    pub epoch_rng: Rng,
    /// The RNG now (next dropout seeds, next epoch's shuffle).
    pub rng: Rng,
    /// Best evaluation metric so far (ROUGE final score, or minus eval loss).
    pub best_metric: Option<f64>,
    pub best_step: Option<u64>,
    /// Evaluations since the best one.
    pub patience: usize,
    pub total_steps: u64,
    pub fingerprint: Fingerprint,
}

/// How trained parameters are written: a PEFT adapter, or a full model folder (weights
/// plus the base model's config, generation config and tokenizer files).
pub enum Export {
    Adapter {
        config: LoraConfig,
        base_model: String,
        causal: bool,
    },
    Full {
        base_dir: PathBuf,
    },
}

impl Export {
    /// The file that holds the trained tensors, by their `Param` names.
    pub fn params_file(&self) -> &'static str {
        match self {
            Export::Adapter { .. } => crate::lora::adapter::WEIGHTS_FILE,
            Export::Full { .. } => "model.safetensors",
        }
    }

    /// Write the model's current parameters into `dir` (which must exist).
    pub fn write(&self, model: &dyn Trainable, dir: &Path) -> Result<()> {
        match self {
            Export::Adapter {
                config,
                base_model,
                causal,
            } => {
                let params = model.params();
                let tensors: Vec<(&str, &[usize], &[f32])> = params
                    .iter()
                    .map(|p| (p.name.as_str(), p.shape.as_slice(), p.value.as_slice()))
                    .collect();
                let mut modules: Vec<String> = params
                    .iter()
                    .filter_map(|p| {
                        p.name
                            .strip_prefix("base_model.model.")?
                            .strip_suffix(".lora_A.weight")
                            .map(String::from)
                    })
                    .collect();
                modules.sort();
                crate::lora::adapter::save(dir, config, base_model, *causal, &modules, &tensors)
            }
            Export::Full { base_dir } => {
                let weights = model.merged_weights()?;
                let mut sorted: Vec<&(String, crate::tensor::Weight)> = weights.iter().collect();
                sorted.sort_by(|a, b| a.0.cmp(&b.0));
                let tensors: Vec<(&str, &[usize], &[f32])> = sorted
                    .iter()
                    .map(|(n, w)| (n.as_str(), w.shape.as_slice(), &**w))
                    .collect();
                crate::lora::adapter::write_f32_safetensors(
                    &dir.join("model.safetensors"),
                    &tensors,
                )?;
                for f in crate::io::convert::CARRIED_FILES {
                    let from = base_dir.join(f);
                    if from.is_file() {
                        std::fs::copy(&from, dir.join(f))
                            .map_err(|e| Error::io(from.display().to_string(), e))?;
                    }
                }
                Ok(())
            }
        }
    }
}

fn partial(dir: &Path) -> PathBuf {
    let mut name = dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".partial");
    dir.with_file_name(name)
}

/// Build a folder with `fill` under `<dir>.partial`, then put it in place of `dir` (an
/// existing `dir` is moved aside first and removed only once the new one is in place).
pub fn write_dir_atomic(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let shown = dir.display().to_string();
    let tmp = partial(dir);
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(tmp.display().to_string(), e))?;
    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let mut old_name = dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    old_name.push(".old");
    let old = dir.with_file_name(old_name);
    if dir.exists() {
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(dir, &old).map_err(|e| Error::io(&shown, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| Error::io(&shown, e))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// Save a checkpoint into `dir` (atomically).
pub fn save(
    dir: &Path,
    model: &dyn Trainable,
    opt: &AdamW,
    state: &TrainerState,
    export: &Export,
) -> Result<()> {
    write_dir_atomic(dir, |tmp| {
        export.write(model, tmp)?;
        let params = model.params();
        let mut names = Vec::new();
        for p in &params {
            names.push((
                format!("{}.exp_avg", p.name),
                format!("{}.exp_avg_sq", p.name),
            ));
        }
        let mut tensors: Vec<(&str, &[usize], &[f32])> = Vec::new();
        for ((p, m), (na, nb)) in params.iter().zip(&opt.state).zip(&names) {
            tensors.push((na, &p.shape, &m.exp_avg));
            tensors.push((nb, &p.shape, &m.exp_avg_sq));
        }
        crate::lora::adapter::write_f32_safetensors(&tmp.join(OPTIMIZER_FILE), &tensors)?;
        let mut st =
            serde_json::to_value(state).map_err(|e| Error::io(dir.display().to_string(), e))?;
        st["optimizer_step"] = opt.step.into();
        let text = serde_json::to_string_pretty(&st)
            .map_err(|e| Error::io(dir.display().to_string(), e))?;
        crate::io::atomic::write_atomic(&tmp.join(STATE_FILE), text.as_bytes())
    })
}

fn open_safetensors(path: &Path) -> Result<Checkpoint> {
    let bytes = crate::io::checkpoint::read_shared(path)?;
    Checkpoint::from_files(vec![(path.display().to_string(), bytes)])
}

/// Load a checkpoint into `model` and `opt`; the fingerprint must match `expect`.
pub fn load(
    dir: &Path,
    model: &mut dyn Trainable,
    opt: &mut AdamW,
    expect: &Fingerprint,
    export: &Export,
) -> Result<TrainerState> {
    let sp = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&sp).map_err(|e| {
        Error::io(
            sp.display().to_string(),
            format!("{e} (not a dsum checkpoint folder?)"),
        )
    })?;
    let raw: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::config(sp.display().to_string(), format!("invalid JSON: {e}")))?;
    let state: TrainerState = serde_json::from_value(raw.clone()).map_err(|e| {
        Error::config(
            sp.display().to_string(),
            format!("not a trainer state: {e}"),
        )
    })?;
    expect.check(&state.fingerprint, dir)?;
    let params_ck = open_safetensors(&dir.join(export.params_file()))?;
    let opt_ck = open_safetensors(&dir.join(OPTIMIZER_FILE))?;
    let mut moments = Vec::new();
    for p in model.params_mut() {
        let v = params_ck.get(&p.name, &p.shape)?;
        p.value.copy_from_slice(&v);
        moments.push(Moments {
            exp_avg: opt_ck
                .get(&format!("{}.exp_avg", p.name), &p.shape)?
                .to_vec(),
            exp_avg_sq: opt_ck
                .get(&format!("{}.exp_avg_sq", p.name), &p.shape)?
                .to_vec(),
        });
    }
    opt.state = moments;
    opt.step = raw
        .get("optimizer_step")
        .and_then(|s| s.as_u64())
        .unwrap_or(state.step);
    Ok(state)
}

/// `checkpoints/step-N` folders (complete ones), sorted by N.
pub fn list(checkpoints: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(checkpoints)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let n: u64 = name.strip_prefix("step-")?.parse().ok()?;
            let path = e.path();
            path.join(STATE_FILE).is_file().then_some((n, path))
        })
        .collect();
    out.sort();
    out
}

/// Remove all but the newest `keep` checkpoints (0 keeps all).
pub fn rotate(checkpoints: &Path, keep: usize) -> Result<()> {
    if keep == 0 {
        return Ok(());
    }
    let all = list(checkpoints);
    for (_, dir) in all.iter().take(all.len().saturating_sub(keep)) {
        // Renamed first (atomic), so a kill during the removal never leaves a half-deleted
        // `step-N` that still looks like a checkpoint.
        let mut name = dir
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        name.push(".deleting");
        let doomed = dir.with_file_name(name);
        let _ = std::fs::remove_dir_all(&doomed);
        std::fs::rename(dir, &doomed).map_err(|e| Error::io(dir.display().to_string(), e))?;
        std::fs::remove_dir_all(&doomed).map_err(|e| Error::io(doomed.display().to_string(), e))?;
    }
    Ok(())
}
