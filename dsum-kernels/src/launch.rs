//! Launch shapes shared by the kernel wrappers.

use cudarc::driver::LaunchConfig;

/// Threads per block for row-wise kernels: a multiple of 32, at most 1024, about `c`.
pub fn row_threads(c: usize) -> u32 {
    (c.div_ceil(32) * 32).clamp(32, 1024) as u32
}

/// One block per row.
pub fn per_row(rows: usize, c: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows as u32, 1, 1),
        block_dim: (row_threads(c), 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One thread per element, 256 per block.
pub fn per_element(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(256).max(1) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}
