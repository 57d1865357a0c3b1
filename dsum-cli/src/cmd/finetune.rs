//! `dsum-cli finetune --config FILE.toml`: LoRA, QLoRA or full fine-tuning of a BART or
//! Llama-family model on a competition CSV. This file reads the config (unknown keys and
//! missing required keys are errors naming the key and the file), builds the examples,
//! evaluates generation ROUGE for the core loop, draws the progress bar and handles Ctrl-C;
//! the loop itself is `dsum_core::train::trainer`. Keys and defaults: configs/README.md.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use argh::FromArgs;
use dsum_core::backend::Device;
use dsum_core::io::checkpoint::Checkpoint;
use dsum_core::lora::adapter::{linear_modules, match_targets};
use dsum_core::lora::config::{LoraConfig, Targets};
use dsum_core::models::{LoadOptions, LoadedModel};
use dsum_core::prompt::{PromptBuilder, DEFAULT_SYSTEM_PROMPT, DEFAULT_USER_TEMPLATE};
use dsum_core::rouge::{final_score, mean, Flavor, Scorer, Scores, Tokenize};
use dsum_core::tokenizer::Tokenizer;
use dsum_core::train::data::{self, Builder, Collate, Lengths, Row};
use dsum_core::train::method::{MethodKind, MethodSpec};
use dsum_core::train::metrics::{self, EvalRecord, RunInfo, StepRecord};
use dsum_core::train::optim::AdamWConfig;
use dsum_core::train::schedule::ScheduleKind;
use dsum_core::train::state::Export;
use dsum_core::train::trainer::{
    latest_checkpoint, train, Evaluator, Observer, Outcome, RougeResult, Run, TrainConfig, Warmup,
};
use dsum_core::train::Trainable;
use serde::Deserialize;
use serde_json::{json, Value};

use super::common::{interrupt_flag, load_options, set_threads};
use super::gen_flags::PromptFlags;
use super::summarize::Summarizer;

/// fine-tune a model (LoRA, QLoRA or full) on a competition CSV
#[derive(FromArgs)]
#[argh(subcommand, name = "finetune")]
pub struct FinetuneArgs {
    /// the TOML run config (see configs/README.md)
    #[argh(option)]
    pub config: PathBuf,
    /// continue the run in the output folder from its newest checkpoint
    #[argh(switch)]
    pub resume: bool,
    /// continue from this checkpoint folder (checkpoints/step-N)
    #[argh(option)]
    pub resume_from: Option<PathBuf>,
    /// output folder (overrides `[output] dir`)
    #[argh(option)]
    pub output_dir: Option<PathBuf>,
    /// worker threads (default: all cores)
    #[argh(option)]
    pub threads: Option<usize>,
    /// where training runs: cpu (default), cuda or cuda:N
    #[argh(option)]
    pub device: Option<String>,
    /// CUDA: TF32 tensor-core matmuls for the f32 weights (faster; no longer bit-exact)
    #[argh(switch)]
    pub tf32: bool,
    /// no progress bar
    #[argh(switch)]
    pub quiet: bool,
}

// ---- the config file ---------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub model: ModelCfg,
    pub data: DataCfg,
    #[serde(default)]
    pub prompt: PromptCfg,
    pub method: MethodCfg,
    #[serde(default)]
    pub optim: OptimCfg,
    #[serde(default)]
    pub train: TrainCfg,
    #[serde(default)]
    pub eval: EvalCfg,
    pub output: OutputCfg,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCfg {
    pub path: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataCfg {
    pub train: PathBuf,
    pub dev: Option<PathBuf>,
    #[serde(default = "d512")]
    pub max_source_len: usize,
    #[serde(default = "d100")]
    pub max_target_len: usize,
    /// The token that closes the assistant turn (causal LMs); default: <|eot_id|>,
    /// <|im_end|>, else eos.
    pub close_token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptCfg {
    pub system: Option<String>,
    pub user: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum TargetsCfg {
    One(String),
    List(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodCfg {
    pub kind: String,
    #[serde(default = "d16")]
    pub r: usize,
    #[serde(default = "d32f")]
    pub alpha: f64,
    #[serde(default = "d01")]
    pub dropout: f32,
    pub targets: Option<TargetsCfg>,
    #[serde(default)]
    pub use_rslora: bool,
    pub init_adapter: Option<PathBuf>,
    #[serde(default = "d64")]
    pub nf4_blocksize: usize,
    #[serde(default = "dtrue")]
    pub double_quant: bool,
}

/// The seed's koBART baseline (transformers' AdamW, cosine, warmup 0.1, lr 1e-5...).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimCfg {
    #[serde(default = "dlr")]
    pub lr: f64,
    #[serde(default = "dbetas")]
    pub betas: [f64; 2],
    #[serde(default = "deps")]
    pub eps: f64,
    #[serde(default = "dwd")]
    pub weight_decay: f64,
    #[serde(default = "d1f")]
    pub max_grad_norm: f64,
    #[serde(default = "dcos")]
    pub scheduler: String,
    #[serde(default = "dwarm")]
    pub warmup_ratio: f64,
    pub warmup_steps: Option<usize>,
}

impl Default for OptimCfg {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainCfg {
    #[serde(default = "d50")]
    pub batch_size: usize,
    #[serde(default = "d1")]
    pub grad_accum: usize,
    #[serde(default = "d20")]
    pub epochs: usize,
    pub max_steps: Option<u64>,
    #[serde(default = "dtrue")]
    pub shuffle: bool,
    #[serde(default = "d42")]
    pub seed: u64,
    #[serde(default = "d3")]
    pub early_stopping_patience: usize,
    pub eval_every: Option<u64>,
    pub save_every: Option<u64>,
    #[serde(default = "d5")]
    pub keep_checkpoints: usize,
}

impl Default for TrainCfg {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

/// Generation for the dev ROUGE (the seed's inference settings).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalCfg {
    /// Generate and score ROUGE at each evaluation (else only the dev loss).
    #[serde(default = "dtrue")]
    pub rouge: bool,
    /// Score only the first N dev rows.
    pub limit: Option<usize>,
    #[serde(default = "d4")]
    pub num_beams: usize,
    #[serde(default = "d100")]
    pub max_new_tokens: usize,
    #[serde(default = "d2")]
    pub no_repeat_ngram_size: usize,
    #[serde(default = "d8")]
    pub batch_size: usize,
    pub mecab_dic: Option<PathBuf>,
}

impl Default for EvalCfg {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputCfg {
    pub dir: PathBuf,
    pub nickname: Option<String>,
}

fn d1() -> usize {
    1
}
fn d2() -> usize {
    2
}
fn d3() -> usize {
    3
}
fn d4() -> usize {
    4
}
fn d5() -> usize {
    5
}
fn d8() -> usize {
    8
}
fn d16() -> usize {
    16
}
fn d20() -> usize {
    20
}
fn d42() -> u64 {
    42
}
fn d50() -> usize {
    50
}
fn d64() -> usize {
    64
}
fn d100() -> usize {
    100
}
fn d512() -> usize {
    512
}
fn d32f() -> f64 {
    32.0
}
fn d01() -> f32 {
    0.1
}
fn d1f() -> f64 {
    1.0
}
fn dlr() -> f64 {
    1e-5
}
fn dbetas() -> [f64; 2] {
    [0.9, 0.999]
}
fn deps() -> f64 {
    1e-8
}
fn dwd() -> f64 {
    0.01
}
fn dwarm() -> f64 {
    0.1
}
fn dcos() -> String {
    "cosine".into()
}
fn dtrue() -> bool {
    true
}

const REQUIRED: &str = "required keys: [model] path, [data] train, [method] kind, [output] dir";

/// Parse a config; relative paths are resolved against the config file's folder.
pub fn read_config(path: &Path) -> Result<Config> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {shown}"))?;
    let mut cfg: Config = toml::from_str(&text).map_err(|e| {
        let msg = e.to_string();
        if msg.contains("missing field") {
            anyhow::anyhow!("{shown}: {msg}\n({REQUIRED})")
        } else {
            anyhow::anyhow!("{shown}: {msg}")
        }
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let rel = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    rel(&mut cfg.model.path);
    rel(&mut cfg.data.train);
    if let Some(d) = &mut cfg.data.dev {
        rel(d);
    }
    if let Some(a) = &mut cfg.method.init_adapter {
        rel(a);
    }
    if let Some(m) = &mut cfg.eval.mecab_dic {
        rel(m);
    }
    rel(&mut cfg.output.dir);
    Ok(cfg)
}

impl Config {
    pub fn method_spec(&self, source: &str) -> Result<MethodSpec> {
        let m = &self.method;
        let kind = MethodKind::parse(&m.kind).with_context(|| {
            format!(
                "{source}: [method] kind must be \"lora\", \"qlora\" or \"full\", not \"{}\"",
                m.kind
            )
        })?;
        let targets = match &m.targets {
            None => Targets::AllLinear,
            Some(TargetsCfg::One(s)) => Targets::parse(s),
            Some(TargetsCfg::List(l)) => Targets::Names(l.clone()),
        };
        let lora = LoraConfig {
            r: m.r,
            alpha: m.alpha,
            dropout: m.dropout,
            targets,
            use_rslora: m.use_rslora,
        };
        if kind.is_adapter() {
            lora.check(source)?;
        }
        if !(32..=4096).contains(&m.nf4_blocksize) || !m.nf4_blocksize.is_power_of_two() {
            bail!(
                "{source}: [method] nf4_blocksize must be a power of two from 32 to 4096, not {}",
                m.nf4_blocksize
            );
        }
        Ok(MethodSpec {
            kind,
            lora,
            init_adapter: m.init_adapter.clone(),
            nf4_blocksize: m.nf4_blocksize,
            double_quant: m.double_quant,
        })
    }

    pub fn train_config(&self, source: &str) -> Result<TrainConfig> {
        let (o, t) = (&self.optim, &self.train);
        let scheduler = ScheduleKind::parse(&o.scheduler).with_context(|| {
            format!(
                "{source}: [optim] scheduler must be \"constant\", \"linear\" or \"cosine\", not \"{}\"",
                o.scheduler
            )
        })?;
        anyhow::ensure!(
            (0.0..=1.0).contains(&o.warmup_ratio),
            "{source}: [optim] warmup_ratio must be in [0, 1]"
        );
        anyhow::ensure!(
            t.batch_size > 0 && t.grad_accum > 0,
            "{source}: [train] batch_size and grad_accum must be at least 1"
        );
        anyhow::ensure!(
            o.lr.is_finite() && o.lr > 0.0,
            "{source}: [optim] lr must be a positive number"
        );
        Ok(TrainConfig {
            batch_size: t.batch_size,
            grad_accum: t.grad_accum,
            epochs: t.epochs,
            max_steps: t.max_steps,
            shuffle: t.shuffle,
            seed: t.seed,
            early_stopping_patience: (t.early_stopping_patience > 0)
                .then_some(t.early_stopping_patience),
            eval_every: t.eval_every.filter(|&n| n > 0),
            save_every: t.save_every.filter(|&n| n > 0),
            keep_checkpoints: t.keep_checkpoints,
            lr: o.lr,
            adamw: AdamWConfig {
                betas: (o.betas[0], o.betas[1]),
                eps: o.eps,
                weight_decay: o.weight_decay,
            },
            max_grad_norm: (o.max_grad_norm > 0.0).then_some(o.max_grad_norm as f32),
            scheduler,
            warmup: match o.warmup_steps {
                Some(s) => Warmup::Steps(s),
                None => Warmup::Ratio(o.warmup_ratio),
            },
        })
    }
}

// ---- the model folder's special tokens -------------------------------------------------

struct ModelInfo {
    model_type: String,
    arch: String,
    dtype: String,
    params: Option<usize>,
    pad: Option<u32>,
    eos: Option<u32>,
    decoder_start: Option<u32>,
}

fn first_id(v: Option<&Value>) -> Option<u32> {
    match v? {
        Value::Number(n) => n.as_u64().map(|x| x as u32),
        Value::Array(a) => a.first().and_then(|x| x.as_u64()).map(|x| x as u32),
        _ => None,
    }
}

fn model_info(dir: &Path) -> Result<ModelInfo> {
    let p = dir.join("config.json");
    let text =
        std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
    let c: Value =
        serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", p.display()))?;
    let g: Value = std::fs::read_to_string(dir.join("generation_config.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    let id = |k: &str| first_id(g.get(k)).or(first_id(c.get(k)));
    let params = Checkpoint::open_dir(dir).ok().map(|ck| {
        ck.names()
            .filter_map(|n| ck.shape(n).map(|s| s.iter().product::<usize>()))
            .sum()
    });
    Ok(ModelInfo {
        model_type: c["model_type"].as_str().unwrap_or("").to_string(),
        arch: c["architectures"][0].as_str().unwrap_or("").to_string(),
        dtype: c["torch_dtype"]
            .as_str()
            .or(c["dtype"].as_str())
            .unwrap_or("float32")
            .to_string(),
        params,
        pad: id("pad_token_id"),
        eos: id("eos_token_id"),
        decoder_start: id("decoder_start_token_id").or(id("bos_token_id")),
    })
}

// ---- evaluation by generation -------------------------------------------------------------

struct RougeEval {
    base_dir: PathBuf,
    /// Generation runs where training does.
    load: LoadOptions,
    rows: Vec<Row>,
    kwargs: Value,
    system: String,
    user: String,
    max_in: usize,
    batch_size: usize,
    tokenize: Tokenize,
}

impl RougeEval {
    fn score(&mut self, model: &dyn Trainable) -> Result<RougeResult> {
        let weights = model.merged_weights()?;
        let dir = self.base_dir.display().to_string();
        let lm = LoadedModel::load_with(&self.base_dir, self.load, move |_| {
            Ok(Checkpoint::from_weights(dir, weights.into_iter().collect()))
        })?;
        let (gen, user_max) = super::common::generation_config(&lm, &self.kwargs)?;
        let flags = PromptFlags {
            allow_scripts: None,
            prompt_preset: None,
            system_prompt: Some(&self.system),
            prompt_template: Some(&self.user),
            no_chat_template: false,
            template_kwargs: None,
        };
        let mut sm = Summarizer {
            model: &lm,
            gen,
            user_max,
            prompts: super::common::prompt_builder(&lm, &flags)?,
            remove: ["<usr>", "<s>", "</s>", "<pad>"].map(String::from).to_vec(),
            max_in: self.max_in.min(lm.max_input_tokens()),
            truncated: 0,
            generated: 0,
        };
        let mut preds = Vec::with_capacity(self.rows.len());
        for chunk in self.rows.chunks(self.batch_size) {
            let texts: Vec<&str> = chunk.iter().map(|r| r.dialogue.as_str()).collect();
            preds.extend(sm.summarize(&texts)?);
        }
        let mut scorer = Scorer::new(Flavor::Rouge, self.tokenize.clone());
        let scores: Vec<Scores> = self
            .rows
            .iter()
            .zip(&preds)
            .map(|(r, p)| {
                scorer
                    .score(p, &r.summary)
                    .unwrap_or_else(|_| Scores::zero(Flavor::Rouge))
            })
            .collect();
        let total = mean(&scores).unwrap_or_else(|| Scores::zero(Flavor::Rouge));
        Ok(RougeResult {
            final_score: final_score(&total),
            rouge1: total.rouge1.f * 100.0,
            rouge2: total.rouge2.f * 100.0,
            rouge_l: total.rouge_l.f * 100.0,
        })
    }
}

impl Evaluator for RougeEval {
    fn rouge(&mut self, model: &dyn Trainable) -> dsum_core::Result<RougeResult> {
        self.score(model).map_err(|e| {
            dsum_core::Error::Train(format!("evaluating generation on the dev set: {e:#}"))
        })
    }
}

// ---- progress -----------------------------------------------------------------------------

struct Bar(indicatif::ProgressBar);

impl Observer for Bar {
    fn start(&mut self, total: u64, done: u64) {
        self.0.set_length(total);
        self.0.set_position(done);
        self.0.reset_eta();
    }
    fn step(&mut self, r: &StepRecord) {
        self.0.set_position(r.step);
        self.0.set_message(format!(
            "loss {:.4}  grad {:.3}  lr {:.2e}",
            r.loss, r.grad_norm, r.lr
        ));
    }
    fn eval(&mut self, r: &EvalRecord) {
        let rouge = r
            .eval_rouge
            .map(|x| format!("  ROUGE {x:.2}"))
            .unwrap_or_default();
        self.0.println(format!(
            "step {} (epoch {:.2}): eval_loss {:.4}{rouge}",
            r.step, r.epoch, r.eval_loss
        ));
    }
    fn message(&mut self, text: &str) {
        self.0.println(text);
    }
}

fn bar(quiet: bool) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(0);
    pb.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    let style = indicatif::ProgressStyle::with_template(
        "finetune {bar:30} {pos}/{len} steps  {msg}  ETA {eta}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    pb.set_style(style);
    pb
}

// ---- the verb -----------------------------------------------------------------------------

pub fn run(args: FinetuneArgs) -> Result<()> {
    let load = load_options(false, args.device.as_deref(), args.tf32)?;
    if let Device::Cuda(n) = load.device {
        // A build without CUDA, or no driver / device: say so before reading anything.
        dsum_core::backend::Cuda::open(n).with_context(|| format!("--device {}", load.device))?;
    }
    set_threads(args.threads)?;
    let source = args.config.display().to_string();
    let cfg = read_config(&args.config)?;
    let method = cfg.method_spec(&source)?;
    let tcfg = cfg.train_config(&source)?;
    let out = args.output_dir.clone().unwrap_or(cfg.output.dir.clone());
    let model_dir = cfg.model.path.clone();
    anyhow::ensure!(
        model_dir.is_dir(),
        "{source}: [model] path {} is not a model folder",
        model_dir.display()
    );
    let resume = match (&args.resume_from, args.resume) {
        (Some(dir), _) => Some(dir.clone()),
        (None, true) => Some(latest_checkpoint(&out).with_context(|| {
            format!(
                "--resume: no checkpoint in {}",
                out.join("checkpoints").display()
            )
        })?),
        (None, false) => None,
    };
    if resume.is_none() && out.join("metrics.jsonl").is_file() {
        bail!(
            "{} already holds a run (metrics.jsonl); continue it with --resume, or choose another \
             [output] dir / --output-dir",
            out.display()
        );
    }

    // Data: tokenized exactly as the PyTorch reference does.
    let info = model_info(&model_dir)?;
    let causal = info.model_type != "bart";
    let tok = Tokenizer::from_dir(&model_dir)?;
    let len = Lengths {
        max_source_len: cfg.data.max_source_len,
        max_target_len: cfg.data.max_target_len,
    };
    let system = cfg
        .prompt
        .system
        .clone()
        .unwrap_or(DEFAULT_SYSTEM_PROMPT.into());
    let user = cfg
        .prompt
        .user
        .clone()
        .unwrap_or(DEFAULT_USER_TEMPLATE.into());
    let prompts = if causal {
        let p = PromptBuilder::new(&tok, Some(&system), &user, true, Value::Null)
            .with_context(|| format!("{source}: [prompt]"))?;
        anyhow::ensure!(
            p.has_chat_template(),
            "{}: the tokenizer has no chat template, which causal-LM fine-tuning uses for its prompts",
            model_dir.display()
        );
        Some(p)
    } else {
        None
    };
    let (builder, collate) = match &prompts {
        Some(p) => {
            let close_id =
                data::close_token_id(&tok, cfg.data.close_token.as_deref(), info.eos, &source)?;
            let pad = info
                .pad
                .or(info.eos)
                .context("the model has no pad_token_id or eos_token_id")?;
            (
                Builder::Causal {
                    prompts: p,
                    close_id,
                },
                Collate {
                    causal: true,
                    pad_id: pad,
                    decoder_start_id: 0,
                },
            )
        }
        None => (
            Builder::Bart,
            Collate {
                causal: false,
                pad_id: info.pad.unwrap_or(1),
                decoder_start_id: info
                    .decoder_start
                    .context("config.json has no decoder_start_token_id")?,
            },
        ),
    };
    let train_rows = data::read_rows(&cfg.data.train)?;
    let dev_rows = cfg.data.dev.as_deref().map(data::read_rows).transpose()?;
    let train_ex = data::examples(&tok, &train_rows, &builder, len)?;
    let dev_ex = dev_rows
        .as_ref()
        .map(|r| data::examples(&tok, r, &builder, len))
        .transpose()?;

    // LoRA targets are checked against the model's linear modules before any loading.
    if method.kind.is_adapter() {
        let ck = Checkpoint::open_dir(&model_dir)?;
        let modules: Vec<String> = linear_modules(&ck).into_iter().map(|m| m.0).collect();
        match_targets(
            &modules,
            &method.lora.targets,
            &format!("{source}: [method] targets"),
        )?;
    }
    if let Some(init) = &method.init_adapter {
        // Training continues the adapter as it is: its rank and alpha must be the run's.
        let a = dsum_core::lora::adapter::Adapter::load(init)
            .with_context(|| format!("{source}: [method] init_adapter"))?;
        anyhow::ensure!(
            method.kind.is_adapter()
                && a.config.r == method.lora.r
                && a.config.alpha == method.lora.alpha
                && a.config.use_rslora == method.lora.use_rslora,
            "{source}: [method] init_adapter {} has r {}, alpha {}, use_rslora {}; set the same \
             values in [method] (kind lora or qlora)",
            init.display(),
            a.config.r,
            a.config.alpha,
            a.config.use_rslora
        );
    }
    let mut model = dsum_core::train::models::build_method(
        &model_dir,
        &method,
        cfg.train.seed,
        load.device,
        load.tf32,
    )
    .with_context(|| {
        format!(
            "cannot build the trainable model from {}",
            model_dir.display()
        )
    })?;

    let mut evaluator = match (&dev_rows, cfg.eval.rouge) {
        (Some(rows), true) => {
            let tokenize = match dsum_core::mecab::locate_dictionary(cfg.eval.mecab_dic.as_deref())
            {
                Ok(dir) => {
                    let m = dsum_core::mecab::Mecab::load(&dir)?;
                    Tokenize::custom(move |t| m.morphs(t))
                }
                Err(e) if cfg.eval.mecab_dic.is_some() => return Err(e.into()),
                Err(_) => {
                    eprintln!("warning: no mecab-ko dictionary found; dev ROUGE on whitespace tokens ([eval] mecab_dic for the competition's metric)");
                    Tokenize::Whitespace
                }
            };
            let limit = cfg.eval.limit.unwrap_or(usize::MAX);
            Some(RougeEval {
                base_dir: model_dir.clone(),
                load,
                rows: rows.iter().take(limit).cloned().collect(),
                kwargs: json!({
                    "num_beams": cfg.eval.num_beams,
                    "max_new_tokens": cfg.eval.max_new_tokens,
                    "no_repeat_ngram_size": cfg.eval.no_repeat_ngram_size,
                }),
                system: system.clone(),
                user: user.clone(),
                max_in: cfg.data.max_source_len,
                batch_size: cfg.eval.batch_size.max(1),
                tokenize,
            })
        }
        _ => None,
    };

    let export = if method.kind.is_adapter() {
        Export::Adapter {
            config: method.lora.clone(),
            base_model: model_dir.display().to_string(),
            causal,
        }
    } else {
        Export::Full {
            base_dir: model_dir.clone(),
        }
    };
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let nickname = cfg.output.nickname.clone().unwrap_or_else(|| {
        model_dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "model".into())
    });
    let mut info_json = RunInfo {
        name: metrics::run_name(
            &nickname,
            tcfg.epochs,
            tcfg.batch_size * tcfg.grad_accum,
            tcfg.lr,
            &metrics::timestamp(now),
        ),
        tags: vec![
            info.model_type.clone(),
            method.kind.name().to_string(),
            info.params
                .map(metrics::size_tag)
                .unwrap_or_else(|| "?".into()),
            info.arch.clone(),
            info.dtype.clone(),
        ],
        started: metrics::timestamp(now),
        config: serde_json::to_value(
            toml::from_str::<toml::Table>(
                &std::fs::read_to_string(&args.config).unwrap_or_default(),
            )
            .unwrap_or_default(),
        )?,
        status: "running".into(),
        steps: 0,
        best_metric: None,
    };
    if let Some(prev) = std::fs::read_to_string(out.join("run.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<RunInfo>(&t).ok())
        .filter(|_| resume.is_some())
    {
        info_json.name = prev.name;
        info_json.started = prev.started;
    }
    info_json.write(&out)?;

    let stop = interrupt_flag();
    let pb = bar(args.quiet);
    let mut observer = Bar(pb.clone());
    let base = model_dir.display().to_string();
    let summary = train(
        &mut *model,
        Run {
            out_dir: &out,
            config: &tcfg,
            train: &train_ex,
            dev: dev_ex.as_deref(),
            collate,
            export: &export,
            base_model: &base,
            evaluator: evaluator.as_mut().map(|e| e as &mut dyn Evaluator),
            observer: &mut observer,
            stop: &stop,
            resume,
        },
    );
    pb.finish_and_clear();
    let summary = match summary {
        Ok(s) => s,
        Err(e) => {
            // run.json says why the run ended; the checkpoints already written stay.
            info_json.status = format!("failed: {e}");
            let _ = info_json.write(&out);
            return Err(
                anyhow::Error::new(e).context(format!("fine-tuning into {}", out.display()))
            );
        }
    };
    info_json.status = match &summary.outcome {
        Outcome::Finished => "finished",
        Outcome::EarlyStopped => "early_stopped",
        Outcome::Interrupted { .. } => "interrupted",
    }
    .into();
    info_json.steps = summary.steps;
    info_json.best_metric = summary.best_metric;
    info_json.write(&out)?;
    match summary.outcome {
        Outcome::Interrupted { checkpoint } => {
            eprintln!(
                "interrupted at step {}: checkpoint in {}; continue with --resume",
                summary.steps,
                checkpoint.display()
            );
            std::process::exit(130);
        }
        _ => eprintln!(
            "{}: {} steps; final model in {}",
            info_json.name,
            summary.steps,
            out.join("final").display()
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dsum_core::tensor::Weight;
    use dsum_core::train::{Batch, LossSum, Param};

    /// A "trained" model that is exactly the base checkpoint: evaluation and export must
    /// then behave as the base model does.
    struct Frozen(Vec<(String, Weight)>);
    impl Trainable for Frozen {
        fn is_causal(&self) -> bool {
            false
        }
        fn params(&self) -> Vec<&Param> {
            Vec::new()
        }
        fn params_mut(&mut self) -> Vec<&mut Param> {
            Vec::new()
        }
        fn set_dropout_seed(&mut self, _: Option<u64>) {}
        fn accumulate(&mut self, _: &Batch, _: f32) -> dsum_core::Result<LossSum> {
            Ok(LossSum::default())
        }
        fn eval_loss(&mut self, _: &Batch) -> dsum_core::Result<LossSum> {
            Ok(LossSum::default())
        }
        fn merged_weights(&self) -> dsum_core::Result<Vec<(String, Weight)>> {
            Ok(self
                .0
                .iter()
                .map(|(n, w)| (n.clone(), w.clone_view()))
                .collect())
        }
    }

    fn tiny() -> (PathBuf, Frozen) {
        let dir =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/bart/models/tiny-a");
        let ck = Checkpoint::open_dir(&dir).unwrap();
        let w = ck
            .names()
            .map(|n| {
                let s = ck.shape(n).unwrap().to_vec();
                (n.to_string(), ck.get(n, &s).unwrap())
            })
            .collect();
        (dir, Frozen(w))
    }

    #[test]
    fn rouge_eval_generates_from_the_trained_weights() {
        let (dir, model) = tiny();
        let rows: Vec<Row> = data::read_rows(&dir.join("../../../data/dialogues.csv"))
            .unwrap()
            .into_iter()
            .take(3)
            .collect();
        let mut ev = RougeEval {
            base_dir: dir.clone(),
            load: LoadOptions::default(),
            rows: rows.clone(),
            kwargs: json!({"num_beams": 1, "max_new_tokens": 8}),
            system: String::new(),
            user: "{dialogue}".into(),
            max_in: 64,
            batch_size: 2,
            tokenize: Tokenize::Whitespace,
        };
        let r = ev.rouge(&model).unwrap();
        // Same number as generating with the base model and scoring by hand.
        let lm = LoadedModel::load(&dir).unwrap();
        let (gen, user_max) = super::super::common::generation_config(&lm, &ev.kwargs).unwrap();
        let mut sm = Summarizer {
            model: &lm,
            gen,
            user_max,
            prompts: None,
            remove: ["<usr>", "<s>", "</s>", "<pad>"].map(String::from).to_vec(),
            max_in: 64,
            truncated: 0,
            generated: 0,
        };
        let texts: Vec<&str> = rows.iter().map(|r| r.dialogue.as_str()).collect();
        let preds = sm.summarize(&texts).unwrap();
        let mut scorer = Scorer::new(Flavor::Rouge, Tokenize::Whitespace);
        let scores: Vec<Scores> = rows
            .iter()
            .zip(&preds)
            .map(|(r, p)| {
                scorer
                    .score(p, &r.summary)
                    .unwrap_or_else(|_| Scores::zero(Flavor::Rouge))
            })
            .collect();
        assert_eq!(r.final_score, final_score(&mean(&scores).unwrap()));
        assert!((r.final_score - (r.rouge1 + r.rouge2 + r.rouge_l) / 3.0).abs() < 1e-9);
    }

    #[test]
    fn full_export_is_a_loadable_model_folder() {
        let (dir, model) = tiny();
        let tmp = tempfile::tempdir().unwrap();
        Export::Full {
            base_dir: dir.clone(),
        }
        .write(&model, tmp.path())
        .unwrap();
        for f in [
            "model.safetensors",
            "config.json",
            "generation_config.json",
            "tokenizer.json",
        ] {
            assert!(tmp.path().join(f).is_file(), "{f}");
        }
        let lm = LoadedModel::load(tmp.path()).unwrap();
        assert_eq!(
            lm.num_parameters(),
            LoadedModel::load(&dir).unwrap().num_parameters()
        );
    }

    #[test]
    fn config_defaults_are_the_seeds() {
        let cfg: Config = toml::from_str(
            "[model]\npath='m'\n[data]\ntrain='t.csv'\n[method]\nkind='full'\n[output]\ndir='o'\n",
        )
        .unwrap();
        let t = cfg.train_config("c").unwrap();
        assert_eq!(
            (t.batch_size, t.epochs, t.lr, t.scheduler),
            (50, 20, 1e-5, ScheduleKind::Cosine)
        );
        assert_eq!(
            (t.warmup, t.early_stopping_patience),
            (Warmup::Ratio(0.1), Some(3))
        );
        let m = cfg.method_spec("c").unwrap();
        assert_eq!((m.lora.r, m.lora.alpha, m.lora.dropout), (16, 32.0, 0.1));
        for name in [
            "finetune-kobart",
            "qlora-llama",
            "qlora-qwen",
            "finetune-tiny",
        ] {
            let p =
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../configs/{name}.toml"));
            let c = read_config(&p).unwrap();
            c.train_config(name).unwrap();
            c.method_spec(name).unwrap();
        }
        let q = read_config(
            &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../configs/qlora-llama.toml"),
        )
        .unwrap();
        let (t, m) = (q.train_config("q").unwrap(), q.method_spec("q").unwrap());
        assert_eq!(
            (t.lr, t.scheduler, t.adamw.betas.1, t.max_grad_norm),
            (2e-4, ScheduleKind::Constant, 0.999, Some(0.3))
        );
        assert_eq!(
            (m.kind, m.lora.r, m.lora.alpha, m.lora.dropout),
            (MethodKind::Qlora, 16, 32.0, 0.1)
        );
    }
}
