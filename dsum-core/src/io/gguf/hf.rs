//! GGUF → Hugging Face for the Llama family (llama, mistral, qwen2, qwen3): tensor names
//! (gguf-py's `TensorNameMap` read backwards), the Q/K row permutation llama.cpp applies
//! to `llama` checkpoints (undone as transformers' `LlamaTensorProcessor` does), and the
//! `config.json` transformers builds from the metadata (`GGUF_CONFIG_MAPPING`).

use std::collections::HashMap;
use std::format;
use std::string::{String, ToString};
use std::vec::Vec;

use serde_json::{json, Map, Value as Json};

use super::{GgmlType, GgufFile};
use crate::error::{Error, Result};
use crate::io::checkpoint::Checkpoint;
use crate::models::llama::LlamaConfig;
use crate::ops::qmatmul::QMatrix;
use crate::tensor::Weight;

/// The HF name of a GGUF tensor of a Llama-family model, `None` for tensors transformers
/// ignores (`rope_freqs`, unknown names).
pub fn hf_name(gguf: &str) -> Option<String> {
    let (stem, suffix) = gguf.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    let top = match stem {
        "token_embd" => Some("model.embed_tokens"),
        "output_norm" => Some("model.norm"),
        "output" => Some("lm_head"),
        _ => None,
    };
    if let Some(t) = top {
        return Some(format!("{t}.{suffix}"));
    }
    let rest = stem.strip_prefix("blk.")?;
    let (n, part) = rest.split_once('.')?;
    let n: usize = n.parse().ok()?;
    let hf = match part {
        "attn_norm" => "input_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        "ffn_norm" => "post_attention_layernorm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{n}.{hf}.{suffix}"))
}

/// Undo llama.cpp's `permute(w, n_head, n_head_kv)` on the rows of a Q or K weight (or bias):
/// rows of each head were interleaved as (dim/2, 2), transformers regroups them as (2, dim/2).
/// `rows × cols` row-major; `n_head` already replaced by the kv head count for K.
pub fn reverse_permute(w: &[f32], rows: usize, cols: usize, n_head: usize) -> Option<Vec<f32>> {
    if w.len() != rows * cols {
        return None;
    }
    let order = unpermuted_rows(rows, n_head)?;
    let mut out = std::vec![0f32; w.len()];
    for (dst, &src) in order.iter().enumerate() {
        let src = src as usize;
        out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
    }
    Some(out)
}

/// The row map of [`reverse_permute`]: row `dst` of the Hugging Face tensor is row
/// `order[dst]` of the GGUF one (what the quantized path reads rows through).
pub fn unpermuted_rows(rows: usize, n_head: usize) -> Option<Vec<u32>> {
    if n_head == 0 || !rows.is_multiple_of(2 * n_head) || u32::try_from(rows).is_err() {
        return None;
    }
    let dim = rows / n_head / 2;
    let mut order = std::vec![0u32; rows];
    for h in 0..n_head {
        for a in 0..2 {
            for d in 0..dim {
                order[h * 2 * dim + a * dim + d] = (h * 2 * dim + d * 2 + a) as u32;
            }
        }
    }
    Some(order)
}

/// The architectures this loader maps (value of `general.architecture`).
pub const ARCHITECTURES: &[&str] = &["llama", "mistral", "qwen2", "qwen3"];

/// `config.json` as transformers' `load_gguf_checkpoint` builds it: `model_type`, the mapped
/// `{arch}.*` keys, `tie_word_embeddings` (no `output.weight`), `vocab_size` from the token
/// list when the metadata has none. Keys transformers does not map keep their class defaults.
pub fn config_json(g: &GgufFile) -> Result<Json> {
    let arch = g.get_str("general.architecture")?;
    if !ARCHITECTURES.contains(&arch) {
        return Err(Error::config(
            &g.path,
            format!(
                "GGUF architecture `{arch}` is not supported (supported: {})",
                ARCHITECTURES.join(", ")
            ),
        ));
    }
    // transformers loads llama.cpp's "llama" files named like Mistral as `mistral`.
    let name_is_mistral = g
        .get("general.name")
        .and_then(|v| v.as_str())
        .is_some_and(|n| n.contains("mistral"));
    let model_type = if arch == "llama" && name_is_mistral {
        "mistral"
    } else {
        arch
    };
    let mut c = Map::new();
    c.insert("model_type".into(), json!(model_type));
    let int = |k: &str| -> Result<Option<u64>> {
        match g.get(&format!("{arch}.{k}")) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                Error::config(
                    &g.path,
                    format!("metadata `{arch}.{k}` should be a non-negative integer, found {v:?}"),
                )
            }),
        }
    };
    let float = |k: &str| -> Result<Option<f64>> {
        match g.get(&format!("{arch}.{k}")) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| {
                Error::config(
                    &g.path,
                    format!("metadata `{arch}.{k}` should be a number, found {v:?}"),
                )
            }),
        }
    };
    for (k, hf) in [
        ("context_length", "max_position_embeddings"),
        ("block_count", "num_hidden_layers"),
        ("feed_forward_length", "intermediate_size"),
        ("embedding_length", "hidden_size"),
        ("attention.head_count", "num_attention_heads"),
        ("attention.head_count_kv", "num_key_value_heads"),
        ("vocab_size", "vocab_size"),
    ] {
        if let Some(v) = int(k)? {
            c.insert(hf.into(), json!(v));
        }
    }
    for (k, hf) in [
        ("rope.freq_base", "rope_theta"),
        ("attention.layer_norm_rms_epsilon", "rms_norm_eps"),
    ] {
        if let Some(v) = float(k)? {
            c.insert(hf.into(), json!(v));
        }
    }
    match arch {
        // transformers maps rope.dimension_count to head_dim only for llama / mistral.
        "llama" | "mistral" => {
            if let Some(v) = int("rope.dimension_count")? {
                c.insert("head_dim".into(), json!(v));
            }
        }
        // Qwen3Config's default head_dim is 128 and transformers maps no key to it; llama.cpp
        // writes it as attention.key_length, equal to 128 in every released Qwen3.
        "qwen3" => {
            let v = int("attention.key_length")?.unwrap_or(128);
            c.insert("head_dim".into(), json!(v));
        }
        _ => {}
    }
    // Class defaults of the transformers configs for what the metadata leaves out.
    let max_pos = match model_type {
        "llama" => 2048,
        "mistral" => 4096 * 32,
        _ => 32768,
    };
    c.entry("max_position_embeddings").or_insert(json!(max_pos));
    if !c.contains_key("vocab_size") {
        if let Some(n) = g
            .get("tokenizer.ggml.tokens")
            .and_then(|v| v.as_array())
            .map(|a| a.len())
        {
            c.insert("vocab_size".into(), json!(n));
        }
    }
    let tied = g.tensor("output.weight").is_none();
    c.insert("tie_word_embeddings".into(), json!(tied));
    Ok(Json::Object(c))
}

/// [`config_json`] parsed and validated as a [`LlamaConfig`].
pub fn llama_config(g: &GgufFile) -> Result<LlamaConfig> {
    let j = config_json(g)?;
    for k in [
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
    ] {
        if !j.get(k).is_some_and(|v| v.is_u64()) {
            return Err(Error::config(
                &g.path,
                format!("the metadata gives no `{k}` (expected `{{arch}}.*` keys, see gguf.md)"),
            ));
        }
    }
    check_shapes(g, &j)?;
    LlamaConfig::from_json(&j.to_string(), &g.path)
}

/// The sizes in the metadata must agree with the tensors before anything is sized from
/// them (a corrupted `block_count` or `rope.dimension_count` must not become an allocation).
/// Only tensors of known types are used: their dims are bounded by the file size.
fn check_shapes(g: &GgufFile, j: &Json) -> Result<()> {
    let get = |k: &str| j.get(k).and_then(|v| v.as_u64());
    let err = |m: String| Err(Error::config(&g.path, m));
    let shape = |name: &str| -> Result<Vec<u64>> {
        match g.tensor(name) {
            Some(t) if t.ty.block().is_some() => Ok(t.dims.iter().rev().copied().collect()),
            Some(t) => Err(Error::Tensor {
                path: g.path.clone(),
                name: name.to_string(),
                message: format!("tensor type {:?} is not supported", t.ty),
            }),
            None => Err(Error::config(
                &g.path,
                format!("tensor `{name}` is missing"),
            )),
        }
    };
    let (v, c) = (
        get("vocab_size").unwrap_or(0),
        get("hidden_size").unwrap_or(0),
    );
    let (f, layers) = (
        get("intermediate_size").unwrap_or(0),
        get("num_hidden_layers").unwrap_or(0),
    );
    let heads = get("num_attention_heads").unwrap_or(0);
    let kv = get("num_key_value_heads").unwrap_or(heads);
    if shape("token_embd.weight")? != [v, c] {
        return err(format!(
            "token_embd.weight has shape {:?} but the metadata says vocab_size {v}, hidden_size {c}",
            shape("token_embd.weight")?
        ));
    }
    if layers == 0
        || g.tensor(&format!("blk.{}.attn_norm.weight", layers - 1))
            .is_none()
    {
        return err(format!(
            "block_count is {layers} but there is no blk.{}.attn_norm.weight",
            layers.saturating_sub(1)
        ));
    }
    if heads == 0 {
        return err("attention.head_count is 0".into());
    }
    let dh = get("head_dim").unwrap_or(c / heads);
    let q = shape("blk.0.attn_q.weight")?;
    let k = shape("blk.0.attn_k.weight")?;
    let gate = shape("blk.0.ffn_gate.weight")?;
    if q.first() != heads.checked_mul(dh).as_ref() || k.first() != kv.checked_mul(dh).as_ref() {
        return err(format!(
            "attn_q/attn_k have {:?}/{:?} rows but the metadata says {heads}/{kv} heads of {dh}",
            q.first(),
            k.first()
        ));
    }
    if gate.first() != Some(&f) {
        return err(format!(
            "ffn_gate has {:?} rows but feed_forward_length is {f}",
            gate.first()
        ));
    }
    Ok(())
}

/// Every tensor transformers would load, dequantized to f32 under its HF name; F32 tensors
/// that need no permutation stay borrowed from the mapped file.
pub fn checkpoint(g: &GgufFile, config: &LlamaConfig) -> Result<Checkpoint> {
    load_checkpoint(g, config, false)
}

/// As [`checkpoint`], but the matrices of types with fused kernels (Q4_0, Q4_1, Q8_0) stay
/// quantized, borrowed from the mapped file (Q/K rows read through [`unpermuted_rows`]);
/// `Checkpoint::get` still dequantizes them to the same f32 values on request.
pub fn quantized_checkpoint(g: &GgufFile, config: &LlamaConfig) -> Result<Checkpoint> {
    load_checkpoint(g, config, true)
}

fn load_checkpoint(g: &GgufFile, config: &LlamaConfig, keep_quantized: bool) -> Result<Checkpoint> {
    let arch = g.get_str("general.architecture")?;
    // transformers only reverses the permutation when both head counts are in the metadata.
    let heads = match (
        g.get(&format!("{arch}.attention.head_count")),
        g.get(&format!("{arch}.attention.head_count_kv")),
    ) {
        (Some(_), Some(_)) if arch == "llama" => {
            Some((config.num_attention_heads, config.kv_heads()))
        }
        _ => None,
    };
    let mut weights = HashMap::new();
    let mut quantized = HashMap::new();
    for t in &g.tensors {
        let Some(name) = hf_name(&t.name) else {
            continue;
        };
        let shape = t.shape();
        let permute = heads.and_then(|(h, kv)| {
            if t.name.contains(".attn_q.") {
                Some(h)
            } else if t.name.contains(".attn_k.") {
                Some(kv)
            } else {
                None
            }
        });
        let terr = |message: String| Error::Tensor {
            path: g.path.clone(),
            name: t.name.clone(),
            message,
        };
        if keep_quantized && shape.len() == 2 && QMatrix::supports(t.ty) {
            let (rows, cols) = (shape[0], shape[1]);
            let order = match permute {
                None => None,
                Some(n_head) => Some(unpermuted_rows(rows, n_head).ok_or_else(|| {
                    terr(format!(
                        "{rows} rows cannot be split into {n_head} heads of rotary pairs"
                    ))
                })?),
            };
            let q = QMatrix::new(t.ty, rows, cols, g.shared_bytes().clone(), t.start, order)
                .map_err(terr)?;
            quantized.insert(name, q);
            continue;
        }
        let w = match permute {
            None if t.ty == GgmlType::F32 => {
                match Weight::from_shared(shape.clone(), g.shared_bytes().clone(), t.start) {
                    Some(w) => w,
                    None => Weight::from_vec(shape, g.dequantize(t)?),
                }
            }
            None => Weight::from_vec(shape, g.dequantize(t)?),
            Some(n_head) => {
                let data = g.dequantize(t)?;
                let rows = shape.first().copied().unwrap_or(0);
                let cols = if shape.len() > 1 {
                    data.len() / rows.max(1)
                } else {
                    1
                };
                let p = reverse_permute(&data, rows, cols, n_head).ok_or_else(|| {
                    terr(format!(
                        "{rows} rows cannot be split into {n_head} heads of rotary pairs"
                    ))
                })?;
                Weight::from_vec(shape, p)
            }
        };
        weights.insert(name, w);
    }
    Ok(Checkpoint::from_weights(g.path.clone(), weights).with_quantized(quantized))
}

/// `tokenizer.chat_template` from the metadata.
pub fn chat_template(g: &GgufFile) -> Option<String> {
    g.get("tokenizer.chat_template")
        .and_then(|v| v.as_str())
        .map(|s| s.to_string())
}
