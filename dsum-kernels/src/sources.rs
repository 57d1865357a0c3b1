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

pub const DROPOUT: Source = Source {
    name: "dropout",
    code: include_str!("../kernels/dropout.cu"),
    kernels: &["dropout_forward_f32", "dropout_backward_acc_f32"],
};

pub const ADAMW: Source = Source {
    name: "adamw",
    code: include_str!("../kernels/adamw.cu"),
    kernels: &["adamw_step_f32"],
};

pub const GRAD_NORM: Source = Source {
    name: "grad_norm",
    code: include_str!("../kernels/grad_norm.cu"),
    kernels: &["grad_norm_partial_f32", "grad_norm_total_f32"],
};

pub const LAYERNORM: Source = Source {
    name: "layernorm",
    code: include_str!("../kernels/layernorm.cu"),
    kernels: &["layernorm_forward_f32", "layernorm_backward_f32"],
};

pub const ROPE: Source = Source {
    name: "rope",
    code: include_str!("../kernels/rope.cu"),
    kernels: &["rope_forward_f32", "rope_backward_f32"],
};

pub const ACTIVATION: Source = Source {
    name: "activation",
    code: include_str!("../kernels/activation.cu"),
    kernels: &[
        "activation_forward_f32",
        "activation_backward_f32",
        "glu_forward_f32",
        "glu_backward_f32",
    ],
};

pub const EMBEDDING: Source = Source {
    name: "embedding",
    code: include_str!("../kernels/embedding.cu"),
    kernels: &["embedding_forward_f32", "embedding_backward_f32"],
};

pub const ELEMENTWISE: Source = Source {
    name: "elementwise",
    code: include_str!("../kernels/elementwise.cu"),
    kernels: &["add_inplace_f32", "mul_inplace_f32", "scale_inplace_f32"],
};

pub const NF4: Source = Source {
    name: "nf4",
    code: include_str!("../kernels/nf4.cu"),
    kernels: &[
        "nf4_dequantize_f32",
        "nf4_dequantize_bf16",
        "nf4_linear_forward_f32",
        "nf4_linear32_m1_f32",
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

pub const ATTENTION: Source = Source {
    name: "attention",
    code: include_str!("../kernels/attention.cu"),
    kernels: &[
        "attention_forward_f32",
        "kv_write_f32",
        "attention_train_forward_f32",
        "attention_backward_dq_f32",
        "attention_backward_dkv_f32",
    ],
};

pub const CROSS_ENTROPY: Source = Source {
    name: "cross_entropy",
    code: include_str!("../kernels/cross_entropy.cu"),
    kernels: &[
        "cross_entropy_forward_f32",
        "cross_entropy_backward_f32",
        "cross_entropy_sum_f32",
    ],
};

/// The shipped set, in the order `dsum-ptx-check` reports them.
pub const ALL: &[&Source] = &[
    &REDUCE,
    &RMSNORM,
    &LAYERNORM,
    &ROPE,
    &ACTIVATION,
    &EMBEDDING,
    &ELEMENTWISE,
    &DROPOUT,
    &ADAMW,
    &GRAD_NORM,
    &NF4,
    &GEMM,
    &CONVERT,
    &ATTENTION,
    &CROSS_ENTROPY,
];
