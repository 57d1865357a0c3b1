// Inverted dropout, mirrors dsum-core/src/ops/dropout.rs. The mask is a pure function of
// (seed, flat index), so the CPU's splitmix64 test is reproduced bit for bit and CPU and GPU
// drop the same elements; the backward regenerates the mask instead of storing it.
// Every float operation is an explicit _rn intrinsic: no FMA contraction, same rounding as Rust.

// ops::dropout::keep: element i survives with probability 1-p.
__device__ __forceinline__ bool dropout_keep(u64 seed, u64 i, float p) {
  u64 z = seed ^ (i * 0x9E3779B97F4A7C15ull);  // u64 products wrap, as wrapping_mul does
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  // z >> 40 has 24 bits: exact as f32, and so is the division by 2^24.
  return __fdiv_rn((float)(z >> 40), 16777216.0f) >= p;
}

// out[n] = keep ? inp * 1/(1-p) : 0 (dropout_inplace, out of place); p <= 0 copies.
extern "C" __global__ void dropout_forward_f32(float* out, const float* inp, u64 seed, float p,
                                               int n) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (size_t)n) return;
  if (p <= 0.0f) {
    out[i] = inp[i];
    return;
  }
  float scale = __fdiv_rn(1.0f, __fsub_rn(1.0f, p));
  out[i] = dropout_keep(seed, i, p) ? __fmul_rn(inp[i], scale) : 0.0f;
}

// dinp[n] += keep ? dout * 1/(1-p) : 0 — the same mask applied to the gradient, accumulated
// (TrainLinear::backward's `dx[i] += dxd[i] * keep`); p <= 0 adds dout.
extern "C" __global__ void dropout_backward_acc_f32(float* dinp, const float* dout, u64 seed,
                                                    float p, int n) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (size_t)n) return;
  if (p <= 0.0f) {
    dinp[i] = __fadd_rn(dinp[i], dout[i]);
    return;
  }
  float scale = __fdiv_rn(1.0f, __fsub_rn(1.0f, p));
  if (dropout_keep(seed, i, p)) dinp[i] = __fadd_rn(dinp[i], __fmul_rn(dout[i], scale));
}
