//! Fused dequantizing matmuls for an NF4 linear weight `W` (`[N, K]`, PyTorch layout): the
//! forward `out = x · Wᵀ` and the frozen-base part of the backward `dx = dy · W` (QLoRA trains
//! adapters on top of a 4-bit base, so the base needs no weight gradient). `W` is never
//! materialized: rows are dequantized a tile at a time next to the arithmetic.
//!
//! Few rows (decoding) dot each dequantized weight row with every input row while it sits in
//! L1; many rows hand tiles to the `gemm` crate. The reference is `dequantize` followed by
//! `ops::matmul::linear_naive` (tests/nf4.rs compares them over random shapes).

use std::vec;

use super::nf4::Nf4Tensor;
use crate::ops::matmul::dot;

/// Input rows at or below this use the row-dot kernel (as `ops::matmul`).
const SMALL_M: usize = 16;
/// Weight rows dequantized per task in the row-dot kernel.
const DOT_ROWS: usize = 16;
/// Weight rows dequantized per gemm call.
const TILE_ROWS: usize = 128;

impl Nf4Tensor {
    /// `(N, K)`: the first dimension and the product of the others.
    fn rows_cols(&self) -> (usize, usize) {
        let n = self.shape().first().copied().unwrap_or(1);
        let k = self.numel().checked_div(n).unwrap_or(0);
        (n, k)
    }

    /// out[M,N] = x[M,K] · Wᵀ for W = self as [N,K] (fused: never materializes W). Equals
    /// `linear_forward(out, x, &self.dequantize(), None, m, k, n)` up to float32 summation order.
    pub fn matmul(&self, out: &mut [f32], x: &[f32], m: usize) {
        let (n, k) = self.rows_cols();
        assert!(
            out.len() == m * n && x.len() == m * k,
            "Nf4Tensor::matmul: out {} / x {} values for m={m}, n={n}, k={k}",
            out.len(),
            x.len()
        );
        if m == 0 || n == 0 {
            return;
        }
        let absmax = self.absmax().to_f32();
        if m > SMALL_M && k > 0 {
            let mut tile = vec![0f32; TILE_ROWS.min(n) * k];
            for j0 in (0..n).step_by(TILE_ROWS) {
                let rows = TILE_ROWS.min(n - j0);
                let tile = &mut tile[..rows * k];
                self.dequantize_rows(&absmax, j0, k, tile);
                // SAFETY: dst is columns j0..j0+rows of out ([m,n] row-major, so row stride n),
                // lhs is x [m,k] row-major, rhs is the tile [rows,k] viewed as [k,rows].
                unsafe {
                    gemm::gemm(
                        m,
                        rows,
                        k,
                        out.as_mut_ptr().add(j0),
                        1,
                        n as isize,
                        false,
                        x.as_ptr(),
                        1,
                        k as isize,
                        tile.as_ptr(),
                        k as isize,
                        1,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        parallelism(m * rows * k),
                    );
                }
            }
            return;
        }
        // Few rows: per chunk of weight rows, results in [j][i] order, scattered afterwards.
        let mut out_t = vec![0f32; n * m];
        let work = |(c, chunk): (usize, &mut [f32])| {
            let mut w = vec![0f32; k];
            for (r, o) in chunk.chunks_exact_mut(m).enumerate() {
                let j = c * DOT_ROWS + r;
                self.dequantize_range(&absmax, j * k, &mut w);
                for (i, o) in o.iter_mut().enumerate() {
                    *o = dot(&x[i * k..(i + 1) * k], &w);
                }
            }
        };
        #[cfg(feature = "rayon")]
        {
            use rayon::prelude::*;
            out_t
                .par_chunks_mut(DOT_ROWS * m)
                .enumerate()
                .for_each(work);
        }
        #[cfg(not(feature = "rayon"))]
        out_t.chunks_mut(DOT_ROWS * m).enumerate().for_each(work);
        for j in 0..n {
            for i in 0..m {
                out[i * n + j] = out_t[j * m + i];
            }
        }
    }

    /// dx[M,K] = dy[M,N] · W (the frozen-base part of a linear layer's backward), fused.
    pub fn matmul_t(&self, dx: &mut [f32], dy: &[f32], m: usize) {
        let (n, k) = self.rows_cols();
        assert!(
            dx.len() == m * k && dy.len() == m * n,
            "Nf4Tensor::matmul_t: dx {} / dy {} values for m={m}, n={n}, k={k}",
            dx.len(),
            dy.len()
        );
        if m == 0 || k == 0 {
            return;
        }
        if n == 0 {
            dx.fill(0.0);
            return;
        }
        let absmax = self.absmax().to_f32();
        let mut tile = vec![0f32; TILE_ROWS.min(n) * k];
        for j0 in (0..n).step_by(TILE_ROWS) {
            let rows = TILE_ROWS.min(n - j0);
            let tile = &mut tile[..rows * k];
            self.dequantize_rows(&absmax, j0, k, tile);
            // dx (+)= dy[:, j0..j0+rows] · tile; the first tile overwrites dx.
            // SAFETY: dst is dx [m,k] row-major; lhs is columns j0..j0+rows of dy ([m,n],
            // row stride n); rhs is the tile [rows,k] row-major.
            unsafe {
                gemm::gemm(
                    m,
                    k,
                    rows,
                    dx.as_mut_ptr(),
                    1,
                    k as isize,
                    j0 > 0,
                    dy.as_ptr().add(j0),
                    1,
                    n as isize,
                    tile.as_ptr(),
                    1,
                    k as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    parallelism(m * rows * k),
                );
            }
        }
    }

    /// Dequantize weight rows `j0..` (each `k` values) into `tile`, rows in parallel.
    fn dequantize_rows(&self, absmax: &[f32], j0: usize, k: usize, tile: &mut [f32]) {
        let row = |(r, w): (usize, &mut [f32])| self.dequantize_range(absmax, (j0 + r) * k, w);
        #[cfg(feature = "rayon")]
        {
            use rayon::prelude::*;
            if tile.len() >= 1 << 14 {
                tile.par_chunks_mut(k).enumerate().for_each(row);
                return;
            }
        }
        tile.chunks_mut(k).enumerate().for_each(row);
    }
}

fn parallelism(work: usize) -> gemm::Parallelism {
    #[cfg(feature = "rayon")]
    if work >= 1 << 18 {
        return gemm::Parallelism::Rayon(0);
    }
    let _ = work;
    gemm::Parallelism::None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::matmul::linear_naive;

    fn weight(n: usize, k: usize) -> Nf4Tensor {
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        Nf4Tensor::quantize(&w, std::vec![n, k], 32, true).unwrap()
    }

    #[test]
    fn both_paths_match_the_naive_reference() {
        for (m, n, k) in [(1, 5, 33), (3, 7, 64), (20, 9, 40), (17, 130, 3)] {
            let t = weight(n, k);
            let w = t.dequantize();
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 13 % 17) as f32 - 8.0) / 8.0)
                .collect();
            let mut got = std::vec![0f32; m * n];
            let mut want = std::vec![0f32; m * n];
            t.matmul(&mut got, &x, m);
            linear_naive(&mut want, &x, &w, None, m, k, n);
            for (a, b) in got.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "{a} vs {b} (m={m} n={n} k={k})"
                );
            }
        }
    }
}
