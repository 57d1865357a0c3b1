//! CUDA kernels of dsum, launched through cudarc.
//!
//! CUDA is loaded at run time (cudarc's dynamic loading): a binary built with these kernels runs
//! on machines without CUDA and answers `KernelError::NoDriver` when asked for a GPU. Kernels are
//! CUDA C in `kernels/*.cu`, compiled by NVRTC for the device on first use. Each `.cu` file mirrors
//! a CPU module of dsum-core (`rmsnorm.cu` ↔ `ops/rmsnorm.rs`), which is its reference: the GPU
//! tests in `tests/gpu.rs` compare the two over random shapes.

// Kernel launchers take every buffer and dimension explicitly, as the CUDA signatures do.
#![allow(clippy::too_many_arguments)]

pub mod activation;
pub mod adamw;
pub mod attention;
pub mod convert;
pub mod cross_entropy;
pub mod dropout;
pub mod elementwise;
pub mod embedding;
pub mod error;
pub mod gemm;
pub mod gpu;
pub mod grad_norm;
pub mod launch;
pub mod layernorm;
pub mod lora;
pub mod nf4;
pub mod reduce;
pub mod rmsnorm;
pub mod rope;
pub mod sources;
pub mod tolerance;

pub use cudarc;
pub use error::{KernelError, Result};
pub use gpu::{compile, device_count, driver_present, nvrtc_present, Gpu};
