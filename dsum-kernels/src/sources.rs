//! Every shipped kernel source, compiled at run time by NVRTC (and in CI by `dsum-ptx-check`).
//! Each `.cu` mirrors a CPU module of dsum-core and names its kernels after it.

/// One `.cu` file: its name, text and the kernels it exports (`extern "C"`).
pub struct Source {
    pub name: &'static str,
    pub code: &'static str,
    pub kernels: &'static [&'static str],
}

/// Prepended to every source: fixed-width integers and the bf16 <-> f32 conversions written out,
/// so no CUDA header is needed at run time.
pub const PRELUDE: &str = include_str!("../kernels/prelude.cuh");

pub const RMSNORM: Source = Source {
    name: "rmsnorm",
    code: include_str!("../kernels/rmsnorm.cu"),
    kernels: &["rmsnorm_forward_f32", "rmsnorm_backward_f32"],
};

pub const REDUCE: Source = Source {
    name: "reduce",
    code: include_str!("../kernels/reduce.cu"),
    kernels: &["sum_rows_acc_f32"],
};

pub const NF4: Source = Source {
    name: "nf4",
    code: include_str!("../kernels/nf4.cu"),
    kernels: &[
        "nf4_dequantize_f32",
        "nf4_dequantize_bf16",
        "nf4_linear_forward_f32",
    ],
};

pub const GEMM: Source = Source {
    name: "gemm",
    code: include_str!("../kernels/gemm.cu"),
    kernels: &["linear_bias_forward_f32", "matmul_scale_f32"],
};

pub const CONVERT: Source = Source {
    name: "convert",
    code: include_str!("../kernels/convert.cu"),
    kernels: &["to_bf16_f32", "from_bf16_f32"],
};

/// The shipped set, in the order `dsum-ptx-check` reports them.
pub const ALL: &[&Source] = &[&REDUCE, &RMSNORM, &NF4, &GEMM, &CONVERT];
