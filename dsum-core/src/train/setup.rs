//! How a checkpoint becomes trainable: which weights train (full fine-tuning), which carry
//! LoRA adapters, which are stored 4-bit (QLoRA), and where adapters start from.

use super::linear::{Base, Lora, QuantizedWeight, Slot, TrainLinear};
use super::Param;
use crate::error::{Error, Result};
use crate::io::checkpoint::Checkpoint;
use crate::lora::adapter::peft_key;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Lora,
    Qlora,
    Full,
}

/// Quantizes a frozen base weight `[n, k]` for QLoRA (blocksize, double quantization).
pub type Quantizer = fn(&[f32], usize, usize, usize, bool) -> Result<Box<dyn QuantizedWeight>>;

pub struct Setup {
    pub kind: Kind,
    pub r: usize,
    pub alpha: f64,
    pub dropout: f32,
    /// Module short names (`q_proj`, `fc1`, …) or `all-linear`.
    pub targets: Vec<String>,
    pub use_rslora: bool,
    /// PEFT `adapter_model.safetensors` to start from (LoRA / QLoRA).
    pub init_adapter: Option<Checkpoint>,
    pub nf4_blocksize: usize,
    pub double_quant: bool,
    pub quantizer: Option<Quantizer>,
    /// Seeds the LoRA A initialization when no adapter is given.
    pub seed: u64,
}

impl Setup {
    pub fn scaling(&self) -> f32 {
        // peft computes the factor in Python floats, then applies it in f32.
        if self.use_rslora {
            (self.alpha / (self.r as f64).sqrt()) as f32
        } else {
            (self.alpha / self.r as f64) as f32
        }
    }

    fn targeted(&self, module: &str, all_linear: &[&str]) -> bool {
        let short = module.rsplit('.').next().unwrap_or(module);
        self.targets.iter().any(|t| {
            if t == "all-linear" {
                all_linear.contains(&short)
            } else {
                t == short || t == module || module.ends_with(&format!(".{t}"))
            }
        })
    }
}

/// Checks the target list against the modules a model has: a name that matches nothing is
/// an error (a typo would otherwise train nothing).
pub fn check_targets(setup: &Setup, modules: &[String], all_linear: &[&str]) -> Result<()> {
    if setup.kind == Kind::Full {
        return Ok(());
    }
    for t in &setup.targets {
        let one = Setup {
            targets: vec![t.clone()],
            init_adapter: None,
            quantizer: None,
            ..*setup
        };
        if !modules.iter().any(|m| one.targeted(m, all_linear)) {
            return Err(Error::config(
                "[method] targets",
                format!(
                    "target `{t}` matches no module of this model (linear modules: {})",
                    all_linear.join(", ")
                ),
            ));
        }
    }
    if setup.r == 0 {
        return Err(Error::config(
            "[method] r",
            "the LoRA rank r must be at least 1",
        ));
    }
    Ok(())
}

/// kaiming_uniform_(a=√5) as peft initializes lora_A: U(-1/√in, 1/√in).
fn kaiming_a(r: usize, inp: usize, seed: u64) -> Vec<f32> {
    let bound = 1.0 / (inp as f32).sqrt();
    let mut s = seed;
    (0..r * inp)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * bound
        })
        .collect()
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// A frozen or trainable norm / embedding weight.
pub fn make_slot(ck: &Checkpoint, name: &str, shape: &[usize], setup: &Setup) -> Result<Slot> {
    let w = ck.get(name, shape)?;
    Ok(if setup.kind == Kind::Full {
        Slot::Train(Param::new(name, shape.to_vec(), w.to_vec()))
    } else {
        Slot::Frozen(w)
    })
}

/// The linear layer `module` (`{module}.weight` `[out, inp]`, `{module}.bias` if `bias`).
pub fn make_linear(
    ck: &Checkpoint,
    module: &str,
    out: usize,
    inp: usize,
    bias: bool,
    setup: &Setup,
    all_linear: &[&str],
) -> Result<TrainLinear> {
    let wname = format!("{module}.weight");
    let bias = if bias {
        Some(make_slot(ck, &format!("{module}.bias"), &[out], setup)?)
    } else {
        None
    };
    let w = ck.get(&wname, &[out, inp])?;
    let base = match setup.kind {
        Kind::Full => Base::Dense(Slot::Train(Param::new(wname, vec![out, inp], w.to_vec()))),
        Kind::Lora => Base::Dense(Slot::Frozen(w)),
        Kind::Qlora => {
            let q = setup.quantizer.ok_or_else(|| {
                Error::config(
                    "[method] kind",
                    "QLoRA needs the NF4 quantizer, which this build lacks",
                )
            })?;
            Base::Quantized(q(&w, out, inp, setup.nf4_blocksize, setup.double_quant)?)
        }
    };
    let lora = if setup.kind != Kind::Full && setup.targeted(module, all_linear) {
        let (ka, kb) = (peft_key(module, false), peft_key(module, true));
        let (a, b) = match &setup.init_adapter {
            Some(ad) => (
                ad.get(&ka, &[setup.r, inp])?.to_vec(),
                ad.get(&kb, &[out, setup.r])?.to_vec(),
            ),
            None => (
                kaiming_a(setup.r, inp, setup.seed ^ fnv(module)),
                vec![0f32; out * setup.r],
            ),
        };
        Some(Lora {
            a: Param::new(ka, vec![setup.r, inp], a),
            b: Param::new(kb, vec![out, setup.r], b),
            scaling: setup.scaling(),
            dropout: setup.dropout,
        })
    } else {
        None
    };
    Ok(TrainLinear {
        base,
        bias,
        lora,
        inp,
        out,
    })
}

/// QLoRA's frozen base: bitsandbytes-compatible NF4, multiplied by the fused kernels.
impl QuantizedWeight for crate::quant::nf4::Nf4Tensor {
    fn matmul(&self, out: &mut [f32], x: &[f32], m: usize) {
        crate::quant::nf4::Nf4Tensor::matmul(self, out, x, m)
    }
    fn matmul_t_acc(&self, dx: &mut [f32], dy: &[f32], m: usize) {
        let mut t = vec![0f32; dx.len()];
        self.matmul_t(&mut t, dy, m);
        dx.iter_mut().zip(&t).for_each(|(a, b)| *a += b);
    }
    fn dequantize(&self) -> Vec<f32> {
        crate::quant::nf4::Nf4Tensor::dequantize(self)
    }
    fn as_nf4(&self) -> Option<&crate::quant::nf4::Nf4Tensor> {
        Some(self)
    }
}

/// The [`Quantizer`] for QLoRA: NF4 with bitsandbytes' blocking and double quantization.
pub fn nf4_quantizer(
    w: &[f32],
    n: usize,
    k: usize,
    blocksize: usize,
    double_quant: bool,
) -> Result<Box<dyn QuantizedWeight>> {
    let t = crate::quant::nf4::Nf4Tensor::quantize(w, vec![n, k], blocksize, double_quant)?;
    Ok(Box::new(t))
}
