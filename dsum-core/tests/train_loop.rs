//! The training loop on a model small enough to differentiate by hand: a bigram
//! softmax-regression "LM" (logits of the next token = W[current token] + b). Checks that
//! an interrupted and resumed run ends exactly where an uninterrupted one does, that
//! gradient accumulation divides by the whole window's tokens, checkpoints, early stopping,
//! non-finite losses and a checkpoint of another model.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use dsum_core::error::Result;
use dsum_core::tensor::Weight;
use dsum_core::train::data::{Collate, Example};
use dsum_core::train::metrics::StepRecord;
use dsum_core::train::schedule::ScheduleKind;
use dsum_core::train::state::Export;
use dsum_core::train::trainer::{
    latest_checkpoint, train, Evaluator, Observer, Outcome, RougeResult, Run, Silent, TrainConfig,
    Warmup,
};
use dsum_core::train::{Batch, LossSum, Param, Trainable, IGNORE};

const V: usize = 7;

struct Bigram {
    params: Vec<Param>, // W [V, V], bias [V]
    dropout: Option<u64>,
    /// Make the loss NaN from this many accumulate calls on.
    nan_after: Option<usize>,
    calls: usize,
}

impl Bigram {
    fn new(seed: u64) -> Self {
        let mut s = seed;
        let mut r = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let w: Vec<f32> = (0..V * V).map(|_| r()).collect();
        let b: Vec<f32> = (0..V).map(|_| r() * 0.1).collect();
        Bigram {
            params: vec![
                Param::new("model.lm.weight", vec![V, V], w),
                Param::new("model.lm.bias", vec![V], b),
            ],
            dropout: None,
            nan_after: None,
            calls: 0,
        }
    }

    /// Sum of CE over counted positions; with `scale`, adds gradients.
    fn run(&self, batch: &Batch, grads: Option<(&mut [f32], &mut [f32], f32)>) -> LossSum {
        let mut g = grads;
        let mut out = LossSum::default();
        for r in 0..batch.rows {
            for t in 0..batch.cols.saturating_sub(1) {
                let y = batch.labels[r * batch.cols + t + 1];
                if y == IGNORE {
                    continue;
                }
                let x = batch.input_ids[r * batch.cols + t] as usize;
                // "Dropout": a seeded coin drops the W row for some positions.
                let keep = match self.dropout {
                    Some(s) => {
                        (s ^ (r * 131 + t) as u64).wrapping_mul(0x9E3779B97F4A7C15) >> 62 != 0
                    }
                    None => true,
                };
                let (w, b) = (&self.params[0].value, &self.params[1].value);
                let logits: Vec<f64> = (0..V)
                    .map(|v| b[v] as f64 + if keep { w[x * V + v] as f64 } else { 0.0 })
                    .collect();
                let m = logits.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = logits.iter().map(|l| (l - m).exp()).sum();
                out.sum += -(logits[y as usize] - m - z.ln());
                out.tokens += 1;
                if let Some((dw, db, scale)) = g.as_mut() {
                    for v in 0..V {
                        let p = (logits[v] - m).exp() / z - if v == y as usize { 1.0 } else { 0.0 };
                        let d = (p as f32) * *scale;
                        db[v] += d;
                        if keep {
                            dw[x * V + v] += d;
                        }
                    }
                }
            }
        }
        out
    }
}

impl Trainable for Bigram {
    fn is_causal(&self) -> bool {
        true
    }
    fn params(&self) -> Vec<&Param> {
        self.params.iter().collect()
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        self.params.iter_mut().collect()
    }
    fn set_dropout_seed(&mut self, seed: Option<u64>) {
        self.dropout = seed;
    }
    fn accumulate(&mut self, batch: &Batch, scale: f32) -> Result<LossSum> {
        self.calls += 1;
        let mut dw = std::mem::take(&mut self.params[0].grad);
        let mut db = std::mem::take(&mut self.params[1].grad);
        let mut l = self.run(batch, Some((&mut dw, &mut db, scale)));
        self.params[0].grad = dw;
        self.params[1].grad = db;
        if self.nan_after.is_some_and(|n| self.calls > n) {
            l.sum = f64::NAN;
        }
        Ok(l)
    }
    fn eval_loss(&mut self, batch: &Batch) -> Result<LossSum> {
        let mut me = Bigram {
            params: Vec::new(),
            dropout: None,
            nan_after: None,
            calls: 0,
        };
        me.params = self
            .params
            .iter()
            .map(|p| Param::new(p.name.clone(), p.shape.clone(), p.value.clone()))
            .collect();
        Ok(me.run(batch, None))
    }
    fn merged_weights(&self) -> Result<Vec<(String, Weight)>> {
        Ok(self
            .params
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    Weight::from_vec(p.shape.clone(), p.value.clone()),
                )
            })
            .collect())
    }
}

/// Rows of varying length; labels = inputs with a prompt part masked.
fn data(n: usize, seed: usize) -> Vec<Example> {
    (0..n)
        .map(|i| {
            let len = 3 + (i * 5 + seed) % 6;
            let ids: Vec<u32> = (0..len)
                .map(|t| ((i * 3 + t * t + seed) % V) as u32)
                .collect();
            let prompt = 1 + i % 2;
            let labels = ids
                .iter()
                .enumerate()
                .map(|(t, &x)| if t < prompt { IGNORE } else { x as i64 })
                .collect();
            Example {
                input_ids: ids,
                labels,
            }
        })
        .collect()
}

fn config() -> TrainConfig {
    TrainConfig {
        batch_size: 3,
        grad_accum: 2,
        epochs: 3,
        shuffle: true,
        seed: 5,
        keep_checkpoints: 2,
        lr: 0.05,
        max_grad_norm: Some(0.5),
        scheduler: ScheduleKind::Cosine,
        warmup: Warmup::Ratio(0.1),
        save_every: Some(2),
        ..Default::default()
    }
}

const COLLATE: Collate = Collate {
    causal: true,
    pad_id: 0,
    decoder_start_id: 0,
};

fn export(dir: &Path) -> Export {
    Export::Full {
        base_dir: dir.to_path_buf(),
    }
}

/// Stops after `n` steps by raising the flag the CLI's Ctrl-C handler sets.
struct StopAfter<'a>(usize, &'a AtomicBool);
impl Observer for StopAfter<'_> {
    fn step(&mut self, r: &StepRecord) {
        if r.step as usize >= self.0 {
            self.1.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

fn run_with<'a>(
    out: &'a Path,
    cfg: &'a TrainConfig,
    train_set: &'a [Example],
    dev: Option<&'a [Example]>,
    export: &'a Export,
    observer: &'a mut dyn Observer,
    stop: &'a AtomicBool,
) -> Run<'a> {
    Run {
        out_dir: out,
        config: cfg,
        train: train_set,
        dev,
        collate: COLLATE,
        export,
        base_model: "bigram-base",
        evaluator: None,
        observer,
        stop,
        resume: None,
    }
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn resume_after_interrupt_ends_like_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (train_set, dev) = (data(17, 0), data(4, 3));
    let cfg = config();
    let ex = export(tmp.path());
    // Steps per epoch: ceil(ceil(17/3)/2) = 3; 9 in all.
    assert_eq!(cfg.total_steps(17), 9);

    let full_dir = tmp.path().join("full");
    let mut m1 = Bigram::new(1);
    let stop = AtomicBool::new(false);
    let mut silent = Silent;
    let s1 = train(
        &mut m1,
        run_with(
            &full_dir,
            &cfg,
            &train_set,
            Some(&dev),
            &ex,
            &mut silent,
            &stop,
        ),
    )
    .unwrap();
    assert_eq!(s1.outcome, Outcome::Finished);
    assert_eq!(s1.losses.len(), 9);
    // The loss goes down on this easy problem.
    assert!(s1.losses[8] < s1.losses[0], "{:?}", s1.losses);

    // Interrupted after step 4 (mid-epoch, between checkpoints), then resumed twice over.
    let part_dir = tmp.path().join("part");
    let mut m2 = Bigram::new(1);
    let stop2 = AtomicBool::new(false);
    let mut obs = StopAfter(4, &stop2);
    let s2 = train(
        &mut m2,
        run_with(
            &part_dir,
            &cfg,
            &train_set,
            Some(&dev),
            &ex,
            &mut obs,
            &stop2,
        ),
    )
    .unwrap();
    let Outcome::Interrupted { checkpoint } = &s2.outcome else {
        panic!("{:?}", s2.outcome)
    };
    assert!(checkpoint.ends_with("step-4"));
    assert_eq!(
        latest_checkpoint(&part_dir).as_deref(),
        Some(checkpoint.as_path())
    );
    assert!(!part_dir.join("final").exists());

    // A fresh model (other initial weights): everything must come from the checkpoint.
    let mut m3 = Bigram::new(99);
    let stop3 = AtomicBool::new(false);
    let mut obs3 = StopAfter(6, &stop3); // ends an epoch: interrupt right after it
    let mut run = run_with(
        &part_dir,
        &cfg,
        &train_set,
        Some(&dev),
        &ex,
        &mut obs3,
        &stop3,
    );
    run.resume = Some(checkpoint.clone());
    let s3 = train(&mut m3, run).unwrap();
    assert!(
        matches!(s3.outcome, Outcome::Interrupted { .. }),
        "{:?}",
        s3.outcome
    );

    let mut m4 = Bigram::new(7);
    let stop4 = AtomicBool::new(false);
    let mut silent4 = Silent;
    let mut run = run_with(
        &part_dir,
        &cfg,
        &train_set,
        Some(&dev),
        &ex,
        &mut silent4,
        &stop4,
    );
    run.resume = latest_checkpoint(&part_dir);
    let s4 = train(&mut m4, run).unwrap();
    assert_eq!(s4.outcome, Outcome::Finished);

    let resumed: Vec<f64> = s2
        .losses
        .iter()
        .chain(&s3.losses)
        .chain(&s4.losses)
        .cloned()
        .collect();
    assert_eq!(resumed, s1.losses, "losses differ after resume");
    assert_eq!(m4.params[0].value, m1.params[0].value);
    assert_eq!(m4.params[1].value, m1.params[1].value);

    // metrics.jsonl reads as one run: the same step lines as the uninterrupted one.
    let steps = |d: &Path| -> Vec<serde_json::Value> {
        lines(&d.join("metrics.jsonl"))
            .into_iter()
            .filter(|l| l.get("loss").is_some())
            .collect()
    };
    assert_eq!(steps(&full_dir), steps(&part_dir));
    let evals: Vec<_> = lines(&full_dir.join("metrics.jsonl"))
        .into_iter()
        .filter(|l| l.get("eval_loss").is_some())
        .collect();
    assert_eq!(evals.len(), 3, "one evaluation per epoch");
    // Checkpoints: only the newest 2 kept; final/ and best/ written; a TensorBoard file.
    let cks: Vec<String> = std::fs::read_dir(full_dir.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(cks.len(), 2, "{cks:?}");
    assert!(full_dir
        .join("checkpoints/step-9/optimizer.safetensors")
        .is_file());
    assert!(full_dir.join("final/model.safetensors").is_file());
    assert!(full_dir.join("best/model.safetensors").is_file());
    assert_eq!(std::fs::read_dir(full_dir.join("tb")).unwrap().count(), 1);
}

#[test]
fn accumulation_divides_by_the_tokens_of_the_whole_window() {
    // One window of 2 micro-batches of 2 == one micro-batch of 4 (no shuffling, no
    // dropout difference: the loss and update only depend on the window's mean).
    let tmp = tempfile::tempdir().unwrap();
    let train_set = data(4, 1);
    let ex = export(tmp.path());
    let mut losses = Vec::new();
    let mut weights = Vec::new();
    for (bs, accum) in [(2, 2), (4, 1), (1, 4)] {
        let cfg = TrainConfig {
            batch_size: bs,
            grad_accum: accum,
            epochs: 2,
            shuffle: false,
            max_grad_norm: None,
            lr: 0.1,
            scheduler: ScheduleKind::Constant,
            ..Default::default()
        };
        let mut m = NoDropout(Bigram::new(3));
        let stop = AtomicBool::new(false);
        let mut silent = Silent;
        let out = tmp.path().join(format!("bs{bs}"));
        let s = train(
            &mut m,
            run_with(&out, &cfg, &train_set, None, &ex, &mut silent, &stop),
        )
        .unwrap();
        losses.push(s.losses);
        weights.push(m.0.params[0].value.clone());
    }
    for k in 1..3 {
        for (a, b) in losses[0].iter().zip(&losses[k]) {
            assert!((a - b).abs() < 1e-9, "{:?}", losses);
        }
        for (a, b) in weights[0].iter().zip(&weights[k]) {
            assert!((a - b).abs() < 1e-6);
        }
    }
}

/// The bigram model with its dropout ignored.
struct NoDropout(Bigram);
impl Trainable for NoDropout {
    fn is_causal(&self) -> bool {
        true
    }
    fn params(&self) -> Vec<&Param> {
        self.0.params()
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        self.0.params_mut()
    }
    fn set_dropout_seed(&mut self, _seed: Option<u64>) {}
    fn accumulate(&mut self, batch: &Batch, scale: f32) -> Result<LossSum> {
        self.0.accumulate(batch, scale)
    }
    fn eval_loss(&mut self, batch: &Batch) -> Result<LossSum> {
        self.0.eval_loss(batch)
    }
    fn merged_weights(&self) -> Result<Vec<(String, Weight)>> {
        self.0.merged_weights()
    }
}

#[test]
fn nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let train_set = data(12, 2);
    let ex = export(tmp.path());
    let cfg = TrainConfig {
        save_every: Some(1),
        ..config()
    };
    let mut m = Bigram::new(1);
    m.nan_after = Some(6); // 2 micro-batches a step: steps 1-3 fine, step 4 NaN
    let stop = AtomicBool::new(false);
    let mut silent = Silent;
    let out = tmp.path().join("nan");
    let e = train(
        &mut m,
        run_with(&out, &cfg, &train_set, None, &ex, &mut silent, &stop),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("step 4") && e.contains("NaN") && e.contains("step-3"),
        "{e}"
    );
    assert!(out.join("checkpoints/step-3/trainer_state.json").is_file());
    assert!(!out.join("final").exists());
}

#[test]
fn resume_from_another_model_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let train_set = data(6, 0);
    let ex = export(tmp.path());
    let cfg = TrainConfig {
        epochs: 1,
        ..config()
    };
    let out = tmp.path().join("a");
    let stop = AtomicBool::new(false);
    let mut silent = Silent;
    train(
        &mut Bigram::new(1),
        run_with(&out, &cfg, &train_set, None, &ex, &mut silent, &stop),
    )
    .unwrap();
    let ck = latest_checkpoint(&out).unwrap();

    let mut run = run_with(&out, &cfg, &train_set, None, &ex, &mut silent, &stop);
    run.base_model = "another-base";
    run.resume = Some(ck.clone());
    let e = train(&mut Bigram::new(1), run).unwrap_err().to_string();
    assert!(
        e.contains("another-base") && e.contains("bigram-base"),
        "{e}"
    );

    let mut other = Bigram::new(1);
    other.params[1].name = "model.head.bias".into();
    let mut run = run_with(&out, &cfg, &train_set, None, &ex, &mut silent, &stop);
    run.resume = Some(ck);
    let e = train(&mut other, run).unwrap_err().to_string();
    assert!(
        e.contains("model.head.bias") && e.contains("another model"),
        "{e}"
    );

    let mut run = run_with(&out, &cfg, &train_set, None, &ex, &mut silent, &stop);
    run.resume = Some(tmp.path().to_path_buf());
    let e = train(&mut Bigram::new(1), run).unwrap_err().to_string();
    assert!(e.contains("trainer_state.json"), "{e}");
}

/// A ROUGE that gets worse every time: early stopping after `patience` evaluations.
struct Worse(f64);
impl Evaluator for Worse {
    fn rouge(&mut self, _m: &dyn Trainable) -> Result<RougeResult> {
        self.0 -= 1.0;
        Ok(RougeResult {
            final_score: self.0,
            rouge1: self.0,
            rouge2: self.0,
            rouge_l: self.0,
        })
    }
}

#[test]
fn early_stopping_on_rouge_with_patience() {
    let tmp = tempfile::tempdir().unwrap();
    let (train_set, dev) = (data(12, 1), data(3, 2));
    let ex = export(tmp.path());
    let cfg = TrainConfig {
        epochs: 10,
        eval_every: Some(1),
        early_stopping_patience: Some(2),
        ..config()
    };
    let out = tmp.path().join("es");
    let stop = AtomicBool::new(false);
    let mut silent = Silent;
    let mut ev = Worse(50.0);
    let mut run = run_with(&out, &cfg, &train_set, Some(&dev), &ex, &mut silent, &stop);
    run.evaluator = Some(&mut ev);
    let s = train(&mut Bigram::new(1), run).unwrap();
    assert_eq!(s.outcome, Outcome::EarlyStopped);
    assert_eq!(s.steps, 3, "best at step 1, two worse evaluations");
    assert_eq!(s.best_metric, Some(49.0));
    // max_steps mid-epoch: the final weights are evaluated once more.
    let cfg2 = TrainConfig {
        max_steps: Some(2),
        eval_every: None,
        ..cfg.clone()
    };
    let out2 = tmp.path().join("ms");
    let mut silent3 = Silent;
    let mut ev2 = Worse(50.0);
    let mut run = run_with(
        &out2,
        &cfg2,
        &train_set,
        Some(&dev),
        &ex,
        &mut silent3,
        &stop,
    );
    run.evaluator = Some(&mut ev2);
    let s2 = train(&mut Bigram::new(1), run).unwrap();
    assert_eq!(
        (s2.outcome.clone(), s2.steps, s2.best_metric),
        (Outcome::Finished, 2, Some(49.0))
    );
    assert!(out2.join("checkpoints/step-2").is_dir() && out2.join("best").is_dir());
    let evals: Vec<_> = lines(&out.join("metrics.jsonl"))
        .into_iter()
        .filter(|l| l.get("eval_rouge").is_some())
        .collect();
    assert_eq!(evals.len(), 3);
    assert_eq!(evals[0]["eval_rouge"], 49.0);
    assert!(out.join("best/model.safetensors").is_file() && out.join("final").is_dir());

    // An empty dev set is refused up front.
    let mut silent2 = Silent;
    let e = train(
        &mut Bigram::new(1),
        run_with(&out, &cfg, &train_set, Some(&[]), &ex, &mut silent2, &stop),
    )
    .unwrap_err();
    assert!(e.to_string().contains("dev set has no rows"));
}
