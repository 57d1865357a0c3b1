//! Tolerances of the GPU-vs-CPU tests, defined once per dtype (STYLE.md rule 8).

#[derive(Clone, Copy, Debug)]
pub struct Tol {
    pub abs: f32,
    pub rel: f32,
}

/// f32 kernels: reductions run in a different order than the CPU (f64 sums there).
pub const F32: Tol = Tol {
    abs: 1e-5,
    rel: 1e-4,
};
/// Kernels whose inputs or outputs are bf16 (8 mantissa bits), or that use TF32 tensor cores.
pub const BF16: Tol = Tol {
    abs: 1e-2,
    rel: 2e-2,
};
/// Bit-exact kernels (NF4 dequantize: bitsandbytes' arithmetic is reproduced, not approximated).
pub const EXACT: Tol = Tol { abs: 0.0, rel: 0.0 };

/// Ok, or the first element that differs by more than abs + rel·|want|.
pub fn check(what: &str, got: &[f32], want: &[f32], tol: Tol) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!(
            "{what}: {} values, {} expected",
            got.len(),
            want.len()
        ));
    }
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = if tol.abs == 0.0 && tol.rel == 0.0 {
            g.to_bits() == w.to_bits() || (g == w)
        } else {
            (g - w).abs() <= tol.abs + tol.rel * w.abs()
        };
        if !ok || g.is_nan() != w.is_nan() {
            return Err(format!(
                "{what}[{i}]: got {g}, expected {w} (tolerance {tol:?})"
            ));
        }
    }
    Ok(())
}
