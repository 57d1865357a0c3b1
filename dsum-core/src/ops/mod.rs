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
pub mod qmatmul;
pub mod rmsnorm;
pub mod rope;
pub mod softmax;
