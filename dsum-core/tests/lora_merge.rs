//! LoRA merged into the base (W + scaling·B·A, what `merged_weights` exports and evaluation
//! generates from) computes the same function as the unmerged adapter: the inference models
//! loaded from the merged weights give the training path's loss, for random adapters.

use std::collections::HashMap;
use std::path::Path;

use dsum_core::io::checkpoint::Checkpoint;
use dsum_core::models::bart::{Bart, BartConfig};
use dsum_core::models::bart_train::BartTrain;
use dsum_core::models::llama::{Llama, LlamaConfig};
use dsum_core::models::llama_train::LlamaTrain;
use dsum_core::ops::cross_entropy::cross_entropy_loss;
use dsum_core::train::setup::{Kind, Setup};
use dsum_core::train::{Trainable, IGNORE};
use proptest::prelude::*;

fn fixture(dir: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(dir)
}

fn setup(seed: u64, rslora: bool) -> Setup {
    Setup {
        kind: Kind::Lora,
        r: 4,
        alpha: 8.0f64,
        dropout: 0.1,
        targets: vec!["all-linear".into()],
        use_rslora: rslora,
        init_adapter: None,
        nf4_blocksize: 64,
        double_quant: false,
        quantizer: None,
        seed,
    }
}

fn randomize_b(m: &mut dyn Trainable, seed: u64) {
    let mut s = seed | 1;
    for p in m.params_mut() {
        if p.name.contains("lora_B") {
            for v in &mut p.value {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                *v = ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.4;
            }
        }
    }
}

fn merged(m: &dyn Trainable) -> Checkpoint {
    let w: HashMap<_, _> = m.merged_weights().unwrap().into_iter().collect();
    Checkpoint::from_weights("merged", w)
}

fn mean(sum: f64, n: usize) -> f64 {
    sum / n as f64
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    #[test]
    fn llama_merged_equals_unmerged(seed in 1u64..1_000_000, rslora in any::<bool>()) {
        let d = fixture("llama/models/qwen2");
        let text = std::fs::read_to_string(d.join("config.json")).unwrap();
        let ck = Checkpoint::open_dir(&d).unwrap();
        let mut m = LlamaTrain::load(LlamaConfig::from_json(&text, "c").unwrap(), &ck, &setup(seed, rslora)).unwrap();
        randomize_b(&mut m, seed);
        // Dropout is on in training but never in evaluation.
        m.set_dropout_seed(Some(seed));
        let ids: Vec<u32> = (0..7).map(|i| ((seed as u32).wrapping_mul(31) + i * 97) % 1200).collect();
        let labels: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
        let b = dsum_core::train::Batch {
            rows: 1, cols: 7, input_ids: ids.clone(), attention_mask: vec![true; 7], labels: labels.clone(),
            ..Default::default()
        };
        let lt = m.eval_loss(&b).unwrap();
        let inf = Llama::load(LlamaConfig::from_json(&text, "c").unwrap(), &merged(&m)).unwrap();
        let mut st = inf.start(&[vec![true; 7]], 7).unwrap();
        let logits = inf.forward(&mut st, &ids, 7, true).unwrap();
        let mut tg: Vec<i64> = labels[1..].to_vec();
        tg.push(IGNORE);
        let (s, n) = cross_entropy_loss(&logits, &tg, inf.vocab_size()).unwrap();
        prop_assert!((mean(s, n) - mean(lt.sum, lt.tokens)).abs() < 1e-4 * mean(s, n).abs().max(1.0));
    }

    #[test]
    fn bart_merged_equals_unmerged(seed in 1u64..1_000_000) {
        let d = fixture("bart/models/tiny-c");
        let text = std::fs::read_to_string(d.join("config.json")).unwrap();
        let ck = Checkpoint::open_dir(&d).unwrap();
        let mut m = BartTrain::load(BartConfig::from_json(&text, "c").unwrap(), &ck, &setup(seed, false)).unwrap();
        randomize_b(&mut m, seed);
        let src: Vec<u32> = (0..6).map(|i| ((seed as u32) + i * 131) % 1400 + 14).collect();
        let dec: Vec<u32> = vec![1, 0, 400, 77, 901];
        let labels: Vec<i64> = vec![0, 400, 77, 901, 1];
        let b = dsum_core::train::Batch {
            rows: 1, cols: 6, input_ids: src.clone(), attention_mask: vec![true; 6],
            dec_cols: 5, decoder_input_ids: dec.clone(), labels: labels.clone(),
        };
        let lt = m.eval_loss(&b).unwrap();
        let inf = Bart::load(BartConfig::from_json(&text, "c").unwrap(), &merged(&m)).unwrap();
        let logits = inf.forward(&src, &[true; 6], 1, 6, &dec, 5).unwrap();
        let (s, n) = cross_entropy_loss(&logits, &labels, inf.vocab_size()).unwrap();
        prop_assert!((mean(s, n) - mean(lt.sum, lt.tokens)).abs() < 1e-4 * mean(s, n).abs().max(1.0));
    }
}
