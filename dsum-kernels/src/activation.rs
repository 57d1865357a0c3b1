//! Pointwise activations and the gated MLP input (`kernels/activation.cu`), mirrors
//! `dsum_core::ops::activation` (`Activation::forward_inplace` / `backward_inplace`,
//! `glu_forward`, `glu_backward`).

use cudarc::driver::{CudaSlice, PushKernelArg};

use crate::error::{check_i32, check_len, KernelError, Result};
use crate::gpu::Gpu;
use crate::launch::per_element;
use crate::sources::ACTIVATION;

/// One to one with `dsum_core::ops::activation::Activation`; the discriminants are the codes
/// `kernels/activation.cu` switches on (`ACT_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Act {
    /// Exact GELU, 0.5·x·(1 + erf(x/√2)) (`gelu`).
    Gelu = 0,
    /// Tanh approximation (`gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`).
    GeluTanh = 1,
    Relu = 2,
    /// x·sigmoid(x) (`silu`, `swish`).
    Silu = 3,
}

impl Act {
    /// By transformers' `ACT2FN` name, as `Activation::from_name`.
    pub fn from_name(name: &str) -> Result<Act> {
        Ok(match name {
            "gelu" => Act::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Act::GeluTanh,
            "relu" => Act::Relu,
            "silu" | "swish" => Act::Silu,
            other => {
                return Err(KernelError::Shape {
                    op: "Act::from_name",
                    what: format!("unsupported activation function `{other}`"),
                })
            }
        })
    }

    fn code(self) -> i32 {
        self as i32
    }
}

/// x[N] = act(x), in place.
pub fn act_forward(gpu: &Gpu, x: &mut CudaSlice<f32>, act: Act, n: usize) -> Result<()> {
    let op = "act_forward";
    check_len(op, "x", x.len(), n)?;
    let ni = check_i32(op, "n", n)?;
    if n == 0 {
        return Ok(());
    }
    let f = gpu.function(&ACTIVATION, "activation_forward_f32")?;
    let a = act.code();
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(x).arg(&a).arg(&ni);
    // SAFETY: length checked above; every thread checks i < n.
    unsafe { b.launch(per_element(n)) }?;
    Ok(())
}

/// d[N] *= act'(x): dout on entry, dinp on exit; `x` is the pre-activation input.
pub fn act_backward(
    gpu: &Gpu,
    d: &mut CudaSlice<f32>,
    x: &CudaSlice<f32>,
    act: Act,
    n: usize,
) -> Result<()> {
    let op = "act_backward";
    check_len(op, "d", d.len(), n)?;
    check_len(op, "x", x.len(), n)?;
    let ni = check_i32(op, "n", n)?;
    if n == 0 {
        return Ok(());
    }
    let f = gpu.function(&ACTIVATION, "activation_backward_f32")?;
    let a = act.code();
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(d).arg(x).arg(&a).arg(&ni);
    // SAFETY: lengths checked above; every thread checks i < n.
    unsafe { b.launch(per_element(n)) }?;
    Ok(())
}

/// out[N] = act(gate)·up (SwiGLU with `Act::Silu`).
pub fn glu_forward(
    gpu: &Gpu,
    out: &mut CudaSlice<f32>,
    gate: &CudaSlice<f32>,
    up: &CudaSlice<f32>,
    act: Act,
    n: usize,
) -> Result<()> {
    let op = "glu_forward";
    check_len(op, "out", out.len(), n)?;
    check_len(op, "gate", gate.len(), n)?;
    check_len(op, "up", up.len(), n)?;
    let ni = check_i32(op, "n", n)?;
    if n == 0 {
        return Ok(());
    }
    let f = gpu.function(&ACTIVATION, "glu_forward_f32")?;
    let a = act.code();
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(out).arg(gate).arg(up).arg(&a).arg(&ni);
    // SAFETY: lengths checked above; every thread checks i < n.
    unsafe { b.launch(per_element(n)) }?;
    Ok(())
}

/// Backward of [`glu_forward`]: dgate = dout·up·act'(gate), dup = dout·act(gate). Both are
/// overwritten, not accumulated (as the CPU's `glu_backward`).
pub fn glu_backward(
    gpu: &Gpu,
    dgate: &mut CudaSlice<f32>,
    dup: &mut CudaSlice<f32>,
    dout: &CudaSlice<f32>,
    gate: &CudaSlice<f32>,
    up: &CudaSlice<f32>,
    act: Act,
    n: usize,
) -> Result<()> {
    let op = "glu_backward";
    check_len(op, "dgate", dgate.len(), n)?;
    check_len(op, "dup", dup.len(), n)?;
    check_len(op, "dout", dout.len(), n)?;
    check_len(op, "gate", gate.len(), n)?;
    check_len(op, "up", up.len(), n)?;
    let ni = check_i32(op, "n", n)?;
    if n == 0 {
        return Ok(());
    }
    let f = gpu.function(&ACTIVATION, "glu_backward_f32")?;
    let a = act.code();
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(dgate)
        .arg(dup)
        .arg(dout)
        .arg(gate)
        .arg(up)
        .arg(&a)
        .arg(&ni);
    // SAFETY: lengths checked above; every thread checks i < n.
    unsafe { b.launch(per_element(n)) }?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Act;
    use dsum_core::ops::activation::Activation;

    /// Every name maps to the variant of the same name on both sides, and the same names fail.
    #[test]
    fn from_name_matches_the_cpu() {
        for name in [
            "gelu",
            "gelu_new",
            "gelu_pytorch_tanh",
            "gelu_fast",
            "relu",
            "silu",
            "swish",
            "tanh",
            "",
        ] {
            let gpu = Act::from_name(name).map(|a| format!("{a:?}")).ok();
            let cpu = Activation::from_name(name).map(|a| format!("{a:?}")).ok();
            assert_eq!(gpu, cpu, "{name}");
        }
    }
}
