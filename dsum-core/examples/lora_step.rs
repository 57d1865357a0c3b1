//! Time LoRA training steps of a Llama-family model on one fixed batch (BENCHMARKS.md,
//! "LoRA training step"; tools/bench/lora_step/ runs it beside PyTorch + peft).
//!
//!     cargo run --release -p dsum-core --features rayon,mmap --example lora_step -- \
//!         --model DIR --batch 4 --seq 256 --steps 5 --ids ids.json [--adapter FILE] [--lr 2e-4]
//!
//! LoRA r=16, alpha=32 on every linear layer (`all-linear`), dropout 0. `--ids` is a JSON
//! array of rows of token ids (at least `--batch` rows of at least `--seq` ids; the first ones
//! are used); every position is attended and every label counts. One step = `accumulate`
//! (forward + backward) + an AdamW update over the LoRA parameters written here (the real
//! optimizer lives in the training loop; over ~4.9M LoRA values it is a few milliseconds).
//! `--adapter` starts from a PEFT `adapter_model.safetensors` (so that another framework can
//! start from the very same weights). Prints one JSON object: per-step seconds and losses.

use std::error::Error as StdError;
use std::path::PathBuf;
use std::time::Instant;

use dsum_core::io::checkpoint::{read_shared, Checkpoint};
use dsum_core::train::models::build;
use dsum_core::train::setup::{Kind, Setup};
use dsum_core::train::{Batch, Param};

type Res<T> = Result<T, Box<dyn StdError>>;

struct Args {
    model: PathBuf,
    ids: PathBuf,
    adapter: Option<PathBuf>,
    batch: usize,
    seq: usize,
    steps: usize,
    lr: f32,
}

fn parse_args() -> Res<Args> {
    let mut it = std::env::args().skip(1);
    let (mut model, mut ids, mut adapter) = (None, None, None);
    let (mut batch, mut seq, mut steps, mut lr) = (4usize, 256usize, 5usize, 2e-4f32);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |v: String, what: &str| -> Res<usize> {
            v.parse()
                .map_err(|_| format!("{what} must be a whole number, got `{v}`").into())
        };
        match flag.as_str() {
            "--model" => model = Some(PathBuf::from(val()?)),
            "--ids" => ids = Some(PathBuf::from(val()?)),
            "--adapter" => adapter = Some(PathBuf::from(val()?)),
            "--batch" => batch = num(val()?, "--batch")?,
            "--seq" => seq = num(val()?, "--seq")?,
            "--steps" => steps = num(val()?, "--steps")?,
            "--lr" => {
                let v = val()?;
                lr = v
                    .parse()
                    .map_err(|_| format!("--lr must be a number, got `{v}`"))?;
            }
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    if batch == 0 || seq < 2 {
        return Err("--batch must be at least 1 and --seq at least 2".into());
    }
    Ok(Args {
        model: model.ok_or("--model DIR is required")?,
        ids: ids.ok_or("--ids FILE is required")?,
        adapter,
        batch,
        seq,
        steps,
        lr,
    })
}

/// The first `rows` rows of `seq` ids from a JSON array of arrays, labels = ids, no padding.
fn read_batch(path: &PathBuf, rows: usize, seq: usize) -> Res<Batch> {
    let name = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: {e}"))?;
    let all: Vec<Vec<u32>> = serde_json::from_str(&text)
        .map_err(|e| format!("{name}: expected a JSON array of arrays of token ids: {e}"))?;
    if all.len() < rows {
        return Err(format!("{name}: {} rows, --batch needs {rows}", all.len()).into());
    }
    let mut input_ids = Vec::with_capacity(rows * seq);
    for (i, row) in all.iter().take(rows).enumerate() {
        if row.len() < seq {
            return Err(format!("{name}: row {i} has {} ids, --seq needs {seq}", row.len()).into());
        }
        input_ids.extend_from_slice(&row[..seq]);
    }
    Ok(Batch {
        rows,
        cols: seq,
        labels: input_ids.iter().map(|&t| t as i64).collect(),
        attention_mask: vec![true; rows * seq],
        input_ids,
        ..Batch::default()
    })
}

/// torch.optim.AdamW (betas 0.9/0.999, eps 1e-8, weight decay 0), one step over `params`.
struct AdamW {
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    t: i32,
}

impl AdamW {
    fn step(&mut self, params: &mut [&mut Param], lr: f32) {
        let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
        if self.m.is_empty() {
            self.m = params.iter().map(|p| vec![0.0; p.value.len()]).collect();
            self.v = self.m.clone();
        }
        self.t += 1;
        let (c1, c2) = (1.0 - b1.powi(self.t), 1.0 - b2.powi(self.t));
        for ((p, m), v) in params.iter_mut().zip(&mut self.m).zip(&mut self.v) {
            for i in 0..p.value.len() {
                let g = p.grad[i];
                m[i] = b1 * m[i] + (1.0 - b1) * g;
                v[i] = b2 * v[i] + (1.0 - b2) * g * g;
                p.value[i] -= lr * (m[i] / c1) / ((v[i] / c2).sqrt() + eps);
            }
        }
    }
}

/// dsum-cli's allocator (see dsum-cli/src/main.rs), so the step is the one `finetune` runs.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // As dsum-cli's `keep_freed_pages`: freed pages stay committed (mi_option_purge_delay = -1).
    // SAFETY: sets a process-wide integer option.
    unsafe { libmimalloc_sys::mi_option_set(15, -1) }
    if let Err(e) = run() {
        eprintln!("lora_step: {e}");
        std::process::exit(1);
    }
}

fn run() -> Res<()> {
    let a = parse_args()?;
    let batch = read_batch(&a.ids, a.batch, a.seq)?;
    let init_adapter = match &a.adapter {
        Some(p) => Some(Checkpoint::from_files(vec![(
            p.display().to_string(),
            read_shared(p)?,
        )])?),
        None => None,
    };
    let setup = Setup {
        kind: Kind::Lora,
        r: 16,
        alpha: 32.0,
        dropout: 0.0,
        targets: vec!["all-linear".into()],
        use_rslora: false,
        init_adapter,
        nf4_blocksize: 64,
        double_quant: false,
        quantizer: None,
        seed: 0,
    };
    let t0 = Instant::now();
    let mut model = build(&a.model, &setup)?;
    let load_s = t0.elapsed().as_secs_f64();
    let tokens = batch.counted_tokens(model.is_causal());
    let scale = 1.0 / tokens as f32;
    let trainable: usize = model.params().iter().map(|p| p.value.len()).sum();
    let mut opt = AdamW {
        m: Vec::new(),
        v: Vec::new(),
        t: 0,
    };
    let (mut step_s, mut fwd_bwd_s, mut losses) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..a.steps {
        let t = Instant::now();
        let loss = model.accumulate(&batch, scale)?;
        let fb = t.elapsed().as_secs_f64();
        let mut params = model.params_mut();
        opt.step(&mut params, a.lr);
        params.iter_mut().for_each(|p| p.zero_grad());
        step_s.push(t.elapsed().as_secs_f64());
        fwd_bwd_s.push(fb);
        losses.push(loss.sum / loss.tokens as f64);
        eprintln!(
            "step {}: loss {:.6}, {:.3} s",
            losses.len(),
            losses[losses.len() - 1],
            step_s[step_s.len() - 1]
        );
    }
    let out = serde_json::json!({
        "model": a.model.display().to_string(),
        "batch": a.batch,
        "seq": a.seq,
        "counted_tokens": tokens,
        "trainable_params": trainable,
        "load_s": load_s,
        "step_s": step_s,
        "fwd_bwd_s": fwd_bwd_s,
        "loss": losses,
    });
    println!("{out}");
    Ok(())
}
