//! Learning-rate schedules, as transformers' `get_{constant,linear,cosine}_schedule_with_warmup`
//! (a `LambdaLR` multiplier on the base lr). `lr(k)` is the lr used by optimizer step
//! `k` (0-based), i.e. what the scheduler holds after `k` calls of `scheduler.step()`.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    Constant,
    Linear,
    Cosine,
}

impl ScheduleKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "constant" | "constant_with_warmup" => Some(ScheduleKind::Constant),
            "linear" => Some(ScheduleKind::Linear),
            "cosine" => Some(ScheduleKind::Cosine),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub kind: ScheduleKind,
    pub base_lr: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
}

/// transformers' `get_warmup_steps`: a ratio becomes `ceil(ratio * total)`.
pub fn warmup_steps(ratio: f64, total_steps: usize) -> usize {
    (ratio * total_steps as f64).ceil() as usize
}

impl Schedule {
    /// The multiplier at step `k`, in f64 as Python computes it.
    pub fn factor(&self, k: usize) -> f64 {
        let (w, t) = (self.warmup_steps, self.total_steps);
        if k < w {
            return k as f64 / w.max(1) as f64;
        }
        match self.kind {
            ScheduleKind::Constant => 1.0,
            ScheduleKind::Linear => {
                (t as f64 - k as f64).max(0.0) / (t.saturating_sub(w)).max(1) as f64
            }
            ScheduleKind::Cosine => {
                let progress = (k - w) as f64 / (t.saturating_sub(w)).max(1) as f64;
                // num_cycles = 0.5: half a cosine from 1 to 0.
                (0.5 * (1.0 + (core::f64::consts::PI * 0.5 * 2.0 * progress).cos())).max(0.0)
            }
        }
    }

    pub fn lr(&self, k: usize) -> f64 {
        self.base_lr * self.factor(k)
    }
}
