//! LoRA adapter forward/backward on cuBLAS, mirrors the LoRA part of
//! `dsum_core::train::linear::TrainLinear` (peft: `y += lora_B(lora_A(dropout(x))) · scaling`).
//! Only matmuls, so no kernel of its own: dropout is `dropout.rs`, applied by the caller before
//! [`lora_forward`] and, through `dropout_backward_acc`, after [`lora_backward`].
//!
//! Shapes: x `[M, in]`, A `[r, in]`, B `[out, r]`, y `[M, out]`, all row-major (PyTorch layout).

use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublas::{Gemm, GemmConfig};
use cudarc::driver::CudaSlice;

use crate::error::{check_len, KernelError, Result};
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
    gemm_rm(gpu, tmp, (x, false), (a, true), (m, r, in_f), 1.0, 0.0)?;
    // y += scaling · tmp · Bᵀ (peft scales after lora_B; the CPU scales h first: same to f32)
    gemm_rm(
        gpu,
        y,
        (&*tmp, false),
        (b, true),
        (m, out_f, r),
        scaling,
        1.0,
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
    gemm_rm(
        gpu,
        db,
        (dy, true),
        (tmp, false),
        (out_f, r, m),
        scaling,
        1.0,
    )?;
    // dh = s · dy · B
    gemm_rm(
        gpu,
        scratch,
        (dy, false),
        (b, false),
        (m, r, out_f),
        scaling,
        0.0,
    )?;
    // dA += dhᵀ · x
    gemm_rm(
        gpu,
        da,
        (&*scratch, true),
        (x, false),
        (r, in_f, m),
        1.0,
        1.0,
    )?;
    // dx += dh · A
    if let Some(dx) = dx {
        gemm_rm(
            gpu,
            dx,
            (&*scratch, false),
            (a, false),
            (m, in_f, r),
            1.0,
            1.0,
        )?;
    }
    Ok(())
}

/// c[M,N] = alpha · op(a)·op(b) + beta · c, every matrix row-major; `(a, true)` means `a` is
/// stored `[K,M]` and used transposed, `(b, true)` that `b` is stored `[N,K]`.
///
/// cuBLAS is column-major, and a row-major `[R,C]` buffer is the column-major `[C,R]` matrix,
/// so the row-major product is computed as cᵀ = op(b)ᵀ·op(a)ᵀ: operands swapped, M and N too.
/// Private and minimal on purpose (`gemm.rs` is the general GEMM entry point).
fn gemm_rm(
    gpu: &Gpu,
    c: &mut CudaSlice<f32>,
    (a, a_t): (&CudaSlice<f32>, bool),
    (b, b_t): (&CudaSlice<f32>, bool),
    (m, n, k): (usize, usize, usize),
    alpha: f32,
    beta: f32,
) -> Result<()> {
    let op = "lora gemm";
    check_len(op, "c", c.len(), m * n)?;
    check_len(op, "a", a.len(), m * k)?;
    check_len(op, "b", b.len(), k * n)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        // An empty sum: c = beta · c. Done here rather than trusting cuBLAS with k = 0.
        if beta == 0.0 {
            gpu.stream().memset_zeros(&mut c.slice_mut(..m * n))?;
        } else if beta != 1.0 {
            return Err(KernelError::Shape {
                op,
                what: format!("k = 0 with beta = {beta}"),
            });
        }
        return Ok(());
    }
    let int = |v: usize| {
        i32::try_from(v).map_err(|_| KernelError::Shape {
            op,
            what: format!("dimension {v} exceeds cuBLAS's 32-bit range"),
        })
    };
    let trans = |t: bool| {
        if t {
            cublasOperation_t::CUBLAS_OP_T
        } else {
            cublasOperation_t::CUBLAS_OP_N
        }
    };
    let cfg = GemmConfig {
        // Column-major: C' [N,M] = B' [N,K] · A' [K,M].
        transa: trans(b_t),
        transb: trans(a_t),
        m: int(n)?,
        n: int(m)?,
        k: int(k)?,
        alpha,
        lda: int(if b_t { k } else { n })?,
        ldb: int(if a_t { m } else { k })?,
        beta,
        ldc: int(n)?,
    };
    let blas = gpu.blas()?;
    // SAFETY: the lengths checked above cover every element cuBLAS addresses: each operand is a
    // dense row-major matrix of exactly the size its leading dimension implies.
    unsafe { blas.gemm(cfg, b, a, c) }?;
    Ok(())
}
