// Token cross-entropy with ignored labels, mirrors dsum-core/src/ops/cross_entropy.rs.
// One block per row of logits [N,V] (V up to ~152k for Qwen): max, then Σ exp(x - max) by block
// reductions, then (backward) the row is overwritten by its gradient, llm.c style. The total is
// summed in f64 by a single block in a fixed order, so it is deterministic.
//
// Labels are i64 as on the CPU; -100 (IGNORE_INDEX) skips a row (loss 0, gradient 0). A label
// outside 0..V gives a NaN loss (and NaN gradient row) and is reported by cross_entropy_sum_f32,
// whose caller turns it into the CPU's error.

#define IGNORE_INDEX (-100LL)

__device__ __forceinline__ bool label_bad(long long tgt, int v) {
  return tgt != IGNORE_INDEX && (tgt < 0 || tgt >= (long long)v);
}

// max and Σ exp(x - max) of one row (every thread gets both).
__device__ __forceinline__ void row_max_sum(const float* x, int v, float* scratch, float* mx_out,
                                            float* z_out) {
  float mx = __int_as_float(0xff800000);
  for (int i = threadIdx.x; i < v; i += blockDim.x) mx = fmaxf(mx, x[i]);
  mx = block_max(mx, scratch);
  float z = 0.0f;
  for (int i = threadIdx.x; i < v; i += blockDim.x) z += expf(x[i] - mx);
  *mx_out = mx;
  *z_out = block_sum(z, scratch);
}

// losses[N] = logsumexp(row) - row[target]; 0 for ignored rows.
extern "C" __global__ void cross_entropy_forward_f32(float* losses, const float* logits,
                                                     const long long* targets, int rows, int v) {
  __shared__ float scratch[32];
  int r = blockIdx.x;
  if (r >= rows) return;
  long long tgt = targets[r];
  if (tgt == IGNORE_INDEX || label_bad(tgt, v)) {
    if (threadIdx.x == 0) losses[r] = tgt == IGNORE_INDEX ? 0.0f : __int_as_float(0x7fc00000);
    return;
  }
  const float* x = logits + (size_t)r * v;
  float mx, z;
  row_max_sum(x, v, scratch, &mx, &z);
  // In f64 like the CPU: max + ln z - x[target].
  if (threadIdx.x == 0) losses[r] = (float)((double)mx + log((double)z) - (double)x[tgt]);
}

// Fused forward and backward: losses as above, and logits <- scale · (softmax - onehot) on
// counted rows, 0 on ignored rows (overwritten in place, as the CPU).
extern "C" __global__ void cross_entropy_backward_f32(float* logits, float* losses,
                                                      const long long* targets, int rows, int v,
                                                      float scale) {
  __shared__ float scratch[32];
  int r = blockIdx.x;
  if (r >= rows) return;
  float* x = logits + (size_t)r * v;
  long long tgt = targets[r];
  if (tgt == IGNORE_INDEX || label_bad(tgt, v)) {
    float fill = tgt == IGNORE_INDEX ? 0.0f : __int_as_float(0x7fc00000);
    for (int i = threadIdx.x; i < v; i += blockDim.x) x[i] = fill;
    if (threadIdx.x == 0) losses[r] = fill;
    return;
  }
  float target_logit = x[tgt];  // read before the row is overwritten (after the reductions)
  float mx, z;
  row_max_sum(x, v, scratch, &mx, &z);
  if (threadIdx.x == 0) losses[r] = (float)((double)mx + log((double)z) - (double)target_logit);
  float k = (float)((double)scale / (double)z);
  // Every thread rewrites only the entries it read itself, so in place is safe.
  for (int i = threadIdx.x; i < v; i += blockDim.x) {
    float g = expf(x[i] - mx) * k;
    x[i] = i == tgt ? g - scale : g;
  }
}

// Sum of a double over the block (blockDim.x a multiple of 32); every thread gets the total.
__device__ __forceinline__ double block_sum_f64(double v, double* scratch) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nwarps ? scratch[lane] : 0.0;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// One block: stats[4] <- (Σ losses over counted rows in f64, rows counted, first row whose label
// is outside 0..V or -1, that label).
extern "C" __global__ void cross_entropy_sum_f32(double* stats, const float* losses,
                                                 const long long* targets, int rows, int v) {
  __shared__ double scratch[32];
  __shared__ int first_bad;
  if (threadIdx.x == 0) first_bad = 0x7fffffff;
  __syncthreads();
  double sum = 0.0, counted = 0.0;
  for (int r = threadIdx.x; r < rows; r += blockDim.x) {
    long long tgt = targets[r];
    if (tgt == IGNORE_INDEX) continue;
    if (label_bad(tgt, v)) {
      atomicMin(&first_bad, r);  // the minimum does not depend on the order
      continue;
    }
    sum += (double)losses[r];
    counted += 1.0;
  }
  sum = block_sum_f64(sum, scratch);
  counted = block_sum_f64(counted, scratch);
  __syncthreads();
  if (threadIdx.x == 0) {
    stats[0] = sum;
    stats[1] = counted;
    bool bad = first_bad != 0x7fffffff;
    stats[2] = bad ? (double)first_bad : -1.0;
    stats[3] = bad ? (double)targets[first_bad] : 0.0;
  }
}
