//! PEFT adapter files: `adapter_model.safetensors` with keys
//! `base_model.model.<module path>.lora_A.weight` (`[r, in]`) and `.lora_B.weight`
//! (`[out, r]`), beside `adapter_config.json`; and which of a base model's linear modules
//! a target list selects (peft's rule: the module path equals a name or ends with `.name`).

use std::collections::BTreeMap;

use super::config::{LoraConfig, Targets};
use crate::error::{Error, Result};
use crate::io::checkpoint::Checkpoint;
use crate::tensor::Weight;

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
const PREFIX: &str = "base_model.model.";

/// The PEFT key of a module's `lora_A` (`b = false`) or `lora_B` (`b = true`) matrix.
pub fn peft_key(module: &str, b: bool) -> String {
    format!("{PREFIX}{module}.lora_{}.weight", if b { 'B' } else { 'A' })
}

/// One adapted module: `A` is `[r, in]`, `B` is `[out, r]`.
pub struct LoraModule {
    pub path: String,
    pub a: Weight,
    pub b: Weight,
}

pub struct Adapter {
    pub config: LoraConfig,
    /// Sorted by module path.
    pub modules: Vec<LoraModule>,
}

/// The linear layers of a base checkpoint, as (module path, `[out, in]`): every 2-D
/// `*.weight` except embeddings and the output head (what peft's `all-linear` selects).
pub fn linear_modules(ck: &Checkpoint) -> Vec<(String, [usize; 2])> {
    let mut out: Vec<(String, [usize; 2])> = ck
        .names()
        .filter_map(|n| {
            let path = n.strip_suffix(".weight")?;
            let shape = ck.shape(n)?;
            let last = path.rsplit('.').next().unwrap_or(path);
            let embedding = matches!(
                last,
                "embed_tokens" | "embed_positions" | "shared" | "lm_head" | "wte" | "wpe"
            );
            (shape.len() == 2 && !embedding).then(|| (path.to_string(), [shape[0], shape[1]]))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The module paths `targets` selects among `modules`. Every listed name must select at
/// least one module: a typo (or Llama names on a BART model) is an error listing the
/// names that do exist, not a run that silently trains nothing.
pub fn match_targets(modules: &[String], targets: &Targets, source: &str) -> Result<Vec<String>> {
    let hit = |m: &str, t: &str| m == t || m.ends_with(&format!(".{t}"));
    let chosen: Vec<String> = match targets {
        Targets::AllLinear => modules.to_vec(),
        Targets::Names(names) => {
            let missing: Vec<&String> = names
                .iter()
                .filter(|t| !modules.iter().any(|m| hit(m, t)))
                .collect();
            if !missing.is_empty() {
                let mut kinds: Vec<&str> = modules
                    .iter()
                    .map(|m| m.rsplit('.').next().unwrap_or(m))
                    .collect();
                kinds.sort();
                kinds.dedup();
                return Err(Error::config(
                    source,
                    format!(
                        "LoRA target(s) {} match no linear module of the model (its linear \
                         modules are named: {})",
                        missing
                            .iter()
                            .map(|s| format!("`{s}`"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        kinds.join(", ")
                    ),
                ));
            }
            modules
                .iter()
                .filter(|m| names.iter().any(|t| hit(m, t)))
                .cloned()
                .collect()
        }
    };
    if chosen.is_empty() {
        return Err(Error::config(
            source,
            "the LoRA targets match no linear module of the model",
        ));
    }
    Ok(chosen)
}

impl Adapter {
    /// Load `adapter_config.json` + `adapter_model.safetensors` from `dir`.
    #[cfg(feature = "std")]
    pub fn load(dir: &std::path::Path) -> Result<Self> {
        let cp = dir.join(CONFIG_FILE);
        let text =
            std::fs::read_to_string(&cp).map_err(|e| Error::io(cp.display().to_string(), e))?;
        let config = LoraConfig::from_peft_json(&text, &cp.display().to_string())?;
        let wp = dir.join(WEIGHTS_FILE);
        if !wp.is_file() && dir.join("adapter_model.bin").is_file() {
            return Err(Error::checkpoint(
                dir.display().to_string(),
                "only adapter_model.bin here; save the adapter with safetensors \
                 (peft's default, `save_pretrained(safe_serialization=True)`)",
            ));
        }
        let bytes = crate::io::checkpoint::read_shared(&wp)?;
        let ck = Checkpoint::from_files(vec![(wp.display().to_string(), bytes)])?;
        Self::from_checkpoint(config, &ck)
    }

    /// Pair up the `lora_A` / `lora_B` tensors of an adapter checkpoint.
    pub fn from_checkpoint(config: LoraConfig, ck: &Checkpoint) -> Result<Self> {
        let path = ck.path().to_string();
        let err = |m: String| Error::checkpoint(&path, m);
        let mut pairs: BTreeMap<String, [Option<String>; 2]> = BTreeMap::new();
        for name in ck.names() {
            let rest = name.strip_prefix(PREFIX).ok_or_else(|| {
                err(format!(
                    "tensor `{name}` is not a PEFT LoRA key (expected `{PREFIX}...lora_A.weight`)"
                ))
            })?;
            // Older peft versions kept the adapter name: `.lora_A.default.weight`.
            let rest = rest.replace(".default.weight", ".weight");
            let (module, which) = if let Some(m) = rest.strip_suffix(".lora_A.weight") {
                (m, 0)
            } else if let Some(m) = rest.strip_suffix(".lora_B.weight") {
                (m, 1)
            } else {
                return Err(err(format!(
                    "tensor `{name}` is not a lora_A / lora_B weight (embedding adapters, \
                     trained biases and modules_to_save are not supported)"
                )));
            };
            pairs.entry(module.to_string()).or_default()[which] = Some(name.to_string());
        }
        if pairs.is_empty() {
            return Err(err("the adapter has no tensors".into()));
        }
        let r = config.r;
        let mut modules = Vec::new();
        for (module, [a, b]) in pairs {
            let (Some(a), Some(b)) = (a, b) else {
                return Err(err(format!(
                    "module `{module}` has only one of lora_A / lora_B"
                )));
            };
            let (sa, sb) = (ck.shape(&a).unwrap_or(&[]), ck.shape(&b).unwrap_or(&[]));
            if sa.len() != 2 || sb.len() != 2 || sa[0] != r || sb[1] != r {
                return Err(err(format!(
                    "module `{module}`: lora_A is {sa:?} and lora_B is {sb:?}; with r = {r} \
                     expected [{r}, in] and [out, {r}]"
                )));
            }
            let (sa, sb) = (sa.to_vec(), sb.to_vec());
            modules.push(LoraModule {
                path: module,
                a: ck.get(&a, &sa)?,
                b: ck.get(&b, &sb)?,
            });
        }
        Ok(Adapter { config, modules })
    }
}

/// Write `adapter_config.json` and `adapter_model.safetensors` (f32, `{"format": "pt"}`)
/// into `dir`, each atomically. `tensors` are (PEFT key, shape, values).
#[cfg(feature = "std")]
pub fn save(
    dir: &std::path::Path,
    config: &LoraConfig,
    base_model: &str,
    causal: bool,
    modules: &[String],
    tensors: &[(&str, &[usize], &[f32])],
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
    write_f32_safetensors(&dir.join(WEIGHTS_FILE), tensors)?;
    crate::io::atomic::write_atomic(
        &dir.join(CONFIG_FILE),
        config.to_peft_json(base_model, causal, modules).as_bytes(),
    )
}

/// f32 tensors to one safetensors file, atomically, with transformers' metadata.
#[cfg(feature = "std")]
pub fn write_f32_safetensors(
    path: &std::path::Path,
    tensors: &[(&str, &[usize], &[f32])],
) -> Result<()> {
    use crate::io::raw_tensor::RawTensor;
    let raws: Vec<(String, RawTensor)> = tensors
        .iter()
        .map(|(n, s, v)| {
            let bytes: Vec<u8> = bytemuck::cast_slice::<f32, u8>(v).to_vec();
            (
                n.to_string(),
                RawTensor::owned(safetensors::Dtype::F32, s.to_vec(), bytes),
            )
        })
        .collect();
    let views: Vec<(&str, &RawTensor)> = raws.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    let tmp = crate::io::atomic::temp_path(path);
    safetensors::tensor::serialize_to_file(views, Some(meta), &tmp).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path.display().to_string(), e)
    })?;
    crate::io::atomic::commit(&tmp, path)
}
