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
pub const ALL: &[&Source] = &[&REDUCE, &RMSNORM, &ATTENTION, &CROSS_ENTROPY];
