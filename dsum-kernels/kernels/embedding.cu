// Token embedding lookup and its backward, mirrors dsum-core/src/ops/embedding.rs
// (embedding_forward, embedding_backward). Ids are device data the launcher cannot check, so an
// id >= vocab never reads or writes out of the table: the forward writes a zero row for it and
// the backward skips it (the CPU forward returns an error instead; callers validate on the host).
// Products and sums use __fmul_rn / __fadd_rn so no FMA is contracted: the results are then
// bit-identical to the CPU's, which adds in the same order.

// out[N,C] = table[ids[i]] * scale. One thread per output element.
extern "C" __global__ void embedding_forward_f32(float* out, const float* table, const u32* ids,
                                                 int n, int c, int vocab, float scale) {
  size_t p = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (p >= (size_t)n * c) return;
  size_t i = p / c, j = p % c;
  u32 id = ids[i];
  out[p] = id < (u32)vocab ? __fmul_rn(table[(size_t)id * c + j], scale) : 0.0f;
}

// dtable[ids[i]] += dout[i] * scale for i = 0..N in order. Repeated ids add into the same row, so
// instead of atomics each thread owns one column j of the table and walks the tokens in order:
// race-free and deterministic, in the CPU's order of summation.
extern "C" __global__ void embedding_backward_f32(float* dtable, const float* dout, const u32* ids,
                                                  int n, int c, int vocab, float scale) {
  int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= c) return;
  for (int i = 0; i < n; ++i) {
    u32 id = ids[i];
    if (id >= (u32)vocab) continue;
    float* t = dtable + (size_t)id * c + j;
    *t = __fadd_rn(*t, __fmul_rn(dout[(size_t)i * c + j], scale));
  }
}
