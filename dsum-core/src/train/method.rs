//! What to train: LoRA on a full-precision base, QLoRA (LoRA on an NF4-quantized base), or
//! every weight (full fine-tuning). The model factory reads this; the CLI fills it from
//! the `[method]` table of a finetune config.

use std::path::PathBuf;

use crate::lora::config::LoraConfig;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MethodKind {
    Lora,
    Qlora,
    Full,
}

impl MethodKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "lora" => Some(MethodKind::Lora),
            "qlora" => Some(MethodKind::Qlora),
            "full" => Some(MethodKind::Full),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            MethodKind::Lora => "lora",
            MethodKind::Qlora => "qlora",
            MethodKind::Full => "full",
        }
    }

    /// Whether the trained parameters are a PEFT adapter (else the whole model).
    pub fn is_adapter(self) -> bool {
        !matches!(self, MethodKind::Full)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct MethodSpec {
    pub kind: MethodKind,
    /// LoRA hyper-parameters (ignored for full fine-tuning).
    pub lora: LoraConfig,
    /// Start from this adapter folder (PEFT files) instead of peft's initialization.
    pub init_adapter: Option<PathBuf>,
    /// NF4 block size of the QLoRA base (bitsandbytes' default 64).
    pub nf4_blocksize: usize,
    /// QLoRA: also quantize the absmax values (bitsandbytes' `bnb_4bit_use_double_quant`).
    pub double_quant: bool,
}

impl Default for MethodSpec {
    fn default() -> Self {
        MethodSpec {
            kind: MethodKind::Lora,
            lora: LoraConfig::default(),
            init_adapter: None,
            nf4_blocksize: 64,
            double_quant: true,
        }
    }
}
