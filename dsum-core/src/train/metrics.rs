//! The run's records: `metrics.jsonl` (one JSON object per optimizer step, and one per
//! evaluation) and `run.json` (the run's name in the seed's convention
//! `{nickname}_ep{epochs}_bs{effective_bs}_lr{lr}_{timestamp}`, its tags and settings).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};

/// One optimizer step.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct StepRecord {
    pub step: u64,
    /// Fractional epoch, as transformers logs it (`epoch + position / batches`).
    pub epoch: f64,
    /// Mean token loss of the accumulation window.
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// The learning rate this step used.
    pub lr: f64,
    /// Counted (label) tokens in the window.
    pub tokens: u64,
}

/// One evaluation on the dev set.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct EvalRecord {
    pub step: u64,
    pub epoch: f64,
    pub eval_loss: f64,
    /// Final score = mean of ROUGE-1/2/L F1 × 100, when generation was evaluated.
    pub eval_rouge: Option<f64>,
    pub eval_rouge1: Option<f64>,
    pub eval_rouge2: Option<f64>,
    pub eval_rougel: Option<f64>,
}

/// `metrics.jsonl`, appended one line (one write) at a time.
pub struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    /// Open for appending. `keep_until_step`: on resume, lines of steps after the checkpoint
    /// (written before the interruption) are dropped first, so the file reads as one run.
    pub fn open(path: &Path, keep_until_step: Option<u64>) -> Result<Self> {
        let shown = path.display().to_string();
        if let Some(last) = keep_until_step {
            if path.is_file() {
                let text = std::fs::read_to_string(path).map_err(|e| Error::io(&shown, e))?;
                let kept: String = text
                    .lines()
                    .filter(|l| {
                        serde_json::from_str::<serde_json::Value>(l)
                            .ok()
                            .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                            .is_some_and(|s| s <= last)
                    })
                    .flat_map(|l| [l, "\n"])
                    .collect();
                crate::io::atomic::write_atomic(path, kept.as_bytes())?;
            }
        } else {
            crate::io::atomic::write_atomic(path, b"")?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(&shown, e))?;
        Ok(MetricsLog {
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn write<T: Serialize>(&mut self, record: &T) -> Result<()> {
        let mut line = serde_json::to_string(record)
            .map_err(|e| Error::io(self.path.display().to_string(), e))?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|_| self.file.flush())
            .map_err(|e| Error::io(self.path.display().to_string(), e))
    }
}

/// Python's `repr(float)`: shortest round-trip digits, scientific below 1e-4 or from 1e16
/// (`1e-05`, `0.0002`, `2e-05`), so run names match the seed's f-strings.
pub fn py_float(x: f64) -> String {
    if !x.is_finite() {
        return if x.is_nan() {
            "nan".into()
        } else if x > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    let sci = format!("{x:e}"); // shortest digits, e.g. "1.5e-5"
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..16).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mant}e{sign}{:02}", exp.abs());
    }
    let s = format!("{x}");
    if s.contains('.') {
        s
    } else {
        s + ".0"
    }
}

/// UTC `YYYYMMDD_HHMMSS` of a Unix time (civil-from-days, Howard Hinnant's algorithm).
pub fn timestamp(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let secs = unix_secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}_{:02}{:02}{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The seed's run name.
pub fn run_name(nickname: &str, epochs: usize, effective_bs: usize, lr: f64, ts: &str) -> String {
    format!(
        "{nickname}_ep{epochs}_bs{effective_bs}_lr{}_{ts}",
        py_float(lr)
    )
}

/// `run.json`: name, tags (model-type, method, size, arch, dtype) and the settings.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct RunInfo {
    pub name: String,
    pub tags: Vec<String>,
    pub started: String,
    pub config: serde_json::Value,
    /// Filled in when the run ends: `finished`, `interrupted`, `early_stopped`, `max_steps`.
    pub status: String,
    pub steps: u64,
    pub best_metric: Option<f64>,
}

impl RunInfo {
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join("run.json");
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::io(path.display().to_string(), e))?;
        crate::io::atomic::write_atomic(&path, text.as_bytes())
    }
}

/// Parameter count as the seed wrote model sizes in tags: `135M`, `1.5B`, `7B`.
pub fn size_tag(params: usize) -> String {
    let (v, unit) = if params >= 1_000_000_000 {
        (params as f64 / 1e9, "B")
    } else if params >= 1_000_000 {
        (params as f64 / 1e6, "M")
    } else {
        (params as f64 / 1e3, "K")
    };
    let r = (v * 10.0).round() / 10.0;
    if r >= 10.0 || r.fract() == 0.0 {
        format!("{}{unit}", r.round() as u64)
    } else {
        format!("{r:.1}{unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_float_repr() {
        for (x, s) in [
            (1e-5, "1e-05"),
            (2e-4, "0.0002"),
            (1e-4, "0.0001"),
            (3e-5, "3e-05"),
            (1.5e-5, "1.5e-05"),
            (0.001, "0.001"),
            (1.0, "1.0"),
            (1e16, "1e+16"),
        ] {
            assert_eq!(py_float(x), s);
        }
    }

    #[test]
    fn timestamps_and_names() {
        // 2023-11-14 22:13:20 UTC
        assert_eq!(timestamp(1_700_000_000), "20231114_221320");
        assert_eq!(timestamp(951_782_400), "20000229_000000");
        assert_eq!(
            run_name("kobart", 20, 50, 1e-5, "20231114_221320"),
            "kobart_ep20_bs50_lr1e-05_20231114_221320"
        );
        assert_eq!(size_tag(123_859_968), "124M");
        assert_eq!(size_tag(1_543_714_304), "1.5B");
        assert_eq!(size_tag(134_515_008), "135M");
    }
}
