//! The GPU test cases, one file per kernel source (as `kernels/*.cu`).

use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

use crate::GpuTest;

mod activation;
mod adamw;
mod attention;
mod convert;
mod cross_entropy;
mod dropout;
mod elementwise;
mod embedding;
mod gemm;
mod grad_norm;
mod layernorm;
mod lora;
mod nf4;
mod rmsnorm;
mod rope;

pub const ALL: &[&[GpuTest]] = &[
    rmsnorm::TESTS,
    dropout::TESTS,
    lora::TESTS,
    adamw::TESTS,
    grad_norm::TESTS,
    layernorm::TESTS,
    rope::TESTS,
    activation::TESTS,
    embedding::TESTS,
    elementwise::TESTS,
    convert::TESTS,
    gemm::TESTS,
    nf4::TESTS,
    attention::TESTS,
    cross_entropy::TESTS,
];

/// Run a proptest strategy with a fixed number of cases; failures come back as a message with
/// the shrunk input.
pub fn prop<S: proptest::strategy::Strategy>(
    strategy: S,
    cases: u32,
    body: impl Fn(S::Value) -> Result<(), String>,
) -> Result<(), String>
where
    S::Value: std::fmt::Debug,
{
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&strategy, |v| body(v).map_err(TestCaseError::fail))
        .map_err(|e| match e {
            TestError::Fail(why, v) => format!("{why}; input {v:?}"),
            TestError::Abort(why) => why.to_string(),
        })
}

/// Deterministic pseudo-random values in [-1, 1).
pub fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    (0..n)
        .map(|_| {
            // splitmix64
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}
