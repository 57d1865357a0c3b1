// Element-wise in-place updates, the slice loops of the models' forward and backward passes
// (residual adds `x += attn(x)`, the GLU's `gate *= up`, gradient scaling). No CPU module holds
// them; the plain loops in tests/cases/elementwise.rs are their reference. One thread per
// element; a single IEEE operation each, so the results are bit-identical to the CPU's.

// x[N] += y[N]
extern "C" __global__ void add_inplace_f32(float* x, const float* y, int n) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (size_t)n) return;
  x[i] += y[i];
}

// x[N] *= y[N]
extern "C" __global__ void mul_inplace_f32(float* x, const float* y, int n) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (size_t)n) return;
  x[i] *= y[i];
}

// x[N] *= s
extern "C" __global__ void scale_inplace_f32(float* x, float s, int n) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (size_t)n) return;
  x[i] *= s;
}
