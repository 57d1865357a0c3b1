// AdamW, mirrors dsum-core/src/train/optim.rs (torch.optim.AdamW's single-tensor arithmetic).
// One fused pass: each thread updates one element of param, m and v in place. The scalars
// (bias corrections in f64, then rounded) come from the host exactly as the CPU computes them;
// every per-element operation is an explicit _rn intrinsic in torch's order, so nothing is
// contracted into an FMA that the CPU does not use.

// shrink = 1 - lr*wd (1 without decay), w1 = 1-beta1, w2 = 1-beta2,
// step_size = lr / (1 - beta1^t), bc2_sqrt = sqrt(1 - beta2^t).
extern "C" __global__ void adamw_step_f32(float* param, const float* grad, float* exp_avg,
                                          float* exp_avg_sq, int n, float step_size,
                                          float bc2_sqrt, float eps, float w1, float beta2,
                                          float w2, float shrink) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (size_t)n) return;
  float g = grad[i];
  float x = __fmul_rn(param[i], shrink);  // decoupled weight decay; x * 1 == x exactly
  float m = exp_avg[i];
  m = __fmaf_rn(w1, __fsub_rn(g, m), m);  // m.lerp_(g, 1-beta1): torch's fmadd form
  float v = __fmul_rn(exp_avg_sq[i], beta2);
  v = __fadd_rn(v, __fmul_rn(__fmul_rn(w2, g), g));
  float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), bc2_sqrt), eps);
  x = __fadd_rn(x, __fdiv_rn(__fmul_rn(-step_size, m), denom));  // addcdiv
  exp_avg[i] = m;
  exp_avg_sq[i] = v;
  param[i] = x;
}
