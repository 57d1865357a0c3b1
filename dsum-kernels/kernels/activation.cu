// Pointwise activations and the gated MLP input (GLU), mirrors dsum-core/src/ops/activation.rs
// (Activation::forward_inplace / backward_inplace, glu_forward, glu_backward). Each formula is
// written in the CPU's order of operations; erff/tanhf/expf here are within a couple of ulp of
// libm's. One thread per element.

// Codes of dsum_kernels::activation::Act (kept in sync by hand: the Rust enum is #[repr(i32)]).
#define ACT_GELU 0
#define ACT_GELU_TANH 1
#define ACT_RELU 2
#define ACT_SILU 3

__device__ __forceinline__ float act_value(float v, int act) {
  switch (act) {
    case ACT_GELU: return 0.5f * v * (1.0f + erff(v * 0.70710678f));  // 0.5·x·(1 + erf(x/√2))
    case ACT_GELU_TANH: {
      float u = 0.7978846f * (v + 0.044715f * v * v * v);
      return 0.5f * v * (1.0f + tanhf(u));
    }
    case ACT_RELU: return fmaxf(v, 0.0f);  // NaN -> 0, as Rust's f32::max
    case ACT_SILU: return v / (1.0f + expf(-v));
    default: return __int_as_float(0x7fffffff);  // unreachable from Rust; NaN makes it loud
  }
}

__device__ __forceinline__ float act_derivative(float v, int act) {
  switch (act) {
    case ACT_GELU: {  // Φ(x) + x·φ(x)
      float cdf = 0.5f * (1.0f + erff(v * 0.70710678f));
      float pdf = expf(-0.5f * v * v) * 0.3989423f;
      return cdf + v * pdf;
    }
    case ACT_GELU_TANH: {
      float u = 0.7978846f * (v + 0.044715f * v * v * v);
      float t = tanhf(u);
      float du = 0.7978846f * (1.0f + 3.0f * 0.044715f * v * v);
      return 0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du;
    }
    case ACT_RELU: return v > 0.0f ? 1.0f : 0.0f;
    case ACT_SILU: {  // σ(x)·(1 + x·(1 - σ(x)))
      float s = 1.0f / (1.0f + expf(-v));
      return s * (1.0f + v * (1.0f - s));
    }
    default: return __int_as_float(0x7fffffff);
  }
}

// x[N] = act(x) in place.
extern "C" __global__ void activation_forward_f32(float* x, int act, int n) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (size_t)n) return;
  x[i] = act_value(x[i], act);
}

// d[N] *= act'(x): dout on entry, dinp on exit; x is the pre-activation input.
extern "C" __global__ void activation_backward_f32(float* d, const float* x, int act, int n) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (size_t)n) return;
  d[i] *= act_derivative(x[i], act);
}

// out[N] = act(gate) * up (SwiGLU for silu).
extern "C" __global__ void glu_forward_f32(float* out, const float* gate, const float* up, int act,
                                           int n) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (size_t)n) return;
  out[i] = act_value(gate[i], act) * up[i];
}

// dgate = dout * up * act'(gate), dup = dout * act(gate); both overwritten, as on the CPU.
// SiLU follows the CPU's fused path (one sigmoid shared by both), the others its generic path.
extern "C" __global__ void glu_backward_f32(float* dgate, float* dup, const float* dout,
                                            const float* gate, const float* up, int act, int n) {
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= (size_t)n) return;
  float g = gate[i], d = dout[i];
  if (act == ACT_SILU) {
    float s = 1.0f / (1.0f + expf(-g));
    dup[i] = d * g * s;
    dgate[i] = d * up[i] * s * (1.0f + g * (1.0f - s));
  } else {
    dup[i] = act_value(g, act) * d;
    dgate[i] = d * up[i] * act_derivative(g, act);
  }
}
