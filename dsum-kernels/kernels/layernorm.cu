// LayerNorm over the last dimension, mirrors dsum-core/src/ops/layernorm.rs
// (layernorm_forward_train, layernorm_backward). One block per row. Mean and variance are two
// block reductions in f32 (the CPU reference sums in f64), so the two agree to f32 rounding; the
// variance is taken around the mean (two passes) as the CPU does, never as E[x^2] - mean^2.

// out[R,C] = (x - mean) * rstd * w + b, rstd = 1/sqrt(var + eps) with the biased variance.
// mean[R] and rstd[R] are kept for the backward pass when not null.
extern "C" __global__ void layernorm_forward_f32(float* out, float* mean, float* rstd,
                                                 const float* inp, const float* weight,
                                                 const float* bias, int rows, int c, float eps) {
  __shared__ float scratch[32];
  int r = blockIdx.x;
  if (r >= rows) return;
  const float* x = inp + (size_t)r * c;
  float s = 0.0f;
  for (int i = threadIdx.x; i < c; i += blockDim.x) s += x[i];
  float m = block_sum(s, scratch) / (float)c;
  float v = 0.0f;
  for (int i = threadIdx.x; i < c; i += blockDim.x) v += (x[i] - m) * (x[i] - m);
  // block_sum syncs before reusing scratch, so back-to-back reductions are safe.
  float var = block_sum(v, scratch) / (float)c;
  // 1/sqrtf rather than rsqrtf: correctly rounded, like the CPU's 1.0 / sqrt.
  float rs = 1.0f / sqrtf(var + eps);
  if (threadIdx.x == 0) {
    if (mean != nullptr) mean[r] = m;
    if (rstd != nullptr) rstd[r] = rs;
  }
  float* y = out + (size_t)r * c;
  for (int i = threadIdx.x; i < c; i += blockDim.x) y[i] = (x[i] - m) * rs * weight[i] + bias[i];
}

// With xh = (x - mean) * rstd and g = dout * w:
// dinp += rstd * (g - mean(g) - xh * mean(g * xh)).
// dweight_rows[R,C] receives the per-row terms dout * xh, summed over rows by the caller (a
// column reduction keeps this kernel free of atomics, so results are deterministic); dbias needs
// no per-row buffer (it is the column sum of dout). Pass null to skip dweight_rows.
extern "C" __global__ void layernorm_backward_f32(float* dinp, float* dweight_rows,
                                                  const float* dout, const float* inp,
                                                  const float* mean, const float* rstd,
                                                  const float* weight, int rows, int c) {
  __shared__ float scratch[32];
  int r = blockIdx.x;
  if (r >= rows) return;
  const float* dy = dout + (size_t)r * c;
  const float* x = inp + (size_t)r * c;
  float m = mean[r], rs = rstd[r];
  float sg = 0.0f, sgx = 0.0f;
  for (int i = threadIdx.x; i < c; i += blockDim.x) {
    float xh = (x[i] - m) * rs;
    float g = dy[i] * weight[i];
    sg += g;
    sgx += g * xh;
  }
  float mg = block_sum(sg, scratch) / (float)c;
  float mgx = block_sum(sgx, scratch) / (float)c;
  float* dx = dinp + (size_t)r * c;
  for (int i = threadIdx.x; i < c; i += blockDim.x) {
    float xh = (x[i] - m) * rs;
    // g rounded before the subtraction, as on the CPU: a contracted fma(dy, w, -mg) would keep
    // the product's rounding error, which rstd (up to 1/sqrt(eps) for near-constant rows)
    // magnifies beyond the f32 tolerance.
    float g = __fmul_rn(dy[i], weight[i]);
    dx[i] += rs * (g - mg - xh * mgx);
    if (dweight_rows != nullptr) dweight_rows[(size_t)r * c + i] = dy[i] * xh;
  }
}
