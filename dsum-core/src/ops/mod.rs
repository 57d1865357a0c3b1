//! Forward (and later backward) operators, one file per op; each fast path keeps a naive
//! reference beside it.

pub mod activation;
pub mod attention;
pub mod cross_entropy;
pub mod dropout;
pub mod embedding;
#[cfg(test)]
pub(crate) mod gradcheck;
pub mod layernorm;
pub mod matmul;
#[cfg(any(test, all(target_arch = "wasm32", target_feature = "simd128")))]
pub(crate) mod packed_gemm;
pub mod qmatmul;
pub mod rmsnorm;
pub mod rope;
pub mod softmax;
