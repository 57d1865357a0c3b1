//! The training loop, with transformers' Trainer semantics where they matter for the
//! numbers: micro-batches of `batch_size` in (seeded, per-epoch) shuffled order, gradient
//! accumulation over `grad_accum` micro-batches with the loss divided by the counted tokens
//! of the whole window (`num_items_in_batch`), global-norm clipping, AdamW, and a schedule
//! stepped after every optimizer step. Around it: metrics, TensorBoard scalars, evaluation
//! (dev loss and, through a callback, generation ROUGE), early stopping, best / periodic /
//! final checkpoints, exact resume, Ctrl-C and non-finite losses.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::clip::{clip_grad_norm, grad_norm};
use super::data::{collate, Collate, Example};
use super::metrics::{EvalRecord, MetricsLog, StepRecord};
use super::optim::{AdamW, AdamWConfig};
use super::rng::Rng;
use super::schedule::{warmup_steps, Schedule, ScheduleKind};
use super::state::{self, Export, Fingerprint, TrainerState};
use super::tensorboard::EventWriter;
use super::{LossSum, Trainable};
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Warmup {
    Ratio(f64),
    Steps(usize),
}

#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    pub batch_size: usize,
    pub grad_accum: usize,
    pub epochs: usize,
    /// Stop after this many optimizer steps (overrides `epochs` for the schedule).
    pub max_steps: Option<u64>,
    pub shuffle: bool,
    pub seed: u64,
    /// Stop after this many evaluations without a better metric.
    pub early_stopping_patience: Option<usize>,
    /// Evaluate every N optimizer steps; `None`: at the end of every epoch.
    pub eval_every: Option<u64>,
    /// Save a checkpoint every N optimizer steps (always at the end of each epoch).
    pub save_every: Option<u64>,
    /// Keep the newest K checkpoints (0: all).
    pub keep_checkpoints: usize,
    pub lr: f64,
    pub adamw: AdamWConfig,
    /// Clip the global gradient norm to this (`None` or 0: no clipping).
    pub max_grad_norm: Option<f32>,
    pub scheduler: ScheduleKind,
    pub warmup: Warmup,
}

impl Default for TrainConfig {
    /// transformers' TrainingArguments defaults, with the seed's early stopping off.
    fn default() -> Self {
        TrainConfig {
            batch_size: 8,
            grad_accum: 1,
            epochs: 3,
            max_steps: None,
            shuffle: true,
            seed: 42,
            early_stopping_patience: None,
            eval_every: None,
            save_every: None,
            keep_checkpoints: 2,
            lr: 5e-5,
            adamw: AdamWConfig::default(),
            max_grad_norm: Some(1.0),
            scheduler: ScheduleKind::Linear,
            warmup: Warmup::Ratio(0.0),
        }
    }
}

impl TrainConfig {
    /// Optimizer steps per epoch: the last window of an epoch may be short.
    pub fn steps_per_epoch(&self, examples: usize) -> u64 {
        examples.div_ceil(self.batch_size).div_ceil(self.grad_accum) as u64
    }

    pub fn total_steps(&self, examples: usize) -> u64 {
        self.max_steps
            .unwrap_or(self.epochs as u64 * self.steps_per_epoch(examples))
    }

    pub fn schedule(&self, examples: usize) -> Schedule {
        let total = self.total_steps(examples) as usize;
        Schedule {
            kind: self.scheduler,
            base_lr: self.lr,
            warmup_steps: match self.warmup {
                Warmup::Ratio(r) => warmup_steps(r, total),
                Warmup::Steps(s) => s,
            },
            total_steps: total,
        }
    }

    fn check(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Train(m.to_string()));
        if self.batch_size == 0 || self.grad_accum == 0 {
            return bad("batch_size and grad_accum must be at least 1");
        }
        if self.max_steps.is_none() && self.epochs == 0 {
            return bad("epochs must be at least 1 (or set max_steps)");
        }
        if self.max_steps == Some(0) {
            return bad("max_steps must be at least 1");
        }
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return bad("lr must be a finite number >= 0");
        }
        Ok(())
    }
}

/// ROUGE of the model's generations on the dev set (F1 × 100).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RougeResult {
    /// Mean of the three F1 × 100: the competition's final score.
    pub final_score: f64,
    pub rouge1: f64,
    pub rouge2: f64,
    pub rouge_l: f64,
}

/// Generation-based evaluation, provided by the frontend (it owns generation settings).
pub trait Evaluator {
    fn rouge(&mut self, model: &dyn Trainable) -> Result<RougeResult>;
}

/// Progress reporting (the CLI draws a bar); every method has a no-op default.
pub trait Observer {
    fn start(&mut self, _total_steps: u64, _done_steps: u64) {}
    fn step(&mut self, _record: &StepRecord) {}
    fn eval(&mut self, _record: &EvalRecord) {}
    fn message(&mut self, _text: &str) {}
}

/// An observer that shows nothing.
pub struct Silent;
impl Observer for Silent {}

/// Everything a run needs besides the model.
pub struct Run<'a> {
    /// Output folder: metrics.jsonl, tb/, checkpoints/, best/, final/.
    pub out_dir: &'a Path,
    pub config: &'a TrainConfig,
    pub train: &'a [Example],
    pub dev: Option<&'a [Example]>,
    pub collate: Collate,
    pub export: &'a Export,
    /// The base model (checked on resume).
    pub base_model: &'a str,
    pub evaluator: Option<&'a mut dyn Evaluator>,
    pub observer: &'a mut dyn Observer,
    /// Set (by Ctrl-C) to stop after the current optimizer step with a checkpoint.
    pub stop: &'a AtomicBool,
    /// Resume from this checkpoint folder.
    pub resume: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// All epochs or max_steps done; `final/` written.
    Finished,
    /// Early stopping ended the run; `final/` written.
    EarlyStopped,
    /// Stopped by the flag; resume from `checkpoint`.
    Interrupted { checkpoint: PathBuf },
}

#[derive(Clone, Debug)]
pub struct Summary {
    pub outcome: Outcome,
    pub steps: u64,
    /// Loss of every optimizer step run in this call.
    pub losses: Vec<f64>,
    pub best_metric: Option<f64>,
}

/// The newest complete checkpoint in `out_dir/checkpoints`.
pub fn latest_checkpoint(out_dir: &Path) -> Option<PathBuf> {
    state::list(&out_dir.join("checkpoints"))
        .pop()
        .map(|(_, p)| p)
}

struct Loop<'r, 'a> {
    run: &'r mut Run<'a>,
    model: &'r mut dyn Trainable,
    opt: AdamW,
    st: TrainerState,
    metrics: MetricsLog,
    tb: EventWriter,
    schedule: Schedule,
    micro: usize,
    /// Step of the last checkpoint written.
    saved: Option<u64>,
    /// Step of the last evaluation.
    evaluated: Option<u64>,
    losses: Vec<f64>,
}

pub fn train(model: &mut dyn Trainable, mut run: Run) -> Result<Summary> {
    let cfg = run.config.clone();
    cfg.check()?;
    if run.train.is_empty() {
        return Err(Error::Train("the training set has no rows".into()));
    }
    if run.dev.is_some_and(|d| d.is_empty()) {
        return Err(Error::Train("the dev set has no rows".into()));
    }
    let out = run.out_dir.to_path_buf();
    std::fs::create_dir_all(out.join("checkpoints"))
        .map_err(|e| Error::io(out.display().to_string(), e))?;
    let n = run.train.len();
    let total = cfg.total_steps(n);
    let fingerprint = Fingerprint::of(model, run.base_model);
    let mut opt = AdamW::new(cfg.adamw, &model.params_mut());
    let fresh = TrainerState {
        step: 0,
        epoch: 0,
        position: 0,
        epoch_rng: Rng::new(cfg.seed),
        rng: Rng::new(cfg.seed),
        best_metric: None,
        best_step: None,
        patience: 0,
        total_steps: total,
        fingerprint: fingerprint.clone(),
    };
    let st = match &run.resume {
        None => fresh,
        Some(dir) => {
            let st = state::load(dir, model, &mut opt, &fingerprint, run.export)?;
            if st.total_steps != total {
                return Err(Error::Train(format!(
                    "{}: the checkpoint was made for a run of {} steps, this configuration has {total} \
                     (batch size, accumulation, epochs, max_steps or the data changed); resume \
                     with the same settings",
                    dir.display(),
                    st.total_steps
                )));
            }
            st
        }
    };
    let metrics = MetricsLog::open(
        &out.join("metrics.jsonl"),
        run.resume.as_ref().map(|_| st.step),
    )?;
    let tb = EventWriter::create(&out.join("tb"))?;
    let schedule = cfg.schedule(n);
    let saved = run.resume.as_ref().map(|_| st.step);
    let mut lp = Loop {
        micro: n.div_ceil(cfg.batch_size),
        run: &mut run,
        model,
        opt,
        st,
        metrics,
        tb,
        schedule,
        saved,
        evaluated: None,
        losses: Vec::new(),
    };
    let outcome = lp.run_loop()?;
    let summary = Summary {
        outcome,
        steps: lp.st.step,
        losses: lp.losses,
        best_metric: lp.st.best_metric,
    };
    Ok(summary)
}

impl Loop<'_, '_> {
    fn cfg(&self) -> &TrainConfig {
        self.run.config
    }

    fn run_loop(&mut self) -> Result<Outcome> {
        let total = self.st.total_steps;
        self.run.observer.start(total, self.st.step);
        let n = self.run.train.len();
        while self.st.step < total {
            if self.st.position >= self.micro {
                self.st.epoch += 1;
                self.st.position = 0;
            }
            // This epoch's order: drawn at its start; a resume mid-epoch redraws it.
            let mut order: Vec<usize> = (0..n).collect();
            if self.cfg().shuffle {
                if self.st.position == 0 {
                    self.st.epoch_rng = self.st.rng.clone();
                    self.st.rng.shuffle(&mut order);
                } else {
                    self.st.epoch_rng.clone().shuffle(&mut order);
                }
            }
            while self.st.position < self.micro && self.st.step < total {
                self.window(&order)?;
                let epoch_done = self.st.position >= self.micro;
                let step = self.st.step;
                if self
                    .cfg()
                    .eval_every
                    .is_some_and(|k| step.is_multiple_of(k))
                    && self.eval()?
                {
                    return self.finish(Outcome::EarlyStopped);
                }
                if epoch_done {
                    break; // the epoch-end evaluation and checkpoint come first
                }
                if self
                    .cfg()
                    .save_every
                    .is_some_and(|k| step.is_multiple_of(k))
                {
                    self.checkpoint()?;
                }
                if self.run.stop.load(Ordering::SeqCst) {
                    return self.interrupted();
                }
            }
            if self.st.position >= self.micro {
                // End of epoch: evaluate (unless evaluating by steps), then checkpoint
                // with the position already in the next epoch.
                let early = self.cfg().eval_every.is_none() && self.eval()?;
                self.st.epoch += 1;
                self.st.position = 0;
                self.checkpoint()?;
                if early {
                    return self.finish(Outcome::EarlyStopped);
                }
                if self.run.stop.load(Ordering::SeqCst) && self.st.step < total {
                    return self.interrupted();
                }
            }
        }
        // The last weights are evaluated too (max_steps mid-epoch, or eval_every not
        // dividing the total), so `best/` has seen every candidate.
        if self.evaluated != Some(self.st.step) {
            self.eval()?;
        }
        if self.saved != Some(self.st.step) {
            self.checkpoint()?;
        }
        self.finish(Outcome::Finished)
    }

    /// One optimizer step over the next `grad_accum` micro-batches.
    fn window(&mut self, order: &[usize]) -> Result<()> {
        let (bs, accum) = (self.cfg().batch_size, self.cfg().grad_accum);
        let n = order.len();
        let first = self.st.position;
        let last = (first + accum).min(self.micro);
        let causal = self.model.is_causal();
        let batches: Vec<_> = (first..last)
            .map(|mb| {
                let rows: Vec<&Example> = order[mb * bs..((mb + 1) * bs).min(n)]
                    .iter()
                    .map(|&i| &self.run.train[i])
                    .collect();
                collate(&rows, self.run.collate)
            })
            .collect();
        let tokens: usize = batches.iter().map(|b| b.counted_tokens(causal)).sum();
        let step = self.st.step + 1;
        if tokens == 0 {
            return Err(Error::Train(format!(
                "step {step}: no label tokens in this accumulation window (every target truncated away?)"
            )));
        }
        for p in self.model.params_mut() {
            p.zero_grad();
        }
        let scale = 1.0 / tokens as f32;
        let mut sum = LossSum::default();
        for b in &batches {
            self.model.set_dropout_seed(Some(self.st.rng.next_u64()));
            let l = self.model.accumulate(b, scale)?;
            sum.sum += l.sum;
            sum.tokens += l.tokens;
        }
        let loss = sum.sum / tokens as f64;
        let mut params = self.model.params_mut();
        let norm = match self.run.config.max_grad_norm {
            Some(m) if m > 0.0 => clip_grad_norm(&mut params, m),
            _ => grad_norm(&params),
        };
        if !loss.is_finite() || !norm.is_finite() {
            let what = if loss.is_finite() {
                "gradient norm"
            } else {
                "loss"
            };
            let kept = match self.saved {
                Some(s) if s > 0 => format!(
                    "the last good checkpoint is {}",
                    self.run
                        .out_dir
                        .join("checkpoints")
                        .join(format!("step-{s}"))
                        .display()
                ),
                _ => "no checkpoint was saved yet".to_string(),
            };
            return Err(Error::Train(format!(
                "training stopped at step {step}: the {what} is {} (lower the learning rate or check the data); {kept}",
                if loss.is_finite() { norm as f64 } else { loss }
            )));
        }
        let lr = self.schedule.lr(self.st.step as usize);
        self.opt.step(&mut params, lr);
        drop(params);
        self.st.step = step;
        self.st.position = last;
        let record = StepRecord {
            step,
            epoch: self.st.epoch as f64 + last as f64 / self.micro as f64,
            loss,
            grad_norm: norm as f64,
            lr,
            tokens: tokens as u64,
        };
        self.metrics.write(&record)?;
        self.tb.scalar(step, "train/loss", loss)?;
        self.tb.scalar(step, "train/grad_norm", norm as f64)?;
        self.tb.scalar(step, "train/learning_rate", lr)?;
        self.run.observer.step(&record);
        self.losses.push(loss);
        Ok(())
    }

    /// Dev loss (and ROUGE); updates best / patience, exports `best/`. Returns whether
    /// early stopping ends the run.
    fn eval(&mut self) -> Result<bool> {
        let Some(dev) = self.run.dev else {
            return Ok(false);
        };
        self.evaluated = Some(self.st.step);
        let mut sum = LossSum::default();
        for chunk in dev.chunks(self.cfg().batch_size) {
            let rows: Vec<&Example> = chunk.iter().collect();
            let l = self.model.eval_loss(&collate(&rows, self.run.collate))?;
            sum.sum += l.sum;
            sum.tokens += l.tokens;
        }
        let eval_loss = sum.sum / sum.tokens.max(1) as f64;
        let rouge = match self.run.evaluator.as_deref_mut() {
            Some(e) => Some(e.rouge(&*self.model)?),
            None => None,
        };
        let record = EvalRecord {
            step: self.st.step,
            epoch: self.st.epoch as f64 + self.st.position as f64 / self.micro as f64,
            eval_loss,
            eval_rouge: rouge.map(|r| r.final_score),
            eval_rouge1: rouge.map(|r| r.rouge1),
            eval_rouge2: rouge.map(|r| r.rouge2),
            eval_rougel: rouge.map(|r| r.rouge_l),
        };
        self.metrics.write(&record)?;
        self.tb.scalar(self.st.step, "eval/loss", eval_loss)?;
        if let Some(r) = rouge {
            self.tb.scalar(self.st.step, "eval/rouge", r.final_score)?;
        }
        self.run.observer.eval(&record);
        // Higher is better: ROUGE when generation is evaluated, else minus the dev loss.
        let metric = rouge.map(|r| r.final_score).unwrap_or(-eval_loss);
        if self.st.best_metric.is_none_or(|b| metric > b) {
            self.st.best_metric = Some(metric);
            self.st.best_step = Some(self.st.step);
            self.st.patience = 0;
            let dir = self.run.out_dir.join("best");
            let (export, model) = (self.run.export, &*self.model);
            state::write_dir_atomic(&dir, |tmp| export.write(model, tmp))?;
        } else {
            self.st.patience += 1;
        }
        Ok(self
            .cfg()
            .early_stopping_patience
            .is_some_and(|p| p > 0 && self.st.patience >= p))
    }

    fn interrupted(&mut self) -> Result<Outcome> {
        let dir = if self.saved == Some(self.st.step) {
            self.run
                .out_dir
                .join("checkpoints")
                .join(format!("step-{}", self.st.step))
        } else {
            self.checkpoint()?
        };
        self.run.observer.message(&format!(
            "interrupted: checkpoint saved in {}; rerun with --resume to continue",
            dir.display()
        ));
        Ok(Outcome::Interrupted { checkpoint: dir })
    }

    fn checkpoint(&mut self) -> Result<PathBuf> {
        let ck = self.run.out_dir.join("checkpoints");
        let dir = ck.join(format!("step-{}", self.st.step));
        state::save(&dir, &*self.model, &self.opt, &self.st, self.run.export)?;
        self.saved = Some(self.st.step);
        state::rotate(&ck, self.cfg().keep_checkpoints)?;
        Ok(dir)
    }

    fn finish(&mut self, outcome: Outcome) -> Result<Outcome> {
        if self.saved != Some(self.st.step) {
            self.checkpoint()?;
        }
        let dir = self.run.out_dir.join("final");
        let (export, model) = (self.run.export, &*self.model);
        state::write_dir_atomic(&dir, |tmp| export.write(model, tmp))?;
        Ok(outcome)
    }
}
