// Global gradient norm and clipping, mirrors dsum-core/src/train/clip.rs
// (torch.nn.utils.clip_grad_norm_). Deterministic two-pass reduction, no atomics: pass 1 gives
// each block's L2 norm of its strided slice of one tensor, pass 2 (one block) takes the L2
// norm of all those partial norms. Squares are summed in f64, as the CPU does; partials are
// stored as norms rather than sums of squares so that an f32 slot overflows only where the
// CPU's per-tensor f32 norm would overflow too.

#define GRAD_NORM_THREADS 256

// Sum over a block of GRAD_NORM_THREADS threads in f64, in a fixed order; thread 0 gets it.
__device__ __forceinline__ double block_sum_f64(double v, double* scratch) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  double s = 0.0;
  if (threadIdx.x == 0)
    for (int w = 0; w < GRAD_NORM_THREADS / 32; w++) s += scratch[w];
  return s;
}

// partial[blockIdx.x] = sqrt(sum of g[i]^2 over i = blockIdx.x*256 + threadIdx.x + k*gridDim.x*256).
extern "C" __global__ void grad_norm_partial_f32(float* partial, const float* g, int n) {
  __shared__ double scratch[GRAD_NORM_THREADS / 32];
  double ss = 0.0;
  size_t stride = (size_t)gridDim.x * GRAD_NORM_THREADS;
  for (size_t i = (size_t)blockIdx.x * GRAD_NORM_THREADS + threadIdx.x; i < (size_t)n;
       i += stride) {
    double x = (double)g[i];
    ss += x * x;
  }
  ss = block_sum_f64(ss, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = (float)sqrt(ss);
}

// partial[count] = sqrt(sum of partial[0..count]^2); launched as a single block.
extern "C" __global__ void grad_norm_total_f32(float* partial, int count) {
  __shared__ double scratch[GRAD_NORM_THREADS / 32];
  double ss = 0.0;
  for (int i = threadIdx.x; i < count; i += GRAD_NORM_THREADS) {
    double x = (double)partial[i];
    ss += x * x;
  }
  ss = block_sum_f64(ss, scratch);
  if (threadIdx.x == 0) partial[count] = (float)sqrt(ss);
}
