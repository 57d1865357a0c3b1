// RMSNorm, mirrors dsum-core/src/ops/rmsnorm.rs (rmsnorm_forward_train, rmsnorm_backward).
// One block per row; the mean of squares is reduced in f32 (the CPU reference uses f64, so the
// two agree to f32 rounding).

// out[R,C] = x / sqrt(mean(x^2) + eps) * w; rstd[R] = 1/rms for the backward pass (may be null).
extern "C" __global__ void rmsnorm_forward_f32(float* out, float* rstd, const float* inp,
                                               const float* weight, int rows, int c, float eps) {
  __shared__ float scratch[32];
  int r = blockIdx.x;
  if (r >= rows) return;
  const float* x = inp + (size_t)r * c;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < c; i += blockDim.x) ss += x[i] * x[i];
  ss = block_sum(ss, scratch);
  float rs = rsqrtf(ss / (float)c + eps);
  if (rstd != nullptr && threadIdx.x == 0) rstd[r] = rs;
  float* y = out + (size_t)r * c;
  for (int i = threadIdx.x; i < c; i += blockDim.x) y[i] = weight[i] * (x[i] * rs);
}

// dinp += r*g - x*r^3*mean(g*x) with g = dout*w. dweight[R,C] receives per-row terms dout*x*r,
// summed over rows by the caller (a column reduction keeps this kernel free of atomics, so
// results are deterministic); pass null to skip.
extern "C" __global__ void rmsnorm_backward_f32(float* dinp, float* dweight_rows, const float* dout,
                                                const float* inp, const float* rstd,
                                                const float* weight, int rows, int c) {
  __shared__ float scratch[32];
  int r = blockIdx.x;
  if (r >= rows) return;
  const float* dy = dout + (size_t)r * c;
  const float* x = inp + (size_t)r * c;
  float rs = rstd[r];
  float s = 0.0f;
  for (int i = threadIdx.x; i < c; i += blockDim.x) s += dy[i] * weight[i] * x[i];
  float mgx = block_sum(s, scratch) / (float)c;
  float k = rs * rs * rs * mgx;
  float* dx = dinp + (size_t)r * c;
  for (int i = threadIdx.x; i < c; i += blockDim.x) {
    dx[i] += rs * dy[i] * weight[i] - x[i] * k;
    if (dweight_rows != nullptr) dweight_rows[(size_t)r * c + i] = dy[i] * x[i] * rs;
  }
}
