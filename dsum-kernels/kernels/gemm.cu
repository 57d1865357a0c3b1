// The pieces of a linear layer cuBLAS does not do, mirrors dsum-core ops/matmul.rs
// (linear_forward's bias; a product with an empty inner dimension). The products themselves are
// cuBLAS calls (src/gemm.rs).

// out[m, n] += bias[n]: one thread per element.
extern "C" __global__ void linear_bias_forward_f32(float* out, const float* bias, int m, int n) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < (size_t)m * n) out[i] += bias[i % (size_t)n];
}

// c[i] = beta * c[i]: C = alpha*A*B + beta*C when A*B is empty (k = 0). beta = 0 writes zeros
// whatever c held, as BLAS does (c may be uninitialized).
extern "C" __global__ void matmul_scale_f32(float* c, float beta, int n) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < (size_t)n) c[i] = beta == 0.0f ? 0.0f : beta * c[i];
}
