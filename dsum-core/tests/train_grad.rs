//! The hand-written model backward passes against directional finite differences of the
//! model's own loss: for a random direction u, (L(θ+hu) - L(θ-hu)) / 2h must equal g·u for
//! every trainable tensor. Independent of the PyTorch references (tests/train_parity.rs).

use std::path::Path;

use dsum_core::io::checkpoint::Checkpoint;
use dsum_core::models::llama::LlamaConfig;
use dsum_core::models::llama_train::LlamaTrain;
use dsum_core::train::setup::{Kind, Setup};
use dsum_core::train::{Batch, Trainable, IGNORE};

fn fixture(dir: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(dir)
}

fn setup(kind: Kind) -> Setup {
    Setup {
        kind,
        r: 3,
        alpha: 6.0f64,
        dropout: 0.0,
        targets: vec!["all-linear".into()],
        use_rslora: false,
        init_adapter: None,
        nf4_blocksize: 64,
        double_quant: false,
        quantizer: None,
        seed: 5,
    }
}

fn causal_batch() -> Batch {
    // Two rows, the second right-padded; labels ignore the prompt-like first tokens.
    let ids = vec![1200, 17, 250, 31, 99, 1205, 1200, 44, 300, 1205, 0, 0];
    let mask = vec![
        true, true, true, true, true, true, true, true, true, true, false, false,
    ];
    let labels = vec![
        IGNORE, IGNORE, 250, 31, 99, 1205, IGNORE, 44, 300, 1205, IGNORE, IGNORE,
    ];
    Batch {
        rows: 2,
        cols: 6,
        input_ids: ids,
        attention_mask: mask,
        labels,
        ..Default::default()
    }
}

fn lcg(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Directional check of every trainable tensor of `m` on `b`.
#[allow(clippy::needless_range_loop)]
fn check_directional(m: &mut dyn Trainable, b: &Batch) {
    check_directional_mode(m, b, false)
}

/// `train`: the loss is the training loss (dropout on, same masks every call).
#[allow(clippy::needless_range_loop)]
fn check_directional_mode(m: &mut dyn Trainable, b: &Batch, train: bool) {
    let tokens = b.counted_tokens(m.is_causal());
    m.params_mut().iter_mut().for_each(|p| p.zero_grad());
    m.accumulate(b, 1.0 / tokens as f32).unwrap();
    let grads: Vec<Vec<f32>> = m.params().iter().map(|p| p.grad.clone()).collect();
    let n = grads.len();
    assert!(n > 0);
    for i in 0..n {
        let (name, base) = {
            let p = &m.params()[i];
            (p.name.clone(), p.value.clone())
        };
        // Random directions in general; along the gradient itself (the largest signal above
        // the f32 noise of the loss) when training-mode dropout makes the loss rougher.
        let u = if train {
            let n = grads[i]
                .iter()
                .map(|g| g * g)
                .sum::<f32>()
                .sqrt()
                .max(1e-12);
            grads[i].iter().map(|g| g / n).collect()
        } else {
            lcg(base.len(), 99 + i as u64)
        };
        let scale = base.iter().fold(0f32, |a, v| a.max(v.abs())).max(0.1);
        let h = 1e-2 * scale;
        let mut loss_at = |step: f32| {
            let p = &mut m.params_mut()[i];
            p.value
                .iter_mut()
                .zip(&base)
                .zip(&u)
                .for_each(|((v, b0), d)| *v = b0 + step * d);
            let l = if train {
                m.accumulate(b, 0.0).unwrap()
            } else {
                m.eval_loss(b).unwrap()
            };
            l.sum / l.tokens as f64
        };
        let mut fd_at = |h: f32| (loss_at(h) - loss_at(-h)) / (2.0 * h as f64);
        // Richardson extrapolation cancels the O(h²) term of the central difference.
        let (f1, f2) = (fd_at(h), fd_at(h / 2.0));
        let fd = (4.0 * f2 - f1) / 3.0;
        m.params_mut()[i].value.copy_from_slice(&base);
        let an: f64 = grads[i]
            .iter()
            .zip(&u)
            .map(|(g, d)| (*g as f64) * (*d as f64))
            .sum();
        // f32 rounding of the loss puts a floor of a few 1e-4 under any finite difference.
        let tol = 1e-2 * an.abs() + 3e-4;
        assert!(
            (fd - an).abs() < tol,
            "{name}: finite difference {fd} vs analytic {an}"
        );
    }
}

fn llama(dir: &str, kind: Kind) -> LlamaTrain {
    let d = fixture(dir);
    let cfg = LlamaConfig::from_json(
        &std::fs::read_to_string(d.join("config.json")).unwrap(),
        "config.json",
    )
    .unwrap();
    let ck = Checkpoint::open_dir(&d).unwrap();
    let mut m = LlamaTrain::load(cfg, &ck, &setup(kind)).unwrap();
    // B starts at zero in peft; give it values so every LoRA gradient is exercised.
    for p in m.params_mut() {
        if p.name.contains("lora_B") {
            p.value = lcg(p.value.len(), 7).iter().map(|v| v * 0.5).collect();
        }
    }
    m
}

#[test]
fn llama_lora_gradients_match_finite_differences() {
    check_directional(
        &mut llama("llama/models/llama-tied", Kind::Lora),
        &causal_batch(),
    );
}

#[test]
fn llama_full_gradients_match_finite_differences() {
    check_directional(
        &mut llama("llama/models/llama-tied", Kind::Full),
        &causal_batch(),
    );
}

#[test]
fn qwen3_full_gradients_match_finite_differences() {
    check_directional(
        &mut llama("llama/models/qwen3", Kind::Full),
        &causal_batch(),
    );
}

#[test]
fn qwen2_lora_gradients_match_finite_differences() {
    check_directional(
        &mut llama("llama/models/qwen2", Kind::Lora),
        &causal_batch(),
    );
}

fn seq2seq_batch() -> Batch {
    // Encoder rows of 5 (second padded), decoder rows of 4 (labels -100 on padding).
    Batch {
        rows: 2,
        cols: 5,
        input_ids: vec![0, 120, 340, 77, 1, 0, 55, 1, 3, 3],
        attention_mask: vec![true, true, true, true, true, true, true, true, false, false],
        dec_cols: 4,
        decoder_input_ids: vec![1, 0, 88, 410, 1, 0, 91, 3],
        labels: vec![0, 88, 410, 1, 0, 91, 1, IGNORE],
    }
}

fn bart(dir: &str, kind: Kind) -> dsum_core::models::bart_train::BartTrain {
    let d = fixture(dir);
    let cfg = dsum_core::models::bart::BartConfig::from_json(
        &std::fs::read_to_string(d.join("config.json")).unwrap(),
        "config.json",
    )
    .unwrap();
    let ck = Checkpoint::open_dir(&d).unwrap();
    let mut m = dsum_core::models::bart_train::BartTrain::load(cfg, &ck, &setup(kind)).unwrap();
    for p in m.params_mut() {
        if p.name.contains("lora_B") {
            p.value = lcg(p.value.len(), 7).iter().map(|v| v * 0.5).collect();
        }
    }
    m
}

#[test]
fn bart_lora_gradients_match_finite_differences() {
    check_directional(
        &mut bart("bart/models/tiny-c", Kind::Lora),
        &seq2seq_batch(),
    );
}

#[test]
fn bart_full_gradients_match_finite_differences() {
    check_directional(
        &mut bart("bart/models/tiny-c", Kind::Full),
        &seq2seq_batch(),
    );
}

#[test]
fn dropout_gradients_match_finite_differences() {
    // LoRA dropout (Llama), and BART's hidden, activation and LoRA dropout, with fixed masks.
    let mut s = setup(Kind::Lora);
    s.dropout = 0.2;
    let d = fixture("llama/models/llama-tied");
    let cfg = LlamaConfig::from_json(
        &std::fs::read_to_string(d.join("config.json")).unwrap(),
        "config.json",
    )
    .unwrap();
    let mut m = LlamaTrain::load(cfg, &Checkpoint::open_dir(&d).unwrap(), &s).unwrap();
    for p in m.params_mut() {
        if p.name.contains("lora_B") {
            p.value = lcg(p.value.len(), 7).iter().map(|v| v * 0.5).collect();
        }
    }
    m.set_dropout_seed(Some(11));
    let b = causal_batch();
    let with = m.accumulate(&b, 0.0).unwrap();
    let without = m.eval_loss(&b).unwrap();
    assert_ne!(
        with.sum, without.sum,
        "dropout must change the training loss"
    );
    check_directional_mode(&mut m, &b, true);

    let mut m = bart("bart/models/tiny-c", Kind::Full);
    m.config.dropout = 0.2;
    m.config.activation_dropout = 0.1;
    m.set_dropout_seed(Some(12));
    check_directional_mode(&mut m, &seq2seq_batch(), true);
}
