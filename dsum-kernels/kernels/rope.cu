// Rotary position embeddings ("rotate half": dimension i pairs with i + dh/2), mirrors
// dsum-core/src/ops/rope.rs (rope_forward, rope_backward) applied to every head of every token.
// The angle is computed as the CPU does: pos converted to f32, times inv_freq in f32, then f32
// sin/cos (sinf/cosf are the accurate versions without --use_fast_math, with full range
// reduction, so large pos * inv_freq stays within an ulp or two of the CPU's libm).

// x[T,H,dh] rotated in place by angle pos[t] * inv_freq[i] for pair (i, i + dh/2). One thread
// per pair. `sign` is +1 for the forward rotation and -1 for the backward one, which rotates
// back by the same angle (the rotation is orthogonal, so its transpose is its inverse).
__device__ __forceinline__ void rope_rotate(float* x, const float* inv_freq, const int* pos,
                                            int n_tok, int heads, int dh, float sign) {
  int half = dh / 2;
  size_t n = (size_t)n_tok * heads * half;
  size_t p = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (p >= n) return;
  int i = (int)(p % half);
  size_t row = p / half;  // t * heads + h
  int t = (int)(row / heads);
  float angle = (float)pos[t] * inv_freq[i];
  float s = sign * sinf(angle), co = cosf(angle);
  float* v = x + row * dh;
  float a = v[i], b = v[i + half];
  v[i] = a * co - b * s;
  v[i + half] = b * co + a * s;
}

extern "C" __global__ void rope_forward_f32(float* x, const float* inv_freq, const int* pos,
                                            int n_tok, int heads, int dh) {
  rope_rotate(x, inv_freq, pos, n_tok, heads, dh, 1.0f);
}

// dx = R(-angle) dy, in place.
extern "C" __global__ void rope_backward_f32(float* dx, const float* inv_freq, const int* pos,
                                             int n_tok, int heads, int dh) {
  rope_rotate(dx, inv_freq, pos, n_tok, heads, dh, -1.0f);
}
