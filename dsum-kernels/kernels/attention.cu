// Scaled dot-product attention, mirrors dsum-core/src/ops/attention.rs.
//
// Inference (`attention_forward`): R sequences against their KV caches, one block per
// (row, head, query); the keys are split over the warps of the block, each warp keeps an online
// softmax (running max, running sum, output accumulator; Milakov & Gimelshein 2018 / FlashAttention)
// and the warps are merged in a fixed order at the end, so results are deterministic and any number
// of keys fits. Training (`attention_train_forward`, `attention_backward`): the probabilities
// [R,H,T,S] are saved like the CPU does, and the backward reads them; every gradient element is
// summed by one thread in a fixed order (no atomics).
//
// Masking as on the CPU: a hidden key gets probability 0; a query that sees no key at all gets
// probabilities 0 and output 0 (PyTorch would give NaN; dsum-core keeps zeros).

#define NEG_INF __int_as_float(0xff800000)

// q·k over dh values, lanes striding over dh; every lane of the warp gets the sum.
__device__ __forceinline__ float warp_dot(const float* a, const float* b, int dh) {
  float s = 0.0f;
  for (int d = threadIdx.x & 31; d < dh; d += 32) s += a[d] * b[d];
  return warp_sum(s);
}

// ---- inference ------------------------------------------------------------------------------

// out[R,T,H,dh] = softmax(q·kᵀ·scale + mask)·v with caches k/v [R,KV,cap,dh] (first len valid).
// Query ti sees keys j < min(past + ti + 1, len) when causal (past >= 0), all j < len otherwise
// (past < 0); mask [R,cap] (may be null): 0 hides key j. Query head hi reads kv head
// hi / (h / kv_h).
// Dynamic shared memory: q [dh], then per warp an accumulator [dh], then max and sum per warp.
extern "C" __global__ void attention_forward_f32(float* out, const float* q, const float* k,
                                                 const float* v, const u8* mask, int rows, int t,
                                                 int h, int kv_h, int dh, int cap, int len,
                                                 int past, float scale) {
  extern __shared__ float smem[];
  int nwarps = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float* qs = smem;
  float* acc = qs + dh;  // [nwarps, dh]
  float* wmax = acc + (size_t)nwarps * dh;
  float* wsum = wmax + nwarps;

  int b = blockIdx.x;
  int ti = b % t;
  b /= t;
  int hi = b % h;
  int r = b / h;
  if (r >= rows) return;
  int g = hi / (h / kv_h);

  const float* qi = q + (((size_t)r * t + ti) * h + hi) * dh;
  for (int d = threadIdx.x; d < dh; d += blockDim.x) qs[d] = qi[d];
  float* my_acc = acc + (size_t)warp * dh;
  for (int d = lane; d < dh; d += 32) my_acc[d] = 0.0f;
  __syncthreads();

  int visible = past >= 0 ? min(past + ti + 1, len) : len;
  const float* kh = k + ((size_t)r * kv_h + g) * cap * dh;
  const float* vh = v + ((size_t)r * kv_h + g) * cap * dh;
  const u8* m = mask != nullptr ? mask + (size_t)r * cap : nullptr;
  // Every lane of a warp holds the same m_run / l_run (the scores come from warp_sum); each lane
  // owns the accumulator entries d = lane, lane + 32, ...
  float m_run = NEG_INF, l_run = 0.0f;
  for (int j = warp; j < visible; j += nwarps) {
    if (m != nullptr && m[j] == 0) continue;  // same j for the whole warp: no divergence
    float s = warp_dot(qs, kh + (size_t)j * dh, dh) * scale;
    float m_new = fmaxf(m_run, s);
    float corr = expf(m_run - m_new);  // m_run = -inf on the first key: exp(-inf) = 0
    float p = expf(s - m_new);
    l_run = l_run * corr + p;
    const float* vj = vh + (size_t)j * dh;
    for (int d = lane; d < dh; d += 32) my_acc[d] = my_acc[d] * corr + p * vj[d];
    m_run = m_new;
  }
  if (lane == 0) {
    wmax[warp] = m_run;
    wsum[warp] = l_run;
  }
  __syncthreads();

  // Merge the warps in order 0..nwarps: out = Σ_w e^(m_w - M) acc_w / Σ_w e^(m_w - M) l_w.
  float mx = NEG_INF;
  for (int w = 0; w < nwarps; w++) mx = fmaxf(mx, wmax[w]);
  float* o = out + (((size_t)r * t + ti) * h + hi) * dh;
  if (mx == NEG_INF) {  // no visible key: zeros, as the CPU
    for (int d = threadIdx.x; d < dh; d += blockDim.x) o[d] = 0.0f;
    return;
  }
  float l = 0.0f;
  for (int w = 0; w < nwarps; w++)
    if (wmax[w] != NEG_INF) l += expf(wmax[w] - mx) * wsum[w];
  float inv = 1.0f / l;
  for (int d = threadIdx.x; d < dh; d += blockDim.x) {
    float x = 0.0f;
    for (int w = 0; w < nwarps; w++)
      if (wmax[w] != NEG_INF) x += expf(wmax[w] - mx) * acc[(size_t)w * dh + d];
    o[d] = x * inv;
  }
}

// cache[R,KV,cap,dh] at positions past..past+t <- new[R,T,KV,dh] (the caller checked past+t <= cap).
extern "C" __global__ void kv_write_f32(float* cache, const float* src, int rows, int t, int kv_h,
                                        int dh, int cap, int past) {
  size_t n = (size_t)rows * t * kv_h * dh;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x) {
    size_t rest = i;
    int d = (int)(rest % dh);
    rest /= dh;
    int g = (int)(rest % kv_h);
    rest /= kv_h;
    int ti = (int)(rest % t);
    size_t r = rest / t;
    cache[((r * kv_h + g) * cap + past + ti) * dh + d] = src[i];
  }
}

// ---- training -------------------------------------------------------------------------------
// q/out [R*T, H*dh], k/v [R*S, KV*dh] (projection outputs, heads interleaved), mask [R,S] (may be
// null), probs [R,H,T,S]. Causal: query ti sees keys j <= ti. One block per (row, head, query).

// Keys query ti can see at all (the rest have probability 0).
__device__ __forceinline__ int train_keys(int ti, int s, int causal) {
  return causal ? min(ti + 1, s) : s;
}

// out = softmax(q·kᵀ·scale + mask)·v; probs = the softmax (0 where hidden).
extern "C" __global__ void attention_train_forward_f32(float* out, float* probs, const float* q,
                                                       const float* k, const float* v,
                                                       const u8* mask, int rows, int t, int s,
                                                       int h, int kv_h, int dh, int causal,
                                                       float scale) {
  __shared__ float scratch[32];
  int nwarps = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  int b = blockIdx.x;
  int ti = b % t;
  b /= t;
  int hh = b % h;
  int r = b / h;
  if (r >= rows) return;
  int g = hh / (h / kv_h);
  size_t qs = (size_t)h * dh, ks = (size_t)kv_h * dh;
  const float* qi = q + ((size_t)r * t + ti) * qs + (size_t)hh * dh;
  const float* kb = k + (size_t)r * s * ks + (size_t)g * dh;
  const float* vb = v + (size_t)r * s * ks + (size_t)g * dh;
  const u8* m = mask != nullptr ? mask + (size_t)r * s : nullptr;
  float* p = probs + (((size_t)r * h + hh) * t + ti) * s;
  int nk = train_keys(ti, s, causal);

  // Scores (a warp per key) into p, -inf where hidden.
  float mx = NEG_INF;
  for (int j = warp; j < nk; j += nwarps) {
    float sc = NEG_INF;
    if (m == nullptr || m[j] != 0) sc = warp_dot(qi, kb + (size_t)j * ks, dh) * scale;
    if (lane == 0) p[j] = sc;
    mx = fmaxf(mx, sc);
  }
  mx = block_max(mx, scratch);
  __syncthreads();  // the scores written above are read by other threads below
  float* o = out + ((size_t)r * t + ti) * qs + (size_t)hh * dh;
  if (mx == NEG_INF) {  // no visible key: probabilities and output 0, as the CPU
    for (int j = threadIdx.x; j < s; j += blockDim.x) p[j] = 0.0f;
    for (int d = threadIdx.x; d < dh; d += blockDim.x) o[d] = 0.0f;
    return;
  }
  float sum = 0.0f;
  for (int j = threadIdx.x; j < s; j += blockDim.x) {
    float e = 0.0f;
    if (j < nk && p[j] != NEG_INF) e = expf(p[j] - mx);
    p[j] = e;
    sum += e;
  }
  float inv = 1.0f / block_sum(sum, scratch);
  for (int j = threadIdx.x; j < nk; j += blockDim.x) p[j] *= inv;
  __syncthreads();
  for (int d = threadIdx.x; d < dh; d += blockDim.x) {
    float x = 0.0f;
    for (int j = 0; j < nk; j++) x += p[j] * vb[(size_t)j * ks + d];
    o[d] = x;
  }
}

// Backward, part 1, one block per (row, head, query):
// dP_j = dO·v_j, dS_j = P_j (dP_j - Σ_j dP_j P_j) · scale into ds [R,H,T,S]; dq += dS·K.
extern "C" __global__ void attention_backward_dq_f32(float* dq, float* ds, const float* dout,
                                                     const float* probs, const float* k,
                                                     const float* v, int rows, int t, int s, int h,
                                                     int kv_h, int dh, int causal, float scale) {
  __shared__ float scratch[32];
  int nwarps = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  int b = blockIdx.x;
  int ti = b % t;
  b /= t;
  int hh = b % h;
  int r = b / h;
  if (r >= rows) return;
  int g = hh / (h / kv_h);
  size_t qs = (size_t)h * dh, ks = (size_t)kv_h * dh;
  const float* doi = dout + ((size_t)r * t + ti) * qs + (size_t)hh * dh;
  const float* kb = k + (size_t)r * s * ks + (size_t)g * dh;
  const float* vb = v + (size_t)r * s * ks + (size_t)g * dh;
  size_t row = (((size_t)r * h + hh) * t + ti) * s;
  const float* p = probs + row;
  float* dsr = ds + row;
  int nk = train_keys(ti, s, causal);

  float pdp = 0.0f;  // Σ_j P_j dP_j, counted once per key (lane 0)
  for (int j = warp; j < nk; j += nwarps) {
    float dp = warp_dot(doi, vb + (size_t)j * ks, dh);
    if (lane == 0) {
      dsr[j] = dp;
      pdp += p[j] * dp;
    }
  }
  float dot = block_sum(pdp, scratch);
  __syncthreads();  // dP written above is read by other threads below
  for (int j = threadIdx.x; j < s; j += blockDim.x)
    dsr[j] = j < nk ? p[j] * (dsr[j] - dot) * scale : 0.0f;
  __syncthreads();
  float* dqi = dq + ((size_t)r * t + ti) * qs + (size_t)hh * dh;
  for (int d = threadIdx.x; d < dh; d += blockDim.x) {
    float x = 0.0f;
    for (int j = 0; j < nk; j++) x += dsr[j] * kb[(size_t)j * ks + d];
    dqi[d] += x;
  }
}

// Backward, part 2, one block per (row, kv head, key j), a thread per dh entry:
// dk_j += Σ_{heads of the group} Σ_ti dS_ij q_i ; dv_j += Σ Σ P_ij dO_i.
extern "C" __global__ void attention_backward_dkv_f32(float* dk, float* dv, const float* ds,
                                                      const float* probs, const float* q,
                                                      const float* dout, int rows, int t, int s,
                                                      int h, int kv_h, int dh, int causal) {
  int b = blockIdx.x;
  int j = b % s;
  b /= s;
  int g = b % kv_h;
  int r = b / kv_h;
  if (r >= rows) return;
  int group = h / kv_h;
  size_t qs = (size_t)h * dh, ks = (size_t)kv_h * dh;
  int t0 = causal ? j : 0;  // queries before key j do not see it
  for (int d = threadIdx.x; d < dh; d += blockDim.x) {
    float xk = 0.0f, xv = 0.0f;
    for (int hh = g * group; hh < (g + 1) * group; hh++) {
      size_t prow = ((size_t)r * h + hh) * t;
      for (int ti = t0; ti < t; ti++) {
        size_t at = (prow + ti) * s + j;
        size_t qi = ((size_t)r * t + ti) * qs + (size_t)hh * dh + d;
        xk += ds[at] * q[qi];
        xv += probs[at] * dout[qi];
      }
    }
    size_t kj = ((size_t)r * s + j) * ks + (size_t)g * dh + d;
    dk[kj] += xk;
    dv[kj] += xv;
  }
}
