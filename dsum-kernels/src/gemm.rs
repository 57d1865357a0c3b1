//! Row-major matrix products over cuBLAS, PyTorch's `Linear` layout (W is `[N, K]`), mirrors
//! `dsum_core::ops::matmul` (`linear_forward`, `matmul_acc`, `linear_backward`).
//!
//! cuBLAS is column-major: a row-major `C[m,n]` is the column-major `Cᵀ[n,m]`, so
//! `C = op(A)·op(B)` is handed over as `Cᵀ = op(B)ᵀ·op(A)ᵀ`, operands swapped, no copies.
//! Every product goes through `cublasGemmEx` with f32 output and f32 accumulation; the compute
//! type carries the math mode per call, so no state is set on the shared handle.

use core::ffi::c_void;

use cudarc::cublas::result::gemm_ex;
use cudarc::cublas::sys::{
    cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType_t,
};
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut, PushKernelArg};

use crate::error::{check_i32, check_len, Result};
use crate::gpu::Gpu;
use crate::launch::per_element;
use crate::reduce::sum_rows_acc;
use crate::sources::GEMM;

/// How f32 products are computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Math {
    /// Full f32 (`CUBLAS_COMPUTE_32F`).
    F32,
    /// Inputs rounded to TF32 on the tensor cores, f32 accumulation
    /// (`CUBLAS_COMPUTE_32F_FAST_TF32`, what `torch.backends.cuda.matmul.allow_tf32` selects).
    Tf32,
}

impl Math {
    fn compute_type(self) -> cublasComputeType_t {
        match self {
            Math::F32 => cublasComputeType_t::CUBLAS_COMPUTE_32F,
            Math::Tf32 => cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32,
        }
    }
}

/// y[m,n] = x[m,k] · W[n,k]ᵀ (+ bias[n]).
pub fn linear_forward(
    gpu: &Gpu,
    y: &mut CudaSlice<f32>,
    x: &CudaSlice<f32>,
    w: &CudaSlice<f32>,
    bias: Option<&CudaSlice<f32>>,
    m: usize,
    k: usize,
    n: usize,
    math: Math,
) -> Result<()> {
    if let Some(b) = bias {
        check_len("linear_forward", "bias", b.len(), n)?;
    }
    matmul(gpu, y, x, w, m, n, k, false, true, 1.0, 0.0, math)?;
    if let Some(b) = bias {
        add_bias(gpu, y, b, m, n)?;
    }
    Ok(())
}

/// C[m,n] = alpha · op(A) · op(B) + beta · C, row-major: op(A) is `[m,k]` (A stored `[k,m]`
/// when `trans_a`), op(B) is `[k,n]` (B stored `[n,k]` when `trans_b`). beta = 1 accumulates
/// like `matmul_acc`; beta = 0 overwrites whatever C held.
pub fn matmul(
    gpu: &Gpu,
    c: &mut CudaSlice<f32>,
    a: &CudaSlice<f32>,
    b: &CudaSlice<f32>,
    m: usize,
    n: usize,
    k: usize,
    trans_a: bool,
    trans_b: bool,
    alpha: f32,
    beta: f32,
    math: Math,
) -> Result<()> {
    let p = Product {
        op: "matmul",
        m,
        n,
        k,
        trans_a,
        trans_b,
        alpha,
        beta,
    };
    p.run(
        gpu,
        c,
        a,
        b,
        cudaDataType_t::CUDA_R_32F,
        math.compute_type(),
    )
}

/// Backward of [`linear_forward`] given dy[m,n]: dx[m,k] += dy · W, dw[n,k] += dyᵀ · x,
/// dbias[n] += Σ_rows dy, each when given.
pub fn linear_backward(
    gpu: &Gpu,
    dx: Option<&mut CudaSlice<f32>>,
    dw: Option<&mut CudaSlice<f32>>,
    dbias: Option<&mut CudaSlice<f32>>,
    dy: &CudaSlice<f32>,
    x: &CudaSlice<f32>,
    w: &CudaSlice<f32>,
    m: usize,
    k: usize,
    n: usize,
    math: Math,
) -> Result<()> {
    if let Some(dx) = dx {
        matmul(gpu, dx, dy, w, m, k, n, false, false, 1.0, 1.0, math)?;
    }
    if let Some(dw) = dw {
        matmul(gpu, dw, dy, x, n, k, m, true, false, 1.0, 1.0, math)?;
    }
    if let Some(db) = dbias {
        check_len("linear_backward", "dy", dy.len(), m * n)?;
        sum_rows_acc(gpu, db, dy, m, n)?;
    }
    Ok(())
}

/// y[m,n] = x[m,k] · W[n,k]ᵀ for bf16 x and W (`u16` bits), f32 products and accumulation.
pub fn linear_forward_bf16(
    gpu: &Gpu,
    y: &mut CudaSlice<f32>,
    x: &CudaSlice<u16>,
    w: &CudaSlice<u16>,
    m: usize,
    k: usize,
    n: usize,
) -> Result<()> {
    matmul_bf16(gpu, y, x, w, m, n, k, false, true, 1.0, 0.0)
}

/// [`matmul`] with bf16 A and B (`u16` bits) and an f32 C, f32 accumulation.
pub fn matmul_bf16(
    gpu: &Gpu,
    c: &mut CudaSlice<f32>,
    a: &CudaSlice<u16>,
    b: &CudaSlice<u16>,
    m: usize,
    n: usize,
    k: usize,
    trans_a: bool,
    trans_b: bool,
    alpha: f32,
    beta: f32,
) -> Result<()> {
    let p = Product {
        op: "matmul_bf16",
        m,
        n,
        k,
        trans_a,
        trans_b,
        alpha,
        beta,
    };
    p.run(
        gpu,
        c,
        a,
        b,
        cudaDataType_t::CUDA_R_16BF,
        cublasComputeType_t::CUBLAS_COMPUTE_32F,
    )
}

/// out[m,n] += bias[n] (`linear_bias_forward_f32`).
pub fn add_bias(
    gpu: &Gpu,
    out: &mut CudaSlice<f32>,
    bias: &CudaSlice<f32>,
    m: usize,
    n: usize,
) -> Result<()> {
    check_len("linear_forward", "out", out.len(), m * n)?;
    check_len("linear_forward", "bias", bias.len(), n)?;
    let (mi, ni) = (
        check_i32("linear_forward", "m", m)?,
        check_i32("linear_forward", "n", n)?,
    );
    check_i32("linear_forward", "m*n", m * n)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    let f = gpu.function(&GEMM, "linear_bias_forward_f32")?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(out).arg(bias).arg(&mi).arg(&ni);
    // SAFETY: lengths checked above; one thread per element, each checks i < m*n.
    unsafe { b.launch(per_element(m * n)) }?;
    Ok(())
}

/// One row-major product C[m,n] = alpha·op(A)·op(B) + beta·C.
struct Product {
    op: &'static str,
    m: usize,
    n: usize,
    k: usize,
    trans_a: bool,
    trans_b: bool,
    alpha: f32,
    beta: f32,
}

impl Product {
    fn run<T>(
        &self,
        gpu: &Gpu,
        c: &mut CudaSlice<f32>,
        a: &CudaSlice<T>,
        b: &CudaSlice<T>,
        ab_type: cudaDataType_t,
        compute: cublasComputeType_t,
    ) -> Result<()> {
        let &Product {
            op,
            m,
            n,
            k,
            trans_a,
            trans_b,
            alpha,
            beta,
        } = self;
        check_len(op, "C", c.len(), m * n)?;
        check_len(op, "A", a.len(), m * k)?;
        check_len(op, "B", b.len(), k * n)?;
        let (mi, ni, ki) = (
            check_i32(op, "m", m)?,
            check_i32(op, "n", n)?,
            check_i32(op, "k", k)?,
        );
        if m == 0 || n == 0 {
            return Ok(());
        }
        if k == 0 {
            // Nothing to multiply: C = beta·C, without asking cuBLAS about zero-width operands.
            return scale(gpu, c, beta, m * n);
        }
        let blas = gpu.blas()?;
        // cuBLAS runs in whatever context is current on this thread (tests run on several).
        gpu.context().bind_to_thread()?;
        let stream = gpu.stream();
        let op_of = |t: bool| {
            if t {
                cublasOperation_t::CUBLAS_OP_T
            } else {
                cublasOperation_t::CUBLAS_OP_N
            }
        };
        // Column-major view: Cᵀ[n,m] = op(B)ᵀ[n,k] · op(A)ᵀ[k,m]. B stored row-major [k,n] is
        // column-major [n,k] with ld n (no transpose); stored [n,k] it is [k,n] with ld k,
        // transposed. Likewise A: ld k as [m,k], ld m as [k,m].
        let (ldb, lda, ldc) = (
            if trans_b { ki } else { ni },
            if trans_a { mi } else { ki },
            ni,
        );
        let (pa, _ra) = a.device_ptr(stream);
        let (pb, _rb) = b.device_ptr(stream);
        let (pc, _rc) = c.device_ptr_mut(stream);
        // SAFETY: the lengths checked above cover every element cuBLAS reads or writes with
        // these dimensions and leading dimensions; alpha and beta are host f32 values, as the
        // default pointer mode and an f32 compute type expect; the handle runs on this stream.
        unsafe {
            gemm_ex(
                *blas.handle(),
                op_of(trans_b),
                op_of(trans_a),
                ni,
                mi,
                ki,
                (&alpha) as *const f32 as *const c_void,
                pb as usize as *const c_void,
                ab_type,
                ldb,
                pa as usize as *const c_void,
                ab_type,
                lda,
                (&beta) as *const f32 as *const c_void,
                pc as usize as *mut c_void,
                cudaDataType_t::CUDA_R_32F,
                ldc,
                compute,
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }?;
        Ok(())
    }
}

/// c[..len] = beta · c (`matmul_scale_f32`).
fn scale(gpu: &Gpu, c: &mut CudaSlice<f32>, beta: f32, len: usize) -> Result<()> {
    if beta == 1.0 {
        return Ok(());
    }
    let li = check_i32("matmul", "m*n", len)?;
    let f = gpu.function(&GEMM, "matmul_scale_f32")?;
    let mut b = gpu.stream().launch_builder(&f);
    b.arg(c).arg(&beta).arg(&li);
    // SAFETY: the caller checked c.len() >= len; one thread per element, each checks i < len.
    unsafe { b.launch(per_element(len)) }?;
    Ok(())
}
