//! LoRA adapter forward/backward on cuBLAS, mirrors the LoRA part of
//! `dsum_core::train::linear::TrainLinear` (peft: `y += lora_B(lora_A(dropout(x))) · scaling`).
//! Only matmuls, so no kernel of its own: dropout is `dropout.rs`, applied by the caller before
//! [`lora_forward`] and, through `dropout_backward_acc`, after [`lora_backward`].
//!
//! Shapes: x `[M, in]`, A `[r, in]`, B `[out, r]`, y `[M, out]`, all row-major (PyTorch layout).

use cudarc::driver::CudaSlice;

use crate::error::{check_len, Result};
use crate::gemm::{matmul, Math};
use crate::gpu::Gpu;

/// y[M,out] += scaling · (x·Aᵀ)·Bᵀ; tmp[M,r] = x·Aᵀ is kept for [`lora_backward`].
/// `x` is the LoRA input after dropout (the base layer sees the undropped input).
pub fn lora_forward(
    gpu: &Gpu,
    y: &mut CudaSlice<f32>,
    x: &CudaSlice<f32>,
    a: &CudaSlice<f32>,
    b: &CudaSlice<f32>,
    tmp: &mut CudaSlice<f32>,
    scaling: f32,
    m: usize,
    in_f: usize,
    out_f: usize,
    r: usize,
) -> Result<()> {
    let op = "lora_forward";
    check_len(op, "y", y.len(), m * out_f)?;
    check_len(op, "x", x.len(), m * in_f)?;
    check_len(op, "a", a.len(), r * in_f)?;
    check_len(op, "b", b.len(), out_f * r)?;
    check_len(op, "tmp", tmp.len(), m * r)?;
    // tmp = x · Aᵀ
    matmul(gpu, tmp, x, a, m, r, in_f, false, true, 1.0, 0.0, Math::F32)?;
    // y += scaling · tmp · Bᵀ (peft scales after lora_B; the CPU scales h first: same to f32)
    matmul(
        gpu,
        y,
        &*tmp,
        b,
        m,
        out_f,
        r,
        false,
        true,
        scaling,
        1.0,
        Math::F32,
    )
}

/// Gradients of [`lora_forward`] for dy[M,out], accumulated: dB[out,r] += s·dyᵀ·tmp,
/// dA[r,in] += dhᵀ·x, dx[M,in] += dh·A when given, with dh = s·dy·B in `scratch[M,r]`.
/// `x` and `dx` are the dropped-out input and its gradient (see `dropout_backward_acc`).
pub fn lora_backward(
    gpu: &Gpu,
    dx: Option<&mut CudaSlice<f32>>,
    da: &mut CudaSlice<f32>,
    db: &mut CudaSlice<f32>,
    dy: &CudaSlice<f32>,
    x: &CudaSlice<f32>,
    a: &CudaSlice<f32>,
    b: &CudaSlice<f32>,
    tmp: &CudaSlice<f32>,
    scaling: f32,
    m: usize,
    in_f: usize,
    out_f: usize,
    r: usize,
    scratch: &mut CudaSlice<f32>,
) -> Result<()> {
    let op = "lora_backward";
    if let Some(dx) = dx.as_deref() {
        check_len(op, "dx", dx.len(), m * in_f)?;
    }
    check_len(op, "da", da.len(), r * in_f)?;
    check_len(op, "db", db.len(), out_f * r)?;
    check_len(op, "dy", dy.len(), m * out_f)?;
    check_len(op, "x", x.len(), m * in_f)?;
    check_len(op, "a", a.len(), r * in_f)?;
    check_len(op, "b", b.len(), out_f * r)?;
    check_len(op, "tmp", tmp.len(), m * r)?;
    check_len(op, "scratch", scratch.len(), m * r)?;
    // dB += s · dyᵀ · tmp
    matmul(
        gpu,
        db,
        dy,
        tmp,
        out_f,
        r,
        m,
        true,
        false,
        scaling,
        1.0,
        Math::F32,
    )?;
    // dh = s · dy · B
    matmul(
        gpu,
        scratch,
        dy,
        b,
        m,
        r,
        out_f,
        false,
        false,
        scaling,
        0.0,
        Math::F32,
    )?;
    // dA += dhᵀ · x
    matmul(
        gpu,
        da,
        &*scratch,
        x,
        r,
        in_f,
        m,
        true,
        false,
        1.0,
        1.0,
        Math::F32,
    )?;
    // dx += dh · A
    if let Some(dx) = dx {
        matmul(
            gpu,
            dx,
            &*scratch,
            a,
            m,
            in_f,
            r,
            false,
            false,
            1.0,
            1.0,
            Math::F32,
        )?;
    }
    Ok(())
}
